"""Human-readable reports of a test or predict run: one self-contained HTML page and a markdown file.

:func:`write_report` reads a run directory (its contract is in :mod:`iqeclip.report.folder`) and
writes the reports next to what it read.

Outputs
-------

``RUN_DIR/report.html``
    Self-contained (no external file, no network, no script): the title, the note, the run
    information, the metrics table, the score counts per label, the ROC and PR curves (inline
    SVG, with AUROC / AP computed from ``scores.csv`` in the legend), the score histogram
    (inline SVG) and two example grids, "highest-scoring" and "lowest-scoring" (base64 PNG
    data URIs). Each example tile shows the input and the map overlay
    (:func:`iqeclip.report.heatmaps.overlay`) with the ground-truth contour in green when a mask
    exists; the maps are min-max normalised over all shown examples (a colour bar gives the
    scale), so that tiles are comparable. The two grids never share an example: with ``n`` examples the highest-scoring
    grid holds ``min(top_k, ceil(n / 2))`` of them and the lowest-scoring grid
    ``min(top_k, n - that)``.

``RUN_DIR/report.md``
    The title, the note, the run information, the metrics table, the score counts per label and,
    with examples, a link to ``report_examples.png`` (the same grids, drawn by
    :func:`iqeclip.report.gallery.examples_png` with :func:`iqeclip.report.heatmaps.grid`)
    followed by a table of the shown examples.

All files are written atomically. Every problem with the run directory (missing folder or
``metrics.json``, invalid JSON, a malformed ``scores.csv`` row, an unreadable example) raises
:class:`~iqeclip.errors.UserError` naming the file (and the line, for ``scores.csv``).
"""

from __future__ import annotations

from pathlib import Path

from iqeclip.errors import UserError
from iqeclip.report.content import read_content
from iqeclip.report.gallery import examples_png
from iqeclip.report.html import render_html
from iqeclip.report.markdown import render_markdown
from iqeclip.runtime.files import atomic_write, atomic_write_text

__all__ = ["write_report", "write_reports"]

RUN_FOLDER_COMMANDS = "test-* --report DIR, train-* --report_dir DIR or iqeclip demo"
"""The command lines that write a run folder, named when a folder holds none: flags of other
commands than the one that reads the folder, so text, not its parameters."""


def write_report(
    run_dir: str | Path, title: str | None = None, top_k: int = 8
) -> tuple[Path, Path]:
    """Write ``RUN_DIR/report.html`` and ``RUN_DIR/report.md`` (and ``report_examples.png``).

    See :mod:`iqeclip.report.folder` for what is read and the module docstring for what the
    reports hold.

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
    c = read_content(run_dir, title, top_k)
    html_text = render_html(c)
    png_path = c.run_dir / "report_examples.png"
    if c.highest or c.lowest:
        picture = examples_png(
            [("highest", c.highest, c.hi_overlays), ("lowest", c.lowest, c.lo_overlays)]
        )
        atomic_write(png_path, lambda tmp: picture.save(tmp, format="PNG"))
    else:
        png_path.unlink(missing_ok=True)  # a stale picture of an earlier report
    md_text = render_markdown(c)

    html_path, md_path = c.run_dir / "report.html", c.run_dir / "report.md"
    atomic_write_text(html_path, html_text)
    atomic_write_text(md_path, md_text)
    return html_path, md_path


def write_reports(folder: str | Path, top_k: int = 8) -> list[tuple[Path, Path]]:
    """:func:`write_report` of a run folder, or of every run folder directly inside ``folder``
    (``iqeclip demo`` writes one per test), in name order.

    Raises:
        UserError: ``folder`` is missing, or holds neither ``metrics.json`` nor run folders.
    """
    folder = Path(folder)
    if (folder / "metrics.json").is_file() or not folder.is_dir():
        return [write_report(folder, top_k=top_k)]
    runs = sorted(p for p in folder.iterdir() if (p / "metrics.json").is_file())
    if not runs:
        raise UserError(
            f"{folder}: no metrics.json here or in its folders (a run folder is written by "
            f"{RUN_FOLDER_COMMANDS})"
        )
    return [write_report(run, top_k=top_k) for run in runs]
