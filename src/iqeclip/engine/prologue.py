"""The start every ``train-*`` and ``test-*`` run shares: its log, its bad-input policy, its
reading and its manifest, in this order (an error in any of them stops the run before any work)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from iqeclip.config import RunConfig
from iqeclip.data.manifest import Manifest
from iqeclip.data.readers import Reading
from iqeclip.engine.runlog import RunLog
from iqeclip.engine.sources import run_manifest
from iqeclip.engine.trainer import BadInputs

__all__ = ["RunStart", "open_run"]


@dataclass(frozen=True)
class RunStart:
    """What a run starts from.

    Attributes:
        log: The run's log (closed when the run ends).
        bad: The ``--on_bad_input`` policy, holding the manifest's skipped rows.
        reading: How the run reads its inputs.
        manifest: The ``--manifest`` (None without one).
    """

    log: RunLog
    bad: BadInputs
    reading: Reading
    manifest: Manifest | None


@contextlib.contextmanager
def open_run(run: RunConfig, img_size: int, reading: Callable[[], Reading]) -> Iterator[RunStart]:
    """Open the run's log, then apply its bad-input policy, work out its reading (``reading()``:
    from the options, or a checkpoint's record) and read its manifest; the log is closed when the
    run ends, however it ends.

    Args:
        run: The run's options.
        img_size: The model's input side (the bad-input check decodes at it).
        reading: Gives the run's reading, once the log is open.
    """
    log = RunLog(run.log_path)
    try:
        bad = BadInputs(run.on_bad_input, img_size)
        chosen = reading()
        yield RunStart(log, bad, chosen, run_manifest(run, chosen, bad, log))
    finally:
        log.close()
