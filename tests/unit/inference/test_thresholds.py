"""Threshold rules on synthetic scores with hand-derived answers, and the checks of a stored
calibration."""

from __future__ import annotations

import math

import numpy as np
import pytest
from PIL import Image

from iqeclip.cli.main import main
from iqeclip.errors import UserError
from iqeclip.inference.detectors import load_detector
from iqeclip.inference.thresholds import (
    calibrate,
    check_thresholds,
    f1_threshold,
    fpr_threshold,
)
from iqeclip.model.checkpoint import save_checkpoint, update_checkpoint_meta
from iqeclip.model.detector import IQEClip

_DROP = object()  # a key to leave out


def test_fpr_threshold_lets_through_the_allowed_number_of_normals():
    normal = np.arange(100) / 100  # 0.00 .. 0.99
    t = fpr_threshold(normal, 0.05)
    # floor(0.05 * 100) = 5 normals may reach the threshold: 0.95 .. 0.99; 0.94 must not
    assert 0.94 < t <= 0.95
    assert (normal >= t).sum() == 5
    assert (normal >= fpr_threshold(normal, 0.0)).sum() == 0


def test_fpr_threshold_with_ties_never_exceeds_the_rate():
    normal = np.array([0.1] * 10 + [0.9] * 10)
    for fpr in (0.0, 0.05, 0.3, 0.5, 0.75):
        t = fpr_threshold(normal, fpr)
        assert (normal >= t).mean() <= fpr


def test_f1_threshold_by_hand():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.4])
    labels = np.array([0, 0, 0, 1, 1, 1])
    # >= 0.4 catches all three abnormal and no normal: F1 = 1
    assert f1_threshold(scores, labels) == pytest.approx(0.4)


def test_rules_and_errors():
    scores, labels = np.array([0.2, 0.8]), np.array([0, 1])
    assert calibrate(scores, labels, "target_fpr", 0.0) > 0.2
    with pytest.raises(UserError, match=r"^target_fpr must be in \[0, 1\), got 1.5$"):
        fpr_threshold(scores, 1.5)
    with pytest.raises(UserError, match="normal and abnormal"):
        f1_threshold(scores, np.array([1, 1]))


def test_non_finite_scores_give_no_threshold():
    labels = np.array([0, 0, 1])
    for bad in (np.nan, np.inf):
        scores = np.array([0.1, bad, 0.9])
        for rule in ("target_fpr", "f1"):
            with pytest.raises(UserError) as caught:
                calibrate(scores, labels, rule, 0.0)
            assert str(caught.value) == (
                "calibrate: 1 of the 3 calibration scores are NaN or infinite; "
                "no threshold is stored"
            )


SOUND = {
    "image": 0.5,
    "pixel": 0.4,
    "volume": {"threshold": 0.6, "n_volumes": 2, "score": "topk:2"},
    "rule": "target_fpr",
    "target_fpr": 0.05,
    "n_images": 10,
    "source": "normal images in x",
    "setting": "zero",
}


def test_a_sound_calibration_passes():
    check_thresholds(None, "--ckpt_path x.pth")  # not calibrated
    check_thresholds(SOUND, "--ckpt_path x.pth")
    f1 = {**SOUND, "pixel": None, "volume": None, "rule": "f1", "target_fpr": None, "image": 1}
    check_thresholds(f1, "--ckpt_path x.pth")


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"image": float("nan")}, "thresholds.image is nan, not a finite number"),
        ({"image": float("-inf")}, "thresholds.image is -inf, not a finite number"),
        ({"image": "0.5"}, "thresholds.image is '0.5', not a finite number"),
        ({"image": True}, "thresholds.image is True, not a finite number"),
        ({"image": None}, "thresholds.image is None, not a finite number"),
        ({"pixel": float("inf")}, "thresholds.pixel is inf, not a finite number"),
        ({"pixel": [0.4]}, "thresholds.pixel is [0.4], not a finite number"),
        (
            {"volume": {**SOUND["volume"], "threshold": float("nan")}},
            "thresholds.volume.threshold is nan, not a finite number",
        ),
        (
            {"volume": {**SOUND["volume"], "score": "median"}},
            "thresholds.volume.score is 'median', not a volume rule (max or topk:K)",
        ),
        (
            {"volume": {**SOUND["volume"], "score": None}},
            "thresholds.volume.score is None, not a volume rule (max or topk:K)",
        ),
        ({"volume": "max"}, "thresholds.volume is str, not a JSON object"),
        ({"rule": "auroc"}, "thresholds.rule is 'auroc', not target_fpr or f1"),
        ({"target_fpr": "5%"}, "thresholds.target_fpr is '5%', not a finite number"),
        ({"source": _DROP}, "thresholds.source is missing"),
    ],
)
def test_a_corrupt_calibration_is_refused_naming_the_key(change, message):
    thresholds = {k: v for k, v in {**SOUND, **change}.items() if v is not _DROP}
    with pytest.raises(UserError) as caught:
        check_thresholds(thresholds, "--model m.onnx")
    assert str(caught.value) == f"--model m.onnx: the stored calibration is corrupt: {message}"
    with pytest.raises(UserError, match=r"thresholds is str, not a JSON object"):
        check_thresholds("0.5", "--model m.onnx")


def test_predict_refuses_a_checkpoint_with_a_nan_threshold_before_building_a_model(
    tiny, tmp_path, monkeypatch, capsys
):
    """A NaN threshold made every input ``normal``; calibrating again replaces it."""
    ckpt = save_checkpoint(tmp_path / "x.pth", tiny)
    update_checkpoint_meta(ckpt, lambda meta: {"thresholds": {**SOUND, "image": float("nan")}})
    normal = tmp_path / "normal"
    normal.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        pixels = rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(normal / f"{i}.png")
    out = tmp_path / "out"
    built = IQEClip.build

    def build(cls, *args, **kwargs):
        pytest.fail("a model was built")

    monkeypatch.setattr(IQEClip, "build", classmethod(build))
    assert main(["predict", str(normal), "--ckpt_path", str(ckpt), "--out", str(out)]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        f"error: --ckpt_path {ckpt}: the stored calibration is corrupt: thresholds.image is "
        "nan, not a finite number"
    ]
    assert not out.exists()
    monkeypatch.setattr(IQEClip, "build", built)
    calibrate_argv = ["calibrate", "--ckpt_path", str(ckpt), "--normal", str(normal)]
    assert main([*calibrate_argv, "--device", "cpu"]) == 0
    assert math.isfinite(load_detector("torch", ckpt, None, "cpu").meta["thresholds"]["image"])
