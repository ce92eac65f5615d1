"""``iqeclip predict``: score your own images, slices and volumes, and write heat maps.

Inputs are image files, folders (searched recursively), DICOM files and series folders, and
NIfTI volumes (scored slice by slice along ``--axis``). For every 2-D input the outputs are an
overlay PNG (the map over the input, the ground-truth contour in green with ``--masks``), the map
as a grey PNG and as a float ``.npy`` (both at the input's size, values are the anomaly
probability in [0, 1]), and a row of ``predictions.csv``; a NIfTI input also gets a NIfTI of its
anomaly maps with the source affine and header.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
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
    load_mask,
    parse_window,
    read,
    slice_to_uint8_rgb,
)
from iqeclip.data.validate import Skipped, write_skipped
from iqeclip.errors import UserError
from iqeclip.inference.thresholds import describe
from iqeclip.model.detector import IQEClip
from iqeclip.report.heatmaps import draw_contour, overlay
from iqeclip.runtime import distributed
from iqeclip.runtime.device import resolve_device
from iqeclip.runtime.files import atomic_write, atomic_write_text

CSV_COLUMNS = ("path", "slice", "score", "decision", "threshold", "rule")


@dataclass
class Item:
    """One 2-D input.

    Attributes:
        name: output file stem.
        source: the file (or series folder) it came from.
        index: slice index within a volume / series / multi-frame file, else ``None``.
        display: ``(H, W, 3)`` uint8 picture at the input's resolution.
        model_input: ``(3, S, S)`` uint8 model input.
        volume: for NIfTI slices, the volume's metadata (affine, header, shape, axis).
    """

    name: str
    source: Path
    index: int | None
    display: np.ndarray
    model_input: torch.Tensor
    volume: dict[str, Any] | None = field(default=None, repr=False)


logger = logging.getLogger(__name__)


def expand_inputs(paths: Sequence[str | Path]) -> list[Path]:
    """Files and DICOM series folders to read, in a stable order.

    A folder is searched recursively: images and NIfTI files are taken one by one, and every
    folder holding DICOM files is one series.
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


def say(line: str) -> None:
    """Log on rank 0 only (every line once under torchrun)."""
    if distributed.is_main():
        logger.info(line)


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


def read_items(
    path: Path, size: int, axis: int, intensity: Any, stem: str | None = None
) -> Iterator[Item]:
    """The 2-D items of one input (an image, a DICOM file or series, a NIfTI volume)."""
    stem = stem or _stem(path)
    found = kind(path)
    if found == "image" and not is_wide_image(path):
        tensor = load_image(path, size)
        with Image.open(path) as im:
            display = np.asarray(im.convert("RGB"))
        yield Item(stem, path, None, display, tensor)
        return
    slices = read(path, axis=axis, intensity=intensity)
    volume = None
    if found == "nifti":
        volume = {**slices[0].meta, "n_slices": len(slices), "stem": stem}
    for s in slices:
        name = stem if s.index is None else f"{stem}_s{s.index:03d}"
        yield Item(name, path, s.index, _grey_to_rgb(s.image), slice_to_uint8_rgb(s, size), volume)


