"""The configurations of the commands that score with a checkpoint: ``predict`` and
``calibrate``."""

# ruff: noqa: RUF009 (Option(...)(default) returns a dataclasses.field, as in config/apps.py)
from __future__ import annotations

from dataclasses import dataclass

from iqeclip.config.option import Checked, Option
from iqeclip.config.shared import (
    AXIS,
    BACKEND,
    BATCH_SIZE,
    CKPT_PATH,
    DATA_PATH,
    DEVICE,
    LABEL_VALUES,
    LAYOUT,
    MANIFEST,
    MARGIN,
    MAX_MEGAPIXELS,
    MAX_SLICES,
    MAX_TOTAL_MEGAPIXELS,
    MIN_LESION_PX,
    MODEL_FILE,
    OBJ,
    ON_BAD_INPUT,
    ORIENTATION,
    OUT,
    OVERWRITE,
    PERCENTILE,
    SETTING,
    VOLUME_SCORE,
    WINDOW,
    WORKERS,
)

__all__ = ["CalibrateConfig", "PredictConfig"]


@dataclass
class PredictConfig(Checked):
    """``iqeclip predict``: score your own images, DICOM series and NIfTI volumes."""

    ckpt_path: str | None = CKPT_PATH(None)
    inputs: list[str] = Option(
        "image files, folders (recursive), DICOM files or series folders, NIfTI volumes",
        positional=True,
        nargs="*",
    )([])
    out: str | None = OUT(None)
    masks: str | None = Option(
        "folder of ground-truth masks named like the inputs (contour on the overlay)"
    )(None)
    label_values: str | None = LABEL_VALUES(None, help=LABEL_VALUES.help + "; with --masks")
    axis: int | None = AXIS(None, help=AXIS.help + " (None: the checkpoint's)")
    orientation: str | None = ORIENTATION(None, help=ORIENTATION.help + " (None: the checkpoint's)")
    window: str | None = WINDOW(None)
    percentile: str | None = PERCENTILE(None)
    volume_score: str | None = VOLUME_SCORE(
        None,
        help="a volume's score from its slice scores (volumes.csv): max, or topk:K, the "
        "mean of the K highest (None: the calibrated rule, else max)",
    )
    outputs: str | None = Option(
        "what to write per slice and per DICOM series, comma-separated from overlay, map, npy, "
        "mask, input (the picture as read), dicom-seg (a DICOM Segmentation of the mask; needs "
        "a calibrated pixel threshold), dicom-pmap (a DICOM Parametric Map of the anomaly "
        "probability); the DICOM objects are written for DICOM series only (None: for 2-D "
        "images overlay,map,npy, and mask with a calibrated pixel threshold; for the slices of "
        "a volume no per-slice files, or the overlays with --masks). Every volume gets its "
        "map, and with a calibrated pixel threshold its mask, in its own format (.nii.gz for "
        "NIfTI and DICOM series, .nrrd, .mha)"
    )(None)
    batch_size: int = BATCH_SIZE(8, help="images per forward pass")
    workers: int | None = WORKERS(None)
    device: str = DEVICE("auto")
    setting: str | None = SETTING(None)
    overwrite: bool = OVERWRITE(
        False, help="remove the outputs an earlier run listed in --out/predictions.csv, then run"
    )
    resume: bool = Option("continue an interrupted predict run in --out: score what is missing")(
        False
    )
    on_bad_input: str = ON_BAD_INPUT("error")
    backend: str = BACKEND("torch")
    model: str | None = MODEL_FILE(None)
    max_megapixels: float = MAX_MEGAPIXELS(50.0)
    max_slices: int = MAX_SLICES(2000)
    max_total_megapixels: float = MAX_TOTAL_MEGAPIXELS(500.0)


@dataclass
class CalibrateConfig(Checked):
    """``iqeclip calibrate``: choose decision thresholds and store them in the checkpoint."""

    ckpt_path: str | None = CKPT_PATH(None)
    normal: str | None = Option("folder of normal images (threshold by --target_fpr)")(None)
    data_path: str | None = DATA_PATH(
        None, help="folder with <Name>_AD or <Name> datasets: calibrate on --obj's valid split"
    )
    obj: str | None = OBJ(None, help="dataset name for --data_path")
    layout: str | None = LAYOUT(None)
    target_fpr: float = Option(
        "false-positive rate allowed on normal calibration images", minimum=0, maximum=1, below=True
    )(0.05)
    f1: bool = Option("maximise F1 on the labelled valid split instead of --target_fpr")(False)
    manifest: str | None = MANIFEST(
        None,
        help="calibrate on the valid rows of this CSV manifest (docs/workflows.md); its "
        "volumes also calibrate the volume score",
    )
    min_lesion_px: int = MIN_LESION_PX(1)
    margin: int = MARGIN(0)
    label_values: str | None = LABEL_VALUES(None)
    volume_score: str = VOLUME_SCORE("max")
    window: str | None = WINDOW(None)
    percentile: str | None = PERCENTILE(None)
    axis: int | None = AXIS(None, help=AXIS.help + " (None: the checkpoint's)")
    orientation: str | None = ORIENTATION(None, help=ORIENTATION.help + " (None: the checkpoint's)")
    batch_size: int = BATCH_SIZE(8, help="images per forward pass")
    device: str = DEVICE("auto")
    setting: str | None = SETTING(None)
    on_bad_input: str = ON_BAD_INPUT("error")
