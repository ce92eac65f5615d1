"""The inputs of predict and calibrate: files to 2-D items, items to scores in batches.

:func:`expand_inputs` lists image files, folders (recursively), DICOM files and series folders and
NIfTI volumes (the reader registry decides each file's type); :func:`read_items` turns one input
into :class:`Item` s (one per slice); :func:`scored_items` scores them in batches.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from iqeclip.data.layout import MASK_FOLDER, Sample
from iqeclip.data.readers import (
    DEFAULT_READING,
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
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
from iqeclip.data.readers.pil import display_rgb, page_count
from iqeclip.data.validate import Skipped, validate_samples
from iqeclip.errors import UserError
from iqeclip.inference.outputs import is_output_name
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
        index: slice index within a volume / series / multi-frame file, else ``None``.
        display: ``(H, W, 3)`` uint8 picture at the input's resolution.
        model_input: ``(3, S, S)`` uint8 model input.
        volume: for slices of a NIfTI volume or a DICOM series with geometry, what predict
            needs to write the volume's maps as NIfTI (affine, header, sliced shape, axis, the
            orientation transform back to the source's voxel order; see :func:`_volume`).
        file: the file the item itself came from (a DICOM slice's own file); ``source`` if None.
        key: the ``path`` of its CSV rows: ``str(source)``, or ``<folder>#<SeriesInstanceUID>``
            for one series of a folder holding several (so each series is its own volume).
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


def expand_inputs(paths: Sequence[str | Path], exclude: Path | None = None) -> list[Path]:
    """Files and DICOM series folders to read, in a stable order.

    A folder is searched recursively: images and NIfTI files are taken one by one, and every
    folder holding DICOM files is one input (:func:`read_items` splits it by series). The
    ``exclude`` folder (predict's ``--out``) is not searched when it lies inside a walked
    folder, and where it *is* the walked folder its files named like predict's outputs
    (``*_overlay.png``, ``*_map.png``, ...) are left out, so an earlier run's outputs are never
    read back as inputs. Below a walked folder, the ground-truth masks of the BMAD layout
    (``.../anomaly_mask/*``) are left out and counted in a log line; a mask folder given itself
    is read.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    masks_left_out = 0

    def wanted(p: Path, root: Path, top: Path) -> bool:
        nonlocal masks_left_out
        if not p.is_file() or p.name.startswith("."):
            return False
        if MASK_FOLDER in p.relative_to(root).parts[:-1]:
            masks_left_out += 1
            return False
        if skip is None or not p.resolve().is_relative_to(skip):
            return True
        if skip == top or top.is_relative_to(skip):  # --out is the walked folder (or above it)
            return not is_output_name(p.name) or p.parent.resolve() != skip
        return False  # inside an --out below the walked folder

    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            series: set[Path] = set()
            top = path.resolve()
            for f in sorted(p for p in path.rglob("*") if wanted(p, path, top)):
                found_kind = kind(f)
                if found_kind in ("image", "nifti"):
                    found.append(f)
                elif found_kind == "dicom" and f.parent not in series:
                    series.add(f.parent)
                    found.append(f.parent)
        else:
            raise UserError(f"input {path}: no such file or folder")
    if masks_left_out:
        logger.info(
            f"left out {masks_left_out} ground-truth masks in {MASK_FOLDER}/ folders (the BMAD "
            "layout; pass such a folder itself to score it, or --masks to draw them)"
        )
    if not found:
        raise UserError(f"no images, DICOM or NIfTI files in {', '.join(map(str, paths))}")
    return found


def check_inputs(
    paths: Sequence[Path], masks: Path | None, size: int, policy: str
) -> tuple[list[Path], list[Skipped]]:
    """The checks training applies, run over every predict input before the first batch.

    Each input is checked as :func:`~iqeclip.data.validate.check_sample` checks a training
    image (header size first, then one decode: too small, too large, corrupt, unreadable); with
    ``masks`` each 2-D image needs its mask there, of its size and binary. DICOM series folders
    are read whole under ``error`` (the first bad file stops the run); under ``skip`` their bad
    files are left out one by one while scoring.

    Returns:
        The usable inputs in order, and the skipped ones (empty under ``error``).

    Raises:
        UserError: Under ``error``, the first unusable input or mask.
    """
    good: list[Path] = []
    skipped: list[Skipped] = []
    for path in paths:
        if policy == "skip" and kind(path) == "series":
            good.append(path)
            continue
        mask = masks / path.name if masks is not None and kind(path) == "image" else None
        if mask is not None and not mask.is_file():
            reason = f"no mask {mask.name} in --masks {masks}"
            if policy == "error":
                raise UserError(
                    f"image {path}: {reason} (--on_bad_input skip leaves such inputs out)"
                )
            skipped.append(Skipped(path, reason))
            continue
        usable, bad = validate_samples([Sample(path, 0, mask)], size, policy)
        good += [s.image for s in usable]
        skipped += bad
    return good, skipped


def unique_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """Output stems of the inputs, made unique (``name``, ``name-2``, ...) in input order."""
    stems: dict[Path, str] = {}
    taken: set[str] = set()
    for path in paths:
        stem, n = _stem(path), 1
        while (stem if n == 1 else f"{stem}-{n}") in taken:
            n += 1
        stems[path] = stem if n == 1 else f"{stem}-{n}"
        taken.add(stems[path])
    return stems


def _stem(path: Path) -> str:
    name = path.name
    for suffix in (*NIFTI_SUFFIXES, *DICOM_SUFFIXES, *IMAGE_SUFFIXES):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return name


def _grey_to_rgb(image: np.ndarray) -> np.ndarray:
    rgb = image if image.ndim == 3 else np.repeat(image[..., None], 3, axis=2)
    return np.rint(np.clip(rgb, 0, 1) * 255).astype(np.uint8)


def _series_stems(stem: str, groups: list[list[Any]]) -> list[str]:
    """Stems of a folder's series: ``stem`` for one; else ``stem_series<N>`` (SeriesNumber, when
    the folder's are distinct) or ``stem_<last 8 UID characters>``, made unique with ``-2``."""
    if len(groups) == 1:
        return [stem]
    numbers = [g[0].meta.get("series_number") for g in groups]
    if None not in numbers and len(set(numbers)) == len(numbers):
        labels = [f"series{n:g}" for n in numbers]
    else:
        labels = [(g[0].meta.get("series_uid") or "nouid").replace(".", "")[-8:] for g in groups]
    stems: list[str] = []
    for label in labels:
        name, n = f"{stem}_{label}", 1
        while (name if n == 1 else f"{name}-{n}") in stems:
            n += 1
        stems.append(name if n == 1 else f"{name}-{n}")
    return stems


def _volume(found: Any, members: list[Slice], stem: str) -> dict[str, Any] | None:
    """What predict needs to write a volume's maps as NIfTI: a NIfTI volume's own geometry, or
    a DICOM series stacked as ``(rows, columns, slices)`` with its affine (from the series
    geometry; None for a series without it, which then gets no NIfTI)."""
    meta = members[0].meta
    if found == "nifti":
        return {**meta, "n_slices": len(members), "stem": stem}
    affine = meta.get("series_affine")
    if found != "series" or affine is None or any(s.image.ndim != 2 for s in members):
        return None
    rows, cols = members[0].image.shape
    if any(s.image.shape != (rows, cols) for s in members):
        return None
    return {
        "affine": affine,
        "header": None,
        "shape": (rows, cols, len(members)),
        "axis": 2,
        "to_source": None,
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
    stem = stem or _stem(path)
    found = kind(path)
    if found == "image" and reading.intensity == DEFAULT_INTENSITY and page_count(path) == 1:
        tensor = model_input(path, None, size, reading)  # load_image: the BMAD pre-processing
        display = display_rgb(path)
        yield Item(stem, path, None, display, tensor)
        return
    if found == "series":
        slices = read(path, intensity=reading.intensity, bad=bad)
    else:
        slices = list(read_slices(path, reading))
    groups: dict[Any, list[Any]] = {}
    for s in slices:
        groups.setdefault(s.meta.get("series_uid") if found == "series" else None, []).append(s)
    series = list(groups.values())
    names = _series_stems(stem, series)
    for group, (members, name_stem) in enumerate(zip(series, names, strict=True)):
        uid = members[0].meta.get("series_uid") or ""
        key = str(path) if len(series) == 1 else f"{path}#{uid}"
        volume = _volume(found, members, name_stem)
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
) -> Iterator[tuple[Item, torch.Tensor, float]]:
    """Score the items of ``paths`` in batches: yields ``(item, map (S, S), image score)``.

    Inputs are read by ``workers`` DataLoader processes (0: in this process) while the model
    scores, in order; on CUDA the batches are pinned so that the copy overlaps too. With
    ``on_bad_input="skip"`` an unreadable input is left out and appended to ``skipped``, and so
    is each unreadable file of a DICOM series folder (the rest of the folder is scored).
    """
    device = model.device
    pending: list[Item] = []

    def flush() -> Iterator[tuple[Item, torch.Tensor, float]]:
        images = torch.stack([item.model_input for item in pending])
        if pin(device):
            images = images.pin_memory()
        maps, scores = model.predict(as_input(images, device), setting)
        yield from zip(pending, maps, scores.tolist(), strict=True)
        pending.clear()

    reads = _Reads(paths, model.config.img_size, reading, stems or {}, on_bad_input == "skip")
    loader = DataLoader(reads, batch_size=None, num_workers=workers, collate_fn=_as_read)
    bar = tqdm(loader, desc="predict", unit="input", disable=distributed.no_progress_bar())
    for items, bad, error in bar:
        if error is not None:
            raise UserError(error)
        if skipped is not None:
            skipped.extend(Skipped(file, reason) for file, reason in bad)
        for item in items:
            pending.append(item)
            if len(pending) == batch_size:
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
    NIfTI orientation recorded in the checkpoint at training, each unless given (then a warning
    names both when they differ). Checkpoints from before these were recorded read with the
    defaults."""
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
    return reading
