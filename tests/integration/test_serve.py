"""``iqeclip serve``'s JSON API through FastAPI's test client: the answers are predict's, every
class of bad input is a 400 with the readers' one line, and requests run side by side without
mixing."""

from __future__ import annotations

import csv
import io
import threading
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from iqeclip.cli.main import main
from iqeclip.errors import UserError, as_flag
from iqeclip.inference.predict import predict
from iqeclip.model.detector import IQEClip
from iqeclip.model.scoring import score_range

pytest.importorskip("fastapi")
pydicom = pytest.importorskip("pydicom")
nib = pytest.importorskip("nibabel")
from fastapi.testclient import TestClient  # noqa: E402
from pydicom.data import get_testdata_file  # noqa: E402

from iqeclip.serve import jobs as jobs_module  # noqa: E402
from iqeclip.serve.app import create_app  # noqa: E402


@pytest.fixture(scope="module")
def detector(checkpoint):
    return IQEClip.from_checkpoint(checkpoint)


def make_client(detector, checkpoint, tmp_path, max_upload_mb=20.0) -> TestClient:
    app = create_app(detector, str(checkpoint), tmp_path, max_upload_mb, 4, "torch")
    return TestClient(app)


@pytest.fixture
def client(detector, checkpoint, tmp_path):
    root = tmp_path / "server"
    root.mkdir()
    return make_client(detector, checkpoint, root)


def post(client: TestClient, path: Path, name: str | None = None):
    return client.post("/api/predict", files={"file": (name or path.name, path.read_bytes())})


