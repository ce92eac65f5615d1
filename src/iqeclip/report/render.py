"""Human-readable reports of a test or predict run: one self-contained HTML page and a markdown file.

The run directory (``RUN_DIR``) contract
----------------------------------------

The test and predict commands write a run directory; :func:`write_report` reads it::

    RUN_DIR/metrics.json      # required: one JSON object
    RUN_DIR/scores.csv        # optional: one row per scored image (or slice)
    RUN_DIR/examples/*.npz    # optional: a few images with their anomaly maps

``metrics.json``
    One JSON object, e.g. ``dataset``, ``setting``, ``shot``, ``n_images``, ``image_auroc``,
    ``pixel_auroc``, ``image_ap``, ``pixel_ap``, ``image_f1_max``, ``pixel_aupro``; more keys
    are allowed. Every key whose value is a number or ``null`` (or ``NaN``) is a row of the
    metrics table: floats with 4 decimals, integers as they are, ``null``/``NaN`` as "–".
    String and boolean values (``dataset``, ``setting``, ...) are shown as run information; the
    string ``note`` (e.g. the random-backbone disclaimer) is shown as a note line. Nested
    objects and lists are ignored.

``scores.csv``
    A header with the columns ``path``, ``slice``, ``label`` and ``score`` (any order, extra
    columns ignored), then one row per image: ``slice`` is empty for 2-D images, ``label`` is
    ``0`` (normal), ``1`` (anomalous) or empty (unknown; ``-1`` is read as unknown too) and
    ``score`` is a finite number. ROC and precision-recall curves are drawn when the labelled
    rows hold both labels; a histogram of the scores per label (normal, anomalous, unknown) is
    drawn whenever there are scores.

``examples/<name>.npz`` (written by :func:`save_example`)
    Arrays ``image`` ``(H, W, 3)`` uint8 (grey ``(H, W)`` and RGBA are accepted), ``map``
    ``(h, w)`` float (any range; resized to ``(H, W)`` when it differs), optional ``mask``
    ``(h, w)`` bool (the ground truth), and the scalars ``score`` (float), ``label`` (int, ``-1``
    unknown; optional) and ``path`` (string; optional, the file's stem by default).

Outputs
-------

``RUN_DIR/report.html``
    Self-contained (no external file, no network, no script): the title, the note, the run
    information, the metrics table, the score counts per label, the ROC and PR curves (inline
    SVG, with AUROC / AP computed from ``scores.csv`` in the legend), the score histogram
    (inline SVG) and two example grids, "highest-scoring" and "lowest-scoring" (base64 PNG
    data URIs). Each example tile shows the input and the map overlay
    (:func:`iqeclip.report.heatmaps.overlay`) with the ground-truth contour in green when a mask
    exists; the maps are min-max normalised over all shown examples, so that tiles are
    comparable. The two grids never share an example: with ``n`` examples the highest-scoring
    grid holds ``min(top_k, ceil(n / 2))`` of them and the lowest-scoring grid
    ``min(top_k, n - that)``.

``RUN_DIR/report.md``
    The title, the note, the run information, the metrics table, the score counts per label and,
    with examples, a link to ``report_examples.png`` (the same grids drawn with
    :func:`iqeclip.report.heatmaps.grid`) followed by a table of the shown examples.

All files are written atomically. Every problem with the run directory (missing folder or
``metrics.json``, invalid JSON, a malformed ``scores.csv`` row, an unreadable example) raises
:class:`~iqeclip.errors.UserError` naming the file (and the line, for ``scores.csv``).
"""

from __future__ import annotations

import base64
import csv
import html
import io
import json
import math
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from sklearn.metrics import (
    average_precision_score,
    precision_recall_curve,
    roc_auc_score,
    roc_curve,
)

from iqeclip.errors import UserError
from iqeclip.report.heatmaps import draw_contour, grid, overlay
from iqeclip.runtime.files import atomic_write, atomic_write_text

__all__ = [
    "CURVE_BOX",
    "CURVE_SIZE",
    "Example",
    "Scores",
    "histogram_svg",
    "pr_svg",
    "read_examples",
    "read_metrics",
    "read_scores",
    "roc_svg",
    "save_example",
    "write_report",
]

SCORE_COLUMNS = ("path", "slice", "label", "score")
"""The columns ``scores.csv`` must have."""

