"""User-facing errors.

Every problem a user can cause (a missing folder, a bad option, an unreadable file, a checkpoint
built for another model) is raised as :class:`UserError` with a one-line message that names the
file or parameter at fault. Parameters are marked with :func:`param`, so that each reader sees
them in its own words: a Python caller reads ``ckpt_path x.pth: no such file``, the command line
(which prints ``error: <message>`` and exits with code 2, without a traceback) renders the same
error as ``--ckpt_path x.pth: no such file``.
"""

from __future__ import annotations

import re
from collections.abc import Callable

__all__ = ["UserError", "as_flag", "first_line", "param"]

_OPEN, _CLOSE = "\ue000", "\ue001"  # private-use characters: no text a user gives holds them
_MARKED = re.compile(f"{_OPEN}([^{_CLOSE}]*){_CLOSE}")


def param(name: str) -> str:
    """``name`` marked as a parameter in a :class:`UserError` message: ``str(exc)`` shows it as
    is, the command line as its flag (``param("ckpt_path")``: ``ckpt_path``, ``--ckpt_path``)."""
    return f"{_OPEN}{name}{_CLOSE}"


def as_flag(name: str) -> str:
    """A parameter as a flag of ``predict`` and ``serve`` (``masks``: ``--masks``; their options
    all take their field's name): how a :func:`param` reads in what they write
    for a person, a skipped input's reason and the server's answers, in the words these always had.
    """
    return f"--{name}"


def first_line(exc: BaseException) -> str:
    """An exception's message on one line: its first non-blank line, else its class name."""
    text = (exc.strerror if isinstance(exc, OSError) else None) or str(exc)
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    return lines[0] if lines else type(exc).__name__


class UserError(Exception):
    """A problem with the user's input, reported as one line without a traceback.

    The message keeps its :func:`param` marks (in ``args``, so they survive pickling to another
    process); ``str(exc)`` names the parameters as Python does, :meth:`render` as a caller
    chooses. An error that wraps another builds its message from :attr:`message` to keep them.
    """

    def __init__(self, message: str) -> None:
        super().__init__(" ".join(str(message).split()))

    @property
    def message(self) -> str:
        """The message with its parameters still marked."""
        return self.args[0]

    def render(self, name: Callable[[str], str]) -> str:
        """The message with each marked parameter written as ``name(parameter)``."""
        return _MARKED.sub(lambda found: name(found.group(1)), self.message)

    def __str__(self) -> str:
        return self.render(str)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self)!r})"
