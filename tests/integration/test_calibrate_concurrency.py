"""Calibrations of one checkpoint at once: each waits for the checkpoint's lock and builds on
the one before, so none is lost."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from PIL import Image

import iqeclip.inference.calibrate as calibrate_module
from iqeclip.inference.calibrate import calibrate_checkpoint
from iqeclip.model.checkpoint import read_checkpoint, save_checkpoint


def test_three_calibrations_at_once_are_all_kept(tiny, tmp_path, monkeypatch):
    ckpt = save_checkpoint(tmp_path / "x.pth", tiny)
    normal = tmp_path / "normal"
    normal.mkdir()
    rng = np.random.default_rng(0)
    for i in range(3):
        Image.fromarray(rng.integers(0, 256, (64, 64, 3), dtype=np.uint8)).save(normal / f"{i}.png")
    together = threading.Barrier(3, timeout=120)
    update = calibrate_module.update_checkpoint_meta

    def after_all_have_read(*args, **kwargs):
        together.wait()  # every run has loaded the checkpoint and computed its thresholds
        return update(*args, **kwargs)

    monkeypatch.setattr(calibrate_module, "update_checkpoint_meta", after_all_have_read)
    fprs = [0.0, 0.25, 0.5]
    with ThreadPoolExecutor(len(fprs)) as pool:
        records = list(
            pool.map(
                lambda fpr: calibrate_checkpoint(ckpt, normal=normal, target_fpr=fpr, device="cpu"),
                fprs,
            )
        )
    meta = read_checkpoint(ckpt)[2]
    assert len(meta["calibration_history"]) == 2
    kept = [*meta["calibration_history"], meta["thresholds"]]
    assert sorted(kept, key=lambda r: r["target_fpr"]) == records
