"""The final test of a run: one owner for ``train-*`` and ``test-*``.

:func:`run_test` scores the test split once and returns a :class:`TestResult`: the metrics, every
score and label, the pixel histograms and the highest- and lowest-scoring examples with their
input pictures and maps, kept while the test streams (:class:`ExampleKeeper`), so a report needs
no second model pass. The report itself is written by a :class:`ReportWriter` handed in from
above (``iqeclip.report.run.write_test_report``): the engine imports nothing of the report.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from iqeclip.config import RunConfig
from iqeclip.data.sample import Sample
from iqeclip.engine.cache import FeatureCache
from iqeclip.engine.evaluate import evaluate, write_metrics_json
from iqeclip.engine.runlog import RunLog
from iqeclip.model.detector import IQEClip
from iqeclip.runtime import distributed

__all__ = [
    "Example",
    "ExampleKeeper",
    "ReportWriter",
    "TestResult",
    "pick_examples",
    "record_fields",
    "require_writer",
    "run_test",
]

TOP_K = 8
"""Examples kept at each end of the score order (and shown per grid of the report)."""


@dataclass(frozen=True)
class Example:
    """One of the highest- or lowest-scoring test images, as the test pass saw it.

    Attributes:
        index: Its position in the test samples.
        sample: The test sample (path, slice, mask file).
        score: Its image score.
        label: 0 normal, 1 anomalous.
        image: ``(H, W, 3)`` uint8: the model's input picture.
        amap: ``(H, W)`` float32: the anomaly map that gave ``score``.
        mask: ``(H, W)`` bool ground truth, or None for a sample without a mask file.
    """

    index: int
    sample: Sample
    score: float
    label: int
    image: np.ndarray
    amap: np.ndarray
    mask: np.ndarray | None


@dataclass(frozen=True)
class TestResult:
    """What the final test gave: everything its run folder is written from.

    Attributes:
        metrics: The metrics of :func:`~iqeclip.engine.evaluate.evaluate`.
        samples: The test samples, in the order of ``scores`` and ``labels``.
        scores: ``(N,)`` float64 image scores.
        labels: ``(N,)`` int64 labels.
        pixel_histograms: Per image, its map's histograms over normal and anomalous pixels
            (:class:`~iqeclip.engine.evaluate.PixelHistograms`); None without a report or masks.
        examples: The :func:`pick_examples` images, in sample order (none without a report).
        top_k: How many examples were picked at each end of the score order.
    """

    __test__ = False  # not a pytest test class

    metrics: dict[str, Any]
    samples: list[Sample]
    scores: np.ndarray
    labels: np.ndarray
    pixel_histograms: np.ndarray | None
    examples: list[Example]
    top_k: int


class ReportWriter(Protocol):
    """Writes the run folder of a test and its report; returns the HTML path."""

    def __call__(
        self,
        run_dir: Path,
        result: TestResult,
        *,
        dataset: str,
        setting: str,
        shot: int,
        checkpoint: str,
        pretrain: str,
        selection: str,
    ) -> Path: ...


def record_fields(run: RunConfig) -> dict[str, Any]:
    """What a test's metrics record says of its run: ``dataset``, ``setting`` and ``shot``."""
    return {
        "dataset": run.obj,
        "setting": run.setting,
        "shot": run.shot if run.setting == "few" else 0,
    }


def require_writer(run: RunConfig, report: ReportWriter | None) -> None:
    """Refuse a run with ``--report`` but no writer for it (a caller's mistake, found before
    any work rather than after the training)."""
    if run.report_dir and report is None:
        raise ValueError("run.report_dir is set but no report writer was given")


def pick_examples(scores: np.ndarray, top_k: int) -> list[int]:
    """The positions of the ``top_k`` highest- and lowest-scoring images, in increasing order
    (ties as :func:`numpy.argsort` breaks them)."""
    order = np.argsort(scores)
    return sorted(set(order[-top_k:].tolist()) | set(order[:top_k].tolist()))


