"""``iqeclip predict``: score your own images, slices and volumes, and write heat maps.

Inputs are image files, folders (searched recursively), DICOM files and series folders, and
NIfTI volumes (reoriented to the closest canonical orientation, RAS+, unless ``--orientation
native``, and scored slice by slice along ``--axis``). For every 2-D input the outputs are an
overlay PNG (the map over the input, the ground-truth contour in green with ``--masks``), the map
as a grey PNG and as a float ``.npy`` (both at the input's size, values are the anomaly
probability in [0, 1]), and a row of ``predictions.csv``; a NIfTI input also gets a NIfTI of its
anomaly maps in the source file's voxel order, with its affine and header. ``--outputs`` chooses
the per-slice files; a calibrated pixel threshold adds binary masks (``<name>_mask.png``, and
``<stem>_mask.nii.gz`` for volumes); every input with slices gets a row of ``volumes.csv``.
Each series of a DICOM folder is its own input there (stem ``<folder>_series<N>``, see
:func:`~iqeclip.inference.inputs.read_items`), and every row of ``predictions.csv`` names its
own file, its DICOM UIDs and the files written for it (:data:`CSV_COLUMNS`).
Reading inputs and scoring them in batches is :mod:`iqeclip.inference.inputs`.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from iqeclip.data.readers import (
    load_mask,
)
from iqeclip.data.readers.nifti import to_source_order
from iqeclip.data.validate import write_skipped
from iqeclip.errors import UserError
from iqeclip.inference.export import OnnxDetector, load_detector
from iqeclip.inference.inputs import (
    Item,
    check_inputs,
    checkpoint_reading,
    expand_inputs,
    scored_items,
    unique_stems,
)
from iqeclip.inference.outputs import Partial, guard
from iqeclip.inference.thresholds import describe
from iqeclip.model.detector import IQEClip
from iqeclip.report.heatmaps import draw_contour, overlay
from iqeclip.runtime import distributed
from iqeclip.runtime.device import loader_workers
from iqeclip.runtime.files import WriterPool, atomic_write, atomic_write_text, check_writable

CSV_COLUMNS = (
    "path",
    "slice",
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
series in a folder), ``score`` the image score (zero-shot in [0, 8], few-shot in [0, 2]; not a
probability, see :func:`~iqeclip.model.scoring.score_range`), ``source`` the file the row came
from (a DICOM slice's own file), the UIDs are empty for non-DICOM rows and ``outputs`` lists the
files written for the row (``;``); the row of the slice that completed a volume also lists the
volume's NIfTI files."""
VOLUME_COLUMNS = ("path", "n_slices", "score", "decision", "threshold", "abnormal_slices")
FILES = (
    ("overlay", "overlay.png"),
    ("map", "map.png"),
    ("npy", "map.npy"),
    ("mask", "mask.png"),
    ("input", "input.png"),
)  # what predict can write per slice: <name>_<file>
OUTPUTS = tuple(kind for kind, _ in FILES)
DEFAULT_OUTPUTS = ("overlay", "map", "npy")  # and mask, when the checkpoint has a pixel threshold

logger = logging.getLogger(__name__)


def say(line: str) -> None:
    """Log on rank 0 only (every line once under torchrun)."""
    if distributed.is_main():
        logger.info(line)


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
    tmp = path.with_name(f".{path.name}.tmp.nii.gz")
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


