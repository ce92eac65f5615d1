"""The cells of a grid folder as ``iqeclip reproduce`` tabulates them: which are finished, which
are not run and which cannot be read, and one result row per finished cell with its seeded 95 %
bootstrap intervals of the image and pixel AUROC (images resampled with replacement,
``--bootstrap`` times; for the pixel AUROC each image keeps all its pixels, counted in 1000-bin
histograms of its map; resamples holding one class only are left out, as AUROC is undefined for
them).

A finished cell's files are checked before anything is taken from them: ``cell.json`` and
``metrics.json`` must be JSON objects (``cell.json`` with the keys ``run_cell`` writes, for the
cell of its folder; the metrics numbers or null), ``report/scores.csv`` a valid ``scores.csv``
(:func:`~iqeclip.report.folder.read_scores`) and ``report/pixel_histograms.npy`` a plain (never
unpickled) integer array ``(images, 2, bins)``. A cell where one of them fails is *unreadable*:
one warning names the cell and the file, and the tables mark it; it is not counted as finished.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from iqeclip.errors import UserError
from iqeclip.report.folder import read_scores
from iqeclip.reproduce.grid import DONE, TARGETS, Cell, plan, read_json

__all__ = [
    "METRICS",
    "RESULT_COLUMNS",
    "Collected",
    "binned_auroc",
    "bootstrap_auroc",
    "bootstrap_pixel_auroc",
    "collect",
]

METRICS = ("image_auroc", "pixel_auroc", "image_ap", "pixel_ap", "image_f1_max", "pixel_aupro")
"""The metrics of a cell's ``metrics.json`` that ``results.csv`` keeps."""
RESULT_COLUMNS = (
    "target",
    "setting",
    "shot",
    "bank",
    "draw",
    "seed",
    "n_images",
    *METRICS,
    "image_auroc_ci_low",
    "image_auroc_ci_high",
    "pixel_auroc_ci_low",
    "pixel_auroc_ci_high",
    "selection_rule",
    "seconds",
)
_CELL_KEYS = ("target", "setting", "shot", "draw", "seed", "select", "seconds", "n_images")

logger = logging.getLogger(__name__)


def binned_auroc(counts: np.ndarray) -> float:
    """The AUROC of pixels given as histograms ``(2, bins)`` (normal, anomalous) over one range:
    P(anomalous > normal) + P(same bin) / 2."""
    normal, anomalous = counts[0].astype(np.float64), counts[1].astype(np.float64)
    below = np.concatenate([[0.0], np.cumsum(normal)[:-1]])
    return float((anomalous * (below + 0.5 * normal)).sum() / (anomalous.sum() * normal.sum()))


def bootstrap_pixel_auroc(
    histograms: np.ndarray, n: int, seed: int
) -> tuple[float | None, float | None]:
    """The 2.5 and 97.5 percentiles of the pixel AUROC over ``n`` resamples of the *images*
    (each image's pixels stay together), from per-image histograms ``(images, 2, bins)``."""
    if n < 1 or not (histograms[:, 0].sum() and histograms[:, 1].sum()):
        return None, None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(n):
        total = histograms[rng.integers(0, len(histograms), len(histograms))].sum(axis=0)
        if total[0].sum() and total[1].sum():
            values.append(binned_auroc(total))
    if not values:
        return None, None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


