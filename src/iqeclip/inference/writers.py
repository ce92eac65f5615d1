"""What ``predict`` writes, by the one table of file names (:mod:`~iqeclip.inference.files`):
the per-slice files (:data:`~iqeclip.inference.files.SLICE_FILES`: overlay, map, npy, mask,
input, and any added by :func:`register_writer`), each volume's map and mask in the input's own
format (:mod:`~iqeclip.inference.volume_files`), each DICOM series' Segmentation and Parametric
Map on request (:mod:`~iqeclip.inference.dicom_outputs`) and the tables (``predictions.csv``,
``volumes.csv``, ...). :class:`Writer` turns scored items into
:class:`~iqeclip.inference.results.SlicePrediction` values (decided by
:mod:`~iqeclip.inference.decisions`) and writes their files when the run has a folder.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from iqeclip.data.items import Item, ItemVolume
from iqeclip.data.readers import (
    Reading,
    label_slices,
    load_mask,
    read_slices,
    single_image,
)
from iqeclip.inference.decisions import BLANK, Decisions
from iqeclip.inference.dicom_outputs import Algorithm, write_dicom
from iqeclip.inference.files import (
    DICOM_FILES,
    PREDICTIONS,
    SLICE_FILES,
    VOLUMES,
    Outputs,
    kind_of,
    volume_name,
)
from iqeclip.inference.listing import mask_for
from iqeclip.inference.results import SlicePrediction, VolumePrediction
from iqeclip.inference.volume_files import save_volume
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
slice that completed a volume also lists the volume's files (its map and mask, its DICOM
objects)."""
VOLUME_COLUMNS = (
    "path",
    "n_slices",
    "n_blank",
    "score",
    "decision",
    "threshold",
    "abnormal_slices",
)


@dataclass
class _Volume:
    """A volume whose maps are coming in: its slices' maps by index, and for a DICOM series
    each slice's source instance (its file and SOPInstanceUID)."""

    volume: ItemVolume
    maps: dict[int, np.ndarray]
    instances: dict[int, tuple[Path, str]]


@dataclass(frozen=True)
class Picture:
    """What a per-slice writer writes from: the item as read, its map ``(H, W)`` float32 at the
    input's size, and the run's :class:`Writer` (its decisions, ``--masks``, reading)."""

    item: Item
    map: np.ndarray
    writer: Writer


SliceWrite = Callable[[Path, Picture], None]
_WRITE: dict[str, SliceWrite] = {}


def register_writer(kind: str, suffix: str, write: SliceWrite) -> None:
    """Add a per-slice output: ``predict --outputs ...,KIND`` then writes ``<name>_<suffix>``
    for every slice that is not blank with ``write(path, picture)`` (on a writer thread; use
    :func:`~iqeclip.runtime.files.atomic_write` so that a killed run leaves no half file). Its
    name joins the table (:data:`~iqeclip.inference.files.SLICE_FILES`)."""
    if not kind.isidentifier() or kind in _WRITE:
        raise ValueError(f"output kind {kind!r}: not a name, or already registered")
    SLICE_FILES[kind] = suffix
    _WRITE[kind] = write


def _resize_map(amap: torch.Tensor, height: int, width: int) -> np.ndarray:
    up = F.interpolate(amap[None, None], size=(height, width), mode="bilinear", align_corners=False)
    return up[0, 0].clamp(0, 1).cpu().numpy().astype(np.float32)


def _save_png(path: Path, array: np.ndarray) -> None:
    """Lossless like every PNG; zlib level 1 encodes scan-like pictures 3.5-4x faster than
    Pillow's default 6, for files about 6 % larger (docs/performance.md)."""
    atomic_write(path, lambda tmp: Image.fromarray(array).save(tmp, format="PNG", compress_level=1))


def _save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:
            np.save(f, array)

    atomic_write(path, write)