class _Writer:
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
    ) -> None:
        self.out, self.masks, self.threshold, self.rule = out, masks, threshold, rule
        self.outputs, self.pixel_threshold, self.pool = outputs, pixel_threshold, pool
        self.rows: list[dict[str, Any]] = []
        self.volume_maps: dict[str, dict[int, tuple[dict[str, Any], np.ndarray]]] = {}

    def write(self, item: Item, amap: torch.Tensor, score: float) -> None:
        """The item's row now, its files on the writer pool."""
        height, width = item.display.shape[:2]
        full = _resize_map(amap, height, width)
        files = {kind: f"{item.name}_{suffix}" for kind, suffix in FILES if kind in self.outputs}
        self.pool.submit(lambda: self._files(item, full, files))
        written = list(files.values())
        decision = ""
        if self.threshold is not None:
            decision = "abnormal" if score >= self.threshold else "normal"
        self.rows.append(
            {
                "path": item.key or str(item.source),
                "slice": "" if item.index is None else item.index,
                "score": f"{score:.6f}",
                "decision": decision,
                "threshold": "" if self.threshold is None else f"{self.threshold:.6f}",
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
            done[item.index] = (item.volume, full)
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
        for kind, name in files.items():
            if kind == "npy":
                _save_npy(self.out / name, full)
            else:
                _save_png(self.out / name, pictures[kind]())

    def _overlay(self, item: Item, full: np.ndarray) -> np.ndarray:
        """The map over the input, with the ground-truth contour when ``--masks`` has one."""
        picture = overlay(item.display, full)
        mask_path = None if self.masks is None else self.masks / item.source.name
        if item.index is None and mask_path is not None and mask_path.is_file():
            height, width = full.shape
            mask = load_mask(mask_path, max(height, width))
            mask = np.asarray(Image.fromarray(mask.numpy()).resize((width, height), Image.NEAREST))
            picture = draw_contour(picture, mask)
        return picture

    def finish_volume(self, key: str) -> None:
        """Write the NIfTI of a volume's maps (float32) in the source's voxel order.

        The maps are stacked along the slicing axis of the (reoriented) array, put back into the
        source file's voxel order, and written with its affine and header, so the map overlays
        the source voxel for voxel. A DICOM series is stacked as ``(rows, columns, slices)``
        with the affine of its geometry (:func:`~iqeclip.data.readers.dicom.series_affine`).
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
        """Stack a volume's maps and write its NIfTI files (on a writer thread)."""
        data = np.zeros(volume["shape"][:3], np.float32)
        for index, (_, amap) in slices.items():
            if volume["axis"] is None:  # a 2-D image: one map
                data[...] = amap
                continue
            plane = [slice(None)] * 3
            plane[volume["axis"]] = index
            data[tuple(plane)] = amap
        data = to_source_order(data, volume)
        _save_nifti(self.out / names[0], data, volume, np.float32)
        if len(names) > 1:
            mask = (data >= self.pixel_threshold).astype(np.uint8)
            _save_nifti(self.out / names[1], mask, volume, np.uint8)

    def write_volumes(
        self, volume_score: Callable[[np.ndarray], float], volume_threshold: float | None
    ) -> Path | None:
        """``volumes.csv``: one row per input with slices (volume, series, multi-frame file).

        Rows are grouped by their ``path``, so each series of a multi-series folder is a volume.

        Call after :meth:`write_csv`. The volume score is ``volume_score`` of its slice scores;
        the decision applies ``volume_threshold`` (calibrated on volumes) to it, else the image
        threshold; ``abnormal_slices`` lists the slices whose own decision is abnormal
        (``;``-separated).
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
            score = volume_score(np.array([float(r["score"]) for r in rows]))
            decision = ""
            if threshold is not None:
                decision = "abnormal" if score >= threshold else "normal"
            writer.writerow(
                {
                    "path": path,
                    "n_slices": len(rows),
                    "score": f"{score:.6f}",
                    "decision": decision,
                    "threshold": "" if threshold is None else f"{threshold:.6f}",
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


def predict(
    ckpt_path: str | Path,
    inputs: Sequence[str | Path],
    out: str | Path,
    *,
    masks: str | Path | None = None,
    axis: int | None = None,
    orientation: str | None = None,
    window: str | None = None,
    percentile: str | None = None,
    batch_size: int = 8,
    workers: int | None = None,
    device: str = "auto",
    setting: str | None = None,
    model_overrides: dict[str, Any] | None = None,
    overwrite: bool = False,
    on_bad_input: str = "error",
    outputs: str | None = None,
    volume_score: str | None = None,
    resume: bool = False,
    backend: str = "torch",
    model: str | Path | None = None,
    detector: IQEClip | OnnxDetector | None = None,
) -> Path:
    """Score ``inputs`` with a checkpoint and write every output into ``out``.

    ``outputs`` is a comma list of what to write per slice (:data:`OUTPUTS`); the default is
    overlay, map and npy, plus the binary mask (``<name>_mask.png``, map >= the pixel threshold)
    when ``calibrate`` stored a pixel threshold in the checkpoint (then volumes also get
    ``<stem>_mask.nii.gz``). Inputs with slices get a row of ``volumes.csv``, scored by
    ``volume_score``: ``max`` of the slice scores, or ``topk:K``, the mean of the K highest
    (default: the rule ``calibrate`` calibrated the volume threshold for, else ``max``). The
    decision of a volume applies the calibrated volume threshold, else the image threshold.
    The intensity rule is the checkpoint's unless ``window`` / ``percentile`` is given.
    ``backend="onnx"`` scores with the exported ``model`` file instead of the checkpoint
    (:mod:`iqeclip.inference.export`), through the same readers and writers; ``detector`` is an
    already loaded one (``iqeclip serve`` loads it once for all requests).

    Before any work the output folder is checked (:func:`~iqeclip.inference.outputs.guard`) and
    every input and mask is validated as training validates its images
    (:func:`~iqeclip.inference.inputs.check_inputs`). Rows are kept as each input finishes, so
    ``resume`` continues an interrupted run.

    Returns:
        The path of ``predictions.csv``.
    """
    out = Path(out)
    check_writable("--out", out, folder=True)
    if detector is None:
        detector = load_detector(backend, ckpt_path, model, device, model_overrides)
    source = str(ckpt_path if model is None else model)
    meta = detector.meta
    reading = checkpoint_reading(meta, window, percentile, axis, orientation)
    setting = setting or meta.get("run", {}).get("setting", "zero")
    thresholds = meta.get("thresholds")
    pixel_threshold = (thresholds or {}).get("pixel")
    chosen = _outputs(outputs, pixel_threshold)
    volume_score, volume_threshold = _volume_rule(volume_score, thresholds)
    aggregate = volume_aggregate(volume_score)
    paths = expand_inputs(inputs, exclude=out)
    stems = unique_stems(paths)
    masks = Path(masks) if masks else None
    # every input is checked before the folder is touched: a bad input under error changes nothing
    usable, skipped = check_inputs(paths, masks, detector.config.img_size, on_bad_input)
    identity = {
        "checkpoint": str(Path(source).resolve()),
        "inputs": [str(p.resolve()) for p in paths],
        "options": [setting, repr(reading), sorted(chosen), volume_score, str(masks)],
        "world_size": distributed.world_size(),
    }
    problem = None
    if distributed.is_main():  # one rank looks at (and cleans) the folder; all ranks obey it
        try:
            guard(out, list(stems.values()), overwrite, resume, identity)
        except UserError as exc:
            problem = str(exc)
    problem = distributed.broadcast(problem)
    if problem is not None:
        raise UserError(problem)
    if thresholds:
        threshold, rule = thresholds["image"], describe(thresholds)
        say(f"decision: score >= {threshold:.6f} is abnormal ({rule})")
    else:
        threshold, rule = None, ""
        say(f"{source} has no calibrated threshold: writing scores only (see iqeclip calibrate)")
    out.mkdir(parents=True, exist_ok=True)
    partial = Partial(out, CSV_COLUMNS)
    rows = partial.load() if resume else []
    done = {r["_input"] for r in rows}
    if done:
        say(f"--resume: {len(done)} inputs were scored before; scoring the rest")
    # under torchrun each rank scores and writes its own inputs
    mine = [p for p in distributed.shard(usable) if str(p) not in done]
    workers = loader_workers(workers, detector.device)
    with WriterPool() as pool:
        writer = _Writer(out, masks, threshold, rule, chosen, pixel_threshold, pool)
        writer.rows = rows
        scored = scored_items(
            detector, mine, setting, batch_size, reading, stems, skipped, on_bad_input, workers
        )
        current, first = None, len(writer.rows)
        for item, amap, score in scored:
            if current is not None and item.source != current:  # the previous input is complete
                _record(pool, partial, current, writer.rows[first:])
                first = len(writer.rows)
            current = item.source
            writer.write(item, amap, score)
        if current is not None:
            _record(pool, partial, current, writer.rows[first:])
        pool.wait()
    csv_path = writer.write_csv({str(p): i for i, p in enumerate(paths)})
    volumes = writer.write_volumes(aggregate, volume_threshold)
    if volumes is not None:
        say(f"volume scores ({volume_score} of the slice scores) written to {volumes}")
    skipped = [s for part in distributed.gather(skipped) for s in part]
    if skipped:
        if distributed.is_main():
            write_skipped(skipped, out / "skipped_inputs.csv")
        say(
            f"skipped {len(skipped)} unreadable inputs (--on_bad_input skip), listed in {out / 'skipped_inputs.csv'}"
        )
    partial.remove()
    say(
        f"{len(writer.rows)} predictions from {len(paths)} inputs written to {out} ({csv_path.name})"
    )
    return csv_path


def _record(pool: WriterPool, partial: Partial, source: Path, rows: list[dict[str, Any]]) -> None:
    """Keep an input's rows for ``--resume`` once its files are written."""
    pool.then(lambda: partial.append(str(source), rows))


def _volume_rule(
    volume_score: str | None, thresholds: dict[str, Any] | None
) -> tuple[str, float | None]:
    """The volume score rule and its calibrated threshold (None: the image threshold applies).

    Raises:
        UserError: ``--volume_score`` differs from the rule the volume threshold was calibrated
            for (that threshold would not mean anything for it).
    """
    calibrated = (thresholds or {}).get("volume")
    if calibrated is None:
        return volume_score or "max", None
    if volume_score is not None and volume_score != calibrated["score"]:
        raise UserError(
            f"--volume_score {volume_score}: the checkpoint's volume threshold was calibrated for "
            f"--volume_score {calibrated['score']}; use that, or calibrate again with "
            f"--volume_score {volume_score}"
        )
    return calibrated["score"], float(calibrated["threshold"])


def volume_aggregate(spec: str) -> Callable[[np.ndarray], float]:
    """``max`` or ``topk:K`` (the mean of the K highest slice scores), checked before any work."""
    if spec == "max":
        return lambda scores: float(scores.max())
    head, _, k = spec.partition(":")
    if head == "topk" and k.isdigit() and int(k) >= 1:
        return lambda scores: float(np.sort(scores)[::-1][: int(k)].mean())
    raise UserError(f"--volume_score {spec!r}: use max or topk:K with K >= 1 (e.g. topk:3)")


def _outputs(outputs: str | None, pixel_threshold: float | None) -> frozenset[str]:
    """The per-slice outputs asked for, checked before any work."""
    if outputs is None:
        return frozenset(DEFAULT_OUTPUTS + (("mask",) if pixel_threshold is not None else ()))
    chosen = [o.strip() for o in outputs.split(",") if o.strip()]
    unknown = sorted(set(chosen) - set(OUTPUTS))
    if unknown or not chosen:
        raise UserError(
            f"--outputs {outputs!r}: choose from {', '.join(OUTPUTS)} (comma-separated)"
        )
    if "mask" in chosen and pixel_threshold is None:
        raise UserError(
            "--outputs mask needs a pixel threshold in the checkpoint: run iqeclip calibrate "
            "on data with masks (--data_path and --obj) first"
        )
    return frozenset(chosen)
