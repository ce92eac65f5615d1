"""Everything ``iqeclip reproduce`` computes from the finished cells (``--table-only`` rebuilds it).

- ``results.csv``: one row per finished cell (:data:`RESULT_COLUMNS`), with seeded 95 % bootstrap
  intervals of the cell's image and pixel AUROC (images resampled with replacement,
  ``--bootstrap`` times; for the pixel AUROC each image keeps all its pixels, counted in 1000-bin
  histograms of its map; resamples holding one class only are left out, as AUROC is undefined
  for them).
- ``table.md``, ``table.tex``, ``table.html``: the paper's layout. Settings are rows (zero-shot,
  then K-shot), targets are columns with AC (image AUROC) and, where the target has masks, AS
  (pixel AUROC), in %, as mean ± standard deviation over the draws, then the average columns;
  the reference methods of ``references.yaml`` are rows beside ours.
- ``curves.svg`` (inline in the HTML): AUROC against K per target, mean ± std band, references
  as markers.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from iqeclip.errors import UserError
from iqeclip.report.figures import _axes_svg, _legend_svg, _svg
from iqeclip.reproduce.grid import DONE, TARGETS
from iqeclip.runtime.files import atomic_write_text, read_text

__all__ = [
    "RESULT_COLUMNS",
    "aggregate",
    "binned_auroc",
    "bootstrap_auroc",
    "bootstrap_pixel_auroc",
    "collect",
    "load_references",
    "write_tables",
]

RESULT_COLUMNS = (
    "target",
    "setting",
    "shot",
    "draw",
    "seed",
    "n_images",
    "image_auroc",
    "pixel_auroc",
    "image_ap",
    "pixel_ap",
    "image_f1_max",
    "pixel_aupro",
    "image_auroc_ci_low",
    "image_auroc_ci_high",
    "pixel_auroc_ci_low",
    "pixel_auroc_ci_high",
    "selection_rule",
    "seconds",
)
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")


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


def _scores(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    return np.array([int(r["label"]) for r in rows]), np.array([float(r["score"]) for r in rows])


def collect(out: Path, bootstrap: int, seed: int) -> list[dict[str, Any]]:
    """One row per finished cell under ``out`` (target, setting, draw order)."""
    rows = []
    for done in sorted(Path(out).glob(f"*/*/draw*/{DONE}")):
        folder = done.parent
        cell = json.loads(done.read_text())
        if not (folder / "metrics.json").exists():
            continue  # a target without a test split: nothing to tabulate
        metrics = json.loads((folder / "metrics.json").read_text())
        scores = folder / "report" / "scores.csv"
        lo, hi = (
            bootstrap_auroc(*_scores(scores), bootstrap, seed) if scores.exists() else (None,) * 2
        )
        histograms = folder / "report" / "pixel_histograms.npy"
        plo, phi = (
            bootstrap_pixel_auroc(np.load(histograms), bootstrap, seed)
            if histograms.exists()
            else (None, None)
        )
        rows.append(
            {
                **{k: metrics.get(k) for k in RESULT_COLUMNS if k in metrics},
                "target": cell["target"],
                "setting": cell["setting"],
                "shot": cell["shot"],
                "draw": cell["draw"],
                "seed": cell["seed"],
                "n_images": cell["n_images"],
                "image_auroc_ci_low": lo,
                "image_auroc_ci_high": hi,
                "pixel_auroc_ci_low": plo,
                "pixel_auroc_ci_high": phi,
                "selection_rule": cell["select"] or ("source-val" if not cell["shot"] else "last"),
                "seconds": None if cell["seconds"] is None else round(cell["seconds"], 1),
            }
        )
    order = {t: i for i, t in enumerate(TARGETS)}
    rows.sort(key=lambda r: (order.get(r["target"], len(order)), r["target"], r["shot"], r["draw"]))
    return rows


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, int], dict[str, Any]]:
    """Per (target, shot): mean, standard deviation (ddof 1; 0 for one draw) and count of the image
    (``AC``) and pixel (``AS``) AUROC over the draws, in %."""
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for row in rows:
        groups.setdefault((row["target"], int(row["shot"])), []).append(row)
    out = {}
    for key, members in groups.items():
        cell = {}
        for name, column in (("AC", "image_auroc"), ("AS", "pixel_auroc")):
            values = [100 * float(m[column]) for m in members if m.get(column) not in (None, "")]
            if values:
                std = float(np.std(values, ddof=1)) if len(values) > 1 else 0.0
                cell[name] = (float(np.mean(values)), std, len(values))
        out[key] = cell
    return out


def load_references(path: str | Path | None = None) -> list[dict[str, Any]]:
    """The reference rows: the bundled ``references.yaml`` or a user's file of that layout."""
    if path is None:
        text = resources.files("iqeclip.reproduce").joinpath("references.yaml").read_text("utf-8")
        where = "references.yaml"
    else:
        text, where = read_text(Path(path), "--references"), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(
            f"--references {where}: not valid YAML: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(data, list):
        raise UserError(f"--references {where}: expected a list of methods")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise UserError(f"--references {where} entry {i + 1}: expected a mapping")
        missing = {"method", "source", "shot", "AC"} - set(entry)
        if missing:
            raise UserError(
                f"--references {where} entry {i + 1}: missing {', '.join(sorted(missing))}"
            )
        maps = [entry.get(k) or {} for k in ("AC", "AS")]
        if not (
            isinstance(entry["shot"], int)
            and all(isinstance(m, dict) for m in maps)
            and all(isinstance(v, (int, float)) for m in maps for v in m.values())
        ):
            raise UserError(
                f"--references {where} entry {i + 1}: shot must be an integer and AC/AS "
                "mappings of target to a number (%)"
            )
    return data


def _setting_name(shot: int) -> str:
    return "zero-shot" if shot == 0 else f"{shot}-shot"


def _layout(agg: dict[tuple[str, int], dict[str, Any]]) -> tuple[list[str], list[int], list[str]]:
    order = {t: i for i, t in enumerate(TARGETS)}
    targets = sorted({t for t, _ in agg}, key=lambda t: (order.get(t, len(order)), t))
    shots = sorted({s for _, s in agg})
    pixel = [t for t in targets if any("AS" in agg[k] for k in agg if k[0] == t)]
    return targets, shots, pixel


def _columns(targets: list[str], pixel: list[str]) -> list[tuple[str, str]]:
    cols = []
    for t in targets:
        cols.append((t, "AC"))
        if t in pixel:
            cols.append((t, "AS"))
    return [*cols, ("average", "AC"), ("average", "AS")]


def _ours(agg, shot: int, targets: list[str], pixel: list[str]) -> list[str]:
    cells = []
    for target, metric in _columns(targets, pixel):
        if target == "average":
            names = targets if metric == "AC" else pixel
            means = [agg[(t, shot)][metric][0] for t in names if metric in agg.get((t, shot), {})]
            complete = len(means) == len(names) and means
            cells.append(f"{np.mean(means):.2f}" if complete else "–")
            continue
        value = agg.get((target, shot), {}).get(metric)
        if value is None:
            cells.append("–")
        else:
            mean, std, n = value
            cells.append(f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}")
    return cells


def _reference(entry: dict[str, Any], targets: list[str], pixel: list[str]) -> list[str]:
    cells = []
    for target, metric in _columns(targets, pixel):
        values = entry.get(metric) or {}
        if target == "average":
            names = targets if metric == "AC" else pixel
            got = [values[t] for t in names if t in values]
            cells.append(f"{np.mean(got):.2f}" if got and len(got) == len(names) else "–")
        else:
            cells.append(f"{values[target]:.2f}" if target in values else "–")
    return cells


def _rows(agg, refs, targets, shots, pixel) -> list[tuple[str, str, list[str]]]:
    """(setting, method, cells) in table order: ours, then the references of that setting."""
    out = []
    for shot in shots:
        out.append((_setting_name(shot), "iqeclip (this run)", _ours(agg, shot, targets, pixel)))
        for entry in refs:
            if int(entry["shot"]) == shot:
                out.append(
                    (_setting_name(shot), entry["method"], _reference(entry, targets, pixel))
                )
    return out


INTERVAL_HEAD = (
    "target",
    "setting",
    "draw",
    "image AUROC 95 % interval",
    "pixel AUROC 95 % interval",
)


def _intervals(results: Sequence[dict[str, Any]]) -> list[list[str]]:
    """Each cell's bootstrap intervals, in %."""

    def span(lo: Any, hi: Any) -> str:
        return "–" if lo is None else f"[{100 * lo:.2f}, {100 * hi:.2f}]"

    return [
        [
            r["target"],
            _setting_name(int(r["shot"])),
            str(r["draw"]),
            span(r["image_auroc_ci_low"], r["image_auroc_ci_high"]),
            span(r["pixel_auroc_ci_low"], r["pixel_auroc_ci_high"]),
        ]
        for r in results
    ]


def _md_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _markdown(rows, columns, notes, intervals) -> str:
    head = ["setting", "method", *(f"{t} {m}" for t, m in columns)]
    lines = _md_table(head, [[s, m, *cells] for s, m, cells in rows])
    spans = _md_table(INTERVAL_HEAD, intervals)
    return (
        "\n".join(["# Reproduction table", "", *lines, "", *notes, "", "## Intervals", "", *spans])
        + "\n"
    )


def _latex(rows, columns) -> str:
    def esc(text: str) -> str:
        return text.replace("_", r"\_").replace("±", r"$\pm$").replace("–", "--")

    spec = "ll" + "r" * len(columns)
    head = " & ".join(["Setting", "Method", *(esc(f"{t} {m}") for t, m in columns)])
    body = [" & ".join(esc(c) for c in [s, m, *cells]) + r" \\" for s, m, cells in rows]
    return (
        "\n".join(
            [
                rf"\begin{{tabular}}{{{spec}}}",
                r"\hline",
                head + r" \\",
                r"\hline",
                *body,
                r"\hline",
                r"\end{tabular}",
            ]
        )
        + "\n"
    )


def curves_svg(agg, refs, targets: list[str], shots: list[int]) -> str:
    """AUROC (AC, %) against the setting per target: our mean line with a ± std band, and the
    references as open markers."""
    size, box = (640, 340), (50.0, 16.0, 420.0, 260.0)
    x0, y0, w, h = box
    values = [v["AC"][0] for v in agg.values() if "AC" in v]
    values += [e["AC"][t] for e in refs for t in targets if t in (e.get("AC") or {})]
    lo = math.floor(min(values, default=50) / 10) * 10
    hi = min(100.0, math.ceil(max(values, default=100) / 10) * 10)
    hi = hi if hi > lo else lo + 10

    def xy(i: int, v: float) -> tuple[float, float]:
        x = x0 + (i + 0.5) / max(len(shots), 1) * w
        return x, y0 + (1 - (v - lo) / (hi - lo)) * h

    xticks = [((i + 0.5) / len(shots), _setting_name(s)) for i, s in enumerate(shots)]
    yticks = [((v - lo) / (hi - lo), f"{v:g}") for v in np.linspace(lo, hi, 6)]
    body = _axes_svg(box, xticks, yticks, "setting", "image AUROC (%)")
    legend = []
    for colour, target in zip(_COLOURS * 3, targets, strict=False):
        points = [
            (i, agg[(target, s)]["AC"])
            for i, s in enumerate(shots)
            if "AC" in agg.get((target, s), {})
        ]
        if not points:
            continue
        upper = [xy(i, m + sd) for i, (m, sd, _) in points]
        lower = [xy(i, m - sd) for i, (m, sd, _) in points][::-1]
        band = " ".join(f"{x:.1f},{y:.1f}" for x, y in upper + lower)
        line = " ".join(f"{x:.1f},{y:.1f}" for x, y in (xy(i, m) for i, (m, _, _) in points))
        body.append(f'<polygon points="{band}" fill="{colour}" fill-opacity="0.15" stroke="none"/>')
        body.append(f'<polyline points="{line}" fill="none" stroke="{colour}" stroke-width="2"/>')
        for entry in refs:
            if target in (entry.get("AC") or {}) and int(entry["shot"]) in shots:
                x, y = xy(shots.index(int(entry["shot"])), entry["AC"][target])
                mark = "rect" if "MVFA" in entry["method"] else "circle"
                shape = (
                    f'<rect x="{x - 3:.1f}" y="{y - 3:.1f}" width="6" height="6"'
                    if mark == "rect"
                    else f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3.5"'
                )
                body.append(
                    f'{shape} fill="white" stroke="{colour}" stroke-width="1.5">'
                    f"<title>{html.escape(entry['method'])}: {target}</title></{mark}>"
                )
        legend.append((colour, target))
    if legend:
        body.append(_legend_svg(x0 + w + 8, y0, legend, anchor_right=False))
    return _svg(
        size,
        body,
        "curves",
        "image AUROC against the setting (lines: this run; markers: references)",
    )


def _html_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> str:
    top = "".join(f"<th>{html.escape(c)}</th>" for c in head)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>" for cells in body
    )
    return f"<table><thead><tr>{top}</tr></thead><tbody>{rows}</tbody></table>"