CURVE_SIZE = (360, 300)
"""Width and height of the ROC and PR SVGs, in px."""

CURVE_BOX = (50.0, 16.0, 290.0, 240.0)
"""Plot box of the ROC and PR SVGs: left, top, width, height in px (value 0..1 on each axis)."""

_HIST_SIZE = (420, 300)
_HIST_BOX = (50.0, 16.0, 354.0, 240.0)
_MAX_CURVE_POINTS = 4000
_GRID_TILE = 128
_LABEL_NAMES = {0: "normal", 1: "anomalous", -1: "unknown"}
_LABEL_COLOURS = {0: "#1f77b4", 1: "#d62728", -1: "#7f7f7f"}
_DASH = "–"


# --------------------------------------------------------------------------- reading


@dataclass
class Scores:
    """The rows of ``scores.csv``.

    Attributes:
        paths: The image path of each row.
        slices: The slice of each row (``""`` for 2-D images).
        labels: ``(N,)`` int: 0 normal, 1 anomalous, -1 unknown.
        scores: ``(N,)`` float64 anomaly scores.
    """

    paths: list[str]
    slices: list[str]
    labels: np.ndarray
    scores: np.ndarray

    def counts(self) -> dict[int, int]:
        """Number of rows per label (0, 1, -1), zeros included."""
        return {k: int(np.sum(self.labels == k)) for k in (0, 1, -1)}

    def has_both_labels(self) -> bool:
        """Whether the labelled rows hold both normal and anomalous images."""
        c = self.counts()
        return c[0] > 0 and c[1] > 0


@dataclass
class Example:
    """One example image of ``examples/*.npz``, validated.

    Attributes:
        name: The file's stem.
        image: ``(H, W, 3)`` uint8 RGB.
        amap: ``(H, W)`` float64 anomaly map (resized to the image when it differed).
        mask: ``(H, W)`` bool ground truth, or None.
        score: The image's anomaly score.
        label: 0 normal, 1 anomalous, -1 unknown.
        path: The image's path.
    """

    name: str
    image: np.ndarray
    amap: np.ndarray
    mask: np.ndarray | None
    score: float
    label: int
    path: str


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN_DIR/metrics.json``.

    Args:
        run_dir: The run directory.

    Returns:
        The JSON object.

    Raises:
        UserError: The folder or ``metrics.json`` is missing, or it is not one JSON object.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise UserError(f"{path} does not exist (expected the run's metrics as one JSON object)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}: expected one JSON object, got {type(record).__name__}")
    return record


def _parse_label(text: str) -> int | None:
    text = text.strip()
    if text in ("", "-1"):
        return -1
    if text in ("0", "1"):
        return int(text)
    return None


