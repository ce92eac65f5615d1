"""The cells of ``iqeclip reproduce`` and how each one runs, resumes and is locked.

A cell is one (target, setting, draw): ``zero`` trains zero-shot with the seed ``--seed + draw``;
``K`` trains K-shot on the MVFA support list ``<target>/<K>-shot.txt`` for draw 0 and on a
seeded random draw of K normal + K abnormal ``valid`` images (``--iterate -1``, seed
``--seed + draw``) for the others. Each cell has its own folder ``<out>/<target>/<setting>/
draw<d>/`` holding its ``config.yaml``, checkpoint, ``metrics.json``, ``log.txt``, test report
(``report/``, with the per-image ``scores.csv``), ``support.txt`` (few-shot: the support set in
the MVFA list format) and, written last, ``cell.json``: a cell with ``cell.json`` is finished and
never redone. A killed cell continues from its training state (``--resume``); a cell being run by
another ``reproduce`` process holds ``.lock`` (``fcntl.flock``) and is left to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from tqdm import tqdm

from iqeclip.config import ModelConfig, RunConfig
from iqeclip.engine.resume import state_path
from iqeclip.engine.trainer import checkpoint_path
from iqeclip.errors import UserError, param
from iqeclip.runtime import distributed
from iqeclip.runtime.files import atomic_write_text, save_yaml, try_lock

__all__ = [
    "DONE",
    "TARGETS",
    "Cell",
    "parse_settings",
    "plan",
    "read_json",
    "run_cell",
    "run_grid",
]

TARGETS: tuple[str, ...] = (
    "Histopathology",
    "Chest",
    "Retina_OCT2017",
    "Brain",
    "Liver",
    "Retina_RESC",
)
"""The paper's six targets (:data:`~iqeclip.data.layout.CLASS_INDEX`), in its table order."""
DONE = "cell.json"
"""Written last into a cell's folder: the cell is finished."""
_SETTING = re.compile(r"zero|([0-9]+)-shot")
_DRAW = re.compile(r"draw([0-9]+)")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One (target, setting, draw) of the grid; ``shot`` is 0 for zero-shot."""

    target: str
    shot: int
    draw: int

    @property
    def setting(self) -> str:
        return "zero" if self.shot == 0 else "few"

    @property
    def folder(self) -> Path:
        return (
            Path(self.target)
            / ("zero" if self.shot == 0 else f"{self.shot}-shot")
            / (f"draw{self.draw}")
        )

    @classmethod
    def parse(cls, folder: Path) -> Cell | None:
        """The cell whose :attr:`folder` ends ``folder``; None for a folder of another name."""
        if len(folder.parts) < 3:
            return None
        target, setting, draw = folder.parts[-3:]
        shot, index = _SETTING.fullmatch(setting), _DRAW.fullmatch(draw)
        if not (shot and index):
            return None
        cell = cls(target, int(shot[1] or 0), int(index[1]))
        return cell if cell.folder == Path(target, setting, draw) else None

    def run_config(self, base: RunConfig, folder: Path) -> RunConfig:
        """The cell's run: the base options, its target, protocol, seed and folder."""
        return dataclasses.replace(
            base,
            obj=self.target,
            setting=self.setting,
            shot=self.shot or base.shot,
            iterate=-1 if self.draw else 0,
            seed=base.seed + self.draw,
            save_dir=str(folder),
            log_path=str(folder / "log.txt"),
            metrics_json=str(folder / "metrics.json"),
            report_dir=str(folder / "report"),
        )


def parse_settings(settings: Sequence[str]) -> list[int]:
    """``zero`` and shot counts (``2 4 8 16``) as shots (0 = zero-shot), in the given order."""
    shots = []
    for text in settings:
        if text == "zero":
            shots.append(0)
        elif str(text).isascii() and str(text).isdigit() and int(text) >= 1:
            shots.append(int(text))
        else:
            raise UserError(f"{param('settings')} {text!r}: use zero or a shot count such as 4")
    return shots


def plan(targets: Sequence[str], settings: Sequence[str], draws: int) -> list[Cell]:
    """Every cell, target by target, setting by setting, draw by draw."""
    return [
        Cell(t, shot, d) for t in targets for shot in parse_settings(settings) for d in range(draws)
    ]


@contextlib.contextmanager
def _lock(folder: Path) -> Iterator[bool]:
    """Hold ``folder/.lock`` while the body runs; yields False when another process holds it."""
    fd = try_lock(folder / ".lock")
    try:
        yield fd is not None
    finally:
        if fd is not None:
            os.close(fd)