def _html(rows, columns, notes, figure: str, intervals) -> str:
    head = ["setting", "method", *(f"{t} {m}" for t, m in columns)]
    table = _html_table(head, [[s, m, *cells] for s, m, cells in rows])
    items = "".join(f"<li>{html.escape(n.lstrip('- '))}</li>" for n in notes)
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>iqeclip reproduce</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:nth-child(-n+2){text-align:left}</style></head><body><h1>Reproduction table</h1>"
        f"{table}<ul>{items}</ul><h2>Image AUROC against K</h2>{figure}"
        f"<h2>Intervals</h2>{_html_table(INTERVAL_HEAD, intervals)}</body></html>\n"
    )


def write_tables(
    out: Path, bootstrap: int, seed: int, references: str | Path | None, notes: Sequence[str]
) -> list[Path]:
    """Write ``results.csv`` and the tables from the finished cells under ``out``.

    Raises:
        UserError: No finished cell under ``out``.
    """
    rows = collect(out, bootstrap, seed)
    if not rows:
        raise UserError(f"--out {out}: no finished cell (no */*/draw*/{DONE}) to tabulate")
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    agg = aggregate(rows)
    refs = load_references(references)
    targets, shots, pixel = _layout(agg)
    columns = _columns(targets, pixel)
    table = _rows(agg, refs, targets, shots, pixel)
    draws = sorted({int(r["draw"]) for r in rows})
    rules = sorted({r["selection_rule"] for r in rows})
    notes = [
        f"- AC: image AUROC, AS: pixel AUROC, in %; ours: mean ± standard deviation over "
        f"{len(draws)} draw(s) per cell; an average needs every target's value.",
        f"- Checkpoint selection: {', '.join(rules)} (--select); 95 % bootstrap intervals of each "
        f"cell's image and pixel AUROC ({bootstrap} resamples of the images) are in the "
        "intervals table and results.csv.",
        *notes,
        *(
            f"- {e['method']} ({_setting_name(int(e['shot']))}): {e['source']}"
            for e in refs
            if int(e["shot"]) in shots
        ),
    ]
    figure = curves_svg(agg, refs, targets, shots)
    written = {
        "table.md": _markdown(table, columns, notes, _intervals(rows)),
        "table.tex": _latex(table, columns),
        "table.html": _html(table, columns, notes, figure, _intervals(rows)),
        "curves.svg": figure + "\n",
    }
    for name, text in written.items():
        atomic_write_text(out / name, text)
    return [out / "results.csv", *(out / n for n in written)]
