"""The inputs of predict and calibrate: files to 2-D items, items to scores in batches.

:func:`read_items` turns one input (listed, checked and named by
:mod:`iqeclip.inference.listing`) into :class:`Item` s (one per slice); :func:`scored_items`
scores them in batches; :func:`checkpoint_reading` is the reading a checkpoint asks for.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from iqeclip.data.readers import (
    DEFAULT_READING,
    Reading,
    Slice,
    as_input,
    describe_intensity,
    kind,
    model_input,
    read,
    read_slices,
    reading_from,
    slice_to_uint8_rgb,
)
from iqeclip.data.readers.intensity import DEFAULT_INTENSITY
from iqeclip.data.readers.pil import display_rgb, page_count, to_uint8
from iqeclip.data.validate import Skipped
from iqeclip.errors import UserError
from iqeclip.inference.listing import input_stem, series_stems
from iqeclip.model.detector import IQEClip
from iqeclip.runtime import distributed
from iqeclip.runtime.device import pin

logger = logging.getLogger(__name__)


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
        volume: for slices of a NIfTI volume or a DICOM series with geometry, what predict
            needs to write the volume's maps as NIfTI (the file grid, its affine and header,
            the :class:`~iqeclip.data.readers.orientation.View` back; see :func:`_volume`).
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
    volume: dict[str, Any] | None = field(default=None, repr=False)
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


def _volume(members: list[Slice], stem: str) -> dict[str, Any] | None:
    """What predict needs to write a volume's maps as NIfTI: the file grid the slices were taken
    from (a NIfTI file's own; a DICOM series' ``(columns, rows, slices)`` grid, ITK's), its
    affine and header, and the view that turns a map back; None for an input without one."""
    meta = members[0].meta
    if meta.get("grid") is None or meta.get("view") is None:
        return None
    return {
        "affine": np.asarray(meta["affine"]),
        "header": meta.get("header"),
        "grid": tuple(meta["grid"]),
        "source_shape": tuple(meta.get("source_shape") or meta["grid"]),
        "view": meta["view"],
        "n_slices": len(members),
        "stem": stem,
    }


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
    found = kind(path)
    if found == "image" and reading.intensity == DEFAULT_INTENSITY and page_count(path) == 1:
        tensor = model_input(path, None, size, reading)  # load_image: the BMAD pre-processing
        display = display_rgb(path, reading.limits)
        yield Item(stem, path, None, display, tensor, blank=bool(display.min() == display.max()))
        return
    if found == "series":
        slices = read(
            path,
            intensity=reading.intensity,
            orientation=reading.orientation,
            bad=bad,
            limits=reading.limits,
        )
    else:
        slices = list(read_slices(path, reading))
    groups: dict[Any, list[Any]] = {}
    for s in slices:
        groups.setdefault(s.meta.get("volume_id") if found == "series" else None, []).append(s)
    series = list(groups.values())
    names = series_stems(stem, series)
    for group, (members, name_stem) in enumerate(zip(series, names, strict=True)):
        uid = members[0].meta.get("volume_id") or ""
        key = str(path) if len(series) == 1 else f"{path}#{uid}"
        volume = _volume(members, name_stem)
        for s in members:
            name = name_stem if s.index is None else f"{name_stem}_s{s.index:03d}"
            dicom = found in ("series", "dicom")
            yield Item(
                name,
                path,
                s.index,
                _grey_to_rgb(s.image),
                slice_to_uint8_rgb(s, size),
                volume,
                file=s.source,
                key=key,
                group=group,
                sop_uid=(s.meta.get("sop_instance_uid") or "") if dicom else "",
                series_uid=(s.meta.get("series_uid") or "") if dicom else "",
                slice_mm=s.meta.get("slice_mm"),
                blank=bool(s.meta.get("constant")),
            )


class _Reads(Dataset):
    """The items of one input per index, read where the DataLoader runs it (a worker process,
    or this one): ``(items, unreadable files, the error that stops the run or None)``."""

    def __init__(
        self,
        paths: Sequence[Path],
        size: int,
        reading: Reading,
        stems: dict[Path, str],
        skip: bool,
    ) -> None:
        self.paths, self.size, self.reading = paths, size, reading
        self.stems, self.skip = stems, skip

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[list[Item], list[tuple[Path, str]], str | None]:
        path = self.paths[index]
        bad: list[tuple[Path, str]] | None = [] if self.skip else None
        try:
            items = list(read_items(path, self.size, self.reading, self.stems.get(path), bad))
        except UserError as exc:  # handed back: a worker's exception would arrive wrapped
            if not self.skip:
                return [], [], str(exc)
            items, bad = [], [*(bad or []), (path, str(exc))]
        return items, bad or [], None


def _as_read(read: Any) -> Any:
    """A read input as it is (the DataLoader's default would convert its arrays)."""
    return read


def scored_items(
    model: IQEClip,
    paths: Sequence[Path],
    setting: str,
    batch_size: int,
    reading: Reading = DEFAULT_READING,
    stems: dict[Path, str] | None = None,
    skipped: list[Skipped] | None = None,
    on_bad_input: str = "error",
    workers: int = 0,
    start: int = 0,
    written: Collection[str] = (),
) -> Iterator[tuple[Item, torch.Tensor, float]]:
    """Score the items of ``paths`` in batches: yields ``(item, map (S, S), image score)``.

    Inputs are read by ``workers`` DataLoader processes (0: in this process) while the model
    scores, in order; on CUDA the batches are pinned so that the copy overlaps too. With
    ``on_bad_input="skip"`` an unreadable input is left out and appended to ``skipped``, and so
    is each unreadable file of a DICOM series folder (the rest of the folder is scored).

    The items of the run are numbered in order and a batch ends after every ``batch_size``-th,
    so an item's batch does not depend on where reading began: ``start`` is the number of the
    first item of ``paths``. The items of the ``written`` inputs (``str`` paths: an interrupted
    run wrote them) are never yielded, and scored only to fill a batch that holds other items
    as it was (:func:`~iqeclip.inference.outputs.resume_point` chooses all three).
    """
    device = model.device
    pending: list[Item] = []

    def flush() -> Iterator[tuple[Item, torch.Tensor, float]]:
        new = [str(item.source) not in written for item in pending]
        if any(new):
            images = torch.stack([item.model_input for item in pending])
            if pin(device):
                images = images.pin_memory()
            maps, scores = model.predict(as_input(images, device), setting)
            yield from itertools.compress(zip(pending, maps, scores.tolist(), strict=True), new)
        pending.clear()

    reads = _Reads(paths, model.config.img_size, reading, stems or {}, on_bad_input == "skip")
    loader = DataLoader(reads, batch_size=None, num_workers=workers, collate_fn=_as_read)
    bar = tqdm(loader, desc="predict", unit="input", disable=distributed.no_progress_bar())
    number = start  # of the next item
    for items, bad, error in bar:
        if error is not None:
            raise UserError(error)
        if skipped is not None:
            skipped.extend(Skipped(file, reason) for file, reason in bad)
        for item in items:
            pending.append(item)
            number += 1
            if number % batch_size == 0:
                yield from flush()
    if pending:
        yield from flush()


def checkpoint_reading(
    meta: dict[str, Any],
    window: str | None,
    percentile: str | None,
    axis: int | None = None,
    orientation: str | None = None,
) -> Reading:
    """The reading of a test, calibrate or predict run: the intensity rule, slicing axis and
    orientation recorded in the checkpoint at training, each unless given (then a warning names
    both when they differ). A checkpoint that recorded no orientation was trained with the
    older ``canonical`` rule, and one that recorded ``canonical`` keeps it: both with a warning
    that its volumes are not read in the radiological view."""
    trained = meta.get("run", {})
    stored = reading_from(
        trained.get("window"),
        trained.get("percentile"),
        trained.get("axis", 2),
        trained.get("orientation", "canonical"),
    )
    given = window is not None or percentile is not None
    reading = Reading(
        reading_from(window, percentile).intensity if given else stored.intensity,
        stored.axis if axis is None else axis,
        stored.orientation if orientation is None else orientation,
    )
    for what, mine, theirs in (
        (
            "intensity rule",
            describe_intensity(reading.intensity),
            describe_intensity(stored.intensity),
        ),
        ("slicing axis", f"--axis {reading.axis}", f"--axis {stored.axis}"),
        (
            "orientation",
            f"--orientation {reading.orientation}",
            f"--orientation {stored.orientation}",
        ),
    ):
        if mine != theirs:
            logger.warning(
                f"warning: {what} {mine} overrides the checkpoint's {theirs} (what it was "
                "trained with)"
            )
    if orientation is None and stored.orientation == "canonical":
        logger.warning(
            "warning: this checkpoint was trained with the older orientation rule (canonical: "
            "NIfTI slices in RAS+ array order, DICOM as stored); it is kept, so its volumes are "
            "not read in the radiological view (docs/workflows.md, 'One scan, one orientation')"
        )
    return reading
