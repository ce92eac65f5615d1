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
from typing import Any

import numpy as np

from iqeclip.config import SELECTIONS
from iqeclip.data.datasets import ImageDataset
from iqeclip.data.layout import Sample
from iqeclip.engine.evaluate import KeptMaps, predict_samples
from iqeclip.model.detector import IQEClip
from iqeclip.report.folder import save_example
from iqeclip.report.write import write_report
from iqeclip.runtime import distributed
from iqeclip.runtime.files import atomic_write, atomic_write_text

RANDOM_NOTE = (
    "The backbone is randomly initialised (--pretrain none): its features know nothing about "
    "images, so these numbers show that the pipeline runs, not the accuracy of pretrained CLIP. "
    "An AUROC near 0.5 is chance, and one below 0.5 (the scores ranking the classes the wrong "
    "way round) is as possible as one above; run with --pretrain openai or a weights file for "
    "real results."
)


def write_test_report(
    run_dir: str | Path,
    model: IQEClip,
    samples: Sequence[Sample],
    scores: np.ndarray,
    labels: np.ndarray,
    metrics: dict[str, Any],
    run: Any,
    top_k: int = 8,
    pixel_histograms: np.ndarray | None = None,
    selection: str | None = None,
) -> Path:
    """Write the run folder of a test and its report; returns the HTML path.

    ``pixel_histograms`` (per image, its map's histograms over normal and anomalous pixels, see
    :class:`~iqeclip.engine.evaluate.PixelHistograms`) are saved as ``pixel_histograms.npy``, for
    bootstrap intervals of the pixel AUROC that resample images. ``selection`` is the
    ``--select`` rule that chose the checkpoint's weights, recorded with what it means.
    """
    run_dir = Path(run_dir)
    order = np.argsort(scores)
    picks = sorted(set(order[-top_k:].tolist()) | set(order[:top_k].tolist()))
    chosen = [samples[i] for i in picks]
    size = model.config.img_size
    kept = KeptMaps(len(chosen), size)
    # every rank takes part in scoring the examples (it is collective under torchrun); rank 0 writes
    predict_samples(model, chosen, run.setting, run.batch_size, desc="report examples", sink=kept)
    if not distributed.is_main():
        return run_dir / "report.html"
    record = {
        "dataset": run.obj,
        "setting": run.setting,
        "shot": run.shot if run.setting == "few" else 0,
        **{k: v for k, v in metrics.items() if not (isinstance(v, float) and v != v)},
    }
    if selection is not None:
        record["selection"] = f"{selection}: {SELECTIONS.get(selection, selection)}"
    if model.config.pretrain.lower() == "none":
        record["note"] = RANDOM_NOTE
    record["checkpoint"] = str(run.ckpt_path)
    atomic_write_text(run_dir / "metrics.json", json.dumps(record, indent=2) + "\n")
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "slice", "label", "score"])
    for sample, label, score in zip(samples, labels, scores, strict=True):
        index = "" if sample.index is None else sample.index
        writer.writerow([str(sample.image), index, int(label), f"{score:.6f}"])
    atomic_write_text(run_dir / "scores.csv", buffer.getvalue())
    if pixel_histograms is not None:

        def write(tmp: Path) -> None:
            with tmp.open("wb") as f:
                np.save(f, pixel_histograms)

        atomic_write(run_dir / "pixel_histograms.npy", write)
    data = ImageDataset(chosen, size)
    for row, (i, sample) in enumerate(zip(picks, chosen, strict=True)):
        image, mask = data[row][0].permute(1, 2, 0).numpy(), data[row][1].numpy()
        save_example(
            run_dir,
            f"{row:03d}_{sample.image.stem}",
            image,
            kept.maps[row],
            float(scores[i]),
            int(labels[i]),
            str(sample.image),
            mask if sample.mask is not None else None,
        )
    html, _ = write_report(run_dir, top_k=top_k)
    return html
