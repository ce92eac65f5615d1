"""``iqeclip reproduce``: the paper's whole result grid in one resumable command.

:mod:`~iqeclip.reproduce.grid` plans and runs the cells (one training + test per target,
setting and draw, each in its own folder, resumable and locked; :mod:`~iqeclip.reproduce.bank`
the ``zero+bank-K`` cells: a bank of normal images on the zero cell's checkpoint, no training);
:mod:`~iqeclip.reproduce.cells` reads and checks the cells' files;
:mod:`~iqeclip.reproduce.table` turns the finished cells into ``results.csv``, the paper-layout
tables (marking the cells not run or unreadable) and the AUROC-against-K figure, beside the
published references of ``references.yaml``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from iqeclip.config import ModelConfig, ReproduceConfig, RunConfig
from iqeclip.data.layout import dataset_root
from iqeclip.errors import UserError, param
from iqeclip.reproduce.bank import draw_normal
from iqeclip.reproduce.grid import Cell, plan, run_grid
from iqeclip.reproduce.table import write_tables
from iqeclip.runtime import distributed
from iqeclip.runtime.files import check_writable, load_yaml, save_yaml

__all__ = ["run_reproduce"]

RECORD = "reproduce.yaml"
RANDOM_NOTE = (
    "- The backbone was random-init (--pretrain none): these numbers test the software, and say "
    "nothing about IQE-CLIP's accuracy."
)

logger = logging.getLogger(__name__)


def run_reproduce(
    model_cfg: ModelConfig, base: RunConfig, cfg: ReproduceConfig, record: dict[str, Any]
) -> list[Path]:
    """Run the unfinished cells of the grid (unless ``cfg.table_only``), then write the tables.

    Args:
        model_cfg: The model of every cell.
        base: The training options of every cell (target, shot, seed and folders are the cell's).
        cfg: The grid.
        record: The resolved options, saved as ``<out>/reproduce.yaml`` and in each cell.

    Returns:
        The files written: ``results.csv``, ``table.md``, ``table.tex``, ``table.html``,
        ``curves.svg``.
    """
    if not cfg.out:
        raise UserError(f"reproduce needs {param('out')} (the grid's folder)")
    out = Path(cfg.out)
    if not cfg.table_only:
        check_writable(param("out"), out, folder=True)
        for target in cfg.targets:
            dataset_root(base.data_path, target, base.layout)  # stops before any work
        cells = plan(cfg.targets, cfg.settings, cfg.draws)
        for cell in cells:
            if cell.bank and cell.draw == 0:  # enough normal images for the bank's draws
                draw_normal(base, cell.target, cell.bank, base.seed)
        if distributed.is_main():
            save_yaml(record, out / RECORD)
        outcome = run_grid(model_cfg, base, cells, out, cfg.jobs, record)
        logger.info(
            f"{len(outcome['ran'])} cells run, {len(outcome['done'])} finished before"
            + (
                f", {len(outcome['locked'])} running in another process"
                if outcome["locked"]
                else ""
            )
        )
    elif not out.is_dir():
        raise UserError(f"{param('out')} {out}: no such folder to tabulate")
    notes = []
    stored = load_yaml(out / RECORD) if (out / RECORD).exists() else {}
    if str((stored.get("model") or {}).get("pretrain", "")).lower() == "none":
        notes.append(RANDOM_NOTE)
    if not distributed.is_main():
        return []
    seed = (stored.get("run") or {}).get("seed", base.seed)  # the grid's, for --table-only too
    planned = _planned(stored, out / RECORD)
    written = write_tables(out, cfg.bootstrap, seed, cfg.references, notes, planned)
    logger.info(f"results and tables written to {out} ({', '.join(p.name for p in written)})")
    return written


def _planned(stored: dict[str, Any], path: Path) -> list[Cell]:
    """The cells the grid's record asks for; none without a record (the tables then take the
    cell folders found)."""
    grid = stored.get("reproduce") or {}
    targets, settings = grid.get("targets") or [], grid.get("settings") or []
    draws = grid.get("draws") or 0
    if not (isinstance(targets, list) and isinstance(settings, list) and isinstance(draws, int)):
        raise UserError(f"{path}: reproduce: targets and settings must be lists, draws a number")
    try:
        return plan([str(t) for t in targets], [str(s) for s in settings], draws)
    except UserError as exc:
        raise UserError(f"{path}: {exc.message}") from None
