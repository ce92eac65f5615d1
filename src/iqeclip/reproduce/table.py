"""Everything ``iqeclip reproduce`` computes from the cells (``--table-only`` rebuilds it).

- ``results.csv``: one row per finished cell (:data:`~iqeclip.reproduce.cells.RESULT_COLUMNS`,
  read and checked by :func:`~iqeclip.reproduce.cells.collect`), with the bootstrap intervals of
  its image and pixel AUROC.
- ``table.md``, ``table.tex``, ``table.html``: the paper's layout. Settings are rows (zero-shot,
  zero+bank-K, then K-shot), targets are columns with AC (image AUROC) and, where the target has
  masks, AS (pixel AUROC), in %, as mean ± standard deviation over the draws, then the average
  columns; the reference methods of ``references.yaml`` are rows beside ours (none beside a
  bank). A grid that is not finished says so, and how many of its cells are (above the table, in
  the LaTeX table's last row and in a warning); an entry with fewer draws than the grid asks
  says ``k of N draws``, one without a finished draw ``not run`` or ``unreadable``.
- ``curves.svg`` (inline in the HTML): AUROC against K per target, mean ± std band, references
  as markers (zero-shot and K-shot: the zero+bank-K rows are in the tables only).
"""

from __future__ import annotations

import csv
import html
import io
import logging
import math
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import yaml

from iqeclip.data.layout import CLASS_INDEX
from iqeclip.errors import UserError, param
from iqeclip.report.figures import _axes_svg, _legend_svg, _svg
from iqeclip.reproduce.cells import RESULT_COLUMNS, Collected, collect
from iqeclip.reproduce.grid import DONE, TARGETS, Cell
from iqeclip.runtime.files import atomic_write_text, read_text

__all__ = ["NOT_RUN", "UNREADABLE", "aggregate", "curves_svg", "load_references", "write_tables"]

NOT_RUN = "not run"
"""An entry of ours without a finished draw, none of them unreadable."""
UNREADABLE = "unreadable"
"""An entry of ours without a finished draw, some of them unreadable."""
LEGEND = (
    "An entry from fewer draws than the grid asks says 'k of N draws' (an average over such "
    f"entries '(partial)'); '{NOT_RUN}': no finished draw (never started, killed, or running "
    f"elsewhere); '{UNREADABLE}': a file of the cell cannot be read (the log names it)."
)
BANK_NOTE = (
    "- zero+bank-K: the zero-shot checkpoint of the same draw with a memory bank of K normal "
    "valid images of the target drawn with the draw's seed (iqeclip bank; no training; an "
    "addition to the paper, not part of it: no published reference)."
)
_COLOURS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b")

logger = logging.getLogger(__name__)


Kind = tuple[int, int]
"""A row of the table: ``(shot, bank)`` (:attr:`~iqeclip.reproduce.grid.Cell.kind`)."""


class _Tally(NamedTuple):
    """The draws of one (target, setting): asked by the grid, finished, unreadable."""

    asked: int
    finished: int
    unreadable: int


def _tallies(grid: Collected) -> dict[tuple[str, Kind], _Tally]:
    """The tally of each (target, kind) of the grid."""
    finished, unreadable = set(grid.finished), set(grid.unreadable)
    out: dict[tuple[str, Kind], _Tally] = {}
    for cell in grid.cells:
        asked, done, broken = out.get((cell.target, cell.kind), _Tally(0, 0, 0))
        out[(cell.target, cell.kind)] = _Tally(
            asked + 1, done + (cell in finished), broken + (cell in unreadable)
        )
    return out


def _status(grid: Collected) -> str | None:
    """The sentence saying how much of the grid is finished; None when all of it is."""
    if len(grid.finished) == len(grid.cells):
        return None
    broken = ", ".join(c.folder.as_posix() for c in grid.unreadable)
    return (
        f"Incomplete grid: {len(grid.finished)} of {len(grid.cells)} cells finished "
        f"({len(grid.not_run)} {NOT_RUN}, {len(grid.unreadable)} {UNREADABLE}"
        + (f": {broken}" if broken else "")
        + ")."
    )


