"""``iqeclip calibrate``: choose decision thresholds and store them in the checkpoint.

From a folder of normal images (``--normal DIR``; rule ``--target_fpr``) or from a dataset's
labelled ``valid`` split (``--data_path``, ``--obj``; rule ``--target_fpr`` or ``--f1``). An image
threshold is always stored; a pixel threshold too where the calibration data has masks. ``predict``
then fills its decision column with ``score >= threshold``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.data.layout import has_masks, list_split
from iqeclip.data.validate import validate_samples
from iqeclip.engine.evaluate import KeptMaps, predict_samples
from iqeclip.errors import UserError
from iqeclip.inference.inputs import expand_inputs, scored_items
from iqeclip.inference.thresholds import calibrate, describe
from iqeclip.model.checkpoint import update_checkpoint_meta
from iqeclip.model.detector import IQEClip
from iqeclip.runtime.device import resolve_device

logger = logging.getLogger(__name__)


def calibrate_checkpoint(
    ckpt_path: str | Path,
    *,
    normal: str | Path | None = None,
    data_path: str | Path | None = None,
    obj: str | None = None,
    target_fpr: float = 0.05,
    f1: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    setting: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    on_bad_input: str = "error",
) -> dict[str, Any]:
    """Compute and store thresholds; returns the stored ``thresholds`` record."""
    if (normal is None) == (data_path is None or obj is None):
        raise UserError("calibrate needs either --normal DIR or both --data_path and --obj")
    rule = "f1" if f1 else "target_fpr"
    if f1 and normal is not None:
        raise UserError(
            "--f1 needs labelled data (--data_path and --obj), not only --normal images"
        )
    model = IQEClip.from_checkpoint(ckpt_path, resolve_device(device), **(model_overrides or {}))
    setting = setting or model.meta.get("run", {}).get("setting", "zero")
    pixel_threshold = None
    if normal is not None:
        skipped: list = []
        items = scored_items(
            model,
            expand_inputs([normal]),
            setting,
            batch_size,
            skipped=skipped,
            on_bad_input=on_bad_input,
        )
        scores = np.array([s for _, _, s in items])
        if skipped:
            logger.info(f"skipped {len(skipped)} unreadable images (--on_bad_input skip)")

        labels = np.zeros(len(scores), np.int64)
        source = f"normal images in {normal}"
    else:
        pixel = has_masks(data_path, obj)
        missing = "keep" if on_bad_input == "skip" else "error"
        samples, skipped_samples = validate_samples(
            list_split(data_path, obj, "valid", missing), model.config.img_size, on_bad_input, pixel
        )
        if skipped_samples:
            logger.info(f"skipped {len(skipped_samples)} unusable images (--on_bad_input skip)")
        kept = KeptMaps(len(samples), model.config.img_size) if pixel else None
        scores, labels = predict_samples(
            model, samples, setting, batch_size, desc="calibrate", sink=kept
        )
        source = f"{obj} valid split"
        if kept is not None:
            pixel_threshold = calibrate(
                kept.maps.ravel(), kept.masks.ravel().astype(np.int64), rule, target_fpr
            )
    record = {
        "image": calibrate(scores, labels, rule, target_fpr),
        "pixel": pixel_threshold,
        "rule": rule,
        "target_fpr": target_fpr if rule == "target_fpr" else None,
        "n_images": len(scores),
        "source": source,
        "setting": setting,
    }
    update_checkpoint_meta(ckpt_path, thresholds=record)
    pixel_text = f", pixel threshold {pixel_threshold:.6f}" if pixel_threshold is not None else ""
    logger.info(
        f"image threshold {record['image']:.6f}{pixel_text} ({describe(record)}) stored in {ckpt_path}"
    )
    return record
