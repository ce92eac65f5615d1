"""The report's plots as self-contained inline SVG: ROC and precision-recall curves, and the
histogram of the scores per label (no plotting library, no script, no external file)."""

from __future__ import annotations

import html
import math
from collections.abc import Sequence

import numpy as np
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from iqeclip.report.folder import LABEL_NAMES

__all__ = ["CURVE_BOX", "CURVE_SIZE", "histogram_svg", "pr_svg", "roc_svg"]

CURVE_SIZE = (360, 300)
"""Width and height of the ROC and PR SVGs, in px."""

CURVE_BOX = (50.0, 16.0, 290.0, 240.0)
"""Plot box of the ROC and PR SVGs: left, top, width, height in px (value 0..1 on each axis)."""

_HIST_SIZE = (420, 300)
_HIST_BOX = (50.0, 16.0, 354.0, 240.0)
_MAX_CURVE_POINTS = 4000
_LABEL_COLOURS = {0: "#1f77b4", 1: "#d62728", -1: "#7f7f7f"}


def _f(x: float) -> str:
    """A coordinate with at most 2 decimals."""
    s = f"{x:.2f}".rstrip("0").rstrip(".")
    return "0" if s == "-0" else s


def _nice_ticks(lo: float, hi: float, n: int = 5) -> tuple[list[float], int]:
    """Round tick values in [lo, hi] (about ``n``) and the decimals to print them with."""
    span = hi - lo
    raw = span / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 2.5, 5, 10) if m * mag >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    ticks = []
    t = first
    while t <= hi + step * 1e-9:
        ticks.append(0.0 if abs(t) < step * 1e-9 else t)
        t += step
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    if step * 10**decimals != round(step * 10**decimals):
        decimals += 1
    return ticks, decimals


def _decimate(x: np.ndarray, y: np.ndarray, limit: int = _MAX_CURVE_POINTS):
    if len(x) <= limit:
        return x, y
    idx = np.unique(np.linspace(0, len(x) - 1, limit).round().astype(int))
    return x[idx], y[idx]


def _axes_svg(
    box: tuple[float, float, float, float],
    xticks: Sequence[tuple[float, str]],
    yticks: Sequence[tuple[float, str]],
    xlabel: str,
    ylabel: str,
) -> list[str]:
    """Frame, ticks (given as positions in 0..1 of the box) and axis labels."""
    x0, y0, w, h = box
    out = [
        f'<rect x="{_f(x0)}" y="{_f(y0)}" width="{_f(w)}" height="{_f(h)}" fill="none" stroke="#333"/>'
    ]
    for pos, text in xticks:
        x = x0 + pos * w
        out.append(
            f'<line x1="{_f(x)}" y1="{_f(y0 + h)}" x2="{_f(x)}" y2="{_f(y0 + h + 4)}" stroke="#333"/>'
            f'<line x1="{_f(x)}" y1="{_f(y0)}" x2="{_f(x)}" y2="{_f(y0 + h)}" stroke="#eee"/>'
            f'<text x="{_f(x)}" y="{_f(y0 + h + 16)}" text-anchor="middle">{html.escape(text)}</text>'
        )
    for pos, text in yticks:
        y = y0 + (1 - pos) * h
        out.append(
            f'<line x1="{_f(x0 - 4)}" y1="{_f(y)}" x2="{_f(x0)}" y2="{_f(y)}" stroke="#333"/>'
            f'<line x1="{_f(x0)}" y1="{_f(y)}" x2="{_f(x0 + w)}" y2="{_f(y)}" stroke="#eee"/>'
            f'<text x="{_f(x0 - 7)}" y="{_f(y + 4)}" text-anchor="end">{html.escape(text)}</text>'
        )
    out.append(
        f'<text x="{_f(x0 + w / 2)}" y="{_f(y0 + h + 34)}" text-anchor="middle">{html.escape(xlabel)}</text>'
        f'<text transform="translate(13 {_f(y0 + h / 2)}) rotate(-90)" text-anchor="middle">'
        f"{html.escape(ylabel)}</text>"
    )
    return out


def _legend_svg(x: float, y: float, entries: Sequence[tuple[str, str]], anchor_right: bool) -> str:
    """A legend box of (colour, text) entries with its top-left (or top-right) corner at x, y."""
    width = 14 + 7 * max(len(t) for _, t in entries) + 14
    height = 6 + 16 * len(entries)
    left = x - width if anchor_right else x
    out = [
        f'<rect x="{_f(left)}" y="{_f(y)}" width="{_f(width)}" height="{_f(height)}"'
        ' fill="white" fill-opacity="0.9" stroke="#bbb"/>'
    ]
    for i, (colour, text) in enumerate(entries):
        cy = y + 12 + 16 * i
        out.append(
            f'<rect x="{_f(left + 6)}" y="{_f(cy - 5)}" width="12" height="10" fill="{colour}"/>'
            f'<text x="{_f(left + 24)}" y="{_f(cy + 4)}">{html.escape(text)}</text>'
        )
    return "".join(out)


def _svg(size: tuple[int, int], body: Sequence[str], cls: str, title: str) -> str:
    w, h = size
    return (
        f'<svg class="{cls}" width="{w}" height="{h}" viewBox="0 0 {w} {h}" role="img"'
        f' aria-label="{html.escape(title)}" font-size="11">'
        f"<title>{html.escape(title)}</title>" + "".join(body) + "</svg>"
    )


def _unit_ticks() -> list[tuple[float, str]]:
    return [(v / 5, f"{v / 5:.1f}") for v in range(6)]


