"""The one table of the files ``predict`` writes, by name: per slice (:data:`SLICE_FILES`,
``<name>_<suffix>``), per volume (:data:`VOLUME_FILES`, ``<stem>_<suffix>``) and per run
(:data:`TABLES`). The output folder's checks (:mod:`~iqeclip.inference.outputs`), the input walk
(which leaves predict's own outputs out) and the writers (:mod:`~iqeclip.inference.writers`,
which adds a kind with :func:`~iqeclip.inference.writers.register_writer`) all read it here.
"""

from __future__ import annotations

from pathlib import Path

SLICE_FILES = {
    "overlay": "overlay.png",
    "map": "map.png",
    "npy": "map.npy",
    "mask": "mask.png",
    "input": "input.png",
}
"""Every per-slice output kind and its suffix, in the order of a row's ``outputs``."""
DEFAULT_OUTPUTS = ("overlay", "map", "npy")  # and mask, when the checkpoint has a pixel threshold
VOLUME_FILES = {"anomaly": "anomaly.nii.gz", "volume_mask": "mask.nii.gz"}
"""A volume's NIfTI files: its maps, and its mask with a pixel threshold."""
PREDICTIONS, VOLUMES, SKIPPED = "predictions.csv", "volumes.csv", "skipped_inputs.csv"
TABLES = (PREDICTIONS, VOLUMES, SKIPPED, "config.yaml")
"""The files of a predict run that do not depend on the inputs (config.yaml: its options)."""


def output_suffixes() -> tuple[str, ...]:
    """The suffixes of every file predict writes per slice or volume."""
    return (*SLICE_FILES.values(), *VOLUME_FILES.values())


def is_output_name(name: str) -> bool:
    """Whether a file name has the form of a per-slice or volume output of predict."""
    return name.endswith(tuple(f"_{suffix}" for suffix in output_suffixes()))


def kind_of(name: str) -> str:
    """The output kind of a file name predict wrote (``scan_s003_map.npy`` -> ``npy``)."""
    named = {**SLICE_FILES, **VOLUME_FILES}
    # the longest suffix first: ``_mask.nii.gz`` is a volume mask, not ``.nii.gz`` of anything
    for kind, suffix in sorted(named.items(), key=lambda kv: -len(kv[1])):
        if name.endswith(f"_{suffix}"):
            return kind
    raise ValueError(f"{name}: not a file predict writes")


def nifti_temporary(path: Path) -> Path:
    """Where predict writes a NIfTI before renaming it to ``path``: ``.<name>.tmp.nii.gz``
    (nibabel picks the compression by the suffix, so it must end in ``.nii.gz``)."""
    return path.with_name(f".{path.name}.tmp.nii.gz")