def run_cell(
    model_cfg: ModelConfig, base: RunConfig, cell: Cell, out: Path, record: dict[str, Any]
) -> str:
    """Run one cell unless it is finished or running elsewhere: ``done``, ``locked`` or ``ran``.

    Rank 0 decides (and holds the lock); under torchrun every rank follows its decision, so all
    ranks run the same cell.

    Args:
        model_cfg: The model of every cell.
        base: The training options of every cell.
        cell: The cell.
        out: The grid's folder.
        record: The grid's resolved options, saved (with the cell's run) as ``config.yaml``.
    """
    from iqeclip.engine.workflows import train_few, train_zero
    from iqeclip.report.run import write_test_report

    folder = out / cell.folder
    main = distributed.is_main()
    with contextlib.ExitStack() as stack:
        decision = None
        if main:
            folder.mkdir(parents=True, exist_ok=True)
            decision = "done" if (folder / DONE).exists() else None
            if decision is None:
                decision = "free" if stack.enter_context(_lock(folder)) else "locked"
            if decision == "free" and (folder / DONE).exists():
                decision = "done"  # finished while we waited for the lock
        decision = distributed.broadcast(decision)
        if decision != "free":
            return decision
        run = cell.run_config(base, folder)
        resume = state_path(checkpoint_path(run)).exists()
        run = dataclasses.replace(run, resume=resume, overwrite=not resume)
        seconds = None
        if checkpoint_path(run).exists() and not resume and _tested(folder, cell):
            pass  # killed after its results were written: nothing left to train or test
        else:
            if main:
                save_yaml({**record, "cell": dataclasses.asdict(run)}, folder / "config.yaml")
            start = time.perf_counter()
            train = train_zero if cell.setting == "zero" else train_few
            try:
                train(model_cfg, run, write_test_report)
            except UserError as exc:
                if not resume:
                    raise
                raise UserError(
                    f"cell {cell.folder} cannot continue: {exc.message} (the grid's options "
                    f"changed? use another {param('out')}, or delete that cell's folder)"
                ) from None
            seconds = time.perf_counter() - start
        if main:
            _write_support(folder, checkpoint_path(run), cell.shot)
            metrics = read_json(folder / "metrics.json")
            done = {**dataclasses.asdict(cell), "setting": cell.setting, "seed": run.seed}
            done |= {"select": run.select, "seconds": seconds, "n_images": metrics.get("n_images")}
            done["resumed"] = resume
            atomic_write_text(folder / DONE, json.dumps(done, indent=2) + "\n")
    return "ran"


def read_json(path: Path) -> dict[str, Any]:
    """A cell's ``cell.json`` or ``metrics.json`` as a mapping; ``{}`` where it does not exist.

    Raises:
        UserError: Naming the file: it cannot be read, is not valid JSON (a truncated file) or is
            not one JSON object.
    """
    if not path.exists():
        return {}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise UserError(f"{path}: not readable JSON ({exc})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}: expected one JSON object, got {type(record).__name__}")
    return record


def _tested(folder: Path, cell: Cell) -> bool:
    """Whether the cell's test wrote its ``metrics.json``: a cell killed after that has nothing
    left to run; one whose file cannot be read is logged and run again."""
    try:
        return bool(read_json(folder / "metrics.json"))
    except UserError as exc:
        logger.warning(f"cell {cell.folder}: {exc}; running the cell again")
        return False


def _write_support(folder: Path, ckpt: Path, shot: int) -> None:
    """``support.txt``: a few-shot cell's support set as an MVFA list (``a-0:`` / ``n-0:``)."""
    if not shot:
        return
    from iqeclip.model.checkpoint import read_checkpoint

    meta = read_checkpoint(ckpt)[2]
    names = [Path(k.split("#")[0]).name for k in meta.get("support") or []]
    n_abnormal = int(meta.get("support_abnormal", shot))
    text = f"a-0: {' '.join(names[:n_abnormal])}\nn-0: {' '.join(names[n_abnormal:])}\n"
    atomic_write_text(folder / "support.txt", text)


def _init_worker(counter: Any, threads: int) -> None:
    """A ``--jobs`` process: its share of the CPU threads, and its own GPU where there are several."""
    import torch

    torch.set_num_threads(threads)
    with counter.get_lock():
        index = counter.value
        counter.value += 1
    if torch.cuda.device_count() > 1:
        os.environ["IQECLIP_JOB_DEVICE"] = f"cuda:{index % torch.cuda.device_count()}"


def _job(args: tuple[ModelConfig, RunConfig, Cell, Path, dict[str, Any]]) -> tuple[Cell, str]:
    model_cfg, base, cell, out, record = args
    device = os.environ.get("IQECLIP_JOB_DEVICE")
    if device is not None and base.device in ("auto", "cuda"):
        base = dataclasses.replace(base, device=device)
    return cell, run_cell(model_cfg, base, cell, out, record)


def run_grid(
    model_cfg: ModelConfig,
    base: RunConfig,
    cells: Sequence[Cell],
    out: Path,
    jobs: int,
    record: dict[str, Any],
) -> dict[str, list[Cell]]:
    """Run every unfinished cell (``jobs`` at a time as separate processes); returns the cells by
    outcome (``done`` before, ``ran`` now, ``locked`` by another process)."""
    if jobs > 1 and distributed.is_distributed():
        raise UserError(f"{param('jobs')} runs cells as separate processes: not under torchrun")
    outcome: dict[str, list[Cell]] = {"done": [], "ran": [], "locked": []}
    bar = tqdm(total=len(cells), desc="cells", unit="cell", disable=distributed.no_progress_bar())

    def finished(cell: Cell, how: str) -> None:
        outcome[how].append(cell)
        bar.update()
        if how == "ran" and distributed.is_main():
            logger.info(f"cell {cell.folder}: {_summary(out / cell.folder)}")

    try:
        if jobs <= 1:
            for cell in cells:
                finished(cell, run_cell(model_cfg, base, cell, out, record))
        else:
            context = get_context("spawn")
            threads = max(1, (os.cpu_count() or 1) // jobs)
            pool = ProcessPoolExecutor(
                jobs, context, initializer=_init_worker, initargs=(context.Value("i", 0), threads)
            )
            with pool:
                args = [(model_cfg, base, cell, out, record) for cell in cells]
                for cell, how in pool.map(_job, args):
                    finished(cell, how)
    finally:
        bar.close()
    return outcome


def _summary(folder: Path) -> str:
    metrics, done = read_json(folder / "metrics.json"), read_json(folder / DONE)
    if "image_auroc" not in metrics:
        return "no test split to evaluate on"
    pixel = metrics.get("pixel_auroc")
    pixel_text = f", pixel AUROC {pixel:.4f}" if pixel is not None else ""
    seconds = done.get("seconds")
    took = f" ({seconds:.0f} s)" if seconds is not None else ""
    return f"image AUROC {metrics['image_auroc']:.4f}{pixel_text}{took}"