def aggregate(rows: Sequence[dict[str, Any]]) -> dict[tuple[str, Kind], dict[str, Any]]:
    """Per (target, kind): mean, standard deviation (ddof 1; 0 for one draw) and count of the
    image (``AC``) and pixel (``AS``) AUROC over the draws, in %."""
    groups: dict[tuple[str, Kind], list[dict[str, Any]]] = {}
    for row in rows:
        kind = (int(row["shot"]), int(row.get("bank") or 0))
        groups.setdefault((row["target"], kind), []).append(row)
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
        text, where = read_text(Path(path), param("references")), str(path)
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UserError(
            f"{param('references')} {where}: not valid YAML: {str(exc).splitlines()[0]}"
        ) from None
    if not isinstance(data, list):
        raise UserError(f"{param('references')} {where}: expected a list of methods")
    for i, entry in enumerate(data):
        if not isinstance(entry, dict):
            raise UserError(f"{param('references')} {where} entry {i + 1}: expected a mapping")
        missing = {"method", "source", "shot", "AC"} - set(entry)
        if missing:
            raise UserError(
                f"{param('references')} {where} entry {i + 1}: missing {', '.join(sorted(missing))}"
            )
        maps = [entry.get(k) or {} for k in ("AC", "AS")]
        if not (
            isinstance(entry["shot"], int)
            and all(isinstance(m, dict) for m in maps)
            and all(isinstance(v, (int, float)) for m in maps for v in m.values())
        ):
            raise UserError(
                f"{param('references')} {where} entry {i + 1}: shot must be an integer and AC/AS "
                "mappings of target to a number (%)"
            )
    return data


def _setting_name(shot: int, bank: int = 0) -> str:
    if bank:
        return f"zero+bank-{bank}"
    return "zero-shot" if shot == 0 else f"{shot}-shot"


def _layout(
    cells: Sequence[Cell], agg: dict[tuple[str, Kind], dict[str, Any]]
) -> tuple[list[str], list[Kind], list[str]]:
    """The targets, kinds (zero, zero+bank-K, K-shot) and mask targets (with an AS value, or
    known to have masks) of the grid's cells, finished or not."""
    order = {t: i for i, t in enumerate(TARGETS)}
    targets = sorted({c.target for c in cells}, key=lambda t: (order.get(t, len(order)), t))
    kinds = sorted({c.kind for c in cells})
    pixel = [
        t
        for t in targets
        if CLASS_INDEX.get(t, 0) > 0 or any("AS" in agg[k] for k in agg if k[0] == t)
    ]
    return targets, kinds, pixel


def _columns(targets: list[str], pixel: list[str]) -> list[tuple[str, str]]:
    cols = []
    for t in targets:
        cols.append((t, "AC"))
        if t in pixel:
            cols.append((t, "AS"))
    return [*cols, ("average", "AC"), ("average", "AS")]


def _value(value: tuple[float, float, int] | None, tally: _Tally) -> str:
    """One entry of ours: mean ± std, with ``k of N draws`` where fewer draws than the grid asks
    gave it; without a value, why."""
    if value is None:
        if tally.finished or not tally.asked:
            return "–"
        return UNREADABLE if tally.unreadable else NOT_RUN
    mean, std, n = value
    text = f"{mean:.2f} ± {std:.2f}" if n > 1 else f"{mean:.2f}"
    if n < tally.asked:
        broken = f", {tally.unreadable} {UNREADABLE}" if tally.unreadable else ""
        text += f" ({n} of {tally.asked} draws{broken})"
    return text


def _ours(agg, tallies, kind: Kind, targets: list[str], pixel: list[str]) -> list[str]:
    cells = []
    for target, metric in _columns(targets, pixel):
        if target == "average":
            names = targets if metric == "AC" else pixel
            values = [agg[(t, kind)][metric] for t in names if metric in agg.get((t, kind), {})]
            if not names or len(values) < len(names):
                cells.append("–")
                continue
            short = any(
                n < tallies[(t, kind)].asked for t, (_, _, n) in zip(names, values, strict=True)
            )
            mean = np.mean([m for m, _, _ in values])
            cells.append(f"{mean:.2f} (partial)" if short else f"{mean:.2f}")
            continue
        tally = tallies.get((target, kind), _Tally(0, 0, 0))
        cells.append(_value(agg.get((target, kind), {}).get(metric), tally))
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


def _rows(agg, tallies, refs, targets, kinds, pixel) -> list[tuple[str, str, list[str]]]:
    """(setting, method, cells) in table order: ours, then the references of that setting (none
    for a bank)."""
    out = []
    for shot, bank in kinds:
        ours = _ours(agg, tallies, (shot, bank), targets, pixel)
        out.append((_setting_name(shot, bank), "iqeclip (this run)", ours))
        for entry in refs:
            if not bank and int(entry["shot"]) == shot:
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
            _setting_name(int(r["shot"]), int(r.get("bank") or 0)),
            str(r["draw"]),
            span(r["image_auroc_ci_low"], r["image_auroc_ci_high"]),
            span(r["pixel_auroc_ci_low"], r["pixel_auroc_ci_high"]),
        ]
        for r in results
    ]


