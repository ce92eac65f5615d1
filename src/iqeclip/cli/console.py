"""The console: the library's log records above any progress bar (tqdm)."""

from __future__ import annotations

import logging
import sys

__all__ = ["setup_logging"]


class _ConsoleHandler(logging.Handler):
    """Log records to the console above any progress bar (tqdm), to the current stdout."""

    def emit(self, record: logging.LogRecord) -> None:
        from tqdm import tqdm

        stream = sys.stderr if record.levelno >= logging.WARNING else sys.stdout
        tqdm.write(self.format(record), file=stream)


def setup_logging(verbosity: int) -> logging.Handler:
    """Show the library's log records on the console: ``-1`` warnings only, ``0`` info, ``1``
    debug; returns the handler, for the caller to remove."""
    handler = _ConsoleHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger = logging.getLogger("iqeclip")
    logger.addHandler(handler)
    logger.setLevel({-1: logging.WARNING, 0: logging.INFO, 1: logging.DEBUG}[verbosity])
    logger.propagate = False
    return handler
