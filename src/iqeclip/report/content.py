"""What a report shows, gathered once from a run directory for both documents: the title, the
note, the run information, the metrics table, the scores and the examples shown with their
overlays (see :mod:`iqeclip.report.folder` for what is read)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.report.folder import (
    LABEL_NAMES,
    Example,
    Scores,
    read_examples,
    read_metrics,
    read_scores,
)
from iqeclip.report.gallery import example_overlays, split_examples

__all__ = ["ReportContent", "count_rows", "read_content"]

_DASH = "–"

METRICS = {
    "image_auroc": (
        "Image AUROC",
        "area under the ROC curve of the image scores: the chance that an anomalous image scores "
        "above a normal one (0.5 is chance; below 0.5, the scores rank the classes the wrong way)",
    ),
    "image_ap": (
        "Image AP",
        "average precision of the image scores for the anomalous class (chance: the share of "
        "anomalous images)",
    ),
    "image_f1_max": (
        "Image F1-max",
        "the best F1 score of calling an image anomalous, over every threshold on its score",
    ),
    "pixel_auroc": (
        "Pixel AUROC",
        "area under the ROC curve of the map values over all test pixels, the pixels inside the "
        "ground-truth masks being the anomalous ones (0.5 is chance)",
    ),
    "pixel_ap": ("Pixel AP", "average precision of the map values for the anomalous pixels"),
    "n_images": ("Images", "test images the metrics are computed on"),
    "pixel_aupro": (
        "Pixel AUPRO",
        "area under the per-region-overlap curve up to a false-positive rate of 0.3, divided by "
        "0.3: how much of each lesion the map covers, every lesion counting alike",
    ),
    "pixel_auroc_error_bound": (
        "Pixel AUROC error bound",
        "largest difference from the exact Pixel AUROC that the binned computation can make",
    ),
    "pixel_ap_error_bound": (
        "Pixel AP error bound",
        "largest difference from the exact Pixel AP that the binned computation can make",
    ),
    "pixel_aupro_error_bound": (
        "Pixel AUPRO error bound",
        "largest difference from the exact Pixel AUPRO that the binned computation can make",
    ),
}
"""Each metric's readable name and one-line definition, shown wherever reports show it."""


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt_value(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return _DASH
    if isinstance(v, int):
        return str(v)
    return f"{v:.4f}"


_NOT_METRICS = ("shot",)  # numbers of metrics.json that describe the run: shown as information


def metric_name(key: str) -> tuple[str, str]:
    """(readable name, definition) of a metric key; unknown keys are shown as they are."""
    return METRICS.get(key, (key, ""))


def _metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    """The metrics shown: every number or null but the run's counts, and no error bound of 0
    (the exact computation)."""
    return [
        (k, _fmt_value(v))
        for k, v in metrics.items()
        if (v is None or _is_number(v))
        and k not in _NOT_METRICS
        and not (k.endswith("_error_bound") and v == 0)
    ]


def _info_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (k, str(v).lower() if isinstance(v, bool) else _fmt_value(v) if k in _NOT_METRICS else v)
        for k, v in metrics.items()
        if k != "note" and (isinstance(v, (str, bool)) or k in _NOT_METRICS)
    ]


def _default_title(metrics: dict[str, Any], run_dir: Path) -> str:
    dataset = metrics.get("dataset")
    if not dataset:
        return f"IQE-CLIP report: {run_dir.resolve().name}"
    parts = [str(metrics[k]) for k in ("setting",) if metrics.get(k)]
    if _is_number(metrics.get("shot")):
        parts.append(f"{metrics['shot']}-shot")
    return f"IQE-CLIP report: {dataset}" + (f" ({', '.join(parts)})" if parts else "")


def count_rows(scores: Scores) -> list[tuple[str, str]]:
    """The test set's composition: (label, number of images) for normal and anomalous, unknown
    where there are any, then the total."""
    c = scores.counts()
    shown = [k for k in (0, 1, -1) if k != -1 or c[k]]
    return [(LABEL_NAMES[k], str(c[k])) for k in shown] + [("total", str(len(scores.scores)))]


@dataclass
class ReportContent:
    """The content of the HTML and markdown reports of one run directory.

    Attributes:
        run_dir: The run directory.
        title: The reports' title.
        note: The ``note`` of ``metrics.json``, or None when it is missing or empty.
        info: (key, text) of the string and boolean values of ``metrics.json``.
        metric_rows: (key, formatted value) of the numeric and null values of ``metrics.json``.
        scores: The rows of ``scores.csv``, or None without that file.
        highest: The highest-scoring examples shown, by descending score.
        lowest: The lowest-scoring examples shown, by ascending score.
        hi_overlays: The map overlays of ``highest``.
        lo_overlays: The map overlays of ``lowest``.
    """

    run_dir: Path
    title: str
    note: str | None
    info: list[tuple[str, str]]
    metric_rows: list[tuple[str, str]]
    scores: Scores | None
    highest: list[Example]
    lowest: list[Example]
    hi_overlays: list[np.ndarray]
    lo_overlays: list[np.ndarray]


def read_content(run_dir: str | Path, title: str | None = None, top_k: int = 8) -> ReportContent:
    """Read a run directory into what its reports show.

    Args:
        run_dir: The run directory.
        title: The reports' title; by default built from ``dataset``, ``setting`` and ``shot``.
        top_k: At most this many examples in each of the highest- and lowest-scoring grids.

    Raises:
        UserError: A missing run directory or ``metrics.json``, or a malformed input file.
    """
    run_dir = Path(run_dir)
    metrics = read_metrics(run_dir)
    scores_path = run_dir / "scores.csv"
    scores = read_scores(scores_path) if scores_path.is_file() else None
    examples = read_examples(run_dir)
    title = title if title is not None else _default_title(metrics, run_dir)
    note = metrics.get("note")
    note = str(note) if note not in (None, "") else None
    info = _info_rows(metrics)
    metric_rows = _metric_rows(metrics)

    highest, lowest = split_examples(examples, max(0, int(top_k)))
    shown_overlays = example_overlays([*highest, *lowest])
    hi_overlays, lo_overlays = shown_overlays[: len(highest)], shown_overlays[len(highest) :]
    return ReportContent(
        run_dir=run_dir,
        title=title,
        note=note,
        info=info,
        metric_rows=metric_rows,
        scores=scores,
        highest=highest,
        lowest=lowest,
        hi_overlays=hi_overlays,
        lo_overlays=lo_overlays,
    )
