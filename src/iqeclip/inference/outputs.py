"""predict's output folder: one run at a time, nothing of the user's is overwritten, an
interrupted run is resumed.

- :func:`guard` runs before any work. It first takes an exclusive lock on ``<out>/.predict.lock``
  (``fcntl.flock``, not waiting), held until predict returns: a second run into the same folder is
  refused with one line while the first writes it (the file stays; the lock dies with its process,
  so a killed run leaves nothing that blocks). Without ``--overwrite`` it refuses a folder
  holding ``predictions.csv``, ``volumes.csv``, ``skipped_inputs.csv`` or any file with a name
  predict would write for one of the inputs (``<stem>_overlay.png``, ``<stem>_s003_map.npy``,
  ``<stem>_anomaly.nii.gz``, ``<stem>_mask.nrrd``, ``<stem>_seg.dcm``, ...), so a user's
  ``scan_map.png`` beside ``scan.png`` is never replaced. With ``--overwrite`` it removes the
  previous run's outputs, those listed in its ``predictions.csv`` (and the CSV files
  themselves), nothing else, and still refuses a file this run would write that no earlier run
  listed. ``--overwrite`` and ``--resume`` also remove
  the temporary files a write killed midway leaves: ``.<file>.<8 random characters>.tmp``
  (:func:`~iqeclip.runtime.files.atomic_write`) and ``.<file>.tmp.nii.gz`` (or ``.nrrd``,
  ``.mha``: :func:`~iqeclip.inference.files.volume_temporary`), only for a ``<file>`` this run
  writes.
- :class:`Partial` appends each finished input's rows to ``.predictions.partial.<rank>.csv`` (one
  flushed write per input), so a crash or kill keeps what was scored; ``--resume`` reads it back
  and scores only the inputs that are missing, after checking that it is the same run (checkpoint,
  inputs, options: ``.predictions.partial.json``). The final ``predictions.csv`` replaces it.
  Batches are cut at fixed item numbers, and :func:`resume_point` starts the resumed run at the
  batch the interrupted one was in, so every item is scored in the same batch as without the
  interruption and the outputs are the same, byte for byte.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import os
from collections import Counter
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from iqeclip.errors import UserError, param
from iqeclip.inference.files import PREDICTIONS, TABLES, is_output_name, volume_target
from iqeclip.runtime import distributed
from iqeclip.runtime.files import atomic_target, atomic_write_text, try_lock

__all__ = [
    "OutLock",
    "Partial",
    "guard",
    "resume_point",
]

logger = logging.getLogger(__name__)

_PARTIAL = ".predictions.partial.{}.csv"
_COLUMNS_EXTRA = ("_input", "_group")
_DONE = "done"
_IDENTITY = ".predictions.partial.json"
_LOCK = ".predict.lock"


def _ours(name: str, stems: Iterable[str]) -> bool:
    return name in TABLES or (is_output_name(name) and any(name.startswith(f"{s}_") for s in stems))


class OutLock:
    """An exclusive, non-blocking ``fcntl.flock`` on ``<out>/.predict.lock``, held until
    :meth:`release` (or the end of a ``with`` block, or of the process: a killed run's lock is
    gone with it, and the file it leaves blocks nothing).

    Raises:
        UserError: Another process holds it (another predict run is writing ``out``), or the
            lock file cannot be created.
    """

    def __init__(self, out: Path) -> None:
        path = out / _LOCK
        try:
            self._fd = try_lock(path)
        except OSError as exc:
            raise UserError(
                f"{param('out')} {out}: cannot write {path}: {exc.strerror or exc}"
            ) from None
        if self._fd is None:
            raise UserError(
                f"{param('out')} {out}: another predict run is writing it; wait for it to end, or "
                f"choose another {param('out')}"
            )

    def release(self) -> None:
        """Let another run lock the folder (closing the file drops the lock)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> OutLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def guard(
    out: Path, stems: Sequence[str], overwrite: bool, resume: bool, identity: dict[str, Any]
) -> OutLock:
    """Lock, then refuse or clean the output folder before any work (see the module docstring).

    Args:
        out: The output folder.
        stems: The output stems of the inputs.
        overwrite: Remove the previous run's listed outputs first.
        resume: Continue the interrupted run in ``out``; it must have the same ``identity``.
        identity: What makes two runs the same (checkpoint, inputs, options), saved beside the
            partial rows and compared on ``resume``.

    Returns:
        The folder's lock, held: release it when the run ends (a refusal releases it).

    Raises:
        UserError: Another predict run is writing ``out``; a file this run would write that no
            earlier run listed (without ``overwrite``: any); with ``resume``, nothing to resume
            or another run to resume.
    """
    if resume and not out.is_dir():
        raise UserError(f"{param('resume')}: {out} holds no interrupted predict run")
    out.mkdir(parents=True, exist_ok=True)
    lock = OutLock(out)
    try:
        _check(out, stems, overwrite, resume, identity)
    except BaseException:
        lock.release()
        raise
    return lock


