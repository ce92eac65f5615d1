"""What ``predict`` writes: the per-slice pictures and maps, the NIfTI of each volume's maps,
``predictions.csv`` and ``volumes.csv`` (:class:`Writer`), with every decision made on
full-precision numbers (:func:`decide`) and every score written exactly (:func:`exact`).
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from iqeclip.data.readers import (
    Reading,
    kind,
    label_slices,
    load_mask,
    read_slices,
)
from iqeclip.errors import UserError
from iqeclip.inference.inputs import Item
from iqeclip.inference.listing import mask_for
from iqeclip.inference.outputs import nifti_temporary
from iqeclip.report.heatmaps import draw_contour, overlay
from iqeclip.runtime import distributed
from iqeclip.runtime.files import WriterPool, atomic_write, atomic_write_text

CSV_COLUMNS = (
    "path",
    "slice",
    "slice_mm",
    "score",
    "decision",
    "threshold",
    "rule",
    "source",
    "sop_instance_uid",
    "series_instance_uid",
    "outputs",
)
"""``path`` is the input (a series folder; ``<folder>#<SeriesInstanceUID>`` for one of several
volumes in a folder), ``slice`` the file's own index of the slice (the voxel index along a NIfTI
volume's slicing axis, the slice of a series in position order, the frame or page),
``slice_mm`` where it lies (RAS mm along the world axis closest to the slicing axis: an axial
slice's S coordinate), ``score`` the image score (zero-shot in [0, 8], few-shot in [0, 2]; not a
probability, see :func:`~iqeclip.model.scoring.score_range`) written exactly (the shortest text
that reads back as the same double, so the CSV reproduces every decision), ``decision``
``normal``, ``abnormal``, ``blank`` (a constant slice: no score, no decision) or empty (no
threshold), ``source`` the file the row came from (a DICOM slice's own file), the UIDs are empty
for non-DICOM rows and ``outputs`` lists the files written for the row (``;``); the row of the
slice that completed a volume also lists the volume's NIfTI files."""
VOLUME_COLUMNS = (
    "path",
    "n_slices",
    "n_blank",
    "score",
    "decision",
    "threshold",
    "abnormal_slices",
)
BLANK = "blank"
"""The decision column of a constant slice (and of a volume with only such slices)."""
FILES = (
    ("overlay", "overlay.png"),
    ("map", "map.png"),
    ("npy", "map.npy"),
    ("mask", "mask.png"),
    ("input", "input.png"),
)  # what predict can write per slice: <name>_<file>
OUTPUTS = tuple(kind for kind, _ in FILES)
DEFAULT_OUTPUTS = ("overlay", "map", "npy")  # and mask, when the checkpoint has a pixel threshold


def exact(value: float) -> str:
    """A score or threshold as the shortest text that reads back as the same double."""
    return repr(float(value))


def decide(score: float, threshold: float | None) -> str:
    """``abnormal`` when ``score >= threshold`` (full precision), ``normal``, or "" without a
    threshold."""
    if threshold is None:
        return ""
    return "abnormal" if score >= threshold else "normal"


def _resize_map(amap: torch.Tensor, height: int, width: int) -> np.ndarray:
    up = F.interpolate(amap[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return up[0, 0].clamp(0, 1).cpu().numpy().astype(np.float32)


def _save_png(path: Path, array: np.ndarray) -> None:
    """Lossless like every PNG; zlib level 1 encodes scan-like pictures 3.5-4x faster than
    Pillow's default 6, for files about 6 % larger (docs/performance.md)."""
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", compress_level=1))


def _save_nifti(path: Path, data: np.ndarray, volume: dict[str, Any], dtype: type) -> None:
    """A volume in the source's voxel order, with its affine and header, written atomically."""
    import nibabel as nib

    image = nib.Nifti1Image(data.astype(dtype), volume["affine"], volume["header"])
    image.set_data_dtype(dtype)
    if volume["header"] is None:  # a DICOM series: scanner coordinates in mm, as ITK writes them
        image.set_qform(volume["affine"], code=1)
        image.set_sform(volume["affine"], code=1)
        image.header.set_xyzt_units(xyz="mm")
    tmp = nifti_temporary(path)
    try:
        image.to_filename(str(tmp))
        tmp.replace(path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, array)

    atomic_write(path, write)


class Writer:
    """Collects CSV rows and NIfTI volumes; each item's files are written on ``pool``."""

    def __init__(
        self,
        out: Path,
        masks: Path | None,
        threshold: float | None,
        rule: str,
        outputs: frozenset[str],
        pixel_threshold: float | None,
        pool: WriterPool,
        reading: Reading,
    ) -> None:
        self.out, self.masks, self.threshold, self.rule = out, masks, threshold, rule
        self.reading = reading
        self.outputs, self.pixel_threshold, self.pool = outputs, pixel_threshold, pool
        self.rows: list[dict[str, Any]] = []
        self.volume_maps: dict[str, dict[int, tuple[dict[str, Any], np.ndarray]]] = {}

    def write(self, item: Item, amap: torch.Tensor | None, score: float | None) -> None:
        """The item's row now, its files on the writer pool; a blank item (``amap`` None) gets
        a row without score, decision or files, and an all-zero plane in its volume's map."""
        height, width = item.display.shape[:2]
        written: list[str] = []
        if item.blank or amap is None or score is None:
            full, decision, shown = np.zeros((height, width), np.float32), BLANK, ""
        else:
            full = _resize_map(amap, height, width)
            files = {k: f"{item.name}_{suffix}" for k, suffix in FILES if k in self.outputs}
            self.pool.submit(lambda: self._files(item, full, files))
            written = list(files.values())
            decision = decide(score, self.threshold)
            shown = exact(score)
        self.rows.append(
            {
                "path": item.key or str(item.source),
                "slice": "" if item.index is None else item.index,
                "slice_mm": "" if item.slice_mm is None else f"{item.slice_mm:.4f}",
                "score": shown,
                "decision": decision,
                "threshold": "" if self.threshold is None else exact(self.threshold),
                "rule": self.rule,
                "source": str(item.file or item.source),
                "sop_instance_uid": item.sop_uid,
                "series_instance_uid": item.series_uid,
                "outputs": ";".join(written),
                "_input": str(item.source),  # for the row order, not written
                "_group": item.group,
            }
        )
        if item.volume is not None:
            key = item.key or str(item.source)
            done = self.volume_maps.setdefault(key, {})
            done[item.index or 0] = (item.volume, full)
            if len(done) == item.volume["n_slices"]:
                self.finish_volume(key)

    def _files(self, item: Item, full: np.ndarray, files: dict[str, str]) -> None:
        """Write one item's per-slice files (on a writer thread)."""
        pictures = {
            "overlay": lambda: self._overlay(item, full),
            "map": lambda: np.rint(full * 255).astype(np.uint8),
            "input": lambda: item.display,  # the picture as read (windowed), at its size
            "mask": lambda: (full >= self.pixel_threshold).astype(np.uint8) * 255,
        }
        for what, name in files.items():
            if what == "npy":
                _save_npy(self.out / name, full)
            else:
                _save_png(self.out / name, pictures[what]())

    def _overlay(self, item: Item, full: np.ndarray) -> np.ndarray:
        """The map over the input, with the ground-truth contour when ``--masks`` has one: an
        image mask, or the slice of a label volume (:func:`mask_for`)."""
        picture = overlay(item.display, full)
        if self.masks is None:
            return picture
        height, width = full.shape
        if item.index is None and kind(item.source) == "image":
            mask = load_mask(
                mask_for(item.source, self.masks), max(height, width), self.reading.limits
            )
            mask = np.asarray(Image.fromarray(mask.numpy()).resize((width, height), Image.NEAREST))
        else:
            labels = label_slices(mask_for(item.source, self.masks), item.source, self.reading)
            position = [s.index for s in read_slices(item.source, self.reading)].index(item.index)
            mask = labels[position].astype(np.uint8)
        return draw_contour(picture, mask)

    def finish_volume(self, key: str) -> None:
        """Write the NIfTI of a volume's maps (float32) in the source's voxel order.

        Each map is turned back by the slice's view into the file grid, written with its
        affine and header, so the map overlays the source voxel for voxel. A DICOM series'
        grid is the one ITK and dcm2niix read, ``(columns, rows, slices)``, with the affine of
        its geometry (:func:`~iqeclip.data.readers.dicom_series.series_affine`).
        """

        slices = self.volume_maps.pop(key)
        volume = next(iter(slices.values()))[0]
        written = [f"{volume['stem']}_anomaly.nii.gz"]
        if "mask" in self.outputs:
            written.append(f"{volume['stem']}_mask.nii.gz")
        last = self.rows[-1]  # the row of the slice that completed the volume lists them too
        last["outputs"] = ";".join(filter(None, [last["outputs"], *written]))
        self.pool.submit(lambda: self._volume_files(slices, volume, written))

    def _volume_files(
        self, slices: dict[int, tuple[Any, np.ndarray]], volume: dict[str, Any], names: list[str]
    ) -> None:
        """Put a volume's maps back into its file grid and write its NIfTI files (on a writer
        thread): voxel for voxel over the source, with its affine (and header, for NIfTI)."""
        data = np.zeros(volume["grid"], np.float32)
        for index, (_, amap) in slices.items():
            volume["view"].put(data, index, amap)
        data = data.reshape(volume["source_shape"])
        _save_nifti(self.out / names[0], data, volume, np.float32)
        if len(names) > 1:
            mask = (data >= self.pixel_threshold).astype(np.uint8)
            _save_nifti(self.out / names[1], mask, volume, np.uint8)

    def write_volumes(
        self, volume_score: Callable[[np.ndarray], float], volume_threshold: float | None
    ) -> Path | None:
        """``volumes.csv``: one row per input with slices (volume, series, multi-frame file).

        Rows are grouped by their ``path``, so each volume of a multi-volume folder is one.
        Call after :meth:`write_csv`. The volume score is ``volume_score`` of the scores of its
        slices that are not blank, read back from the rows' exact text; the decision applies
        ``volume_threshold`` (calibrated on volumes) to it, else the image threshold;
        ``abnormal_slices`` lists the slices whose own decision is abnormal (``;``-separated).
        With a volume threshold of its own a volume can be abnormal with none listed.
        """
        threshold = self.threshold if volume_threshold is None else volume_threshold
        volumes: dict[str, list[dict[str, Any]]] = {}
        for row in self.rows:
            if row["slice"] != "":
                volumes.setdefault(row["path"], []).append(row)
        if not volumes or not distributed.is_main():
            return None
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=VOLUME_COLUMNS, lineterminator="\n")
        writer.writeheader()
        for path, rows in volumes.items():
            scored = [float(r["score"]) for r in rows if r["decision"] != BLANK]
            score = volume_score(np.array(scored)) if scored else None
            writer.writerow(
                {
                    "path": path,
                    "n_slices": len(rows),
                    "n_blank": len(rows) - len(scored),
                    "score": "" if score is None else exact(score),
                    "decision": BLANK if score is None else decide(score, threshold),
                    "threshold": "" if threshold is None else exact(threshold),
                    "abnormal_slices": ";".join(
                        str(r["slice"]) for r in rows if r["decision"] == "abnormal"
                    ),
                }
            )
        path = self.out / "volumes.csv"
        atomic_write_text(path, buffer.getvalue())
        return path

    def write_csv(self, order: dict[str, int]) -> Path:
        """Gather every rank's rows; rank 0 writes them in input order."""
        rows = [r for part in distributed.gather(self.rows) for r in part]
        rows.sort(
            key=lambda r: (
                order[r["_input"]],
                r["_group"],
                r["slice"] if r["slice"] != "" else -1,
            )
        )
        self.rows = rows
        path = self.out / "predictions.csv"
        if not distributed.is_main():
            return path
        buffer = io.StringIO()
        writer = csv.DictWriter(
            buffer, fieldnames=CSV_COLUMNS, lineterminator="\n", extrasaction="ignore"
        )
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(path, buffer.getvalue())
        return path
