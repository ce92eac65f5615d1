"""``iqeclip predict``: score your own images, slices and volumes, and write heat maps.

Inputs are image files, folders (searched recursively), DICOM files and series folders, and
NIfTI, NRRD and MetaImage volumes (scored slice by slice across the plane ``--axis`` names,
every volume format in the radiological view: :mod:`iqeclip.data.readers.orientation`). By
default every 2-D input gets an overlay PNG (the map over the input, the ground-truth contour in
green with ``--masks``), the map as a grey PNG and as a float ``.npy`` (both at the input's
size, values are the anomaly probability in [0, 1]), and a row of ``predictions.csv``; a volume
gets its anomaly maps as one volume in the input's own format (``<stem>_anomaly.nii.gz`` for
NIfTI and DICOM series, ``.nrrd`` for NRRD, ``.mha`` for MetaImage) in the source's voxel grid
with its geometry, a row of ``volumes.csv`` and a row per slice, and no per-slice files.
``--outputs`` chooses the per-slice files of every input (:class:`~iqeclip.inference.files.
Outputs`) and, for DICOM series, a DICOM Segmentation and Parametric Map
(:mod:`~iqeclip.inference.dicom_outputs`); a calibrated pixel threshold adds binary masks
(``<name>_mask.png`` where asked, and ``<stem>_mask.<format>`` for every volume).
Each volume of a DICOM folder is its own input there (stem ``<folder>_series<N>``, see
:func:`~iqeclip.data.items.read_items`), and every row of ``predictions.csv`` names its
own file, its DICOM UIDs and the files written for it (:data:`CSV_COLUMNS`). Reading inputs
and scoring them in batches is :mod:`iqeclip.inference.inputs`, deciding
:mod:`iqeclip.inference.decisions` (on full-precision numbers; a constant slice is blank, with no
decision, and a non-finite score is an error for its input, never a decision), and writing
:mod:`iqeclip.inference.writers`. :func:`predict` returns the predictions as values
(:class:`~iqeclip.inference.results.Predictions`); without ``out`` it writes nothing.
"""

from __future__ import annotations

import contextlib
import dataclasses
import itertools
import logging
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from iqeclip import __version__
from iqeclip.data.items import Item
from iqeclip.data.readers import (
    DEFAULT_LIMITS,
    Limits,
    Reading,
    describe_intensity,
    reading_options,
)
from iqeclip.data.readers.reading import parse_label_values
from iqeclip.data.validate import Skipped, write_skipped
from iqeclip.errors import UserError, param
from iqeclip.inference.decisions import Decisions, nonfinite
from iqeclip.inference.detectors import Detector, load_detector
from iqeclip.inference.dicom_outputs import Algorithm, check_dicom_outputs
from iqeclip.inference.files import DEFAULT_OUTPUTS, DICOM_FILES, SKIPPED, SLICE_FILES, Outputs
from iqeclip.inference.inputs import checkpoint_reading, scored_items
from iqeclip.inference.listing import check_inputs, expand_inputs, unique_stems
from iqeclip.inference.outputs import Partial, guard, resume_point
from iqeclip.inference.results import Predictions
from iqeclip.inference.writers import CSV_COLUMNS, Writer, prediction_of
from iqeclip.runtime import distributed
from iqeclip.runtime.device import loader_workers
from iqeclip.runtime.files import WriterPool, check_writable

__all__ = ["CSV_COLUMNS", "predict"]

logger = logging.getLogger(__name__)


def say(line: str) -> None:
    """Log on rank 0 only (every line once under torchrun)."""
    if distributed.is_main():
        logger.info(line)


@dataclasses.dataclass
class _Run:
    """What a predict run settled before any work."""

    detector: Detector
    source: str
    reading: Reading
    setting: str
    decisions: Decisions
    outputs: Outputs
    paths: list[Path]
    stems: dict[Path, str]
    masks: Path | None
    usable: list[Path]
    skipped: list[Skipped]
    batch_size: int
    on_bad_input: str
    keep_maps: bool


