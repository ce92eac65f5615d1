"""A format registered from outside the package flows through ``predict`` with no edit inside
it: found in a folder, checked before the first batch, read, scored and written, and refused
with one line naming the file when it cannot be read."""

from __future__ import annotations

import csv

import numpy as np
import pytest

from iqeclip.cli.main import main
from tests.integration.conftest import predict_argv
from tests.unit.data.readers.test_plugins import RAMP, ToyReader, registered, write_toy


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.fixture
def toys(tmp_path):
    """A folder of ``.toy`` files: one picture, two slices, one broken."""
    folder = tmp_path / "toys"
    folder.mkdir()
    write_toy(folder / "flat.toy", RAMP)
    write_toy(folder / "pair.toy", RAMP, RAMP[::-1] * 3)
    (folder / "broken.toy").write_text("1 2\nnot numbers\n")
    return folder


def test_a_toy_format_is_predicted_like_a_built_in_one(checkpoint, toys, tmp_path, capsys):
    out = tmp_path / "out"
    argv = predict_argv(checkpoint, toys, out=out)
    assert main(argv) == 2  # before registering, no input is found
    assert f"no input files in {toys} (supported: " in capsys.readouterr().err
    with registered(ToyReader()):
        assert main(argv) == 2  # --on_bad_input error: the check names the broken file
        err = capsys.readouterr().err
        assert f"image {toys / 'broken.toy'}: cannot read toy" not in err
        assert f"image {toys / 'broken.toy'}: not numbers" in err
        assert main([*argv, "--on_bad_input", "skip"]) == 0
    skipped = _rows(out / "skipped_inputs.csv")
    assert [r["path"] for r in skipped] == [str(toys / "broken.toy")]
    assert skipped[0]["reason"].startswith("not numbers")
    rows = _rows(out / "predictions.csv")
    assert [(r["path"], r["slice"]) for r in rows] == [
        (str(toys / "flat.toy"), ""),
        (str(toys / "pair.toy"), "0"),
        (str(toys / "pair.toy"), "1"),
    ]
    for row, name in zip(rows, ["flat", "pair_s000", "pair_s001"], strict=True):
        assert float(row["score"]) >= 0 and row["source"] == row["path"]
        expected = [f"{name}_overlay.png", f"{name}_map.png", f"{name}_map.npy"]
        assert row["outputs"].split(";") == expected
        assert np.load(out / f"{name}_map.npy").shape == (6, 8)  # the map at the input's size
    volumes = _rows(out / "volumes.csv")
    assert [(v["path"], v["n_slices"]) for v in volumes] == [(str(toys / "pair.toy"), "2")]