def _points(xs: np.ndarray, ys: np.ndarray, box: tuple[float, float, float, float]) -> str:
    """Map 0..1 values into the plot box (y upwards) as SVG polyline points."""
    x0, y0, w, h = box
    return " ".join(f"{_f(x0 + x * w)},{_f(y0 + (1 - y) * h)}" for x, y in zip(xs, ys, strict=True))


def roc_svg(labels: np.ndarray, scores: np.ndarray) -> str:
    """The ROC curve of binary ``labels`` vs ``scores`` as an inline SVG.

    The curve is ``sklearn.metrics.roc_curve`` (default ``drop_intermediate``) as a polyline of
    class ``roc-curve``, FPR on x and TPR on y mapped into :data:`CURVE_BOX`.
    """
    fpr, tpr, _ = roc_curve(labels, scores)
    fpr, tpr = _decimate(fpr, tpr)
    auc = roc_auc_score(labels, scores)
    x0, y0, w, h = CURVE_BOX
    body = _axes_svg(
        CURVE_BOX, _unit_ticks(), _unit_ticks(), "False positive rate", "True positive rate"
    )
    body.append(
        f'<line class="chance" x1="{_f(x0)}" y1="{_f(y0 + h)}" x2="{_f(x0 + w)}" y2="{_f(y0)}"'
        ' stroke="#999" stroke-dasharray="4 3"/>'
    )
    body.append(
        f'<polyline class="roc-curve" fill="none" stroke="#d62728" stroke-width="2"'
        f' points="{_points(fpr, tpr, CURVE_BOX)}"/>'
    )
    body.append(
        _legend_svg(
            x0 + w - 6,
            y0 + h - 44,
            [("#d62728", f"ROC, AUROC {auc:.4f}"), ("#999", "chance")],
            anchor_right=True,
        )
    )
    return _svg(CURVE_SIZE, body, "curve roc", f"ROC curve, AUROC {auc:.4f}")


def pr_svg(labels: np.ndarray, scores: np.ndarray) -> str:
    """The precision-recall curve as an inline SVG (polyline of class ``pr-curve``, recall on x),
    with the prevalence (a random detector's precision) as a dashed line."""
    precision, recall, _ = precision_recall_curve(labels, scores)
    recall, precision = _decimate(recall, precision)
    ap = average_precision_score(labels, scores)
    prevalence = float(np.mean(labels))
    x0, y0, w, h = CURVE_BOX
    body = _axes_svg(CURVE_BOX, _unit_ticks(), _unit_ticks(), "Recall", "Precision")
    yb = y0 + (1 - prevalence) * h
    body.append(
        f'<line class="chance" x1="{_f(x0)}" y1="{_f(yb)}" x2="{_f(x0 + w)}" y2="{_f(yb)}"'
        ' stroke="#999" stroke-dasharray="4 3"/>'
    )
    body.append(
        f'<polyline class="pr-curve" fill="none" stroke="#1f77b4" stroke-width="2"'
        f' points="{_points(recall, precision, CURVE_BOX)}"/>'
    )
    body.append(
        _legend_svg(
            x0 + 6,
            y0 + h - 44,
            [("#1f77b4", f"PR, AP {ap:.4f}"), ("#999", f"prevalence {prevalence:.3f}")],
            anchor_right=False,
        )
    )
    return _svg(CURVE_SIZE, body, "curve pr", f"Precision-recall curve, AP {ap:.4f}")


def histogram_svg(labels: np.ndarray, scores: np.ndarray, bins: int = 30) -> str:
    """Histograms of ``scores`` per label (normal, anomalous, unknown) on shared bins, as SVG."""
    lo, hi = float(scores.min()), float(scores.max())
    if hi - lo < 1e-12 * max(1.0, abs(lo)):
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    groups = [(k, scores[labels == k]) for k in (0, 1, -1) if np.any(labels == k)]
    counts = {k: np.histogram(s, bins=edges)[0] for k, s in groups}
    top = max(int(c.max()) for c in counts.values())
    yvals, _ = _nice_ticks(0, top, 4)
    yvals, ydec = [v for v in yvals if v == int(v)], 0  # counts: whole numbers only
    ymax = max(top, yvals[-1])
    xvals, xdec = _nice_ticks(lo, hi, 5)
    x0, y0, w, h = _HIST_BOX
    body = _axes_svg(
        _HIST_BOX,
        [((v - lo) / (hi - lo), f"{v:.{xdec}f}") for v in xvals],
        [(v / ymax, f"{v:.{ydec}f}") for v in yvals],
        "Anomaly score",
        "Images",
    )
    bw = w / bins
    for k, c in counts.items():
        rects = [
            f'<rect x="{_f(x0 + i * bw)}" y="{_f(y0 + h - n / ymax * h)}" width="{_f(bw)}"'
            f' height="{_f(n / ymax * h)}"/>'
            for i, n in enumerate(c)
            if n > 0
        ]
        body.append(
            f'<g class="hist-{LABEL_NAMES[k]}" fill="{_LABEL_COLOURS[k]}" fill-opacity="0.55"'
            f' stroke="{_LABEL_COLOURS[k]}" stroke-width="0.5">' + "".join(rects) + "</g>"
        )
    entries = [(_LABEL_COLOURS[k], f"{LABEL_NAMES[k]} (n={len(s)})") for k, s in groups]
    body.append(_legend_svg(x0 + w - 6, y0 + 6, entries, anchor_right=True))
    return _svg(_HIST_SIZE, body, "histogram", "Histogram of anomaly scores per label")