def bootstrap_auroc(
    labels: np.ndarray, scores: np.ndarray, n: int, seed: int, chunk: int = 256
) -> tuple[float | None, float | None]:
    """The 2.5 and 97.5 percentiles of the image AUROC over ``n`` bootstrap resamples.

    Each resample draws ``len(labels)`` images with replacement (``rng.integers`` of ``seed``);
    resamples with one class only are left out. A resample's AUROC is the Mann-Whitney statistic
    with its multiplicities as weights, ``w_pos @ C @ w_neg / (W_pos W_neg)`` with ``C[i, j]`` 1,
    0.5 or 0 as positive ``i`` scores above, equal to or below negative ``j``: the value
    ``roc_auc_score`` gives on the resample (tested), for ``chunk`` resamples per product.
    """
    labels, scores = np.asarray(labels), np.asarray(scores)
    if n < 1 or len(np.unique(labels)) < 2:
        return None, None
    pos, neg = scores[labels == 1], scores[labels != 1]
    pairs = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])
    is_pos = labels == 1
    rng = np.random.default_rng(seed)
    values = []
    for start in range(0, n, chunk):
        picks = rng.integers(0, len(labels), (min(chunk, n - start), len(labels)))
        counts = np.stack([np.bincount(p, minlength=len(labels)) for p in picks]).astype(float)
        w_pos, w_neg = counts[:, is_pos], counts[:, ~is_pos]
        total = w_pos.sum(axis=1) * w_neg.sum(axis=1)
        both = total > 0
        values.append(((w_pos @ pairs) * w_neg).sum(axis=1)[both] / total[both])
    values = np.concatenate(values)
    if not len(values):
        return None, None
    lo, hi = np.percentile(values, [2.5, 97.5])
    return float(lo), float(hi)


@dataclass
class Collected:
    """A grid folder's cells.

    Attributes:
        rows: One row (:data:`RESULT_COLUMNS`) per finished cell that has a test, in table order.
        cells: Every cell of the grid: the planned ones, then any other cell folder found.
        finished: The finished cells (``cell.json`` written, every file readable).
        unreadable: The cells with a ``cell.json`` and a file that cannot be read.
    """

    rows: list[dict[str, Any]]
    cells: list[Cell]
    finished: list[Cell]
    unreadable: list[Cell]

    @property
    def not_run(self) -> list[Cell]:
        """The cells without a ``cell.json``: never started, killed, or running elsewhere."""
        return [c for c in self.cells if c not in self.finished and c not in self.unreadable]


def _number(value: Any) -> bool:
    """A finite number (not a boolean) or null."""
    return value is None or (
        isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    )


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check(path: Path, record: dict[str, Any], rules: dict[str, tuple[str, Any]]) -> None:
    """Each ``key: (what, test)`` of ``rules`` present in ``record`` passes ``test``, or a
    :class:`UserError` naming the file, the key and ``what`` was expected."""
    for key, (what, test) in rules.items():
        if key in record and not test(record[key]):
            raise UserError(f"{path}: {key} is {record[key]!r}, expected {what}")


def _cell_record(path: Path, cell: Cell) -> dict[str, Any]:
    """``cell.json``: the keys :func:`~iqeclip.reproduce.grid.run_cell` writes, for ``cell``."""
    done = read_json(path)
    missing = [k for k in _CELL_KEYS if k not in done]
    if missing:
        raise UserError(f"{path}: lacks {', '.join(missing)}")
    bank = done.get("bank", 0)  # a grid of before the banks: none
    if (done["target"], done["shot"], bank, done["draw"]) != (
        cell.target,
        cell.shot,
        cell.bank,
        cell.draw,
    ):
        written = f"bank {bank}" if bank else f"shot {done['shot']}"
        raise UserError(
            f"{path}: written for {done['target']} {written} draw {done['draw']}, not for the "
            "cell of its folder"
        )
    _check(
        path,
        done,
        {
            "seed": ("an integer", _integer),
            "bank": ("an integer", _integer),
            "n_images": ("an integer or null", lambda v: v is None or _integer(v)),
            "seconds": ("a number or null", _number),
            "select": ("a string or null", lambda v: v is None or isinstance(v, str)),
        },
    )
    return done