def predict(
    ckpt_path: str | Path | None,
    inputs: Sequence[str | Path],
    out: str | Path | None = None,
    *,
    masks: str | Path | None = None,
    label_values: str | None = None,
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
    detector: Detector | None = None,
    applied: dict[str, Any] | None = None,
    max_megapixels: float = DEFAULT_LIMITS.megapixels,
    max_slices: int = DEFAULT_LIMITS.slices,
    max_total_megapixels: float = DEFAULT_LIMITS.total_megapixels,
    keep_maps: bool | None = None,
) -> Predictions:
    """Score ``inputs`` with a checkpoint (or ``backend="onnx"``: the exported ``model``, or an
    already loaded ``detector``); write every output into ``out`` if given; return the
    predictions, in the order of ``predictions.csv``.

    ``outputs``: a comma list of per-slice files and DICOM objects (default: overlay, map and
    npy, and mask with a calibrated pixel threshold, for 2-D inputs; for a volume's slices none,
    or the overlays with ``masks``); ``volume_score``: ``max`` or ``topk:K`` (default: the
    calibrated rule, else max); the reading is the checkpoint's unless ``window``,
    ``percentile``, ``axis`` or ``orientation`` is given, and is stored in ``applied`` (a dict)
    for config.yaml; ``label_values`` (``1,2,4``) are the values of the ``masks``' label
    volumes that count (None: any non-zero); ``max_*`` bound what an input may hold, from its
    headers. Without ``out`` nothing is written and each prediction keeps its map and picture
    (``keep_maps``). The module docstring says what is checked, locked and kept before and
    during the work.
    """
    out = None if out is None else Path(out)
    if out is not None:
        check_writable(param("out"), out, folder=True)
    elif resume or overwrite:
        given = param("resume" if resume else "overwrite")
        raise UserError(f"{given} needs {param('out')} (a folder)")
    parse_label_values(label_values)  # checked before the model is loaded
    if detector is None:
        detector = load_detector(backend, ckpt_path, model, device, model_overrides)
    reading = dataclasses.replace(
        checkpoint_reading(detector.meta, window, percentile, axis, orientation, label_values),
        limits=Limits(max_megapixels, max_slices, max_total_megapixels, options=True),
    )
    if applied is not None:
        applied.update(reading_options(reading))
    say(
        f"reading: {describe_intensity(reading.intensity)}, --axis {reading.axis}, "
        f"--orientation {reading.orientation}"
    )
    run = _plan(
        detector,
        str(ckpt_path or model or "the detector given"),
        reading,
        inputs,
        out,
        masks=Path(masks) if masks else None,
        setting=setting,
        outputs=outputs,
        volume_score=volume_score,
        batch_size=batch_size,
        on_bad_input=on_bad_input,
        keep_maps=out is None if keep_maps is None else keep_maps,
    )
    with _locked(run, out, overwrite, resume):  # no other predict run writes into out
        return _predict(run, out, resume, loader_workers(workers, detector.device))


def _plan(
    detector: Detector,
    source: str,
    reading: Reading,
    inputs: Sequence[str | Path],
    out: Path | None,
    *,
    masks: Path | None,
    setting: str | None,
    outputs: str | None,
    volume_score: str | None,
    batch_size: int,
    on_bad_input: str,
    keep_maps: bool,
) -> _Run:
    """The run's decisions, outputs and inputs, each checked before any work: a bad input under
    ``on_bad_input="error"`` stops the run before the output folder is touched."""
    thresholds = detector.meta.get("thresholds")
    pixel = (thresholds or {}).get("pixel")
    chosen = _outputs(outputs, pixel, masks is not None)
    decisions = Decisions.of(thresholds, volume_score)
    unreadable: list[Skipped] | None = [] if on_bad_input == "skip" else None
    unsupported: list[Skipped] = []  # listed whatever the policy: they are no inputs
    paths = expand_inputs(inputs, exclude=out, unreadable=unreadable, unsupported=unsupported)
    not_dicom = check_dicom_outputs(chosen.dicom, paths, pixel)
    if out is not None:
        _say_not_dicom(chosen.dicom, not_dicom)
    size = detector.config.img_size
    usable, skipped = check_inputs(paths, masks, size, on_bad_input, reading)
    return _Run(
        detector,
        source,
        reading,
        setting or detector.meta.get("run", {}).get("setting", "zero"),
        decisions,
        chosen,
        paths,
        unique_stems(paths),
        masks,
        usable,
        [*(unreadable or []), *unsupported, *skipped],  # what the input walk left out first
        batch_size,
        on_bad_input,
        keep_maps,
    )