def cli_rows(checkpoint: Path, path: Path, out: Path) -> list[dict[str, str]]:
    predict(checkpoint, [path], out)
    with (out / "predictions.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def png16(path: Path) -> Path:
    ramp = np.linspace(0, 60000, 48 * 40, dtype=np.uint16).reshape(48, 40)
    ramp[10:20, 10:20] = 65535
    Image.fromarray(ramp).save(path)
    return path


def volume(path: Path, n: int = 5) -> Path:
    data = np.random.default_rng(3).random((40, 36, n)).astype(np.float32)
    data[5:15, 5:15, 1:3] += 3
    nib.Nifti1Image(data, np.diag([-0.8, 0.8, 2.0, 1.0])).to_filename(path)
    return path


def series_zip(path: Path, n: int = 3) -> Path:
    ct = pydicom.dcmread(get_testdata_file("CT_small.dcm"))
    with zipfile.ZipFile(path, "w") as z:
        for i in range(1, n + 1):
            ct.InstanceNumber = i
            ct.ImagePositionPatient = [0.0, 0.0, 2.0 * i]
            ct.SOPInstanceUID = f"{ct.SeriesInstanceUID}.{i}"
            buffer = io.BytesIO()
            ct.save_as(buffer)
            z.writestr(f"series/IM{i:04d}.dcm", buffer.getvalue())
    return path


def test_model_says_what_scores_and_how_numbers_read(client, detector):
    info = client.get("/api/model").json()
    assert info["config"] == detector.config.to_dict()
    assert info["setting"] == "few" and info["backend"] == "torch"
    assert info["score_range"] == list(score_range("few", len(detector.config.features_list)))
    assert info["calibration"] is None and info["version"]


def test_png_answer_is_what_predict_writes(client, checkpoint, bench, tmp_path):
    image = next((bench / "Brain_AD" / "test" / "Ungood" / "img").glob("*.png"))
    answer = post(client, image).json()
    (row,) = cli_rows(checkpoint, image, tmp_path / "cli")
    assert answer["kind"] == "image" and answer["volumes"] == []
    assert answer["score"] == float(row["score"])  # the CSV's exact text
    (s,) = answer["slices"]
    served = np.load(io.BytesIO(client.get(s["map_npy"]).content))
    np.testing.assert_array_equal(served, np.load(tmp_path / "cli" / f"{image.stem}_map.npy"))
    picture = Image.open(io.BytesIO(client.get(s["map_png"]).content))
    assert picture.size == Image.open(image).size
    for key in ("input", "heat", "overlay"):
        assert client.get(s[key]).headers["content-type"] == "image/png"
    archive = zipfile.ZipFile(io.BytesIO(client.get(answer["download"]).content))
    assert set(archive.namelist()) == {
        "predictions.csv",
        *(Path(s[k]).name for k in ("input", "overlay", "map_png", "map_npy")),
    }


def test_the_answer_is_predicts_values_with_no_file_read_back(
    client, checkpoint, tmp_path, monkeypatch
):
    """serve answers from the Predictions predict returns: nothing of the result folder is read
    back to make the answer, and the CSV of the download is predict's (paths as uploaded)."""
    path = volume(tmp_path / "scan.nii.gz", n=4)
    expected = predict(checkpoint, [path])  # the values, nothing written
    cli = tmp_path / "cli"
    predict(checkpoint, [path], cli, outputs="input,overlay,map,npy")  # what serve writes
    reads = []
    real_open = Path.open

    def watched(self, *args, **kwargs):
        if "out" in self.parts and "r" in (args[0] if args else kwargs.get("mode", "r")):
            reads.append(self.name)
        return real_open(self, *args, **kwargs)

    def no_load(*args, **kwargs):
        raise AssertionError("serve read a map back")

    with monkeypatch.context() as m:
        m.setattr(Path, "open", watched)
        m.setattr(np, "load", no_load)
        answer = post(client, path).json()
    assert [r for r in reads if r.endswith((".csv", ".npy"))] == []
    assert [s["score"] for s in answer["slices"]] == [p.score for p in expected.slices]
    assert [s["index"] for s in answer["slices"]] == [p.slice for p in expected.slices]
    (v,) = expected.volumes
    assert answer["score"] == v.score and answer["volumes"][0]["n_slices"] == v.n_slices
    archive = zipfile.ZipFile(io.BytesIO(client.get(answer["download"]).content))
    served = archive.read("predictions.csv").decode()
    mine = (cli / "predictions.csv").read_text().replace(f"{path.parent}/", "")
    assert served == mine


@pytest.mark.parametrize(
    "make",
    [
        lambda tmp: png16(tmp / "ramp16.png"),
        lambda tmp: Path(get_testdata_file("MR_small.dcm")),
        lambda tmp: Path(get_testdata_file("MR_small_RLE.dcm")),  # compressed
    ],
    ids=["png16", "dicom", "dicom-rle"],
)
def test_single_images_of_each_format(client, checkpoint, tmp_path, make):
    path = make(tmp_path)
    answer = post(client, path).json()
    (row,) = cli_rows(checkpoint, path, tmp_path / "cli")
    assert answer["kind"] == "image" and len(answer["slices"]) == 1
    assert answer["score"] == float(row["score"])  # the CSV's exact text


def test_volume_gives_every_slice_and_the_volume_score(client, checkpoint, tmp_path):
    path = volume(tmp_path / "scan.nii.gz")
    answer = post(client, path).json()
    rows = cli_rows(checkpoint, path, tmp_path / "cli")
    assert answer["kind"] == "volume"
    assert [s["index"] for s in answer["slices"]] == list(range(5))
    assert [s["score"] for s in answer["slices"]] == [float(r["score"]) for r in rows]
    (vol,) = answer["volumes"]
    assert vol["n_slices"] == 5
    assert answer["score"] == vol["score"] == pytest.approx(max(float(r["score"]) for r in rows))
    names = zipfile.ZipFile(io.BytesIO(client.get(answer["download"]).content)).namelist()
    assert {"scan_anomaly.nii.gz", "volumes.csv", "predictions.csv"} <= set(names)


def test_zip_of_a_dicom_series_is_one_volume(client, tmp_path):
    answer = post(client, series_zip(tmp_path / "study.zip")).json()
    assert answer["kind"] == "volume"
    assert len(answer["slices"]) == 3 and answer["volumes"][0]["n_slices"] == 3


def test_calibrated_checkpoint_gives_decisions_and_contours(detector, checkpoint, bench, tmp_path):
    ckpt = tmp_path / "calibrated.pth"
    ckpt.write_bytes(checkpoint.read_bytes())
    argv = ["calibrate", "--ckpt_path", str(ckpt), "--data_path", str(bench), "--obj", "Brain"]
    assert main(argv) == 0
    calibrated = IQEClip.from_checkpoint(ckpt)
    root = tmp_path / "server"
    root.mkdir()
    client = make_client(calibrated, ckpt, root)
    thresholds = calibrated.meta["thresholds"]
    assert client.get("/api/model").json()["calibration"]["image"] == thresholds["image"]
    image = next((bench / "Brain_AD" / "test" / "Ungood" / "img").glob("*.png"))
    answer = post(client, image).json()
    expected = "abnormal" if answer["score"] >= thresholds["image"] else "normal"
    assert answer["decision"] == expected
    assert answer["threshold"] == pytest.approx(thresholds["image"], abs=1e-6)
    (s,) = answer["slices"]
    mask = np.asarray(Image.open(io.BytesIO(client.get(s["mask"]).content))) > 0
    contour = np.asarray(Image.open(io.BytesIO(client.get(s["contour"]).content)))
    assert contour.shape == (*mask.shape, 4)
    drawn = contour[..., 3] > 0
    assert not (drawn & ~mask).any()  # the contour is the mask's boundary, inside it
    assert drawn.any() == mask.any()


def _bad_zip(tmp_path: Path, name: str, members: dict[str, bytes]) -> Path:
    path = tmp_path / name
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for member, data in members.items():
            z.writestr(member, data)
    return path


def test_bad_inputs_are_400_with_the_readers_line(client, checkpoint, tmp_path):
    garbage = tmp_path / "broken.png"
    garbage.write_bytes(b"not a png at all")
    empty = tmp_path / "empty.dcm"
    empty.write_bytes(b"")
    truncated = tmp_path / "cut.nii.gz"
    truncated.write_bytes(volume(tmp_path / "whole.nii.gz").read_bytes()[:300])
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    for path in (garbage, empty, truncated, text):
        with pytest.raises(UserError) as cli:
            predict(checkpoint, [path], tmp_path / f"cli_{path.name}")
        r = post(client, path)
        assert r.status_code == 400, path
        # the same one line as predict on the command line, with the server's folder left out
        line = cli.value.render(as_flag)
        assert r.json() == {"error": line.replace(f"{path.parent}/", "")}
    escape = _bad_zip(tmp_path, "escape.zip", {"../../evil.png": b"x"})
    r = post(client, escape)
    assert r.status_code == 400 and "leaves the archive" in r.json()["error"]
    # a zip bomb is a 413 (test_serve_limits.py: the zip's files and unpacked bytes are limits)
    nothing = _bad_zip(tmp_path, "nothing.zip", {"readme.txt": b"no scans here"})
    r = post(client, nothing)
    assert r.status_code == 400 and r.json()["error"].startswith(
        "no input files in nothing (supported: "
    )
    assert not any(p.name.startswith("evil") for p in tmp_path.rglob("*"))


def test_request_shape_errors(client, detector, checkpoint, tmp_path):
    r = client.post("/api/predict", data={"other": "x"})
    assert r.status_code == 400 and "'file'" in r.json()["error"]
    small = tmp_path / "small"
    small.mkdir()
    limited = make_client(detector, checkpoint, small, max_upload_mb=0.01)
    r = post(limited, volume(tmp_path / "big.nii.gz", n=8))
    assert r.status_code == 413 and "--max_upload_mb" in r.json()["error"]
    assert list(small.iterdir()) == []  # refused before anything was written

    def chunks():
        yield b"--x\r\n"

    r = client.post(
        "/api/predict",
        content=chunks(),
        headers={"content-type": "multipart/form-data; boundary=x"},
    )
    assert r.status_code == 411
    assert client.get("/api/results/nope/x.png").status_code == 404
    assert client.get("/api/results/nope/download").status_code == 404
    answer = post(client, png16(tmp_path / "a.png")).json()
    assert client.get(f"/api/results/{answer['id']}/..%2Fupload%2Fa.png").status_code == 404


def test_concurrent_requests_run_side_by_side_and_do_not_mix(client, bench, tmp_path, monkeypatch):
    images = sorted((bench / "Brain_AD" / "test" / "Ungood" / "img").glob("*.png"))[:2]
    alone = [post(client, p).json() for p in images]
    assert alone[0]["score"] != alone[1]["score"]
    both_inside = threading.Barrier(2, timeout=30)  # breaks unless both runs are in at once
    real = jobs_module.predict

    def meeting(*args, **kwargs):
        both_inside.wait()
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs_module, "predict", meeting)
    answers: dict[int, dict] = {}

    def ask(i: int) -> None:
        answers[i] = post(client, images[i]).json()

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    for i in range(2):
        assert answers[i]["filename"] == images[i].name
        assert answers[i]["score"] == alone[i]["score"]
        served = client.get(answers[i]["slices"][0]["map_npy"]).content
        first = client.get(alone[i]["slices"][0]["map_npy"]).content
        assert served == first
    assert answers[0]["id"] != answers[1]["id"]


