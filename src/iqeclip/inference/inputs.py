"""The inputs of predict and calibrate: files to 2-D items, items to scores in batches.

:func:`expand_inputs` lists image files, folders (recursively), DICOM files and series folders and
NIfTI volumes (the reader registry decides each file's type); :func:`read_items` turns one input
into :class:`Item` s (one per slice); :func:`scored_items` scores them in batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from iqeclip.data.readers import (
    DICOM_SUFFIXES,
    IMAGE_SUFFIXES,
    NIFTI_SUFFIXES,
    Intensity,
    as_input,
    is_wide_image,
    kind,
    load_image,
    parse_window,
    read,
    slice_to_uint8_rgb,
)
from iqeclip.data.validate import Skipped
from iqeclip.errors import UserError
from iqeclip.model.detector import IQEClip
from iqeclip.runtime import distributed


@dataclass
class Item:
    """One 2-D input.

    Attributes:
        name: output file stem.
        source: the file (or series folder) it came from.
        index: slice index within a volume / series / multi-frame file, else ``None``.
        display: ``(H, W, 3)`` uint8 picture at the input's resolution.
        model_input: ``(3, S, S)`` uint8 model input.
        volume: for NIfTI slices, the volume's metadata (source affine, header, sliced shape,
            axis, orientation transform back to the source's voxel order).
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


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files and DICOM series folders to read, in a stable order.

    A folder is searched recursively: images and NIfTI files are taken one by one, and every
    folder holding DICOM files is one input (:func:`read_items` splits it by series).
    """
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            series: set[Path] = set()
            for f in sorted(
                p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
            ):
                found_kind = kind(f)
                if found_kind in ("image", "nifti"):
                    found.append(f)
                elif found_kind == "dicom" and f.parent not in series:
                    series.add(f.parent)
                    found.append(f.parent)
        else:
            raise UserError(f"input {path}: no such file or folder")
    if not found:
        raise UserError(f"no images, DICOM or NIfTI files in {', '.join(map(str, paths))}")
    return found


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


def read_items(
    path: Path,
    size: int,
    axis: int,
    intensity: Any,
    stem: str | None = None,
    orientation: str = "canonical",
    bad: list[tuple[Path, str]] | None = None,
) -> Iterator[Item]:
    """The 2-D items of one input (an image, a DICOM file or series folder, a NIfTI volume).

    A folder holding several DICOM series gives each series its own stem and row ``key`` (see
    :class:`Item`); with ``bad`` a list, a folder's unreadable files are appended to it instead.
    """
    stem = stem or _stem(path)
    found = kind(path)
    if found == "image" and not is_wide_image(path):
        tensor = load_image(path, size)
        with Image.open(path) as im:
            display = np.asarray(im.convert("RGB"))
        yield Item(stem, path, None, display, tensor)
        return
    slices = read(path, axis=axis, intensity=intensity, orientation=orientation, bad=bad)
    volume = None
    if found == "nifti":
        volume = {**slices[0].meta, "n_slices": len(slices), "stem": stem}
    groups: dict[Any, list[Any]] = {}
    for s in slices:
        groups.setdefault(s.meta.get("series_uid") if found == "series" else None, []).append(s)
    series = list(groups.values())
    names = _series_stems(stem, series)
    for group, (members, name_stem) in enumerate(zip(series, names, strict=True)):
        uid = members[0].meta.get("series_uid") or ""
        key = str(path) if len(series) == 1 else f"{path}#{uid}"
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


def scored_items(
    model: IQEClip,
    paths: Sequence[Path],
    setting: str,
    batch_size: int,
    axis: int = 2,
    intensity: Any = None,
    stems: dict[Path, str] | None = None,
    skipped: list[Skipped] | None = None,
    on_bad_input: str = "error",
    orientation: str = "canonical",
) -> Iterator[tuple[Item, torch.Tensor, float]]:
    """Score the items of ``paths`` in batches: yields ``(item, map (S, S), image score)``.

    With ``on_bad_input="skip"`` an unreadable input is left out and appended to ``skipped``, and
    so is each unreadable file of a DICOM series folder (the rest of the folder is scored).
    """
    intensity = intensity or Intensity()
    device = next(model.head.parameters()).device
    pending: list[Item] = []

    def flush() -> Iterator[tuple[Item, torch.Tensor, float]]:
        images = torch.stack([item.model_input for item in pending])
        maps, scores = model.predict(as_input(images, device), setting)
        yield from zip(pending, maps, scores.tolist(), strict=True)
        pending.clear()

    for path in tqdm(paths, desc="predict", unit="input", disable=not distributed.is_main()):
        stem = (stems or {}).get(path)
        bad: list[tuple[Path, str]] | None = [] if on_bad_input == "skip" else None
        try:
            size = model.config.img_size
            items = list(read_items(path, size, axis, intensity, stem, orientation, bad))
        except UserError as exc:
            if on_bad_input != "skip":
                raise
            items = []
            bad = [*(bad or []), (path, str(exc))]
        if skipped is not None:
            skipped.extend(Skipped(file, reason) for file, reason in bad or [])
        for item in items:
            pending.append(item)
            if len(pending) == batch_size:
                yield from flush()
    if pending:
        yield from flush()


def intensity_rule(window: str | None, percentile: str | None) -> Any:
    pct = None
    if percentile:
        try:
            lo, hi = (float(v) for v in percentile.split(","))
        except ValueError:
            raise UserError(
                f"--percentile expects LOW,HIGH such as 1,99, got {percentile!r}"
            ) from None
        if not 0 <= lo < hi <= 100:
            raise UserError(f"--percentile expects 0 <= LOW < HIGH <= 100, got {percentile!r}")
        pct = (lo, hi)
    return Intensity(window=parse_window(window) if window else None, percentile=pct)
