"""predict's output folder: nothing of the user's is overwritten, an interrupted run is resumed.

- :func:`guard` runs before any work: without ``--overwrite`` it refuses a folder holding
  ``predictions.csv``, ``volumes.csv``, ``skipped_inputs.csv`` or any file with a name predict
  would write for one of the inputs (``<stem>_overlay.png``, ``<stem>_s003_map.npy``,
  ``<stem>_anomaly.nii.gz``, ...), so a user's ``scan_map.png`` beside ``scan.png`` is never
  replaced. With ``--overwrite`` it removes the previous run's outputs, those listed in its
  ``predictions.csv`` (and the CSV files themselves), nothing else.
- :class:`Partial` appends each finished input's rows to ``.predictions.partial.<rank>.csv`` (one
  flushed write per input), so a crash or kill keeps what was scored; ``--resume`` reads it back
  and scores only the inputs that are missing. The final ``predictions.csv`` replaces it.
"""

from __future__ import annotations

import csv
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from iqeclip.errors import UserError
from iqeclip.runtime import distributed

__all__ = ["FIXED_FILES", "Partial", "guard"]

FIXED_FILES = ("predictions.csv", "volumes.csv", "skipped_inputs.csv", "config.yaml")
"""The files of a predict run that do not depend on the inputs (config.yaml: its options)."""
_OUTPUT = re.compile(r"_(overlay\.png|map\.png|map\.npy|mask\.png|anomaly\.nii\.gz|mask\.nii\.gz)$")
_PARTIAL = ".predictions.partial.{}.csv"
_COLUMNS_EXTRA = ("_input", "_group")


def _ours(name: str, stems: Iterable[str]) -> bool:
    return name in FIXED_FILES or (
        _OUTPUT.search(name) is not None and any(name.startswith(f"{s}_") for s in stems)
    )


def guard(out: Path, stems: Sequence[str], overwrite: bool, resume: bool) -> None:
    """Refuse or clean the output folder before any work (see the module docstring).

    Raises:
        UserError: Without ``overwrite`` and ``resume``, a file predict would write exists
            (named); with ``resume``, nothing to resume.
    """
    if not out.is_dir():
        if resume:
            raise UserError(f"--resume: {out} does not exist, so there is nothing to resume")
        return
    partials = sorted(out.glob(_PARTIAL.format("*")))
    if resume:
        if not partials:
            raise UserError(f"--resume: {out} holds no interrupted predict run")
        return
    if overwrite:
        _remove_previous(out)
        for p in partials:
            p.unlink()
        return
    if partials:
        raise UserError(
            f"--out {out} holds an interrupted predict run: pass --resume to continue it or "
            "--overwrite to start again"
        )
    clash = sorted(p.name for p in out.iterdir() if p.is_file() and _ours(p.name, stems))
    if clash:
        more = f" and {len(clash) - 1} more" if len(clash) > 1 else ""
        raise UserError(
            f"--out {out} already holds {clash[0]}{more}, which this run would write: pass "
            "--overwrite to replace an earlier run's outputs, or choose another --out"
        )


def _remove_previous(out: Path) -> None:
    """Delete the files the previous run listed in its predictions.csv, and its CSV files."""
    listed: set[str] = set()
    table = out / "predictions.csv"
    if table.is_file():
        with table.open(newline="", encoding="utf-8") as f:
            for row in csv.DictReader(f):
                listed |= {n for n in (row.get("outputs") or "").split(";") if n}
    for name in sorted(listed | set(FIXED_FILES)):
        path = out / name
        if os.sep not in name and path.is_file():
            path.unlink()


class Partial:
    """This rank's rows of finished inputs, appended as they finish (``--resume`` reads them)."""

    def __init__(self, out: Path, columns: Sequence[str]) -> None:
        self.path = out / _PARTIAL.format(distributed.rank())
        self.columns = [*columns, *_COLUMNS_EXTRA]

    def load(self) -> list[dict[str, Any]]:
        """The rows already written (empty when there is no partial file)."""
        if not self.path.is_file():
            return []
        with self.path.open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
        for row in rows:
            row["slice"] = int(row["slice"]) if row["slice"] != "" else ""
            row["_group"] = int(row["_group"])
        return rows

    def append(self, rows: Sequence[dict[str, Any]]) -> None:
        """Append one finished input's rows, flushed to disk before returning."""
        new = not self.path.exists()
        try:
            with self.path.open("a", newline="", encoding="utf-8") as f:
                writer = csv.DictWriter(f, fieldnames=self.columns, lineterminator="\n")
                if new:
                    writer.writeheader()
                writer.writerows(rows)
                f.flush()
                os.fsync(f.fileno())
        except OSError as exc:
            raise UserError(f"cannot write {self.path}: {exc.strerror or exc}") from None

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