def test_iqeclip_serve_command_serves_and_checks_its_port(checkpoint, tmp_path):
    import socket
    import subprocess
    import sys
    import time

    import httpx

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        port = taken.getsockname()[1]
        argv = ["serve", "--ckpt_path", str(checkpoint), "--port", str(port)]
        assert main(argv) == 2  # refused before the model is loaded
    server = subprocess.Popen(
        [sys.executable, "-m", "iqeclip", *argv],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                info = httpx.get(f"http://127.0.0.1:{port}/api/model", timeout=5).json()
                break
            except httpx.TransportError:
                assert server.poll() is None and time.monotonic() < deadline, server.stdout.read()
                time.sleep(0.5)
        assert info["source"] == checkpoint.name
        page = httpx.get(f"http://127.0.0.1:{port}/", timeout=5).text
        assert '<input id="file" type="file"' in page
        script = httpx.get(f"http://127.0.0.1:{port}/static/viewer.js", timeout=5)
        assert script.status_code == 200 and "/api/predict" in script.text
        assert "http" not in page.replace("http-equiv", "")  # no asset from the internet
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_zips_named_oddly_or_broken_and_mixed(client, bench, tmp_path):
    study = series_zip(tmp_path / "study.zip").read_bytes()
    # a zip is unpacked by its name, in any case; named otherwise, it is read as predict reads
    # that name (test_serve_security.py: a PNG with a zip appended is a PNG)
    r = client.post("/api/predict", files={"file": ("Study.ZIP", study)})
    assert r.status_code == 200 and r.json()["kind"] == "volume", r.text
    for name in ("series", ".zip"):  # ".zip" is saved as "zip"
        r = client.post("/api/predict", files={"file": (name, study)})
        assert r.status_code == 400 and "not an image file" in r.json()["error"], r.text
    broken = bytearray(study)
    middle = slice(len(broken) // 3, len(broken) // 3 + 64)  # inside a member's data
    broken[middle] = bytes(b ^ 0xFF for b in broken[middle])
    r = client.post("/api/predict", files={"file": ("broken.zip", bytes(broken))})
    assert r.status_code == 400 and r.json()["error"].startswith("broken.zip: ")
    image = next((bench / "Brain_AD" / "test" / "good" / "img").glob("*.png"))
    mixed = tmp_path / "mixed.zip"
    with zipfile.ZipFile(mixed, "w") as z:
        for member in zipfile.ZipFile(io.BytesIO(study)).infolist():
            z.writestr(member.filename, zipfile.ZipFile(io.BytesIO(study)).read(member))
        z.write(image, "extra.png")
    answer = post(client, mixed).json()
    assert len(answer["volumes"]) == 1 and len(answer["slices"]) == 4
    assert answer["score"] is None and answer["decision"] is None
    table = client.get(f"/api/results/{answer['id']}/predictions.csv").text
    assert str(tmp_path) not in table and "iqeclip-serve" not in table
    assert "series/IM0001.dcm" in table and "extra.png" in table
    r = client.get("/api/nothing-here")
    assert r.status_code == 404 and set(r.json()) == {"error"}
