"""``report.html``: one self-contained page (no external file, no network, no script).

It holds the title, the note, the run information, the metrics table, the score counts per
label, the ROC and PR curves and the score histogram (inline SVG, :mod:`iqeclip.report.figures`)
and the highest- and lowest-scoring examples, input and map overlay side by side (base64 PNG
data URIs).
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Sequence

import numpy as np
from PIL import Image

from iqeclip.report.content import ReportContent, count_rows, metric_name
from iqeclip.report.figures import histogram_svg, pr_svg, roc_svg
from iqeclip.report.folder import Example, label_text
from iqeclip.report.gallery import map_range
from iqeclip.report.heatmaps import colour_bar, value_ticks

__all__ = ["render_html"]

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
ol.defs{font-size:12px;color:#555;max-width:560px;padding-left:20px;margin:6px 0}
.legend{display:flex;gap:12px;align-items:center}
figure.bar img{width:auto;background:#fff}
"""


def _png_uri(image: np.ndarray | Image.Image) -> str:
    img = image if isinstance(image, Image.Image) else Image.fromarray(image)
    buf = io.BytesIO()
    img.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _html_table(rows: Sequence[tuple[str, str]], head: tuple[str, str]) -> str:
    body = "".join(
        f'<tr><td>{html.escape(k)}</td><td class="num">{html.escape(v)}</td></tr>' for k, v in rows
    )
    return _table(head, body)


def _metrics_table(rows: Sequence[tuple[str, str]]) -> str:
    """Readable metric names, their definition on hover and as numbered footnotes below."""
    body, notes = [], []
    for key, value in rows:
        name, definition = metric_name(key)
        cell = html.escape(name)
        if definition:
            notes.append(f"<li><b>{html.escape(name)}</b>: {html.escape(definition)}</li>")
            cell = f'<span title="{html.escape(definition)}">{cell}</span><sup>{len(notes)}</sup>'
        body.append(f'<tr><td>{cell}</td><td class="num">{html.escape(value)}</td></tr>')
    footnotes = "".join(notes)
    return _table(("metric", "value"), "".join(body)) + f'<ol class="defs">{footnotes}</ol>'


def _table(head: tuple[str, str], body: str) -> str:
    return (
        f"<table><thead><tr><th>{html.escape(head[0])}</th><th>{html.escape(head[1])}</th></tr>"
        f"</thead><tbody>{body}</tbody></table>"
    )


def _colour_bar(lo: float, hi: float) -> str:
    """The colour bar of the example maps, with the map values its colours stand for."""
    bar = colour_bar(150, value_ticks(lo, hi))
    return (
        f'<figure class="bar"><img alt="colour bar: map value {lo:.3g} to {hi:.3g}" '
        f'src="{_png_uri(bar)}"><figcaption>map value</figcaption></figure>'
    )


def _html_examples(title: str, exs: Sequence[Example], overlays: Sequence[np.ndarray]) -> str:
    if not exs:
        return ""
    figs = []
    for rank, (e, o) in enumerate(zip(exs, overlays, strict=True), start=1):
        label = label_text(e.label)
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


def render_html(c: ReportContent) -> str:
    """The text of ``report.html``."""
    scores = c.scores
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>{html.escape(c.title)}</title><style>{_CSS}</style></head><body><main>",
        f"<h1>{html.escape(c.title)}</h1>",
    ]
    if c.note:
        parts.append(f'<p class="note">{html.escape(c.note)}</p>')
    if c.info:
        parts.append(
            '<p class="info">'
            + " · ".join(f"<b>{html.escape(k)}</b>: {html.escape(v)}" for k, v in c.info)
            + "</p>"
        )
    tables = [
        "<div><h2>Metrics</h2>"
        + (
            _metrics_table(c.metric_rows)
            if c.metric_rows
            else '<p class="muted">no numeric metrics</p>'
        )
        + "</div>"
    ]
    if scores is not None:
        tables.append(
            "<div><h2>Test set</h2>"
            + _html_table(count_rows(scores), ("label", "images"))
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
    parts.append(_html_examples("Highest-scoring examples", c.highest, c.hi_overlays))
    parts.append(_html_examples("Lowest-scoring examples", c.lowest, c.lo_overlays))
    if c.highest or c.lowest:
        lo, hi = map_range([*c.highest, *c.lowest])
        parts.append(
            f'<div class="legend">{_colour_bar(lo, hi)}<p class="muted">Left: input; right: '
            "anomaly map, its colours spanning the lowest to the highest map value of all shown "
            "examples (the bar), ground-truth contour in green where a mask exists.</p></div>"
        )
    parts.append(f'<p class="muted">Run directory: {html.escape(str(c.run_dir))}</p>')
    parts.append("</main></body></html>\n")
    return "\n".join(p for p in parts if p)
