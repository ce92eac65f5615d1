"""The inputs of predict and calibrate: 2-D items to scores in batches.

:func:`~iqeclip.data.items.read_items` turns one input (listed, checked and named by
:mod:`iqeclip.inference.listing`) into :class:`~iqeclip.data.items.Item` s (one per slice);
:func:`scored_items` scores them in batches; :func:`checkpoint_reading` is the reading a
checkpoint asks for.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from iqeclip.data.items import Item, read_items
from iqeclip.data.readers import (
    DEFAULT_READING,
    Reading,
    describe_intensity,
    reading_from,
)
from iqeclip.data.readers.reading import parse_label_values
from iqeclip.data.validate import Skipped
from iqeclip.engine.stream import stream
from iqeclip.errors import UserError, as_flag
from iqeclip.inference.detectors import Detector
from iqeclip.runtime import distributed

logger = logging.getLogger(__name__)


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
                return [], [], exc.message  # its parameters still marked
            items, bad = [], [*(bad or []), (path, exc.render(as_flag))]
        return items, bad or [], None


def _as_read(read: Any) -> Any:
    """A read input as it is (the DataLoader's default would convert its arrays)."""
    return read


def scored_items(
    model: Detector,
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
    reads = _Reads(paths, model.config.img_size, reading, stems or {}, on_bad_input == "skip")
    loader = DataLoader(reads, batch_size=None, num_workers=workers, collate_fn=_as_read)
    bar = tqdm(loader, desc="predict", unit="input", disable=distributed.no_progress_bar())

    def batches() -> Iterator[tuple[torch.Tensor, list[tuple[Item, bool]]]]:
        """The run's items cut at every ``batch_size``-th, each with whether it is new; a batch
        of written items only is not scored."""
        pending: list[Item] = []
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
                    yield from _batch(pending, written)
                    pending = []
        yield from _batch(pending, written)

    for batch, maps, scores in stream(model, batches(), setting, pin_batches=True):
        new = [fresh for _, fresh in batch]
        yield from itertools.compress(
            zip([item for item, _ in batch], maps, scores.tolist(), strict=True), new
        )


def _batch(
    pending: list[Item], written: Collection[str]
) -> Iterator[tuple[torch.Tensor, list[tuple[Item, bool]]]]:
    """The batch of ``pending`` items with whether each is new (its input not ``written``),
    unless none is."""
    new = [str(item.source) not in written for item in pending]
    if any(new):
        yield (
            torch.stack([item.model_input for item in pending]),
            list(zip(pending, new, strict=True)),
        )


def checkpoint_reading(
    meta: dict[str, Any],
    window: str | None,
    percentile: str | None,
    axis: int | None = None,
    orientation: str | None = None,
    label_values: str | None = None,
) -> Reading:
    """The reading of a test, calibrate or predict run: the intensity rule, slicing axis and
    orientation recorded in the checkpoint at training, each unless given (then a warning names
    both when they differ), and the run's own ``label_values`` (``--label_values``: the ground
    truth of the data at hand, not taken from the checkpoint). A checkpoint that recorded no
    orientation was trained with the older ``canonical`` rule, and one that recorded
    ``canonical`` keeps it: both with a warning that its volumes are not read in the
    radiological view."""
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
        label_values=parse_label_values(label_values),
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
