"""The same 16-bit PNG gives the same model input and the same score in every command.

test-few reads a labelled BMAD split with ``load_image``; predict and ``calibrate --normal`` read
files through the reader registry. Both apply the full-range 16-bit rule by default, so the scores
agree exactly. ``--batch_size 1`` everywhere: how images are batched changes the float rounding of
CPU matrix products, which is not what this test is about.
"""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest
from PIL import Image

from iqeclip.cli.main import main
from iqeclip.inference.thresholds import fpr_threshold
from iqeclip.model.checkpoint import read_checkpoint
from tests.integration.conftest import predict_argv


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _to_16_bit(folder, rng):
    """Rewrite every image of ``folder`` as a 16-bit grey PNG using the whole 16-bit range."""
    for path in sorted(folder.iterdir()):
        grey = np.asarray(Image.open(path).convert("L"), dtype=np.uint32)
        wide = grey * 257 + rng.integers(0, 257, size=grey.shape)
        Image.fromarray(np.clip(wide, 0, 65535).astype(np.uint16)).save(path)


def test_test_calibrate_and_predict_score_a_16_bit_png_alike(bench, checkpoint, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(bench / "Brain_AD", data / "Brain_AD")
    rng = np.random.default_rng(0)
    for label in ("good", "Ungood"):
        _to_16_bit(data / "Brain_AD" / "test" / label / "img", rng)
    images = sorted((data / "Brain_AD" / "test").glob("*/img/*.png"))
    assert images and all(Image.open(p).mode.startswith("I;16") for p in images)

    report = tmp_path / "report"
    test = ["test-few", "--data_path", str(data), "--shot", "2", "--ckpt_path", str(checkpoint)]
    assert (
        main(
            [
                *test,
                "--batch_size",
                "1",
                "--report",
                str(report),
                "--log_path",
                str(tmp_path / "log"),
            ]
        )
        == 0
    )
    tested = {r["path"]: r["score"] for r in _rows(report / "scores.csv")}

    out = tmp_path / "predict"
    assert main([*predict_argv(checkpoint, *images, out=out), "--batch_size", "1"]) == 0
    predicted = {r["path"]: r["score"] for r in _rows(out / "predictions.csv")}
    # predictions.csv is exact, the report's scores.csv has six decimals
    assert {p: f"{float(s):.6f}" for p, s in predicted.items()} == tested

    ck = tmp_path / "ck.pth"
    shutil.copy(checkpoint, ck)
    normal = data / "Brain_AD" / "test" / "good" / "img"
    calibrate = ["calibrate", "--ckpt_path", str(ck), "--normal", str(normal), "--batch_size", "1"]
    assert main([*calibrate, "--target_fpr", "0"]) == 0
    stored = read_checkpoint(ck)[2]["thresholds"]["image"]
    normal_scores = [float(s) for p, s in predicted.items() if "/good/" in p]
    assert stored == pytest.approx(fpr_threshold(np.array(normal_scores), 0.0), abs=1e-6)
