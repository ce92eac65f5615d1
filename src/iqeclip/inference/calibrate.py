"""``iqeclip calibrate``: choose decision thresholds and store them in the checkpoint.

From a folder of normal images (``--normal DIR``; rule ``--target_fpr``), from a dataset's
labelled ``valid`` split (``--data_path``, ``--obj``) or from the ``valid`` rows of a manifest
(``--manifest``; rule ``--target_fpr`` or ``--f1`` for both). An image threshold is always stored;
a pixel threshold too where the calibration data has masks, and a volume threshold where a
manifest lists volumes (for the ``--volume_score`` rule). ``predict`` then fills its decision
columns with ``score >= threshold``.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.data.layout import has_masks, list_split
from iqeclip.data.manifest import Volume, has_pixel_masks, read_manifest
from iqeclip.data.readers import Reading
from iqeclip.data.sample import Sample
from iqeclip.data.validate import validate_samples
from iqeclip.engine.evaluate import KeptMaps, predict_samples
from iqeclip.engine.trainer import sample_key
from iqeclip.errors import UserError, param
from iqeclip.inference.inputs import checkpoint_reading, scored_items
from iqeclip.inference.listing import expand_inputs
from iqeclip.inference.thresholds import calibrate, describe, volume_aggregate
from iqeclip.model.checkpoint import update_checkpoint_meta
from iqeclip.model.detector import IQEClip
from iqeclip.runtime.device import resolve_device
from iqeclip.runtime.files import check_writable

logger = logging.getLogger(__name__)


def calibrate_checkpoint(
    ckpt_path: str | Path,
    *,
    normal: str | Path | None = None,
    data_path: str | Path | None = None,
    obj: str | None = None,
    layout: str | None = None,
    manifest: str | Path | None = None,
    target_fpr: float = 0.05,
    f1: bool = False,
    batch_size: int = 8,
    device: str = "auto",
    setting: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    on_bad_input: str = "error",
    min_lesion_px: int = 1,
    margin: int = 0,
    volume_score: str = "max",
    window: str | None = None,
    percentile: str | None = None,
    axis: int | None = None,
    orientation: str | None = None,
    label_values: str | None = None,
) -> dict[str, Any]:
    """Compute and store thresholds; returns the stored ``thresholds`` record.

    The calibration data is one of: ``normal`` (a folder of normal inputs, read as ``predict``
    reads them), ``data_path`` + ``obj`` (the labelled ``valid`` split, folder layout ``layout``) or
    ``manifest`` (its ``valid`` rows; its volumes also calibrate the volume score, scored as
    ``predict`` scores them with ``volume_score``). The intensity rule is the checkpoint's
    unless ``window`` / ``percentile`` is given; ``label_values``: as ``--label_values``.
    """
    given = [normal is not None, data_path is not None or obj is not None, manifest is not None]
    if sum(given) != 1 or (given[1] and (data_path is None or obj is None)):
        raise UserError(
            f"calibrate needs one source: {param('normal')} DIR, both {param('data_path')} and "
            f"{param('obj')}, or {param('manifest')}"
        )
    if layout is not None and data_path is None:
        raise UserError(f"{param('layout')} is the layout of {param('data_path')}: give both")
    check_writable(param("ckpt_path"), ckpt_path)  # the thresholds are stored in it
    rule = "f1" if f1 else "target_fpr"
    if f1 and normal is not None:
        raise UserError(
            f"{param('f1')} needs labelled data ({param('data_path')} and {param('obj')}, or "
            f"{param('manifest')})"
        )
    volume_aggregate(volume_score)  # checked before any work
    model = IQEClip.from_checkpoint(ckpt_path, resolve_device(device), **(model_overrides or {}))
    reading = checkpoint_reading(model.meta, window, percentile, axis, orientation, label_values)
    setting = setting or model.meta.get("run", {}).get("setting", "zero")
    if normal is not None:
        found = _normal_scores(model, normal, setting, batch_size, reading, on_bad_input)
        pixel_threshold = volume = None
        source = f"normal images in {normal}"
    else:
        found, pixel_threshold, volume, source = _labelled_scores(
            model,
            (data_path, obj, layout),
            manifest,
            setting,
            batch_size,
            reading,
            (on_bad_input, min_lesion_px, margin),
            (rule, target_fpr, volume_score),
        )
    scores, labels, keys = found
    _warn_small_or_overlapping(model.meta, scores, labels, keys, rule, target_fpr)
    record = {
        "image": calibrate(scores, labels, rule, target_fpr),
        "pixel": pixel_threshold,
        "volume": volume,
        "rule": rule,
        "target_fpr": target_fpr if rule == "target_fpr" else None,
        "n_images": len(scores),
        "source": source,
        "setting": setting,
    }
    _store(ckpt_path, record)
    return record


Scores = tuple[np.ndarray, np.ndarray, list[str]]  # image scores, labels, the images' keys


def _normal_scores(
    model: IQEClip,
    normal: str | Path,
    setting: str,
    batch_size: int,
    reading: Reading,
    on_bad_input: str,
) -> Scores:
    """The scores of a folder of normal inputs, read and scored as predict does (blank slices
    left out)."""
    skipped: list = []
    items = scored_items(
        model,
        expand_inputs([normal], unreadable=skipped if on_bad_input == "skip" else None),
        setting,
        batch_size,
        reading,
        skipped=skipped,
        on_bad_input=on_bad_input,
    )
    found = [(item, amap, score) for item, amap, score in items if not item.blank]
    scores = np.array([s for _, _, s in found])
    keys = [sample_key(Sample(i.source, 0, None, i.index)) for i, _, _ in found]
    if skipped:
        logger.info(f"skipped {len(skipped)} unreadable images (--on_bad_input skip)")
    return scores, np.zeros(len(scores), np.int64), keys


def _labelled_scores(
    model: IQEClip,
    dataset: tuple[str | Path | None, str | None, str | None],
    manifest: str | Path | None,
    setting: str,
    batch_size: int,
    reading: Reading,
    policy: tuple[str, int, int],
    rule_of: tuple[str, float, str],
) -> tuple[Scores, float | None, dict[str, Any] | None, str]:
    """The scores of a labelled ``valid`` split (a dataset's, or a manifest's rows), the pixel
    threshold where it has masks, the volume threshold where a manifest lists volumes, and the
    source's description. ``dataset``: data_path, obj, layout; ``policy``: on_bad_input,
    min_lesion_px, margin; ``rule_of``: rule, target_fpr, volume_score."""
    on_bad_input, min_lesion_px, margin = policy
    rule, target_fpr, volume_score = rule_of
    volumes: list[Volume] = []
    if manifest is not None:
        listed = read_manifest(manifest, reading, min_lesion_px, margin, on_bad_input)
        samples, pixel = listed.split("valid"), has_pixel_masks(listed.split("valid"))
        volumes = listed.split_volumes("valid")
        logger.info(listed.summary("valid"))
        source = f"valid rows of {manifest}"
    else:
        data_path, obj, layout = dataset
        pixel = has_masks(data_path, obj, layout)
        missing = "keep" if on_bad_input == "skip" else "error"
        split = list_split(data_path, obj, "valid", missing, layout)
        samples = [dataclasses.replace(s, reading=reading) for s in split]
        source = f"{obj} valid split"
    samples, skipped_samples = validate_samples(samples, model.config.img_size, on_bad_input, pixel)
    if skipped_samples:
        logger.info(f"skipped {len(skipped_samples)} unusable images (--on_bad_input skip)")
    if not samples:
        raise UserError(f"calibrate: no usable image in the {source}")
    keys = [sample_key(s) for s in samples]
    kept = KeptMaps(len(samples), model.config.img_size) if pixel else None
    scores, labels = predict_samples(
        model, samples, setting, batch_size, desc="calibrate", sink=kept
    )
    pixel_threshold = None
    if kept is not None:
        pixel_threshold = calibrate(
            kept.maps.ravel(), kept.masks.ravel().astype(np.int64), rule, target_fpr
        )
    volume = None
    classes = {v.label for v in volumes}
    if volumes and (classes == {0, 1} or (rule == "target_fpr" and 0 in classes)):
        aggregate = volume_aggregate(volume_score)
        volume = _volume_threshold(
            model, volumes, setting, batch_size, reading, aggregate, rule, target_fpr
        )
        volume["score"] = volume_score
    elif volumes:
        logger.info(
            f"no volume threshold: the {len(volumes)} valid volumes hold no "
            f"{'normal' if 0 not in classes else 'abnormal'} volume (needed by the "
            f"{rule} rule); volumes.csv will use the image threshold"
        )
    return (scores, labels, keys), pixel_threshold, volume, source


def _store(ckpt_path: str | Path, record: dict[str, Any]) -> None:
    """Store ``record`` as the checkpoint's thresholds, the earlier ones in its history."""
    pixel_threshold, volume = record["pixel"], record["volume"]
    earlier: dict[str, Any] | None = None

    def keep_earlier(meta: dict[str, Any]) -> dict[str, Any]:
        """Read under the checkpoint's lock: the calibration stored now, that of a run that
        finished meanwhile included, moves to the history."""
        nonlocal earlier
        earlier = meta.get("thresholds")
        history = [*meta.get("calibration_history", []), *([earlier] if earlier else [])]
        return {"thresholds": record, "calibration_history": history}

    history = update_checkpoint_meta(ckpt_path, keep_earlier)["calibration_history"]
    if earlier:
        logger.info(
            f"the earlier calibration ({describe(earlier)}) is kept in the checkpoint's "
            f"calibration_history ({len(history)} entries)"
        )
    pixel_text = f", pixel threshold {pixel_threshold:.6f}" if pixel_threshold is not None else ""
    if volume is not None:
        pixel_text += (
            f", volume threshold {volume['threshold']:.6f} ({volume['score']} of the slice scores, "
            f"{volume['n_volumes']} volumes)"
        )
    logger.info(
        f"image threshold {record['image']:.6f}{pixel_text} ({describe(record)}) stored in {ckpt_path}"
    )


