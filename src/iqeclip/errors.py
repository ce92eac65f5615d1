"""User-facing errors.

Every problem a user can cause (a missing folder, a bad flag, an unreadable file, a checkpoint
built for another model) is raised as :class:`UserError` with a one-line message that names the
file or flag at fault. The command line prints it as ``error: <message>`` and exits with code 2,
without a traceback.
"""

from __future__ import annotations


def first_line(exc: BaseException) -> str:
    """An exception's message on one line: its first non-blank line, else its class name."""
    text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback."""

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))
