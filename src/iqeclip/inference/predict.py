"""``iqeclip predict``: score your own images, slices and volumes, and write heat maps.

Inputs are image files, folders (searched recursively), DICOM files and series folders, and
NIfTI volumes (scored slice by slice across the plane ``--axis`` names, every volume format in
the radiological view: :mod:`iqeclip.data.readers.orientation`). For every 2-D input the outputs
are an overlay PNG (the map over the input, the ground-truth contour in green with ``--masks``),
the map as a grey PNG and as a float ``.npy`` (both at the input's size, values are the anomaly
probability in [0, 1]), and a row of ``predictions.csv``; a volume also gets a NIfTI of its
anomaly maps in the source's voxel grid, with its affine (and header). ``--outputs`` chooses the
per-slice files; a calibrated pixel threshold adds binary masks (``<name>_mask.png``, and
``<stem>_mask.nii.gz`` for volumes); every input with slices gets a row of ``volumes.csv``.
Each volume of a DICOM folder is its own input there (stem ``<folder>_series<N>``, see
:func:`~iqeclip.inference.inputs.read_items`), and every row of ``predictions.csv`` names its
own file, its DICOM UIDs and the files written for it (:data:`CSV_COLUMNS`). Reading inputs
and scoring them in batches is :mod:`iqeclip.inference.inputs`, writing the results
:mod:`iqeclip.inference.writers`; decisions are made on full-precision numbers, a constant
slice is blank (no decision) and a non-finite score is an error for its input, never a
decision.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
import math
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from iqeclip.data.readers import (
    DEFAULT_LIMITS,
    Limits,
    describe_intensity,
    reading_options,
)
from iqeclip.data.validate import Skipped, write_skipped
from iqeclip.errors import UserError
from iqeclip.inference.export import OnnxDetector, load_detector
from iqeclip.inference.inputs import Item, checkpoint_reading, scored_items
from iqeclip.inference.listing import check_inputs, expand_inputs, unique_stems
from iqeclip.inference.outputs import Partial, guard, resume_point
from iqeclip.inference.thresholds import describe, volume_aggregate
from iqeclip.inference.writers import (
    CSV_COLUMNS,
    DEFAULT_OUTPUTS,
    OUTPUTS,
    Writer,
)
from iqeclip.model.detector import IQEClip
from iqeclip.runtime import distributed
from iqeclip.runtime.device import loader_workers
from iqeclip.runtime.files import WriterPool, check_writable

logger = logging.getLogger(__name__)


def say(line: str) -> None:
    """Log on rank 0 only (every line once under torchrun)."""
    if distributed.is_main():
        logger.info(line)


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
    applied: dict[str, Any] | None = None,
    max_megapixels: float = DEFAULT_LIMITS.megapixels,
    max_slices: int = DEFAULT_LIMITS.slices,
    max_total_megapixels: float = DEFAULT_LIMITS.total_megapixels,
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
    already loaded one (``iqeclip serve`` loads it once for all requests). Every input is
    checked against ``max_megapixels`` (pixels of one slice), ``max_slices`` and
    ``max_total_megapixels`` (slices of one input, and their pixels together) from its headers,
    before anything of it is decoded (:mod:`~iqeclip.data.readers.limits`).

    Before any work the output folder is locked against other predict runs until this one
    returns, and checked (:func:`~iqeclip.inference.outputs.guard`), and every input and mask is
    validated as training validates its images (:func:`~iqeclip.inference.inputs.check_inputs`).
    Rows are kept as each input finishes, so ``resume`` continues an interrupted run, in the
    same batches (:func:`~iqeclip.inference.outputs.resume_point`). The reading in use (the checkpoint's unless given)
    is logged once and, when ``applied`` is a dict, stored in it as options (``window``,
    ``percentile``, ``axis``, ``orientation``) for the run's ``config.yaml``.

    Returns:
        The path of ``predictions.csv``.
    """
    out = Path(out)
    check_writable("--out", out, folder=True)
    if detector is None:
        detector = load_detector(backend, ckpt_path, model, device, model_overrides)
    source = str(ckpt_path if model is None else model)
    meta = detector.meta
    reading = dataclasses.replace(
        checkpoint_reading(meta, window, percentile, axis, orientation),
        limits=Limits(max_megapixels, max_slices, max_total_megapixels, options=True),
    )
    if applied is not None:
        applied.update(reading_options(reading))
    say(
        f"reading: {describe_intensity(reading.intensity)}, --axis {reading.axis}, "
        f"--orientation {reading.orientation}"
    )
    setting = setting or meta.get("run", {}).get("setting", "zero")
    thresholds = meta.get("thresholds")
    pixel_threshold = (thresholds or {}).get("pixel")
    chosen = _outputs(outputs, pixel_threshold)
    volume_score, volume_threshold = _volume_rule(volume_score, thresholds)
    aggregate = volume_aggregate(volume_score)
    unreadable: list[Skipped] | None = [] if on_bad_input == "skip" else None
    paths = expand_inputs(inputs, exclude=out, unreadable=unreadable)
    stems = unique_stems(paths)
    masks = Path(masks) if masks else None
    # every input is checked before the folder is touched: a bad input under error changes nothing
    usable, skipped = check_inputs(paths, masks, detector.config.img_size, on_bad_input, reading)
    skipped = [*(unreadable or []), *skipped]  # folders the input walk could not read first
    identity = {
        "checkpoint": str(Path(source).resolve()),
        "inputs": [str(p.resolve()) for p in paths],
        # the batch size too: batches shape the CPU kernels' rounding, and a resumed run must
        # equal an uninterrupted one byte for byte
        "options": [setting, repr(reading), sorted(chosen), volume_score, str(masks), batch_size],
        "world_size": distributed.world_size(),
    }
    problem, lock = None, contextlib.nullcontext()
    if distributed.is_main():  # one rank locks, looks at (and cleans) the folder; all obey it
        try:
            lock = guard(out, list(stems.values()), overwrite, resume, identity)
        except UserError as exc:
            problem = str(exc)
    with lock:  # no other predict run writes into out until this one returns
        problem = distributed.broadcast(problem)
        if problem is not None:
            raise UserError(problem)
        if thresholds:
            threshold, rule = thresholds["image"], describe(thresholds)
            say(f"decision: score >= {threshold:.6f} is abnormal ({rule})")
        else:
            threshold, rule = None, ""
            say(
                f"{source} has no calibrated threshold: writing scores only (see iqeclip calibrate)"
            )
        out.mkdir(parents=True, exist_ok=True)
        partial = Partial(out, CSV_COLUMNS)
        rows = partial.load() if resume else []
        done = {r["_input"] for r in rows}
        if done:
            say(f"--resume: {len(done)} inputs were scored before; scoring the rest")
        # under torchrun each rank scores and writes its own inputs, in the batches of a run
        # never interrupted (resume_point)
        mine, start, written = resume_point(distributed.shard(usable), rows, batch_size)
        workers = loader_workers(workers, detector.device)
        with WriterPool() as pool:
            writer = Writer(out, masks, threshold, rule, chosen, pixel_threshold, pool, reading)
            writer.rows = rows
            scored = scored_items(
                detector,
                mine,
                setting,
                batch_size,
                reading,
                stems,
                skipped,
                on_bad_input,
                workers,
                start,
                written,
            )
            for source, results in by_input(scored):
                problem = nonfinite(results)
                if problem is not None:  # never a decision from NaN: the input is an error
                    if on_bad_input == "error":
                        raise UserError(f"{source}: {problem} (--on_bad_input skip leaves it out)")
                    skipped.append(Skipped(source, problem))
                    continue
                first = len(writer.rows)
                for item, amap, score in results:
                    writer.write(item, None if item.blank else amap, None if item.blank else score)
                _record(pool, partial, source, writer.rows[first:])
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


def by_input(
    scored: Iterable[tuple[Item, torch.Tensor, float]],
) -> Iterator[tuple[Path, list[tuple[Item, torch.Tensor, float]]]]:
    """The scored items of each input together (they come input by input)."""
    for source, results in itertools.groupby(scored, key=lambda result: result[0].source):
        yield source, list(results)


def nonfinite(results: Sequence[tuple[Item, torch.Tensor, float]]) -> str | None:
    """Why an input's scores cannot be decided on (a NaN or infinite score or map value of a
    slice that is not blank), or None."""
    for item, amap, score in results:
        if not item.blank and not (math.isfinite(score) and bool(torch.isfinite(amap).all())):
            where = "" if item.index is None else f" of slice {item.index}"
            return f"the model gave a non-finite score or map{where} (NaN or infinite): no decision"
    return None


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
