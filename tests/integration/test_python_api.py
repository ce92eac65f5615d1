"""The Python API as the README shows it: its example runs as written, and what predict returns
is what it writes."""

from __future__ import annotations

import csv
import re
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from PIL import Image

import iqeclip
from iqeclip.errors import UserError
from iqeclip.inference import files, writers
from iqeclip.inference.writers import CSV_COLUMNS

README = Path(__file__).resolve().parents[2] / "README.md"


def _example() -> str:
    text = README.read_text(encoding="utf-8")
    section = text[text.index("## From Python") :]
    return re.search(r"```python\n(.*?)```", section, re.S).group(1)


def _scans(folder: Path) -> None:
    folder.mkdir()
    picture = np.random.default_rng(0).integers(0, 255, (48, 40), np.uint8)
    Image.fromarray(picture).save(folder / "photo.png")
    volume = np.random.default_rng(1).random((30, 26, 3)).astype(np.float32)
    nib.Nifti1Image(volume, np.diag([-0.8, 0.8, 2.0, 1.0])).to_filename(folder / "scan.nii.gz")


def test_the_readme_example_runs(checkpoint, tmp_path, monkeypatch, capsys):
    (tmp_path / "ckpt").mkdir()
    shutil.copy(checkpoint, tmp_path / "ckpt" / "Brain_4.pth")
    _scans(tmp_path / "scans")
    monkeypatch.chdir(tmp_path)
    exec(compile(_example(), "README.md", "exec"), {})
    printed = capsys.readouterr().out
    assert "scan.nii.gz 3" in printed  # the volume line: 3 slices
    assert (tmp_path / "predictions" / "predictions.csv").is_file()


def test_predict_without_out_writes_nothing_and_equals_the_files(checkpoint, tmp_path):
    _scans(tmp_path / "scans")
    before = sorted(p.name for p in tmp_path.rglob("*"))
    result = iqeclip.predict(checkpoint, [tmp_path / "scans"])
    assert sorted(p.name for p in tmp_path.rglob("*")) == before
    assert result.out is None and len(result.slices) == 4 and len(result.volumes) == 1
    for p in result.slices:
        assert p.map is not None and p.map.dtype == np.float32 and p.display is not None
        assert p.map.shape == p.display.shape[:2]
        assert 0.0 <= p.map.min() <= p.map.max() <= 1.0

    written = iqeclip.predict(checkpoint, [tmp_path / "scans"], out=tmp_path / "out", outputs="npy")
    with (tmp_path / "out" / "predictions.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == list(CSV_COLUMNS)
    assert [{k: str(v) for k, v in p.row().items()} for p in written.slices] == rows
    assert [p.score for p in written.slices] == [float(r["score"]) for r in rows]
    assert [p.score for p in written.slices] == [p.score for p in result.slices]
    for p in written.slices:  # the files hold the values' maps; the CLI run keeps none
        assert p.map is None
        kept = next(q for q in result.slices if (q.path, q.slice) == (p.path, p.slice))
        np.testing.assert_array_equal(np.load(tmp_path / "out" / p.files["npy"]), kept.map)


def test_resume_and_overwrite_need_an_output_folder(checkpoint, tmp_path):
    _scans(tmp_path / "scans")
    with pytest.raises(UserError, match="resume needs"):
        iqeclip.predict(checkpoint, [tmp_path / "scans"], resume=True)


@pytest.fixture
def stats_writer():
    """A toy per-slice output registered from outside the package: the map's mean as text."""

    def write(path: Path, picture: writers.Picture) -> None:
        path.write_text(f"{float(picture.map.mean())!r}\n")

    iqeclip.register_writer("stats", "stats.txt", write)
    yield
    files.SLICE_FILES.pop("stats")
    writers._WRITE.pop("stats")


def test_a_writer_registered_from_outside(stats_writer, checkpoint, tmp_path):
    _scans(tmp_path / "scans")
    out = tmp_path / "out"
    result = iqeclip.predict(checkpoint, [tmp_path / "scans"], out=out, outputs="npy,stats")
    for p in result.slices:
        assert list(p.files)[:2] == ["npy", "stats"]
        mean = float((out / p.files["stats"]).read_text())
        assert mean == float(np.load(out / p.files["npy"]).mean())
    # its files are predict's: another run into the folder is refused, --overwrite removes them
    # 4 npy + 4 stats + the volume's NIfTI + predictions.csv + volumes.csv: 11 files
    with pytest.raises(UserError, match=r"holds photo_map\.npy and 10 more"):
        iqeclip.predict(checkpoint, [tmp_path / "scans"], out=out, outputs="stats")
    iqeclip.predict(checkpoint, [tmp_path / "scans"], out=out, outputs="npy", overwrite=True)
    assert not list(out.glob("*_stats.txt"))
    with pytest.raises(ValueError, match="already registered"):
        iqeclip.register_writer("stats", "other.txt", lambda path, picture: None)
