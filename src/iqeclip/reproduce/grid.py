"""The cells of ``iqeclip reproduce`` and how each one runs, resumes and is locked.

A cell is one (target, setting, draw): ``zero`` trains zero-shot with the seed ``--seed + draw``;
``K`` trains K-shot on the MVFA support list ``<target>/<K>-shot.txt`` for draw 0 and on a
seeded random draw of K normal + K abnormal ``valid`` images (``--iterate -1``, seed
``--seed + draw``) for the others; ``zero+bank-K`` adds to the zero cell's checkpoint of the same
draw a memory bank of K normal ``valid`` images drawn with that seed, and tests it as the zero
cell tests (:mod:`~iqeclip.reproduce.bank`). Each cell has its own folder ``<out>/<target>/
<setting>/draw<d>/`` (``zero``, ``<K>-shot`` or ``zero+bank-<K>``) holding its ``config.yaml``,
checkpoint, ``metrics.json``, ``log.txt``, test report (``report/``, with the per-image
``scores.csv``), ``support.txt`` (few-shot: the support set in the MVFA list format; a bank: its
normal images, ``n-0:``) and, written last, ``cell.json``: a cell with ``cell.json`` is finished
and never redone. A killed cell continues from its training state (``--resume``); a cell being
run by another ``reproduce`` process holds ``.lock`` (``fcntl.flock``) and is left to it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import re
import time
from collections.abc import Callable, Iterator, Sequence
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
    "setting_text",
    "summary",
    "tested",
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
_SETTING = re.compile(r"zero|([0-9]+)-shot|zero\+bank-([0-9]+)")
_BANK = re.compile(r"zero\+bank-([0-9]+)")
_DRAW = re.compile(r"draw([0-9]+)")

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Cell:
    """One (target, setting, draw) of the grid; ``shot`` is 0 for zero-shot, ``bank`` the K
    normal images of a ``zero+bank-K`` cell (its ``shot`` is 0), else 0."""

    target: str
    shot: int
    draw: int
    bank: int = 0

    @property
    def setting(self) -> str:
        """``zero``, ``few`` or ``zero+bank`` (``results.csv``'s and ``cell.json``'s setting)."""
        if self.bank:
            return "zero+bank"
        return "zero" if self.shot == 0 else "few"

    @property
    def kind(self) -> tuple[int, int]:
        """``(shot, bank)``: the row of the table; sorted: zero, zero+bank-K, then K-shot."""
        return self.shot, self.bank

    @property
    def text(self) -> str:
        """The setting as ``--settings`` takes it: ``zero``, ``K`` or ``zero+bank-K``."""
        return setting_text(self.shot, self.bank)

    @property
    def folder(self) -> Path:
        name = (
            f"zero+bank-{self.bank}" if self.bank else f"{self.shot}-shot" if self.shot else "zero"
        )
        return Path(self.target) / name / f"draw{self.draw}"

    @classmethod
    def parse(cls, folder: Path) -> Cell | None:
        """The cell whose :attr:`folder` ends ``folder``; None for a folder of another name."""
        if len(folder.parts) < 3:
            return None
        target, setting, draw = folder.parts[-3:]
        shot, index = _SETTING.fullmatch(setting), _DRAW.fullmatch(draw)
        if not (shot and index):
            return None
        cell = cls(target, int(shot[1] or 0), int(index[1]), int(shot[2] or 0))
        return cell if cell.folder == Path(target, setting, draw) else None

    def run_config(self, base: RunConfig, folder: Path) -> RunConfig:
        """The cell's run: the base options, its target, protocol, seed and folder."""
        return dataclasses.replace(
            base,
            obj=self.target,
            setting="few" if self.shot else "zero",
            shot=self.shot or base.shot,
            iterate=-1 if self.draw else 0,
            seed=base.seed + self.draw,
            save_dir=str(folder),
            log_path=str(folder / "log.txt"),
            metrics_json=str(folder / "metrics.json"),
            report_dir=str(folder / "report"),
        )


