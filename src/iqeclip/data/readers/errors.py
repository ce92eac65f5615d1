"""What reading can go wrong with, as types callers catch: :class:`UnreadableFile` (one line,
``cannot read <what> <path>: <reason>``, with the file and the reason kept apart:
:func:`reason_about`; a file over a limit is its subclass
:class:`~iqeclip.data.readers.limits.OverLimit`) and :class:`MissingPackage`.

pydicom and nibabel are an optional extra (``pip install 'iqeclip[medical]'``); :func:`need`
imports one only when a DICOM or NIfTI file is read, and a missing one is a
:class:`MissingPackage` that names :data:`INSTALL_HINT`: not the file's fault, so it stops a run
whatever ``--on_bad_input`` says.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from iqeclip.errors import UserError

__all__ = [
    "INSTALL_HINT",
    "MissingPackage",
    "UnreadableFile",
    "cannot_read",
    "need",
    "reason_about",
]

INSTALL_HINT = "pip install 'iqeclip[medical]'"
"""How to install the optional DICOM / NIfTI packages (named in their missing-package errors)."""


class UnreadableFile(UserError):
    """A file (or folder) that cannot be read, on one line.

    Attributes:
        path: The file the error is about (None when it names none: an upload).
        reason: Why, without the file: what a caller that names the file itself shows.
    """

    def __init__(self, message: str, path: Path | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else Path(path)
        self.reason = str(self) if reason is None else " ".join(str(reason).split())


class MissingPackage(UnreadableFile):
    """An optional package a file needs is missing: the install hint, not the file's fault."""


def cannot_read(what: str, path: Path, reason: str) -> UnreadableFile:
    """``cannot read <what> <path>: <reason>`` (``what``: the format, e.g. ``DICOM``; may be
    empty), the file and the reason kept apart."""
    where = f"cannot read {what} {path}" if what else f"cannot read {path}"
    return UnreadableFile(f"{where}: {reason}", path, reason)


def reason_about(exc: UserError, path: Path) -> str:
    """What ``exc`` says about ``path``: the reason alone when it is an :class:`UnreadableFile`
    about ``path``, else the whole message (it names another file, or none) with its parameters
    still marked (:attr:`~iqeclip.errors.UserError.message`), for a message built from it."""
    if isinstance(exc, UnreadableFile) and exc.path == Path(path):
        return exc.reason
    return exc.message


def need(module: str, path: Path) -> ModuleType:
    """Import an optional dependency or raise :class:`MissingPackage` with the install hint."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingPackage(f"reading {path} needs {module}: {INSTALL_HINT}") from None