class Writer:
    """Turns scored items into :class:`~iqeclip.inference.results.SlicePrediction` values, in
    the order they come, and writes their files on ``pool`` when the run has an output folder.

    Args:
        out: the output folder; None: nothing is written (the values only).
        masks: ``--masks``: ground-truth contours on the overlays.
        decisions: the run's thresholds and rules.
        outputs: the files to write (:class:`~iqeclip.inference.files.Outputs`).
        pool: the writer threads (with ``out``).
        reading: the run's reading (for ``--masks`` label volumes).
        keep_maps: keep each map and picture in its prediction (memory grows with the inputs).
        algorithm: what the DICOM objects name as their maker (with ``outputs.dicom``).
    """

    def __init__(
        self,
        out: Path | None,
        masks: Path | None,
        decisions: Decisions,
        outputs: Outputs,
        pool: WriterPool | None,
        reading: Reading,
        keep_maps: bool = False,
        algorithm: Algorithm | None = None,
    ) -> None:
        self.out, self.masks, self.decisions = out, masks, decisions
        self.reading, self.keep_maps = reading, keep_maps
        self.outputs = outputs if out is not None else Outputs(frozenset(), frozenset())
        self.pool, self.algorithm = pool, algorithm
        self.predictions: list[SlicePrediction] = []
        self.volumes: dict[str, _Volume] = {}
        self.no_dicom: set[str] = set()
        """Rows (``path``) of DICOM slices that form no volume: no DICOM objects for them."""

    def add(self, item: Item, amap: torch.Tensor | None, score: float | None) -> SlicePrediction:
        """The item's prediction now, its files on the writer pool; a blank item (``amap`` None)
        gets a prediction without score, decision or files, and an all-zero plane in its
        volume's map."""
        height, width = item.display.shape[:2]
        files: dict[str, str] = {}
        if item.blank or amap is None or score is None:
            full, decision, score = np.zeros((height, width), np.float32), BLANK, None
        else:
            full = _resize_map(amap, height, width)
            kinds = self.outputs.of(item.volume is not None and item.index is not None)
            files = {k: f"{item.name}_{x}" for k, x in SLICE_FILES.items() if k in kinds}
            if files:
                assert self.pool is not None
                jobs = list(files.items())  # the row may list a volume's files later
                self.pool.submit(lambda: self._files(Picture(item, full, self), jobs))
            decision = self.decisions.image(score)
        prediction = SlicePrediction(
            item.key or str(item.source),
            item.index,
            item.slice_mm,
            score,
            decision,
            self.decisions.threshold,
            self.decisions.rule,
            str(item.file or item.source),
            item.sop_uid,
            item.series_uid,
            files,
            str(item.source),
            item.group,
            full if self.keep_maps and not item.blank else None,
            item.display if self.keep_maps else None,
        )
        self.predictions.append(prediction)
        if self.out is not None:
            self._collect(item, full)
        return prediction

    def _collect(self, item: Item, full: np.ndarray) -> None:
        """Keep a volume's map until its last slice has come, then write its files."""
        key = item.key or str(item.source)
        if item.volume is None:
            if self.outputs.dicom and item.sop_uid and item.index is not None:
                self.no_dicom.add(key)  # a DICOM folder whose slices form no one volume
            return
        entry = self.volumes.setdefault(key, _Volume(item.volume, {}, {}))
        entry.maps[item.index or 0] = full
        if item.sop_uid and item.file is not None:
            entry.instances[item.index or 0] = (item.file, item.sop_uid)
        if len(entry.maps) == item.volume.n_slices:
            self.finish_volume(key)

    def _files(self, picture: Picture, files: list[tuple[str, str]]) -> None:
        """Write one item's per-slice files (on a writer thread)."""
        assert self.out is not None
        for what, name in files:
            _WRITE[what](self.out / name, picture)

    def _overlay(self, item: Item, full: np.ndarray) -> np.ndarray:
        """The map over the input, with the ground-truth contour when ``--masks`` has one: an
        image mask, or the slice of a label volume (:func:`mask_for`)."""
        picture = overlay(item.display, full)
        if self.masks is None:
            return picture
        height, width = full.shape
        if item.index is None and single_image(item.source):
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
        """Write a volume's files: its map (float32) and, with a pixel threshold, its mask
        (uint8), in the input's format and voxel order, and the DICOM objects asked for when
        it is a DICOM series; the row of the slice that completed it lists them.

        Each map is turned back by the slice's view into the file grid, written with the
        source's geometry, so the map overlays the source voxel for voxel. A DICOM series'
        grid is the one ITK and dcm2niix read, ``(columns, rows, slices)``, with the affine of
        its geometry (:func:`~iqeclip.data.readers.dicom_series.series_affine`).
        """
        entry = self.volumes.pop(key)
        volume = entry.volume
        kinds = ["anomaly", *(["volume_mask"] if self.decisions.pixel is not None else [])]
        names = {k: volume_name(volume.stem, k, volume.geometry.suffix) for k in kinds}
        if self.outputs.dicom and len(entry.instances) == volume.n_slices:
            names.update((k, f"{volume.stem}_{DICOM_FILES[k]}") for k in sorted(self.outputs.dicom))
        elif self.outputs.dicom and entry.instances:  # DICOM, but not one instance per slice
            self.no_dicom.add(key)
        self.predictions[-1].files.update(names)
        assert self.pool is not None and self.out is not None
        self.pool.submit(lambda: self._volume_files(entry, names))

    def _volume_files(self, entry: _Volume, names: dict[str, str]) -> None:
        """Put a volume's maps back into its file grid and write its files (on a writer
        thread): voxel for voxel over the source, with its geometry."""
        geometry = entry.volume.geometry
        grid = np.zeros(geometry.grid, np.float32)
        for index, amap in entry.maps.items():
            geometry.view.put(grid, index, amap)
        assert self.out is not None
        data = grid.reshape(geometry.source_shape)
        save_volume(self.out / names["anomaly"], data, geometry)
        mask = self.decisions.mask(grid) if self.decisions.pixel is not None else None
        if mask is not None:
            save_volume(
                self.out / names["volume_mask"], mask.astype(np.uint8).reshape(data.shape), geometry
            )
        dicom = [k for k in DICOM_FILES if k in names]
        if dicom:
            assert self.algorithm is not None
            order = sorted(entry.instances)
            files = [entry.instances[k][0] for k in order]
            uids = [entry.instances[k][1] for k in order]
            # a series' grid is (columns, rows, slices): frame k is slice k as stored, rows first
            frames = {"dicom-seg": mask, "dicom-pmap": grid}
            for kind in dicom:
                layers = np.transpose(frames[kind], (2, 1, 0))
                write_dicom(kind, self.out / names[kind], layers, files, uids, self.algorithm)

    def gather(self) -> list[SlicePrediction]:
        """Every rank's predictions, on every rank, in input order (by ``order`` of
        :meth:`write_csv`)."""
        return [p for part in distributed.gather(self.predictions) for p in part]

    def write_csv(self, order: dict[str, int]) -> Path | None:
        """Gather every rank's predictions in input order; rank 0 writes ``predictions.csv``
        when the run has an output folder (None else)."""
        rows = self.gather()
        rows.sort(key=lambda r: (order[r.input], r.group, r.slice if r.slice is not None else -1))
        self.predictions = rows
        if self.out is None:
            return None
        path = self.out / PREDICTIONS
        if distributed.is_main():
            write_table(path, CSV_COLUMNS, [r.row() for r in rows])
        return path

    def write_volumes(self) -> tuple[list[VolumePrediction], Path | None]:
        """The volumes of the predictions (after :meth:`write_csv`), and ``volumes.csv`` when
        there are some and an output folder (:meth:`Decisions.volumes`)."""
        volumes = volume_predictions(self.predictions, self.decisions)
        if not volumes or self.out is None:
            return volumes, None
        path = self.out / VOLUMES
        if distributed.is_main():
            write_table(path, VOLUME_COLUMNS, [v.row() for v in volumes])
        return volumes, path


