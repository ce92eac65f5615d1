"""One input as 2-D items (:func:`read_items`): each slice with its picture, model input and
provenance, ready to be scored.

An input (an image, a DICOM file or series folder, a NIfTI volume, any registered format) gives
one :class:`Item` per slice. A folder holding several DICOM series gives each series its own
output stem (:func:`series_stems`) and row key; the slices of a volume with a geometry share an
:class:`ItemVolume`, what predict needs to write the volume's maps as NIfTI.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from iqeclip.data.readers import (
    DEFAULT_READING,
    Geometry,
    Reader,
    Reading,
    Slice,
    input_stem,
    model_input,
    read_slices,
    reader_for,
    reference,
    slice_to_uint8_rgb,
)
from iqeclip.data.readers.intensity import DEFAULT_INTENSITY
from iqeclip.data.readers.pil import display_rgb, to_uint8
from iqeclip.errors import as_flag

__all__ = ["Item", "ItemVolume", "ct_hint", "read_items", "series_stems"]

logger = logging.getLogger(__name__)

HOUNSFIELD = (-500.0, 300.0)
"""A volume whose raw values reach below the first (air, lung) and above the second (bone,
contrast) is taken to be CT in Hounsfield units."""
_RULES_SAID = {
    "minmax": "each slice is min-max scaled on its own, so contrast changes from slice to slice",
    "file-window": "each slice's own DICOM window (Window Center/Width) is applied",
    "voi-lut": "each slice's own DICOM VOI LUT is applied",
}
_hinted: set[str] = set()  # the rules already explained in this process


def ct_hint(path: Path, members: Sequence[Slice], reading: Reading) -> str | None:
    """What to say about a volume that looks like CT (DICOM modality CT, or raw values over the
    :data:`HOUNSFIELD` range) read without ``--window`` or ``--percentile``: which rule its
    slices were read by, and a window to pass instead; None for anything else."""
    if reading.intensity != DEFAULT_INTENSITY or len(members) < 2:
        return None
    raws = [s.levels.raw for s in members if s.levels.raw is not None]
    if not raws:
        return None
    low, high = min(r[0] for r in raws), max(r[1] for r in raws)
    modality = members[0].dicom.modality if members[0].dicom is not None else None
    if modality != "CT" and not (low <= HOUNSFIELD[0] and high >= HOUNSFIELD[1]):
        return None
    rule = members[0].levels.rule
    said = _RULES_SAID.get(rule, f"the {rule} rule is applied")
    looks = "is a CT" if modality == "CT" else "looks like CT"
    window = as_flag("window")
    return (
        f"{path} {looks} (values {low:g} to {high:g}) and no {window} or "
        f"{as_flag('percentile')} was given: {said}; for one fixed window in Hounsfield units "
        f"pass e.g. {window} 40,400 (soft tissue), {window} -600,1500 (lung) or {window} "
        "400,1800 (bone)"
    )


@dataclass(frozen=True)
class ItemVolume:
    """The volume an item belongs to, as predict writes its maps: its geometry (the file grid,
    affine and header, the view back), its slices and the stem of its NIfTI files."""

    geometry: Geometry
    n_slices: int
    stem: str


@dataclass
class Item:
    """One 2-D input.

    Attributes:
        name: output file stem.
        source: the file (or series folder) it came from.
        index: the slice's index in its file: the voxel index along a NIfTI volume's slicing
            axis, the slice of a DICOM series (in position order), the frame of a multi-frame
            file or the page of a TIFF; ``None`` for a 2-D input.
        display: ``(H, W, 3)`` uint8 picture at the input's resolution, as the model sees it.
        model_input: ``(3, S, S)`` uint8 model input.
        volume: for slices of a volume with a geometry (a NIfTI file, a DICOM series), what
            predict needs to write the volume's maps as NIfTI (:class:`ItemVolume`).
        file: the file the item itself came from (a DICOM slice's own file); ``source`` if None.
        key: the ``path`` of its CSV rows: ``str(source)``, or ``<folder>#<SeriesInstanceUID>``
            for one volume of a folder holding several (so each is its own volume; ``#2``...
            for the parts of a series split by patient, study or plane).
        slice_mm: where the slice lies along its slicing axis (RAS mm), None without geometry.
        blank: a constant slice (empty background): it gets no score and no decision, and
            enters no volume score or threshold.
        group: the series' place within its folder (0 otherwise), for the row order.
        sop_uid: a DICOM item's SOPInstanceUID, else "".
        series_uid: a DICOM item's SeriesInstanceUID, else "".
    """

    name: str
    source: Path
    index: int | None
    display: np.ndarray
    model_input: torch.Tensor
    volume: ItemVolume | None = field(default=None, repr=False)
    file: Path | None = None
    key: str = ""
    group: int = 0
    sop_uid: str = ""
    series_uid: str = ""
    slice_mm: float | None = None
    blank: bool = False


def _grey_to_rgb(image: np.ndarray) -> np.ndarray:
    """The picture of a slice as the model sees it (:func:`~iqeclip.data.readers.pil.to_uint8`),
    at its own size, in RGB."""
    u8 = to_uint8(image)
    return u8 if u8.ndim == 3 else np.repeat(u8[..., None], 3, axis=2)


def _volume(members: list[Slice], stem: str) -> ItemVolume | None:
    """The volume the members are the slices of, None for an input without a geometry."""
    geometry = members[0].geometry
    return None if geometry is None else ItemVolume(geometry, len(members), stem)


def series_stems(stem: str, groups: list[list[Slice]]) -> list[str]:
    """Stems of a folder's series: ``stem`` for one; else ``stem_series<N>`` (SeriesNumber, when
    the folder's are distinct) or ``stem_<last 8 UID characters>``, made unique with ``-2``."""
    if len(groups) == 1:
        return [stem]
    firsts = [g[0].dicom for g in groups]
    numbers = [None if d is None else d.series_number for d in firsts]
    if None not in numbers and len(set(numbers)) == len(numbers):
        labels = [f"series{n:g}" for n in numbers]
    else:
        uids = [None if d is None else d.series_uid for d in firsts]
        labels = [(uid or "nouid").replace(".", "")[-8:] for uid in uids]
    stems: list[str] = []
    for label in labels:
        name, n = f"{stem}_{label}", 1
        while (name if n == 1 else f"{name}-{n}") in stems:
            n += 1
        stems.append(name if n == 1 else f"{name}-{n}")
    return stems


def _slices(
    reader: Reader | None, path: Path, reading: Reading, bad: list[tuple[Path, str]] | None
) -> list[Slice]:
    """An input's slices: read whole with ``bad`` for a folder whose bad files are left out one
    by one (:attr:`~iqeclip.data.readers.Reader.partial`), else through the cache."""
    if reader is not None and reader.partial:
        return reader.read(path, reading, bad)
    return list(read_slices(path, reading))


def read_items(
    path: Path,
    size: int,
    reading: Reading = DEFAULT_READING,
    stem: str | None = None,
    bad: list[tuple[Path, str]] | None = None,
) -> Iterator[Item]:
    """The 2-D items of one input (an image, a DICOM file or series folder, a NIfTI volume).

    Each item's model input is :func:`~iqeclip.data.readers.model_input`'s for the same file,
    slice and reading (the training and test data loaders' path). A folder holding several
    DICOM series gives each series its own stem and row ``key`` (see :class:`Item`); with
    ``bad`` a list, a folder's unreadable files are appended to it instead.
    """
    stem = stem or input_stem(path)
    reader = reader_for(path)
    if reader is not None and reader.single_image(path) and reference(path, reading):
        tensor = model_input(path, None, size, reading)  # load_image: the BMAD pre-processing
        display = display_rgb(path, reading.limits)
        yield Item(stem, path, None, display, tensor, blank=bool(display.min() == display.max()))
        return
    groups: dict[str | None, list[Slice]] = {}
    for s in _slices(reader, path, reading, bad):
        groups.setdefault(None if s.dicom is None else s.dicom.volume_id, []).append(s)
    series = list(groups.values())
    for members in series:
        hint = ct_hint(path, members, reading)
        if hint is not None and members[0].levels.rule not in _hinted:  # once per rule
            _hinted.add(members[0].levels.rule)
            logger.warning(hint)
    names = series_stems(stem, series)
    for group, (members, name_stem) in enumerate(zip(series, names, strict=True)):
        uid = members[0].dicom.volume_id if members[0].dicom is not None else None
        key = str(path) if len(series) == 1 else f"{path}#{uid or ''}"
        volume = _volume(members, name_stem)
        for s in members:
            yield Item(
                name_stem if s.index is None else f"{name_stem}_s{s.index:03d}",
                path,
                s.index,
                _grey_to_rgb(s.image),
                slice_to_uint8_rgb(s, size),
                volume,
                file=s.source,
                key=key,
                group=group,
                sop_uid=(s.dicom.sop_instance_uid or "") if s.dicom is not None else "",
                series_uid=(s.dicom.series_uid or "") if s.dicom is not None else "",
                slice_mm=s.slice_mm,
                blank=s.levels.constant,
            )
