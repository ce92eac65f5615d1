"""``report.md``: the title, the note, the run information, the metrics table, the score counts
per label and, with examples, a link to ``report_examples.png`` (the example grids, drawn by
:func:`iqeclip.report.gallery.examples_png`) followed by a table of the shown examples."""

from __future__ import annotations

from collections.abc import Sequence

from iqeclip.report.content import ReportContent, count_rows, metric_name
from iqeclip.report.folder import label_text

__all__ = ["render_markdown"]


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


def render_markdown(c: ReportContent) -> str:
    """The text of ``report.md`` (it links to ``report_examples.png`` when examples are shown)."""
    md = [f"# {c.title}", ""]
    if c.note:
        md += [f"> **Note:** {c.note}", ""]
    if c.info:
        md += [" · ".join(f"**{_md_escape(k)}**: {_md_escape(v)}" for k, v in c.info), ""]
    md += ["## Metrics", ""]
    named = [(metric_name(k), v) for k, v in c.metric_rows]
    md += [
        _md_table([(name, v) for (name, _), v in named], ("metric", "value"), right=(1,))
        if c.metric_rows
        else "No numeric metrics.",
        "",
    ]
    md += [f"- **{name}**: {definition}" for (name, definition), _ in named if definition]
    md += [""] if any(d for (_, d), _ in named) else []
    if c.scores is not None:
        rows = count_rows(c.scores)
        md += ["## Test set", "", _md_table(rows, ("label", "images"), right=(1,)), ""]
    if c.highest or c.lowest:
        md += [
            "## Examples",
            "",
            "![highest- and lowest-scoring examples](report_examples.png)",
            "",
            "Rows: input and anomaly map (colours from the lowest to the highest map value of all"
            " shown examples, the bar at the right; ground-truth contour in green) of the"
            " highest-scoring and lowest-scoring examples.",
            "",
        ]
        rows = [
            (group, f"#{i}", e.path, f"{e.score:.4f}", label_text(e.label))
            for group, exs in (("highest", c.highest), ("lowest", c.lowest))
            for i, e in enumerate(exs, start=1)
        ]
        md += [_md_table(rows, ("group", "rank", "path", "score", "label"), right=(3,)), ""]
    return "\n".join(md).rstrip() + "\n"