def setting_text(shot: int, bank: int = 0) -> str:
    """A setting as ``--settings`` takes it: ``zero``, ``K`` or ``zero+bank-K``."""
    return f"zero+bank-{bank}" if bank else str(shot) if shot else "zero"


def parse_settings(settings: Sequence[str]) -> list[tuple[int, int]]:
    """``zero``, shot counts (``2 4 8 16``) and ``zero+bank-K`` as ``(shot, bank)`` pairs (shot 0:
    zero-shot; bank K: a zero-shot checkpoint with a bank of K normal images), in the given
    order."""
    kinds = []
    for text in map(str, settings):
        bank = _BANK.fullmatch(text)
        if text == "zero":
            kinds.append((0, 0))
        elif text.isascii() and text.isdigit() and int(text) >= 1:
            kinds.append((int(text), 0))
        elif bank and text.isascii() and int(bank[1]) >= 1:
            kinds.append((0, int(bank[1])))
        else:
            raise UserError(
                f"{param('settings')} {text!r}: use zero or a shot count such as 4, or "
                "zero+bank-K (K normal images, K >= 1)"
            )
    return kinds


def plan(targets: Sequence[str], settings: Sequence[str], draws: int) -> list[Cell]:
    """Every cell, target by target, setting by setting, draw by draw."""
    kinds = parse_settings(settings)
    return [Cell(t, shot, d, bank) for t in targets for shot, bank in kinds for d in range(draws)]


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
        if cell.bank:  # reproduce.bank registers itself (the package imports it)
            done = CELL_RUNNERS["bank"](model_cfg, base, cell, out, record)
        else:
            done = _run_trained(model_cfg, base, cell, folder, record)
        if main:
            atomic_write_text(folder / DONE, json.dumps(done, indent=2) + "\n")
    return "ran"


CELL_RUNNERS: dict[str, Callable[..., dict[str, Any]]] = {}
"""Runners of the cells that train nothing, by kind: ``bank`` (:mod:`iqeclip.reproduce.bank`,
which adds itself here, so that this module need not import it)."""


def _run_trained(
    model_cfg: ModelConfig, base: RunConfig, cell: Cell, folder: Path, record: dict[str, Any]
) -> dict[str, Any]:
    """Train and test a zero or K-shot cell (resuming a killed one); its ``cell.json`` record."""
    from iqeclip.engine.workflows import train_few, train_zero
    from iqeclip.report.run import write_test_report

    main = distributed.is_main()
    run = cell.run_config(base, folder)
    resume = state_path(checkpoint_path(run)).exists()
    run = dataclasses.replace(run, resume=resume, overwrite=not resume)
    seconds = None
    if checkpoint_path(run).exists() and not resume and tested(folder, cell):
        pass  # killed after its results were written: nothing left to train or test
    else:
        if main:
            save_yaml({**record, "cell": dataclasses.asdict(run)}, folder / "config.yaml")
        start = time.perf_counter()
        train = train_zero if cell.shot == 0 else train_few
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
    done: dict[str, Any] = {}
    if main:
        _write_support(folder, checkpoint_path(run), cell.shot)
        metrics = read_json(folder / "metrics.json")
        done = {**dataclasses.asdict(cell), "setting": cell.setting, "seed": run.seed}
        done |= {"select": run.select, "seconds": seconds, "n_images": metrics.get("n_images")}
        done["resumed"] = resume
    return done


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


def tested(folder: Path, cell: Cell) -> bool:
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
            logger.info(f"cell {cell.folder}: {summary(out / cell.folder)}")

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


def summary(folder: Path) -> str:
    """A finished cell's one line: its image and pixel AUROC and how long it took."""
    metrics, done = read_json(folder / "metrics.json"), read_json(folder / DONE)
    if "image_auroc" not in metrics:
        return "no test split to evaluate on"
    pixel = metrics.get("pixel_auroc")
    pixel_text = f", pixel AUROC {pixel:.4f}" if pixel is not None else ""
    seconds = done.get("seconds")
    took = f" ({seconds:.0f} s)" if seconds is not None else ""
    return f"image AUROC {metrics['image_auroc']:.4f}{pixel_text}{took}"