def _volume_threshold(
    model: IQEClip,
    volumes: list[Volume],
    setting: str,
    batch_size: int,
    reading: Reading,
    aggregate: Callable[[np.ndarray], float],
    rule: str,
    target_fpr: float,
) -> dict[str, Any]:
    """The volume threshold: each volume scored as ``predict`` scores it (every slice)."""
    labels_of = {v.path: v.label for v in volumes}
    found: dict[str, tuple[int, list[float]]] = {}  # a folder's series are volumes of their own
    items = scored_items(model, list(labels_of), setting, batch_size, reading)
    for item, _, score in items:
        key = item.key or str(item.source)
        slices = found.setdefault(key, (labels_of[item.source], []))[1]
        if not item.blank:  # constant slices enter no volume score, as in predict
            slices.append(score)
    blank = [key for key, (_, slices) in found.items() if not slices]
    if blank:
        logger.warning(
            f"warning: {len(blank)} calibration volumes hold only blank (constant) slices and "
            f"are left out (first: {blank[0]})"
        )
    kept = [(label, slices) for label, slices in found.values() if slices]
    scores = np.array([aggregate(np.array(slices)) for _, slices in kept])
    labels = np.array([label for label, _ in kept], np.int64)
    _warn_too_few(labels, "volumes", rule, target_fpr)
    return {"threshold": calibrate(scores, labels, rule, target_fpr), "n_volumes": len(kept)}


def _warn_too_few(labels: np.ndarray, what: str, rule: str, target_fpr: float) -> None:
    """Warn when the normal images (or volumes) are too few to resolve ``--target_fpr``."""
    n_normal = int((labels == 0).sum())
    if rule == "target_fpr" and target_fpr > 0 and n_normal < math.ceil(1 / target_fpr):
        logger.warning(
            f"warning: {n_normal} normal calibration {what} cannot resolve --target_fpr "
            f"{target_fpr:g} (it needs at least {math.ceil(1 / target_fpr)}); the threshold is "
            "the highest normal score or near it"
        )


def _warn_small_or_overlapping(
    meta: dict[str, Any],
    scores: np.ndarray,
    labels: np.ndarray,
    keys: list[str],
    rule: str,
    target_fpr: float,
) -> None:
    """Warn when the normal images cannot resolve the target rate, and when calibration images
    were training support images (their scores are optimistic)."""
    _warn_too_few(labels, "images", rule, target_fpr)
    shared = set(keys) & set(meta.get("support") or [])
    if shared:
        logger.warning(
            f"warning: {len(shared)} of the {len(keys)} calibration images are in the "
            "checkpoint's training support set; thresholds calibrated on them are optimistic"
        )