def _locked(
    run: _Run, out: Path | None, overwrite: bool, resume: bool
) -> contextlib.AbstractContextManager:
    """The output folder locked and checked (:func:`~iqeclip.inference.outputs.guard`) by one
    rank, every rank obeying it; nothing without a folder."""
    if out is None:
        return contextlib.nullcontext()
    identity = {
        "checkpoint": str(Path(run.source).resolve()),
        "inputs": [str(p.resolve()) for p in run.paths],
        # the batch size too: batches shape the CPU kernels' rounding, and a resumed run must
        # equal an uninterrupted one byte for byte
        "options": [
            run.setting,
            repr(run.reading),
            run.outputs.identity(),
            run.decisions.volume_score,
            str(run.masks),
            run.batch_size,
        ],
        "world_size": distributed.world_size(),
    }
    problem, lock = None, contextlib.nullcontext()
    if distributed.is_main():  # one rank locks, looks at (and cleans) the folder; all obey it
        try:
            lock = guard(out, list(run.stems.values()), overwrite, resume, identity)
        except UserError as exc:
            problem = exc.message  # its parameters still marked
    problem = distributed.broadcast(problem)
    if problem is not None:
        raise UserError(problem)
    return lock


def _predict(run: _Run, out: Path | None, resume: bool, workers: int) -> Predictions:
    """Score the run's inputs, decide, and write (with ``out``)."""
    decisions = run.decisions
    if decisions.threshold is not None:
        say(f"decision: score >= {decisions.threshold:.6f} is abnormal ({decisions.rule})")
    else:
        say(
            f"{run.source} has no calibrated threshold: writing scores only (see iqeclip calibrate)"
        )
    partial = None
    rows: list[dict[str, Any]] = []
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        partial = Partial(out, CSV_COLUMNS)
        rows = partial.load() if resume else []
    done = {r["_input"] for r in rows}
    if done:
        say(f"--resume: {len(done)} inputs were scored before; scoring the rest")
    # under torchrun each rank scores and writes its own inputs, in the batches of a run
    # never interrupted (resume_point)
    mine, start, written = resume_point(distributed.shard(run.usable), rows, run.batch_size)
    with WriterPool() as pool:
        writer = Writer(
            out,
            run.masks,
            decisions,
            run.outputs,
            pool,
            run.reading,
            keep_maps=run.keep_maps,
            algorithm=Algorithm(__version__, Path(run.source).name),
        )
        writer.predictions = [prediction_of(r) for r in rows]
        scored = scored_items(
            run.detector,
            mine,
            run.setting,
            run.batch_size,
            run.reading,
            run.stems,
            run.skipped,
            run.on_bad_input,
            workers,
            start,
            written,
        )
        _write_inputs(run, writer, pool, partial, scored)
        pool.wait()
    return _finish(run, out, writer, partial)


def _write_inputs(
    run: _Run,
    writer: Writer,
    pool: WriterPool,
    partial: Partial | None,
    scored: Iterable[tuple[Item, torch.Tensor, float]],
) -> None:
    """Each input's predictions (its files on ``pool``), kept for ``--resume`` once written;
    an input with a non-finite score is an error, or skipped, never decided."""
    for source, results in by_input(scored):
        problem = nonfinite(results)
        if problem is not None:  # never a decision from NaN: the input is an error
            if run.on_bad_input == "error":
                raise UserError(f"{source}: {problem} ({param('on_bad_input')} skip leaves it out)")
            run.skipped.append(Skipped(source, problem))
            continue
        first = len(writer.predictions)
        for item, amap, score in results:
            writer.add(item, None if item.blank else amap, None if item.blank else score)
        if partial is not None:
            rows = [p.row(internal=True) for p in writer.predictions[first:]]
            pool.then(lambda source=source, rows=rows: partial.append(str(source), rows))