def _check(
    out: Path, stems: Sequence[str], overwrite: bool, resume: bool, identity: dict[str, Any]
) -> None:
    """:func:`guard`'s checks and cleaning, in the locked folder."""
    record = out / _IDENTITY
    partials = sorted(out.glob(_PARTIAL.format("*")))
    if resume:
        if not partials or not record.is_file():
            raise UserError(f"{param('resume')}: {out} holds no interrupted predict run")
        before = json.loads(record.read_text(encoding="utf-8"))
        changed = sorted(k for k in identity if before.get(k) != identity[k])
        if changed:
            raise UserError(
                f"{param('resume')}: the interrupted run in {out} had other {', '.join(changed)}; "
                f"pass the same inputs and options, or {param('overwrite')} to start again"
            )
        _remove_temporaries(out, stems)
        return
    if partials and not overwrite:
        raise UserError(
            f"{param('out')} {out} holds an interrupted predict run: pass {param('resume')} to "
            f"continue it or {param('overwrite')} to start again"
        )
    removable = _previous_outputs(out) if overwrite else set()
    clash = sorted(
        p.name
        for p in out.iterdir()
        if p.is_file() and _ours(p.name, stems) and p.name not in removable
    )
    if clash:
        more = f" and {len(clash) - 1} more" if len(clash) > 1 else ""
        hint = (
            f"no earlier predict run in it listed it: move it, or choose another {param('out')}"
            if overwrite
            else f"pass {param('overwrite')} to replace an earlier run's outputs, or choose "
            f"another {param('out')}"
        )
        raise UserError(
            f"{param('out')} {out} already holds {clash[0]}{more}, which this run would write: "
            f"{hint}"
        )
    for name in sorted(removable):
        (out / name).unlink(missing_ok=True)
    for p in [*partials, record]:
        p.unlink(missing_ok=True)
    if overwrite:
        _remove_temporaries(out, stems)
    atomic_write_text(record, json.dumps(identity, indent=2, sort_keys=True) + "\n")


def _remove_temporaries(out: Path, stems: Sequence[str]) -> None:
    """Remove the temporary files of writes killed midway, for files this run writes (its
    outputs, its CSV files, ``.predictions.partial.json``), and nothing else."""
    left = []
    for p in out.iterdir():
        target = volume_target(p.name) or atomic_target(p.name)
        if target is not None and (target == _IDENTITY or _ours(target, stems)) and p.is_file():
            left.append(p)
    for p in left:
        p.unlink(missing_ok=True)
    if left:
        logger.info(f"removed {len(left)} temporary files of writes cut off in {out}")


def _previous_outputs(out: Path) -> set[str]:
    """The files the previous run listed in its predictions.csv (or, interrupted, its partial
    rows), and its CSV files; none when it left neither (nothing is then known to be predict's)."""
    tables = [out / PREDICTIONS, *sorted(out.glob(_PARTIAL.format("*")))]
    tables = [t for t in tables if t.is_file()]
    if not tables:
        return set()
    listed: set[str] = set(TABLES)
    for table in tables:  # a finished run's predictions.csv, an interrupted one's partial rows
        with table.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                names = (row.get("outputs") or "").split(";")
                listed |= {n for n in names if n and os.sep not in n}
    return {n for n in listed if (out / n).is_file()}


class Partial:
    """This rank's rows of finished inputs, appended as they finish (``--resume`` reads them).

    Each input's rows and an end marker go out in one write; on reading, an input without its
    marker (cut off by a kill) is not done and is scored again.
    """

    def __init__(self, out: Path, columns: Sequence[str]) -> None:
        self.path = out / _PARTIAL.format(distributed.rank())
        self.columns = [*columns, *_COLUMNS_EXTRA]

    def load(self) -> list[dict[str, Any]]:
        """The rows of the inputs that finished (empty when there is no partial file)."""
        if not self.path.is_file():
            return []
        text = self.path.read_text(encoding="utf-8")
        text = text[: text.rfind("\n") + 1]  # a line cut off by a kill is dropped
        rows = list(csv.DictReader(io.StringIO(text)))
        done = {r["_input"] for r in rows if r.get("_group") == _DONE}
        kept = [r for r in rows if r.get("_input") in done and r.get("_group") != _DONE]
        for row in kept:
            row["slice"] = int(row["slice"]) if row["slice"] != "" else ""
            row["_group"] = int(row["_group"])
        return kept

    def append(self, source: str, rows: Sequence[dict[str, Any]]) -> None:
        """Append one finished input's rows and its end marker, flushed to disk before returning."""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, fieldnames=self.columns, lineterminator="\n")
        if not self.path.exists():
            writer.writeheader()
        writer.writerows(rows)
        writer.writerow({"_input": source, "_group": _DONE})
        try:
            with self.path.open("a", newline="", encoding="utf-8") as f:
                f.write(buffer.getvalue())
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise UserError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
        if distributed.is_main():
            (self.path.parent / _IDENTITY).unlink(missing_ok=True)


def resume_point(
    paths: Sequence[Path], rows: Sequence[dict[str, Any]], batch_size: int
) -> tuple[list[Path], int, set[str]]:
    """What a run reads, given the ``rows`` of the inputs an interrupted run finished.

    Batches are cut at every ``batch_size``-th item of the run (items numbered in input order)
    and the CPU kernels' results depend on a batch's make-up, so a resumed run scores each
    remaining item in the batch the uninterrupted run scored it in. Reading starts at the
    first unfinished input, or before it at the finished inputs whose items reach into its
    batch; finished inputs among those read fill their batches again but are not written again.

    Args:
        paths: This rank's inputs, in order.
        rows: The partial rows of the finished inputs (empty: a fresh run); every item of a
            finished input has one.
        batch_size: Items per batch.

    Returns:
        The inputs to read, in order, the number of the first item they hold, and the finished
        inputs among them (``str`` paths): pass all three to
        :func:`~iqeclip.inference.inputs.scored_items`.
    """
    items = Counter(r["_input"] for r in rows)
    first = next((i for i, p in enumerate(paths) if str(p) not in items), None)
    if first is None:  # every input finished
        return [], len(rows), set()
    start = sum(items[str(p)] for p in paths[:first])
    batch_start = start - start % batch_size
    while start > batch_start:
        first -= 1
        start -= items[str(paths[first])]
    read = list(paths[first:])
    return read, start, {str(p) for p in read if str(p) in items}
