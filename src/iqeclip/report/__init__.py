"""Reports of test and predict runs, and anomaly maps as pictures.

Modules:

- :mod:`~iqeclip.report.folder`: the run directory contract: reading and checking
  ``metrics.json``, ``scores.csv`` and ``examples/*.npz``; :func:`save_example` writes an example.
- :mod:`~iqeclip.report.content`: what a report shows, gathered once for both documents.
- :mod:`~iqeclip.report.figures`: the ROC, precision-recall and histogram plots as inline SVG.
- :mod:`~iqeclip.report.gallery`: the examples shown, their overlays and the PNG grid of them.
- :mod:`~iqeclip.report.html`, :mod:`~iqeclip.report.markdown`: the text of ``report.html`` and
  ``report.md``.
- :mod:`~iqeclip.report.write`: :func:`write_report` (one run folder) and :func:`write_reports`
  (a run folder or a folder of them), the entry points that write the reports.
- :mod:`~iqeclip.report.heatmaps`: colour maps, overlays, ground-truth contours, image grids.
- :mod:`~iqeclip.report.run`: the run folder of ``test --report``
  (:func:`~iqeclip.report.run.write_test_report`), written from the values of the test (the
  report runs no model: it imports nothing of the model, engine or inference packages).
"""

from iqeclip.report.figures import CURVE_BOX, CURVE_SIZE, histogram_svg, pr_svg, roc_svg
from iqeclip.report.folder import (
    Example,
    Scores,
    read_examples,
    read_metrics,
    read_scores,
    save_example,
)
from iqeclip.report.heatmaps import colorize, draw_contour, grid, overlay
from iqeclip.report.write import write_report, write_reports

__all__ = [
    "CURVE_BOX",
    "CURVE_SIZE",
    "Example",
    "Scores",
    "colorize",
    "draw_contour",
    "grid",
    "histogram_svg",
    "overlay",
    "pr_svg",
    "read_examples",
    "read_metrics",
    "read_scores",
    "roc_svg",
    "save_example",
    "write_report",
    "write_reports",
]