def _md_table(head: Sequence[str], body: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return lines + ["| " + " | ".join(cells) + " |" for cells in body]


def _markdown(rows, columns, notes, intervals, status: str | None) -> str:
    head = ["setting", "method", *(f"{t} {m}" for t, m in columns)]
    lines = _md_table(head, [[s, m, *cells] for s, m, cells in rows])
    spans = _md_table(INTERVAL_HEAD, intervals)
    top = ["# Reproduction table", ""] + ([f"**{status}** {LEGEND}", ""] if status else [])
    return "\n".join([*top, *lines, "", *notes, "", "## Intervals", "", *spans]) + "\n"


def _latex(rows, columns, status: str | None) -> str:
    def esc(text: str) -> str:
        return text.replace("_", r"\_").replace("±", r"$\pm$").replace("–", "--")

    spec = "ll" + "r" * len(columns)
    head = " & ".join(["Setting", "Method", *(esc(f"{t} {m}") for t, m in columns)])
    body = [" & ".join(esc(c) for c in [s, m, *cells]) + r" \\" for s, m, cells in rows]
    if status:  # inside the table, so that it goes wherever the table goes
        body += [r"\hline", rf"\multicolumn{{{len(columns) + 2}}}{{l}}{{{esc(status)}}} \\"]
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


def _html(rows, columns, notes, figure: str, intervals, status: str | None) -> str:
    head = ["setting", "method", *(f"{t} {m}" for t, m in columns)]
    table = _html_table(head, [[s, m, *cells] for s, m, cells in rows])
    items = "".join(f"<li>{html.escape(n.lstrip('- '))}</li>" for n in notes)
    if status:
        table = f"<p><strong>{html.escape(status)}</strong> {html.escape(LEGEND)}</p>{table}"
    return (
        "<!doctype html><html><head><meta charset='utf-8'><title>iqeclip reproduce</title>"
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:nth-child(-n+2){text-align:left}</style></head><body><h1>Reproduction table</h1>"
        f"{table}<ul>{items}</ul><h2>Image AUROC against K</h2>{figure}"
        f"<h2>Intervals</h2>{_html_table(INTERVAL_HEAD, intervals)}</body></html>\n"
    )


def write_tables(
    out: Path,
    bootstrap: int,
    seed: int,
    references: str | Path | None,
    notes: Sequence[str],
    planned: Sequence[Cell] = (),
) -> list[Path]:
    """Write ``results.csv`` and the tables from the finished cells under ``out``; the cells of
    ``planned`` (or, without it, found there) that are not finished are marked as missing.

    Raises:
        UserError: No finished cell under ``out``.
    """
    grid = collect(out, bootstrap, seed, planned)
    rows = grid.rows
    if not rows:
        why = (
            f"{len(grid.unreadable)} unreadable: see the warnings above"
            if grid.unreadable
            else f"no */*/draw*/{DONE}"
        )
        raise UserError(f"{param('out')} {out}: no finished cell to tabulate ({why})")
    status = _status(grid)
    if status:
        logger.warning(f"{status} The tables mark the missing entries.")
    buffer = io.StringIO()
    writer = csv.DictWriter(
        buffer, fieldnames=RESULT_COLUMNS, lineterminator="\n", extrasaction="ignore"
    )
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "results.csv", buffer.getvalue())
    agg = aggregate(rows)
    refs = load_references(references)
    targets, kinds, pixel = _layout(grid.cells, agg)
    columns = _columns(targets, pixel)
    tallies = _tallies(grid)
    table = _rows(agg, tallies, refs, targets, kinds, pixel)
    shots = [shot for shot, bank in kinds if not bank]  # the figure's: zero and K-shot
    asked = sorted({t.asked for t in tallies.values()})
    per = f"{asked[0]}" if len(asked) == 1 else f"{asked[0]} to {asked[-1]}"
    draws = (
        f"{per} draw(s) per cell"
        if status is None
        else f"the finished draws of each cell ({len(grid.finished)} of the {len(grid.cells)} "
        f"the grid asks, {per} per cell)"
    )
    rules = sorted({r["selection_rule"] for r in rows})
    notes = [
        f"- AC: image AUROC, AS: pixel AUROC, in %; ours: mean ± standard deviation over "
        f"{draws}; an average needs every target's value.",
        f"- Checkpoint selection: {', '.join(rules)} (--select); 95 % bootstrap intervals of each "
        f"cell's image and pixel AUROC ({bootstrap} resamples of the images) are in the "
        "intervals table and results.csv.",
        *notes,
        *(
            f"- {e['method']} ({_setting_name(int(e['shot']))}): {e['source']}"
            for e in refs
            if int(e["shot"]) in shots
        ),
        *([BANK_NOTE] if len(shots) < len(kinds) else []),
    ]
    plain = {(t, kind[0]): v for (t, kind), v in agg.items() if not kind[1]}
    figure = curves_svg(plain, refs, targets, shots)
    written = {
        "table.md": _markdown(table, columns, notes, _intervals(rows), status),
        "table.tex": _latex(table, columns, status),
        "table.html": _html(table, columns, notes, figure, _intervals(rows), status),
        "curves.svg": figure + "\n",
    }
    for name, text in written.items():
        atomic_write_text(out / name, text)
    return [out / "results.csv", *(out / n for n in written)]
