"""The run log of ``train-*`` and ``test-*``: lines to the console and to ``--log_path``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any, TextIO

from iqeclip.engine.evaluate import metric_lines
from iqeclip.runtime import distributed

logger = logging.getLogger(__name__)


class RunLog:
    """Lines to the ``iqeclip`` logger (the console, under the CLI) and appended to the log file."""

    def __init__(self, path: str | Path | None) -> None:
        self.file: TextIO | None = None
        self.active = distributed.is_main()  # under torchrun only rank 0 logs
        if path is not None and self.active:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self.file = open(path, "a", encoding="utf-8")  # noqa: SIM115 - closed in close()

    def __call__(self, line: str, level: int = logging.INFO) -> None:
        if not self.active:
            return
        logger.log(level, line)
        if self.file is not None:
            self.file.write(line + "\n")
            self.file.flush()

    def detail(self, line: str) -> None:
        """A line for the log file, shown on the console with ``-v`` only (the resolved options:
        config.yaml beside every result holds them too)."""
        self(line, logging.DEBUG)

    def metrics(self, name: str, metrics: dict[str, Any]) -> None:
        """The published ``<name> AUC : 0.xxxx`` (and ``pAUC``) lines."""
        for line in metric_lines(name, metrics):
            self(line)

    def close(self) -> None:
        if self.file is not None:
            self.file.close()
