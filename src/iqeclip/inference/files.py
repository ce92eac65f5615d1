"""The one table of the files ``predict`` writes, by name: per slice (:data:`SLICE_FILES`,
``<name>_<suffix>``), per volume (:data:`VOLUME_FILES` in one of :data:`VOLUME_FORMATS`,
``<stem>_anomaly.nrrd``), per DICOM series (:data:`DICOM_FILES`, ``<stem>_seg.dcm``) and per run
(:data:`TABLES`), and which of them a run writes (:class:`Outputs`, ``--outputs``). The output
folder's checks (:mod:`~iqeclip.inference.outputs`), the input walk (which leaves predict's own
outputs out) and the writers (:mod:`~iqeclip.inference.writers`, which adds a kind with
:func:`~iqeclip.inference.writers.register_writer`; :mod:`~iqeclip.inference.volume_files`, which
adds a volume format) all read it here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
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
"""The per-slice files of a 2-D input by default; a volume's slices get none by default."""
VOLUME_FILES = {"anomaly": "anomaly", "volume_mask": "mask"}
"""A volume's files, before their format's suffix: its maps, and its mask with a pixel
threshold (``<stem>_anomaly.nii.gz``, ``<stem>_mask.nrrd``, ...)."""
VOLUME_FORMATS = [".nii.gz", ".nrrd", ".mha"]
"""The formats a volume's files are written in, by suffix: the input's own
(:attr:`~iqeclip.data.readers.base.Geometry.suffix`; NIfTI for a DICOM series). A format added
with :func:`~iqeclip.inference.volume_files.register_volume_writer` joins it."""
DICOM_FILES = {"dicom-seg": "seg.dcm", "dicom-pmap": "pmap.dcm"}
"""A DICOM series' objects, on request (``--outputs dicom-seg,dicom-pmap``): a Segmentation of
the predicted mask and a Parametric Map of the anomaly probability."""
PREDICTIONS, VOLUMES, SKIPPED = "predictions.csv", "volumes.csv", "skipped_inputs.csv"
TABLES = (PREDICTIONS, VOLUMES, SKIPPED, "config.yaml")
"""The files of a predict run that do not depend on the inputs (config.yaml: its options)."""


@dataclass(frozen=True)
class Outputs:
    """The files a run writes, chosen before any work from ``--outputs``.

    Every volume gets its map and, with a calibrated pixel threshold, its mask
    (:data:`VOLUME_FILES`); ``--outputs`` chooses the per-slice files and the DICOM objects.

    Attributes:
        images: The per-slice kinds of a 2-D input (or a slice of no volume).
        volumes: The per-slice kinds of a volume's slices (none by default: a CT of 166 slices
            would get 500 files).
        dicom: The DICOM objects of each DICOM series (keys of :data:`DICOM_FILES`).
    """

    images: frozenset[str]
    volumes: frozenset[str]
    dicom: frozenset[str] = frozenset()

    def of(self, in_volume: bool) -> frozenset[str]:
        """The per-slice kinds of an item: a slice of a volume, or not."""
        return self.volumes if in_volume else self.images

    def identity(self) -> list[list[str]]:
        """What makes two runs' choices the same (``--resume`` compares it)."""
        return [sorted(self.images), sorted(self.volumes), sorted(self.dicom)]


def volume_name(stem: str, kind: str, suffix: str) -> str:
    """The file name of a volume's ``kind`` in the format of ``suffix``."""
    return f"{stem}_{VOLUME_FILES[kind]}{suffix}"


def _named() -> dict[str, list[str]]:
    """Every output kind and the suffixes its files may have."""
    named = {kind: [suffix] for kind, suffix in SLICE_FILES.items()}
    for kind, base in VOLUME_FILES.items():
        named[kind] = [f"{base}{fmt}" for fmt in VOLUME_FORMATS]
    named.update((kind, [suffix]) for kind, suffix in DICOM_FILES.items())
    return named


def output_suffixes() -> tuple[str, ...]:
    """The suffixes of every file predict writes per slice, volume or DICOM series."""
    return tuple(suffix for suffixes in _named().values() for suffix in suffixes)


def is_output_name(name: str) -> bool:
    """Whether a file name has the form of a per-slice, volume or DICOM output of predict."""
    return name.endswith(tuple(f"_{suffix}" for suffix in output_suffixes()))


def kind_of(name: str) -> str:
    """The output kind of a file name predict wrote (``scan_s003_map.npy`` -> ``npy``,
    ``scan_mask.nrrd`` -> ``volume_mask``, ``scan_seg.dcm`` -> ``dicom-seg``)."""
    pairs = [(kind, suffix) for kind, suffixes in _named().items() for suffix in suffixes]
    # the longest suffix first: ``_mask.nii.gz`` is a volume mask, not ``.nii.gz`` of anything
    for kind, suffix in sorted(pairs, key=lambda pair: -len(pair[1])):
        if name.endswith(f"_{suffix}"):
            return kind
    raise ValueError(f"{name}: not a file predict writes")


def volume_temporary(path: Path) -> Path:
    """Where predict writes a volume before renaming it to ``path``: ``.<name>.tmp<format>``
    (nibabel and SimpleITK pick the format by the suffix, so it must end in the format's)."""
    fmt = next((f for f in VOLUME_FORMATS if path.name.endswith(f)), path.suffix)
    return path.with_name(f".{path.name}.tmp{fmt}")


def volume_target(name: str) -> str | None:
    """The file a :func:`volume_temporary` named ``name`` was written for; None for any
    other name."""
    formats = "|".join(re.escape(f) for f in VOLUME_FORMATS)
    found = re.fullmatch(rf"\.(.+)\.tmp({formats})", name)
    if found is None or not found.group(1).endswith(found.group(2)):
        return None
    return found.group(1)