class ExampleKeeper:
    """Keeps, while the test streams, the images that may still be among the ``k`` highest- or
    lowest-scoring: ``keeper(start, scores, images, maps, masks)`` per batch.

    An image is dropped once ``k`` images seen so far score strictly higher and ``k`` strictly
    lower (in :func:`numpy.sort`'s order, NaN highest): it cannot be picked by :func:`pick_examples`
    on the final scores, whatever ties :func:`numpy.argsort` breaks. So at most ``2 k`` images are
    kept, plus those tied with the ``k``-th at either end.
    """

    def __init__(self, k: int) -> None:
        if k < 1:
            raise ValueError(f"ExampleKeeper keeps k >= 1 examples at each end, not {k}")
        self.k = k
        self.index = np.empty(0, np.int64)
        self.scores = np.empty(0, np.float64)
        self.kept: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __call__(
        self,
        start: int,
        scores: np.ndarray,
        images: np.ndarray,
        maps: np.ndarray,
        masks: np.ndarray,
    ) -> None:
        index = np.concatenate([self.index, np.arange(start, start + len(scores))])
        seen = np.concatenate([self.scores, scores])
        ordered = np.sort(seen)
        higher = len(seen) - np.searchsorted(ordered, seen, side="right")
        lower = np.searchsorted(ordered, seen, side="left")
        keep = (higher < self.k) | (lower < self.k)
        for row in np.flatnonzero(keep[len(self.index) :]):
            picture = np.ascontiguousarray(images[row].transpose(1, 2, 0))
            self.kept[start + int(row)] = (picture, maps[row].copy(), masks[row].copy())
        self.index, self.scores = index[keep], seen[keep]
        self.kept = {i: self.kept[i] for i in self.index.tolist()}

    def examples(
        self, samples: Sequence[Sample], scores: np.ndarray, labels: np.ndarray
    ) -> list[Example]:
        """The :func:`pick_examples` images of the final ``scores``, from the kept ones (a
        sample without a mask file gets no mask)."""
        picked = []
        for i in pick_examples(scores, self.k):
            image, amap, mask = self.kept[i]
            mask = mask if samples[i].mask is not None else None
            picked.append(
                Example(i, samples[i], float(scores[i]), int(labels[i]), image, amap, mask)
            )
        return picked


def run_test(
    model: IQEClip,
    samples: list[Sample],
    pixel: bool,
    run: RunConfig,
    *,
    batch_size: int,
    workers: int,
    cache: FeatureCache | None,
    log: RunLog,
    selection: str,
    report: ReportWriter | None = None,
    log_cache: bool = True,
) -> TestResult:
    """Score the test split once, log and write its results; return them.

    The published metric lines and (``log_cache``; training logs it after its checkpoint line)
    the cache's hit rate are logged; rank 0 writes
    ``--metrics_json`` and, with ``--report``, the run folder through ``report`` (every rank took
    part in the one scoring pass: its results reach all of them).

    Args:
        model: The detector, with the weights to test.
        samples: The test samples.
        pixel: Whether pixel metrics apply.
        run: The run (``report_dir``, ``metrics_json``, the record fields; ``ckpt_path`` is the
            checkpoint the report names).
        batch_size: Images per forward pass.
        workers: DataLoader worker processes.
        cache: The frozen-feature cache (``None``: none).
        log: The run's log.
        selection: The ``--select`` rule that chose the weights (recorded in the report).
        report: Writes the run folder; required with ``run.report_dir``.
    """
    require_writer(run, report)
    wanted = bool(run.report_dir)
    scored: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    histograms: dict[str, np.ndarray] | None = {} if wanted else None
    keeper = ExampleKeeper(TOP_K) if wanted else None
    metrics = evaluate(
        model,
        samples,
        run.setting,
        pixel,
        batch_size,
        workers,
        f"{run.obj} test",
        cache,
        scores_out=scored,
        histograms_out=histograms,
        examples=keeper,
    )
    log.metrics(run.obj, metrics)
    if cache is not None:
        cache.flush()
        if log_cache:
            log(cache.hit_rate())
    if run.metrics_json and distributed.is_main():
        write_metrics_json(run.metrics_json, metrics, **record_fields(run))
    scores, labels = scored[""]
    result = TestResult(
        metrics,
        list(samples),
        scores,
        labels,
        (histograms or {}).get(""),
        keeper.examples(samples, scores, labels) if keeper is not None else [],
        TOP_K,
    )
    if report is not None and run.report_dir and distributed.is_main():
        html = report(
            Path(run.report_dir),
            result,
            **record_fields(run),
            checkpoint=str(run.ckpt_path),
            pretrain=model.config.pretrain,
            selection=selection,
        )
        log(f"report: {html}")
    return result