def _resize_map(amap: torch.Tensor, height: int, width: int) -> np.ndarray:
    up = F.interpolate(amap[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return up[0, 0].clamp(0, 1).cpu().numpy().astype(np.float32)


def _save_png(path: Path, array: np.ndarray) -> None:
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG"))


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, array)

    atomic_write(path, write)


class _Writer:
    """Writes each item's files and collects CSV rows and NIfTI volumes."""

    def __init__(self, out: Path, masks: Path | None, threshold: float | None, rule: str) -> None:
        self.out, self.masks, self.threshold, self.rule = out, masks, threshold, rule
        self.rows: list[dict[str, Any]] = []
        self.volume_maps: dict[Path, dict[int, np.ndarray]] = {}

    def write(self, item: Item, amap: torch.Tensor, score: float) -> None:
        height, width = item.display.shape[:2]
        full = _resize_map(amap, height, width)
        picture = overlay(item.display, full)
        if self.masks is not None and item.index is None:
            mask_path = self.masks / item.source.name
            if mask_path.is_file():
                mask = load_mask(mask_path, max(height, width))
                mask = np.asarray(
                    Image.fromarray(mask.numpy()).resize((width, height), Image.NEAREST)
                )
                picture = draw_contour(picture, mask)
        name = item.name
        _save_png(self.out / f"{name}_overlay.png", picture)
        _save_png(self.out / f"{name}_map.png", np.rint(full * 255).astype(np.uint8))
        _save_npy(self.out / f"{name}_map.npy", full)
        decision = ""
        if self.threshold is not None:
            decision = "abnormal" if score >= self.threshold else "normal"
        self.rows.append(
            {
                "path": str(item.source),
                "slice": "" if item.index is None else item.index,
                "score": f"{score:.6f}",
                "decision": decision,
                "threshold": "" if self.threshold is None else f"{self.threshold:.6f}",
                "rule": self.rule,
            }
        )
        if item.volume is not None:
            done = self.volume_maps.setdefault(item.source, {})
            done[item.index] = (item.volume, full)
            if len(done) == item.volume["n_slices"]:
                self.finish_volume(item.source)

    def finish_volume(self, source: Path) -> None:
        """Write the NIfTI of a volume's maps (source affine and header, float32)."""
        import nibabel as nib

        slices = self.volume_maps.pop(source)
        volume = next(iter(slices.values()))[0]
        data = np.zeros(volume["shape"][:3], np.float32)
        for index, (_, amap) in slices.items():
            plane = [slice(None)] * 3
            plane[volume["axis"]] = index
            data[tuple(plane)] = amap
        image = nib.Nifti1Image(data, volume["affine"], volume["header"])
        image.set_data_dtype(np.float32)
        path = self.out / f"{volume['stem']}_anomaly.nii.gz"
        tmp = path.with_name(f".{path.name}.tmp.nii.gz")
        try:
            image.to_filename(str(tmp))
            tmp.replace(path)
        finally:
            tmp.unlink(missing_ok=True)

    def write_csv(self, order: dict[str, int]) -> Path:
        """Gather every rank's rows; rank 0 writes them in input order."""
        rows = [r for part in distributed.gather(self.rows) for r in part]
        rows.sort(key=lambda r: (order[r["path"]], r["slice"] if r["slice"] != "" else -1))
        self.rows = rows
        path = self.out / "predictions.csv"
        if not distributed.is_main():
            return path
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=CSV_COLUMNS, lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buffer.getvalue())
        return path


def predict(
    ckpt_path: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    masks: str | Path | None = None,
    axis: int = 2,
    window: str | None = None,
    percentile: str | None = None,
    batch_size: int = 8,
    device: str = "auto",
    setting: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    on_bad_input: str = "error",
) -> Path:
    """Score ``inputs`` with a checkpoint and write every output into ``out``.

    Returns:
        The path of ``predictions.csv``.
    """
    out = Path(out)
    if (out / "predictions.csv").exists() and not overwrite:
        raise UserError(f"{out / 'predictions.csv'} exists; pass --overwrite to replace it")
    if axis not in (0, 1, 2):
        raise UserError(f"--axis must be 0, 1 or 2, got {axis}")
    model = IQEClip.from_checkpoint(ckpt_path, resolve_device(device), **(model_overrides or {}))
    meta = model.meta
    setting = setting or meta.get("run", {}).get("setting", "zero")
    thresholds = meta.get("thresholds")
    if thresholds:
        threshold, rule = thresholds["image"], describe(thresholds)
        say(f"decision: score >= {threshold:.6f} is abnormal ({rule})")
    else:
        threshold, rule = None, ""
        say(f"{ckpt_path} has no calibrated threshold: writing scores only (see iqeclip calibrate)")
    paths = expand_inputs(inputs)
    out.mkdir(parents=True, exist_ok=True)
    writer = _Writer(out, Path(masks) if masks else None, threshold, rule)
    stems = unique_stems(paths)
    mine = distributed.shard(paths)  # under torchrun each rank scores and writes its own inputs
    intensity = _intensity(window, percentile)
    skipped: list[Skipped] = []
    scored = scored_items(
        model, mine, setting, batch_size, axis, intensity, stems, skipped, on_bad_input
    )
    for item, amap, score in scored:
        writer.write(item, amap, score)
    csv_path = writer.write_csv({str(p): i for i, p in enumerate(paths)})
    skipped = [s for part in distributed.gather(skipped) for s in part]
    if skipped:
        if distributed.is_main():
            write_skipped(skipped, out / "skipped_inputs.csv")
        say(
            f"skipped {len(skipped)} unreadable inputs (--on_bad_input skip), listed in {out / 'skipped_inputs.csv'}"
        )
    say(
        f"{len(writer.rows)} predictions from {len(paths)} inputs written to {out} ({csv_path.name})"
    )
    return csv_path


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
) -> Iterator[tuple[Item, torch.Tensor, float]]:
    """Score the items of ``paths`` in batches: yields ``(item, map (S, S), image score)``.

    With ``on_bad_input="skip"`` an unreadable input is left out and appended to ``skipped``.
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
        try:
            items = list(read_items(path, model.config.img_size, axis, intensity, stem))
        except UserError as exc:
            if on_bad_input != "skip":
                raise
            (skipped if skipped is not None else []).append(Skipped(path, str(exc)))
            continue
        for item in items:
            pending.append(item)
            if len(pending) == batch_size:
                yield from flush()
    if pending:
        yield from flush()


def _intensity(window: str | None, percentile: str | None) -> Any:
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