def volume_predictions(
    rows: Sequence[SlicePrediction], decisions: Decisions
) -> list[VolumePrediction]:
    """One :class:`VolumePrediction` per input with slices, grouped by ``path`` (so each volume
    of a multi-volume folder is one), in the order of their first rows. ``abnormal_slices``
    lists the slices whose own decision is abnormal (with a volume threshold of its own a
    volume can be abnormal with none listed)."""
    groups: dict[str, list[SlicePrediction]] = {}
    for row in rows:
        if row.slice is not None:
            groups.setdefault(row.path, []).append(row)
    volumes = []
    for path, members in groups.items():
        scored = [r.score for r in members if not r.blank and r.score is not None]
        score, decision = decisions.volume(scored)
        abnormal = tuple(
            r.slice for r in members if r.decision == "abnormal" and r.slice is not None
        )
        volumes.append(
            VolumePrediction(
                path,
                len(members),
                len(members) - len(scored),
                score,
                decision,
                decisions.volume_threshold,
                abnormal,
            )
        )
    return volumes


def write_table(path: Path, columns: Sequence[str], rows: list[dict[str, Any]]) -> None:
    """A CSV file of ``rows`` (text values, in ``columns``), written atomically."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(path, buffer.getvalue())


def prediction_of(row: dict[str, str]) -> SlicePrediction:
    """A prediction read back from its CSV row (``--resume``: the rows an interrupted run kept,
    with ``_input`` and ``_group``); the exact score text reads back as the same double."""
    files = {kind_of(name): name for name in filter(None, row["outputs"].split(";"))}

    def number(text: str) -> float | None:
        return None if text == "" else float(text)

    return SlicePrediction(
        row["path"],
        None if row["slice"] == "" else int(row["slice"]),
        number(row["slice_mm"]),
        number(row["score"]),
        row["decision"],
        number(row["threshold"]),
        row["rule"],
        row["source"],
        row["sop_instance_uid"],
        row["series_instance_uid"],
        files,
        row["_input"],
        int(row["_group"]),
    )


def _save_overlay(path: Path, picture: Picture) -> None:
    _save_png(path, picture.writer._overlay(picture.item, picture.map))


def _save_map(path: Path, picture: Picture) -> None:
    _save_png(path, np.rint(picture.map * 255).astype(np.uint8))


def _save_map_npy(path: Path, picture: Picture) -> None:
    _save_npy(path, picture.map)


def _save_mask(path: Path, picture: Picture) -> None:
    _save_png(path, picture.writer.decisions.mask(picture.map).astype(np.uint8) * 255)


def _save_input(path: Path, picture: Picture) -> None:
    _save_png(path, picture.item.display)  # the picture as read (windowed), at its size


_WRITE.update(
    overlay=_save_overlay, map=_save_map, npy=_save_map_npy, mask=_save_mask, input=_save_input
)
