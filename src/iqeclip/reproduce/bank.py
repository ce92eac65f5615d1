"""The ``zero+bank-K`` cells of ``iqeclip reproduce``: the zero-shot checkpoint of a target and
draw, plus a memory bank of K normal images of that target (``iqeclip bank``; an addition to the
paper, not part of it).

A ``zero+bank-K`` cell runs no training of its own. It takes the checkpoint of the zero cell of
the same target and draw (``<target>/zero/draw<d>/``: reused when that cell is finished, run
first, as that cell, when it is not, so it is trained once whichever setting asks first, and
waited for while another process holds it), draws K images with ``random.Random(--seed + d)``
from the target's ``valid`` normal images (sorted by name), and builds the bank of them with the
defaults of ``iqeclip bank`` (``DEFAULT_BANK_SIZE`` entries per level, ``DEFAULT_WEIGHT``, the
coreset seeded with the draw's seed). The draw is written as ``bank.csv`` (a manifest of the K
images, normal, ``train``: the rows ``iqeclip bank --manifest`` takes, so the bank can be built
again by hand) and ``support.txt`` (their names, ``n-0:``); the banked checkpoint
``<target>_bank.pth`` records their names and sha256. The cell is then tested as ``test-zero``
tests a checkpoint: on the target's ``test`` split, with its metrics, log and report in the
cell's folder as the zero cell has them.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import logging
import random
import time
from pathlib import Path
from typing import Any

from iqeclip.config import ModelConfig, RunConfig
from iqeclip.data.layout import list_images, split_folders
from iqeclip.engine.trainer import checkpoint_path
from iqeclip.errors import UserError, param
from iqeclip.reproduce.grid import (
    CELL_RUNNERS,
    DONE,
    Cell,
    read_json,
    run_cell,
    summary,
    tested,
)
from iqeclip.runtime import distributed
from iqeclip.runtime.files import atomic_write_text, save_yaml

__all__ = ["MANIFEST", "WAIT_SECONDS", "draw_normal", "run_bank_cell"]

MANIFEST = "bank.csv"
"""The drawn normal images of a bank cell, as an ``iqeclip bank --manifest``."""
WAIT_SECONDS = 10.0
"""How often a bank cell looks again at a zero cell that another process is running."""

logger = logging.getLogger(__name__)


def draw_normal(base: RunConfig, target: str, k: int, seed: int) -> list[Path]:
    """K of the target's ``valid`` normal images, ``random.Random(seed).sample`` of them sorted
    by name, returned sorted by name (the order ``iqeclip bank --normal`` walks a folder in).

    Raises:
        UserError: The folder holds fewer than K images (naming it and ``--settings``).
    """
    folder = split_folders(base.data_path, target, "valid", base.layout).normal
    pool = list_images(folder)
    if len(pool) < k:
        raise UserError(
            f"{param('settings')} zero+bank-{k} needs {k} normal images but {folder} holds "
            f"{len(pool)}"
        )
    return sorted(random.Random(seed).sample(pool, k), key=lambda p: p.name)


def _zero_checkpoint(
    model_cfg: ModelConfig, base: RunConfig, cell: Cell, out: Path, record: dict[str, Any]
) -> tuple[Path, dict[str, Any]]:
    """The checkpoint of the zero cell of ``cell``'s target and draw (run first when it is not
    finished; waited for while another process runs it) and that cell's ``cell.json``."""
    zero = Cell(cell.target, 0, cell.draw)
    waited = False
    while (how := run_cell(model_cfg, base, zero, out, record)) == "locked":
        if not waited and distributed.is_main():
            logger.info(f"cell {cell.folder}: waiting for {zero.folder}, run by another process")
        waited = True
        time.sleep(WAIT_SECONDS)
    folder = out / zero.folder
    if how == "ran" and distributed.is_main():
        logger.info(f"cell {zero.folder} (for {cell.folder}): {summary(folder)}")
    ckpt = checkpoint_path(zero.run_config(base, folder))
    if not ckpt.is_file():
        raise UserError(
            f"cell {cell.folder} needs the checkpoint {ckpt} of the finished cell {zero.folder}: "
            "it is missing (delete that cell's folder to train it again)"
        )
    return ckpt, read_json(folder / DONE)


def _write_draw(folder: Path, images: list[Path]) -> Path:
    """``bank.csv`` (the manifest ``build_bank`` reads) and ``support.txt`` of the drawn images."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["path", "label", "split"])
    writer.writerows([str(p.resolve()), "normal", "train"] for p in images)
    atomic_write_text(folder / MANIFEST, buffer.getvalue())
    atomic_write_text(folder / "support.txt", f"n-0: {' '.join(p.name for p in images)}\n")
    return folder / MANIFEST


def run_bank_cell(
    model_cfg: ModelConfig, base: RunConfig, cell: Cell, out: Path, record: dict[str, Any]
) -> dict[str, Any]:
    """Build and test a ``zero+bank-K`` cell (its lock held by the caller); its ``cell.json``
    record (rank 0; ``{}`` on the other ranks).

    Args:
        model_cfg: The model of every cell (the zero cell's training).
        base: The training options of every cell.
        cell: The cell (``cell.bank`` = K).
        out: The grid's folder.
        record: The grid's resolved options, saved (with the cell's run) as ``config.yaml``.
    """
    from iqeclip.inference.bank import build_bank
    from iqeclip.inference.test import test
    from iqeclip.model.bank import DEFAULT_BANK_SIZE, DEFAULT_WEIGHT
    from iqeclip.model.checkpoint import read_checkpoint

    main = distributed.is_main()
    zero_ckpt, zero_done = _zero_checkpoint(model_cfg, base, cell, out, record)
    folder = out / cell.folder
    run = cell.run_config(base, folder)
    ckpt = folder / f"{cell.target}_bank.pth"
    run = dataclasses.replace(run, ckpt_path=str(ckpt), overwrite=True, resume=False)
    seconds = None
    if not (ckpt.is_file() and tested(folder, cell)):  # else: killed after its test
        start = time.perf_counter()
        if main:
            save_yaml({**record, "cell": dataclasses.asdict(run)}, folder / "config.yaml")
            manifest = _write_draw(folder, draw_normal(base, cell.target, cell.bank, run.seed))
            build_bank(
                zero_ckpt,
                ckpt,
                manifest=manifest,
                bank_size=DEFAULT_BANK_SIZE,
                weight=DEFAULT_WEIGHT,
                batch_size=base.batch_size,
                device=base.device,
                overwrite=True,
                seed=run.seed,
            )
        distributed.barrier()  # every rank tests the bank rank 0 wrote
        test({}, run)
        seconds = time.perf_counter() - start
    if not main:
        return {}
    metrics = read_json(folder / "metrics.json")
    done = {**dataclasses.asdict(cell), "setting": cell.setting, "seed": run.seed}
    done |= {"select": zero_done.get("select"), "seconds": seconds}
    done |= {"n_images": metrics.get("n_images"), "resumed": False}
    done["zero_checkpoint"] = zero_ckpt.relative_to(out).as_posix()
    images = (read_checkpoint(ckpt)[2].get("bank") or {}).get("images") or []
    done["normal_images"] = [Path(image["file"]).name for image in images]
    return done


CELL_RUNNERS["bank"] = run_bank_cell