def _histograms(path: Path) -> np.ndarray:
    """``pixel_histograms.npy``: per-image counts ``(images, 2, bins)``; never unpickled."""
    try:
        counts = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError) as exc:
        raise UserError(f"{path}: not a readable .npy array ({exc})") from None
    if not (
        isinstance(counts, np.ndarray)
        and counts.ndim == 3
        and counts.shape[1] == 2
        and np.issubdtype(counts.dtype, np.integer)
        and (counts >= 0).all()
    ):
        what = f"{counts.dtype} {counts.shape}" if isinstance(counts, np.ndarray) else "an archive"
        raise UserError(f"{path}: expected counts (images, 2, bins) >= 0, got {what}")
    return counts


def _row(folder: Path, cell: Cell, bootstrap: int, seed: int) -> dict[str, Any] | None:
    """A finished cell's result row (None without a test split), every file checked first."""
    done = _cell_record(folder / DONE, cell)
    if not (folder / "metrics.json").exists():
        return None  # a target without a test split: nothing to tabulate
    metrics = read_json(folder / "metrics.json")
    _check(folder / "metrics.json", metrics, {k: ("a number or null", _number) for k in METRICS})
    lo = hi = plo = phi = None
    if (folder / "report" / "scores.csv").exists():
        scores = read_scores(folder / "report" / "scores.csv")
        known = scores.labels >= 0  # -1: unknown label
        lo, hi = bootstrap_auroc(scores.labels[known], scores.scores[known], bootstrap, seed)
    if (folder / "report" / "pixel_histograms.npy").exists():
        histograms = _histograms(folder / "report" / "pixel_histograms.npy")
        plo, phi = bootstrap_pixel_auroc(histograms, bootstrap, seed)
    return {
        **{k: metrics.get(k) for k in METRICS if k in metrics},
        "target": cell.target,
        "setting": cell.setting,
        "shot": cell.shot,
        "bank": cell.bank,
        "draw": cell.draw,
        "seed": done["seed"],
        "n_images": done["n_images"],
        "image_auroc_ci_low": lo,
        "image_auroc_ci_high": hi,
        "pixel_auroc_ci_low": plo,
        "pixel_auroc_ci_high": phi,
        "selection_rule": done["select"] or ("source-val" if not cell.shot else "last"),
        "seconds": None if done["seconds"] is None else round(done["seconds"], 1),
    }


def collect(out: Path, bootstrap: int, seed: int, planned: Sequence[Cell] = ()) -> Collected:
    """The grid under ``out``: each cell folder's state, and a row per finished cell.

    Args:
        out: The grid's folder.
        bootstrap: Resamples of each interval.
        seed: The seed of the resamples.
        planned: The cells the grid asks for (its ``reproduce.yaml``); none: every combination
            of the targets, settings and draws of the cell folders found.
    """
    found = []
    for folder in sorted(Path(out).glob("*/*/draw*")):
        cell = Cell.parse(folder) if folder.is_dir() else None
        if cell is None:
            logger.warning(
                f"{folder}: not a cell folder (<target>/zero|<K>-shot|zero+bank-<K>/draw<d>), "
                "left out"
            )
        else:
            found.append(cell)
    if not planned and found:
        settings = dict.fromkeys(c.text for c in sorted(found, key=lambda c: c.kind))
        targets = dict.fromkeys(c.target for c in found)
        planned = plan(list(targets), list(settings), max(c.draw for c in found) + 1)
    grid = Collected([], list(dict.fromkeys([*planned, *found])), [], [])
    for cell in grid.cells:
        folder = Path(out) / cell.folder
        if not (folder / DONE).exists():
            continue
        try:
            row = _row(folder, cell, bootstrap, seed)
        except UserError as exc:
            logger.warning(f"cell {cell.folder.as_posix()}: {exc}; tabulated as unreadable")
            grid.unreadable.append(cell)
            continue
        grid.finished.append(cell)
        if row is not None:
            grid.rows.append(row)
    order = {t: i for i, t in enumerate(TARGETS)}
    grid.rows.sort(
        key=lambda r: (
            order.get(r["target"], len(order)),
            r["target"],
            r["shot"],
            r["bank"],
            r["draw"],
        )
    )
    return grid