def read_scores(path: str | Path) -> Scores:
    """Read and check a ``scores.csv`` file.

    Args:
        path: The CSV file (header ``path,slice,label,score``).

    Returns:
        The rows.

    Raises:
        UserError: Naming the file and line of the first malformed row (missing columns, wrong
            number of fields, a label other than 0, 1, -1 or empty, a score that is not a
            finite number).
    """
    path = Path(path)
    paths: list[str] = []
    slices: list[str] = []
    labels: list[int] = []
    scores: list[float] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            try:
                header = reader.fieldnames
                if header is None:
                    raise UserError(
                        f"{path}: empty file, expected the header {','.join(SCORE_COLUMNS)}"
                    )
                missing = [c for c in SCORE_COLUMNS if c not in header]
                if missing:
                    raise UserError(
                        f"{path} line 1: the header lacks {','.join(missing)}"
                        f" (expected {','.join(SCORE_COLUMNS)}, got {','.join(header)})"
                    )
                for row in reader:
                    where = f"{path} line {reader.line_num}"
                    if None in row or any(v is None for v in row.values()):
                        n = sum(1 for k, v in row.items() if k is not None and v is not None)
                        n += len(row.get(None) or [])
                        raise UserError(f"{where}: expected {len(header)} fields, got {n}")
                    label = _parse_label(row["label"])
                    if label is None:
                        raise UserError(
                            f"{where}: label {row['label']!r} is not 0, 1 or empty (unknown)"
                        )
                    try:
                        score = float(row["score"])
                    except ValueError:
                        raise UserError(
                            f"{where}: score {row['score']!r} is not a number"
                        ) from None
                    if not math.isfinite(score):
                        raise UserError(f"{where}: score {row['score']!r} is not finite")
                    paths.append(row["path"])
                    slices.append(row["slice"])
                    labels.append(label)
                    scores.append(score)
            except csv.Error as e:
                raise UserError(f"{path} line {reader.line_num}: {e}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from None
    return Scores(
        paths=paths,
        slices=slices,
        labels=np.asarray(labels, dtype=np.int64),
        scores=np.asarray(scores, dtype=np.float64),
    )


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {image.shape}")
    if min(image.shape[:2]) == 0:
        raise ValueError(f"image is empty, shape {image.shape}")
    return np.ascontiguousarray(image[..., :3])


def _check_map(amap: np.ndarray, name: str = "map") -> np.ndarray:
    amap = np.asarray(amap)
    if amap.ndim != 2 or min(amap.shape) == 0:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {amap.shape}")
    if name == "map" and not (
        np.issubdtype(amap.dtype, np.floating) or np.issubdtype(amap.dtype, np.integer)
    ):
        raise ValueError(f"map must be numeric, got {amap.dtype}")
    return amap


def _resize(values: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize a 2-D array to ``size`` = (H, W)."""
    if values.shape == size:
        return values
    if nearest:
        img = Image.fromarray(values.astype(np.uint8) * 255)
        return np.asarray(img.resize((size[1], size[0]), Image.Resampling.NEAREST)) > 127
    img = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float64)


def _load_example(path: Path) -> Example:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a readable .npz file ({e})") from None
    for key in ("image", "map", "score"):
        if key not in arrays:
            raise UserError(f"{path}: lacks the array {key!r} (has {', '.join(sorted(arrays))})")
    try:
        image = _check_image(arrays["image"])
        amap = _check_map(arrays["map"]).astype(np.float64)
        mask = _check_map(arrays["mask"], "mask").astype(bool) if "mask" in arrays else None
        score = float(np.asarray(arrays["score"]).reshape(()))
        label = int(np.asarray(arrays.get("label", -1)).reshape(()))
        name = str(np.asarray(arrays.get("path", path.stem)).reshape(()))
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: {e}") from None
    if label not in _LABEL_NAMES:
        raise UserError(f"{path}: label {label} is not 0, 1 or -1 (unknown)")
    if not math.isfinite(score):
        raise UserError(f"{path}: score {score} is not finite")
    size = image.shape[:2]
    amap = _resize(np.nan_to_num(amap, nan=0.0, posinf=0.0, neginf=0.0), size)
    if mask is not None:
        mask = _resize(mask, size, nearest=True)
    return Example(path.stem, image, amap, mask, score, label, name)


def read_examples(run_dir: str | Path) -> list[Example]:
    """Read ``RUN_DIR/examples/*.npz`` (none when the folder is missing), sorted by file name.

    Raises:
        UserError: An example cannot be read or lacks ``image``, ``map`` or ``score``.
    """
    folder = Path(run_dir) / "examples"
    if not folder.is_dir():
        return []
    return [_load_example(p) for p in sorted(folder.glob("*.npz"))]


def save_example(
    run_dir: str | Path,
    name: str,
    image: np.ndarray,
    amap: np.ndarray,
    score: float,
    label: int,
    path: str,
    mask: np.ndarray | None = None,
) -> Path:
    """Write ``RUN_DIR/examples/<name>.npz`` atomically, in the form :func:`write_report` reads.

    Args:
        run_dir: The run directory (created if needed).
        name: The file's stem (no path separators).
        image: ``(H, W, 3)`` uint8 RGB (grey ``(H, W)`` and RGBA are converted).
        amap: ``(H, W)`` anomaly map (stored as float32).
        score: The image's anomaly score.
        label: 0 normal, 1 anomalous, -1 unknown.
        path: The image's path, shown in captions.
        mask: Optional ``(H, W)`` ground-truth mask (stored as bool).

    Returns:
        The path of the written file.

    Raises:
        ValueError: Bad name, shapes, dtype or label.
    """
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"example name {name!r} must be a plain file name")
    if int(label) not in _LABEL_NAMES:
        raise ValueError(f"label must be 0, 1 or -1 (unknown), got {label}")
    arrays: dict[str, np.ndarray] = {
        "image": _check_image(image),
        "map": _check_map(amap).astype(np.float32),
        "score": np.asarray(float(score), dtype=np.float64),
        "label": np.asarray(int(label), dtype=np.int64),
        "path": np.asarray(str(path)),
    }
    if mask is not None:
        arrays["mask"] = _check_map(mask, "mask").astype(bool)
    out = Path(run_dir) / "examples" / f"{name}.npz"

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez_compressed(f, **arrays)

    atomic_write(out, write)
    return out


# --------------------------------------------------------------------------- formatting


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _fmt_value(v: Any) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return _DASH
    if isinstance(v, int):
        return str(v)
    return f"{v:.4f}"


def _metric_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    return [(k, _fmt_value(v)) for k, v in metrics.items() if v is None or _is_number(v)]


def _info_rows(metrics: dict[str, Any]) -> list[tuple[str, str]]:
    return [
        (k, str(v).lower() if isinstance(v, bool) else v)
        for k, v in metrics.items()
        if k != "note" and isinstance(v, (str, bool))
    ]


def _default_title(metrics: dict[str, Any], run_dir: Path) -> str:
    dataset = metrics.get("dataset")
    if not dataset:
        return f"IQE-CLIP report: {run_dir.resolve().name}"
    parts = [str(metrics[k]) for k in ("setting",) if metrics.get(k)]
    if _is_number(metrics.get("shot")):
        parts.append(f"{metrics['shot']}-shot")
    return f"IQE-CLIP report: {dataset}" + (f" ({', '.join(parts)})" if parts else "")


def _png_uri(image: np.ndarray | Image.Image) -> str:
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


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


# --------------------------------------------------------------------------- SVG


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
            f'<g class="hist-{_LABEL_NAMES[k]}" fill="{_LABEL_COLOURS[k]}" fill-opacity="0.55"'
            f' stroke="{_LABEL_COLOURS[k]}" stroke-width="0.5">' + "".join(rects) + "</g>"
        )
    entries = [(_LABEL_COLOURS[k], f"{_LABEL_NAMES[k]} (n={len(s)})") for k, s in groups]
    body.append(_legend_svg(x0 + w - 6, y0 + 6, entries, anchor_right=True))
    return _svg(_HIST_SIZE, body, "histogram", "Histogram of anomaly scores per label")


# --------------------------------------------------------------------------- examples


def _split_examples(examples: list[Example], top_k: int) -> tuple[list[Example], list[Example]]:
    """The highest-scoring (descending) and lowest-scoring (ascending) examples, disjoint."""
    ranked = sorted(examples, key=lambda e: (-e.score, e.name))
    n = len(ranked)
    k_hi = min(top_k, math.ceil(n / 2))
    k_lo = min(top_k, n - k_hi)
    highest = ranked[:k_hi]
    lowest = ranked[::-1][:k_lo]
    return highest, lowest


def _overlays(examples: Sequence[Example]) -> list[np.ndarray]:
    """Map overlays (+ ground-truth contours), the maps min-max normalised over all examples."""
    if not examples:
        return []
    lo = min(float(e.amap.min()) for e in examples)
    hi = max(float(e.amap.max()) for e in examples)
    scale = 1.0 / (hi - lo) if hi > lo else 0.0
    out = []
    for e in examples:
        tile = overlay(e.image, (e.amap - lo) * scale)
        if e.mask is not None and e.mask.any():
            tile = draw_contour(tile, e.mask)
        out.append(tile)
    return out


def _fit(tile: np.ndarray, size: int = _GRID_TILE) -> np.ndarray:
    """Resize into a ``size`` square keeping the aspect ratio, padded with white."""
    img = Image.fromarray(tile)
    f = size / max(img.size)
    if f != 1:
        img = img.resize(
            (max(1, round(img.width * f)), max(1, round(img.height * f))),
            Image.Resampling.BILINEAR,
        )
    canvas = Image.new("RGB", (size, size), "white")
    canvas.paste(img, ((size - img.width) // 2, (size - img.height) // 2))
    return np.asarray(canvas)


def _label_text(label: int) -> str:
    return _LABEL_NAMES.get(label, str(label))


def _examples_png(
    groups: Sequence[tuple[str, Sequence[Example], Sequence[np.ndarray]]],
) -> Image.Image:
    rows: list[list[np.ndarray]] = []
    row_labels: list[str] = []
    for name, exs, overlays in groups:
        if not exs:
            continue
        rows.append([_fit(e.image) for e in exs])
        rows.append([_fit(o) for o in overlays])
        row_labels += [f"{name}: input", f"{name}: map"]
    cols = max(len(r) for r in rows)
    return grid(rows, labels=row_labels, titles=[f"#{i + 1}" for i in range(cols)])


# --------------------------------------------------------------------------- documents

_CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:24px;color:#222;background:#fff}
main{max-width:1240px;margin:0 auto}
h1{font-size:1.5em;margin:0 0 8px}
h2{font-size:1.15em;margin:28px 0 8px;border-bottom:1px solid #ddd;padding-bottom:4px}
.note{background:#fff6d6;border:1px solid #e6c75a;padding:8px 12px;border-radius:4px;margin:8px 0}
.info{color:#555;margin:4px 0 12px}
.info b{color:#222;font-weight:600}
table{border-collapse:collapse;margin:4px 0}
th,td{border:1px solid #ccc;padding:3px 10px;text-align:left}
td.num{text-align:right;font-variant-numeric:tabular-nums}
.tables{display:flex;gap:32px;flex-wrap:wrap;align-items:flex-start}
.plots{display:flex;gap:16px;flex-wrap:wrap;align-items:flex-start}
.plots svg{border:1px solid #eee;background:#fff}
.examples{display:flex;gap:12px;flex-wrap:wrap}
figure{margin:0;padding:6px;border:1px solid #ddd;border-radius:4px;background:#fafafa}
figure .pair{display:flex;gap:4px}
figure img{width:140px;height:auto;display:block;background:#000}
figcaption{font-size:12px;margin-top:4px;max-width:284px;overflow-wrap:anywhere}
.anomalous{color:#b00}.normal{color:#1f5fa0}.unknown{color:#666}
.muted{color:#777}
"""


def _html_table(rows: Sequence[tuple[str, str]], head: tuple[str, str]) -> str:
    body = "".join(
        f'<tr><td>{html.escape(k)}</td><td class="num">{html.escape(v)}</td></tr>' for k, v in rows
    )
    return (
        f"<table><thead><tr><th>{html.escape(head[0])}</th><th>{html.escape(head[1])}</th></tr>"
        f"</thead><tbody>{body}</tbody></table>"
    )


def _html_examples(title: str, exs: Sequence[Example], overlays: Sequence[np.ndarray]) -> str:
    if not exs:
        return ""
    figs = []
    for rank, (e, o) in enumerate(zip(exs, overlays, strict=True), start=1):
        label = _label_text(e.label)
        base = e.path.replace("\\", "/").rsplit("/", 1)[-1] or e.path
        gt = " · GT contour" if e.mask is not None and e.mask.any() else ""
        figs.append(
            "<figure>"
            '<div class="pair">'
            f'<img alt="input {html.escape(base)}" src="{_png_uri(e.image)}">'
            f'<img alt="anomaly map {html.escape(base)}" src="{_png_uri(o)}">'
            "</div>"
            f'<figcaption title="{html.escape(e.path)}">#{rank} <b>{html.escape(base)}</b><br>'
            f'score {e.score:.4f} · <span class="{label}">{label}</span>{gt}</figcaption>'
            "</figure>"
        )
    return f'<h2>{html.escape(title)}</h2><div class="examples">{"".join(figs)}</div>'


def _md_escape(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _md_table(rows: Sequence[Sequence[str]], head: Sequence[str], right: Sequence[int] = ()) -> str:
    align = ["---:" if i in right else "---" for i in range(len(head))]
    lines = [
        "| " + " | ".join(_md_escape(h) for h in head) + " |",
        "| " + " | ".join(align) + " |",
    ]
    lines += ["| " + " | ".join(_md_escape(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_report(
    run_dir: str | Path, title: str | None = None, top_k: int = 8
) -> tuple[Path, Path]:
    """Write ``RUN_DIR/report.html`` and ``RUN_DIR/report.md`` (and ``report_examples.png``).

    See the module docstring for what is read and what the reports hold.

    Args:
        run_dir: The run directory (``metrics.json``, optional ``scores.csv`` and
            ``examples/*.npz``).
        title: The reports' title; by default built from ``dataset``, ``setting`` and ``shot``.
        top_k: At most this many examples in each of the highest- and lowest-scoring grids.

    Returns:
        The paths of ``report.html`` and ``report.md``.

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

    highest, lowest = _split_examples(examples, max(0, int(top_k)))
    shown_overlays = _overlays([*highest, *lowest])
    hi_overlays, lo_overlays = shown_overlays[: len(highest)], shown_overlays[len(highest) :]

    # ---- HTML
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{html.escape(title)}</h1>",
    ]
    if note:
        parts.append(f'<p class="note">{html.escape(note)}</p>')
    if info:
        parts.append(
            '<p class="info">'
            + " · ".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in info)
            + "</p>"
        )
    tables = [
        "<div><h2>Metrics</h2>"
        + (
            _html_table(metric_rows, ("metric", "value"))
            if metric_rows
            else '<p class="muted">no numeric metrics</p>'
        )
        + "</div>"
    ]
    if scores is not None:
        c = scores.counts()
        tables.append(
            "<div><h2>Scores</h2>"
            + _html_table(
                [(_LABEL_NAMES[k], str(c[k])) for k in (0, 1, -1)]
                + [("total", str(len(scores.scores)))],
                ("label", "images"),
            )
            + "</div>"
        )
    parts.append(f'<div class="tables">{"".join(tables)}</div>')
    if scores is not None and len(scores.scores):
        plots = []
        if scores.has_both_labels():
            known = scores.labels >= 0
            y, s = scores.labels[known], scores.scores[known]
            plots += [roc_svg(y, s), pr_svg(y, s)]
        plots.append(histogram_svg(scores.labels, scores.scores))
        heading = "Curves and score distribution" if len(plots) > 1 else "Score distribution"
        parts.append(f'<h2>{heading}</h2><div class="plots">{"".join(plots)}</div>')
        if not scores.has_both_labels():
            parts.append(
                '<p class="muted">No ROC / PR curves: scores.csv does not hold both normal and'
                " anomalous labels.</p>"
            )
    elif scores is None:
        parts.append('<p class="muted">No scores.csv in this run: no curves or histogram.</p>')
    parts.append(_html_examples("Highest-scoring examples", highest, hi_overlays))
    parts.append(_html_examples("Lowest-scoring examples", lowest, lo_overlays))
    if highest or lowest:
        parts.append(
            '<p class="muted">Left: input; right: anomaly map (min-max normalised over all shown'
            " examples), ground-truth contour in green where a mask exists.</p>"
        )
    parts.append(f'<p class="muted">Run directory: {html.escape(str(run_dir))}</p>')
    parts.append("</main></body></html>\n")
    html_text = "\n".join(p for p in parts if p)

    # ---- markdown
    md = [f"# {title}", ""]
    if note:
        md += [f"> **Note:** {note}", ""]
    if info:
        md += [" · ".join(f"**{_md_escape(k)}**: {_md_escape(v)}" for k, v in info), ""]
    md += ["## Metrics", ""]
    md += [
        _md_table(metric_rows, ("metric", "value"), right=(1,))
        if metric_rows
        else "No numeric metrics.",
        "",
    ]
    if scores is not None:
        c = scores.counts()
        rows = [(_LABEL_NAMES[k], str(c[k])) for k in (0, 1, -1)] + [
            ("total", str(len(scores.scores)))
        ]
        md += ["## Scores per label", "", _md_table(rows, ("label", "images"), right=(1,)), ""]
    png_path = run_dir / "report_examples.png"
    if highest or lowest:
        picture = _examples_png(
            [("highest", highest, hi_overlays), ("lowest", lowest, lo_overlays)]
        )
        atomic_write(png_path, lambda tmp: picture.save(tmp, format="PNG"))
        md += [
            "## Examples",
            "",
            "![highest- and lowest-scoring examples](report_examples.png)",
            "",
            "Rows: input and anomaly map (min-max normalised over all shown examples, ground-truth"
            " contour in green) of the highest-scoring and lowest-scoring examples.",
            "",
        ]
        rows = [
            (group, f"#{i}", e.path, f"{e.score:.4f}", _label_text(e.label))
            for group, exs in (("highest", highest), ("lowest", lowest))
            for i, e in enumerate(exs, start=1)
        ]
        md += [_md_table(rows, ("group", "rank", "path", "score", "label"), right=(3,)), ""]
    else:
        png_path.unlink(missing_ok=True)  # a stale picture of an earlier report
    md_text = "\n".join(md).rstrip() + "\n"

    html_path, md_path = run_dir / "report.html", run_dir / "report.md"
    atomic_write_text(html_path, html_text)
    atomic_write_text(md_path, md_text)
    return html_path, md_path