def _finish(run: _Run, out: Path | None, writer: Writer, partial: Partial | None) -> Predictions:
    """The tables written (with ``out``), the skipped inputs listed, the result."""
    csv_path = writer.write_csv({str(p): i for i, p in enumerate(run.paths)})
    volumes, volumes_path = writer.write_volumes()
    if volumes_path is not None:
        say(
            f"volume scores ({run.decisions.volume_score} of the slice scores) written to {volumes_path}"
        )
    no_dicom = sorted({k for part in distributed.gather(sorted(writer.no_dicom)) for k in part})
    if no_dicom:
        say(
            f"no DICOM {' or '.join(sorted(run.outputs.dicom))} for {len(no_dicom)} DICOM inputs "
            f"whose slices form no one volume (one geometry): {', '.join(no_dicom[:3])}"
            f"{' ...' if len(no_dicom) > 3 else ''}"
        )
    skipped = [s for part in distributed.gather(run.skipped) for s in part]
    if skipped and out is not None:
        if distributed.is_main():
            write_skipped(skipped, out / SKIPPED)
        say(
            f"skipped {len(skipped)} files or inputs, each listed with its reason in {out / SKIPPED}"
        )
    if partial is not None:
        partial.remove()
    if csv_path is not None:
        say(
            f"{len(writer.predictions)} predictions from {len(run.paths)} inputs written to {out} ({csv_path.name})"
        )
    return Predictions(writer.predictions, volumes, skipped, out, run.decisions.pixel)


def by_input(
    scored: Iterable[tuple[Item, torch.Tensor, float]],
) -> Iterator[tuple[Path, list[tuple[Item, torch.Tensor, float]]]]:
    """The scored items of each input together (they come input by input)."""
    for source, results in itertools.groupby(scored, key=lambda result: result[0].source):
        yield source, list(results)


def _outputs(outputs: str | None, pixel_threshold: float | None, masks: bool = False) -> Outputs:
    """The files asked for, checked before any work: by default the per-slice files of 2-D
    inputs only (a volume gets its volume's files; with ``--masks`` also the overlays its
    contours are drawn on); named, the same per-slice files for every input, and the DICOM
    objects named."""
    if outputs is None:
        images = DEFAULT_OUTPUTS + (("mask",) if pixel_threshold is not None else ())
        return Outputs(frozenset(images), frozenset({"overlay"} if masks else ()))
    chosen = [o.strip() for o in outputs.split(",") if o.strip()]
    unknown = sorted(set(chosen) - set(SLICE_FILES) - set(DICOM_FILES))
    if unknown or not chosen:
        raise UserError(
            f"{param('outputs')} {outputs!r}: choose from "
            f"{', '.join([*SLICE_FILES, *DICOM_FILES])} (comma-separated)"
        )
    if "mask" in chosen and pixel_threshold is None:
        raise UserError(
            f"{param('outputs')} mask needs a pixel threshold in the checkpoint: run iqeclip "
            f"calibrate on data with masks ({param('data_path')} and {param('obj')}) first"
        )
    per_slice = frozenset(chosen) & frozenset(SLICE_FILES)
    return Outputs(per_slice, per_slice, frozenset(chosen) & frozenset(DICOM_FILES))


def _say_not_dicom(kinds: frozenset[str], others: list[Path]) -> None:
    """Say once which inputs get no DICOM objects (they are not DICOM series)."""
    if kinds and others:
        say(
            f"--outputs {','.join(sorted(kinds))}: written only for DICOM series; not for "
            f"{len(others)} other inputs ({', '.join(str(p) for p in others[:3])}"
            f"{' ...' if len(others) > 3 else ''})"
        )
