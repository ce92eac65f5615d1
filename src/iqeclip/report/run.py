"""The run folder of a test (``--report DIR``): metrics, per-image scores, example maps, report.

Layout (read by :func:`iqeclip.report.write.write_report`)::

    DIR/metrics.json        the test metrics with dataset, setting, shot and a note
    DIR/scores.csv          path,slice,label,score for every test image
    DIR/examples/*.npz      the highest- and lowest-scoring images with their maps and masks
    DIR/report.html, DIR/report.md, DIR/report_examples.png
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from iqeclip.config import SELECTIONS
from iqeclip.report.folder import save_example
from iqeclip.report.write import write_report
from iqeclip.runtime.files import atomic_write, atomic_write_text

RANDOM_NOTE = (
    "The backbone is randomly initialised (--pretrain none): its features know nothing about "
    "images, so these numbers show that the pipeline runs, not the accuracy of pretrained CLIP. "
    "An AUROC near 0.5 is chance, and one below 0.5 (the scores ranking the classes the wrong "
    "way round) is as possible as one above; run with --pretrain openai or a weights file for "
    "real results."
)


class FinalTest(Protocol):
    """What a test's run folder is written from: :class:`iqeclip.engine.testing.TestResult`,
    named here by what is read of it (the report imports nothing of the engine).

    ``samples`` have ``image`` (a path) and ``index`` (the slice, or None); ``examples`` have
    ``sample``, ``score``, ``label``, ``image`` ``(H, W, 3)`` uint8, ``amap`` ``(H, W)`` and
    ``mask`` (or None).
    """

    metrics: dict[str, Any]
    samples: Sequence[Any]
    scores: np.ndarray
    labels: np.ndarray
    pixel_histograms: np.ndarray | None
    examples: Sequence[Any]
    top_k: int


def write_test_report(
    run_dir: str | Path,
    result: FinalTest,
    *,
    dataset: str,
    setting: str,
    shot: int,
    checkpoint: str,
    pretrain: str,
    selection: str | None = None,
) -> Path:
    """Write the run folder of a test and its report; returns the HTML path.

    ``result.pixel_histograms`` (per image, its map's histograms over normal and anomalous
    pixels) are saved as ``pixel_histograms.npy``, for bootstrap intervals of the pixel AUROC
    that resample images. ``selection`` is the ``--select`` rule that chose the checkpoint's
    weights, recorded with what it means; ``pretrain`` ``none`` adds the random-backbone note.
    """
    run_dir = Path(run_dir)
    record = {
        "dataset": dataset,
        "setting": setting,
        "shot": shot,
        **{k: v for k, v in result.metrics.items() if not (isinstance(v, float) and v != v)},
    }
    if selection is not None:
        record["selection"] = f"{selection}: {SELECTIONS.get(selection, selection)}"
    if pretrain.lower() == "none":
        record["note"] = RANDOM_NOTE
    record["checkpoint"] = checkpoint
    atomic_write_text(run_dir / "metrics.json", json.dumps(record, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "slice", "label", "score"])
    for sample, label, score in zip(result.samples, result.labels, result.scores, strict=True):
        index = "" if sample.index is None else sample.index
        writer.writerow([str(sample.image), index, int(label), f"{score:.6f}"])
    atomic_write_text(run_dir / "scores.csv", buffer.getvalue())
    histograms = result.pixel_histograms
    if histograms is not None:

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.save(f, histograms)

        atomic_write(run_dir / "pixel_histograms.npy", write)
    for row, example in enumerate(result.examples):
        save_example(
            run_dir,
            f"{row:03d}_{example.sample.image.stem}",
            example.image,
            example.amap,
            example.score,
            example.label,
            str(example.sample.image),
            example.mask,
        )
    html, _ = write_report(run_dir, top_k=result.top_k)
    return html
