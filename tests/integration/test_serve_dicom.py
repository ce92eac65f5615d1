"""serve's download for a DICOM series upload offers its DICOM Segmentation (with a pixel
threshold) and Parametric Map, for a PACS viewer; other uploads offer none."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import pytest

from iqeclip.model.detector import IQEClip
from tests.integration.conftest import calibrated
from tests.scans import Study

pytest.importorskip("fastapi")
pydicom = pytest.importorskip("pydicom")
hd = pytest.importorskip("highdicom")
from fastapi.testclient import TestClient  # noqa: E402

from iqeclip.serve.app import create_app  # noqa: E402


def client_of(ckpt: Path, root: Path) -> TestClient:
    root.mkdir()
    detector = IQEClip.from_checkpoint(ckpt)
    return TestClient(create_app(detector, str(ckpt), root, 20.0, 4, "torch"))


def series_zip(folder: Path) -> Path:
    """A CT series (tests/scans.py) zipped as a PACS export."""
    series = Study(slices=3).write_dicom(pydicom, folder / "series")
    path = folder / "study.zip"
    with zipfile.ZipFile(path, "w") as z:
        for f in sorted(series.iterdir()):
            z.write(f, f"study/{f.name}")
    return path


def post(client: TestClient, path: Path) -> dict:
    answer = client.post("/api/predict", files={"file": (path.name, path.read_bytes())})
    assert answer.status_code == 200, answer.text
    return answer.json()


@pytest.mark.parametrize("pixel", [0.5, None], ids=["calibrated", "scores only"])
def test_a_dicom_series_upload_offers_its_dicom_objects(checkpoint, bench, tmp_path, pixel):
    ckpt = calibrated(checkpoint, tmp_path, pixel=pixel)
    client = client_of(ckpt, tmp_path / "server")
    answer = post(client, series_zip(tmp_path))
    assert answer["kind"] == "volume"
    expected = {"dicom-pmap": "study_pmap.dcm"}
    if pixel is not None:
        expected["dicom-seg"] = "study_seg.dcm"
    assert {d["kind"]: d["name"] for d in answer["dicom"]} == expected
    for offered in answer["dicom"]:
        served = pydicom.dcmread(io.BytesIO(client.get(offered["url"]).content))
        assert served.ContentLabel == "IQECLIP"
        assert served.ReferencedSeriesSequence[0].SeriesInstanceUID == Study().series_uid
    archive = zipfile.ZipFile(io.BytesIO(client.get(answer["download"]).content))
    assert set(expected.values()) <= set(archive.namelist())
    image = next((bench / "Brain_AD" / "test" / "good" / "img").iterdir())
    assert post(client, image)["dicom"] == []  # a picture: nothing for a PACS
