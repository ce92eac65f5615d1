"""Which reader a path needs: one list of readers, asked in order, and :func:`register`, which
adds one (a new format is one :class:`~iqeclip.data.readers.reader.Reader` and one ``register``
line).

:func:`reader_for` gives a path's reader: a file's by its name first (the first reader whose
``suffixes`` end it, compared case-insensitively), then any path's by
:meth:`~iqeclip.data.readers.reader.Reader.sniff` (a folder is a DICOM series folder; a file no
reader names is DICOM when it has the ``DICM`` magic). The built-in readers (registered by
:mod:`iqeclip.data.readers`, in this order): DICOM series folders, NIfTI ``.nii`` /
``.nii.gz``, NRRD ``.nrrd`` / ``.nhdr``, MetaImage ``.mha`` / ``.mhd``, DICOM ``.dcm`` /
``.dicom`` (or by the magic), PIL images ``.png``, ``.tif``, ``.tiff``, ``.jpg``, ``.jpeg``,
``.bmp``. :func:`read` reads a path by its reader; every volume's
slices reach the model in one view, whatever the format
(:mod:`iqeclip.data.readers.orientation`).
"""

from __future__ import annotations

from pathlib import Path

from iqeclip.data.readers.base import Slice
from iqeclip.data.readers.errors import cannot_read
from iqeclip.data.readers.intensity import DEFAULT_INTENSITY, Intensity
from iqeclip.data.readers.limits import DEFAULT_LIMITS, Declared, Limits
from iqeclip.data.readers.reader import Reader
from iqeclip.data.readers.reading import Reading

__all__ = [
    "declared",
    "input_stem",
    "read",
    "reader_for",
    "register",
    "single_image",
    "supported",
    "unregister",
]

_READERS: list[Reader] = []
"""The registered readers, in the order :func:`reader_for` asks them."""


def register(reader: Reader, first: bool = False) -> Reader:
    """Add a reader to the ones :func:`reader_for` asks (after the others; ``first``: before
    them, so that it wins a suffix another reader claims too). Returns it.

    The list lives in each process: DataLoader workers started by ``fork`` (Linux) inherit it;
    under ``spawn`` register the reader in a module the workers import.
    """
    if first:
        _READERS.insert(0, reader)
    else:
        _READERS.append(reader)
    return reader


def unregister(reader: Reader) -> None:
    """Remove a registered reader (a test's, a plugin's)."""
    _READERS.remove(reader)


def reader_for(path: Path) -> Reader | None:
    """A path's reader, by the rules of the module docstring; None for a missing path,
    something that is neither a file nor a folder, or a file no reader takes."""
    path = Path(path)
    if path.is_file():
        name = path.name.lower()
        for reader in _READERS:
            if reader.suffixes and name.endswith(tuple(reader.suffixes)):
                return reader
    elif not path.is_dir():
        return None
    return next((reader for reader in _READERS if reader.sniff(path)), None)


def single_image(path: Path) -> bool:
    """Whether ``path`` is known before reading to be one 2-D picture (its reader's
    :meth:`~iqeclip.data.readers.reader.Reader.single_image`); False for a path no reader takes."""
    reader = reader_for(path)
    return reader is not None and reader.single_image(Path(path))


def input_stem(path: Path) -> str:
    """A file's name without the suffix a reader names it by (a folder's name)."""
    name = path.name
    for reader in _READERS:
        for suffix in reader.suffixes:
            if name.lower().endswith(suffix):
                return name[: -len(suffix)]
    return name


def _found(path: Path) -> Reader:
    path = Path(path)
    if not path.exists():
        raise cannot_read("", path, "no such file or folder")
    reader = reader_for(path)
    if reader is None:
        raise cannot_read("", path, f"unsupported file type (expected {supported()})")
    return reader


def supported() -> str:
    """The formats the registered readers take, for messages: ``nifti .nii/.nii.gz, ...``."""
    named = [f"{r.name} {'/'.join(r.suffixes)}" for r in _READERS if r.suffixes]
    return ", ".join(named) + ", DICOM files without a suffix or a folder of DICOM files"


def read(
    path: Path,
    axis: int = 2,
    intensity: Intensity = DEFAULT_INTENSITY,
    orientation: str = "radiological",
    bad: list[tuple[Path, str]] | None = None,
    limits: Limits = DEFAULT_LIMITS,
) -> list[Slice]:
    """Read any supported input by its :func:`reader_for`.

    Args:
        path: File or series folder.
        axis: The plane NIfTI volumes are sliced across (0 sagittal, 1 coronal, 2 axial).
        intensity: Window / percentile options.
        orientation: How volume slices are turned
            (:data:`~iqeclip.data.readers.orientation.ORIENTATIONS`).
        bad: For a reader of folders: unreadable files are listed there instead of failing
            the folder (:attr:`~iqeclip.data.readers.reader.Reader.partial`).
        limits: The largest input read (:mod:`~iqeclip.data.readers.limits`), checked from
            the headers before anything is decoded.

    Returns:
        The slices, as the reader returns them.

    Raises:
        UserError: A missing path, an unsupported file type, a bad axis or orientation, or the
            reader's errors (an :class:`~iqeclip.data.readers.limits.OverLimit` for an input
            over ``limits``).
    """
    reader = _found(path)
    return reader.read(Path(path), Reading(intensity, axis, orientation, limits), bad)


def declared(
    path: Path,
    axis: int = 2,
    orientation: str = "radiological",
    limits: Limits = DEFAULT_LIMITS,
) -> Declared:
    """The slices :func:`read` would give for ``path`` and their pixels together, from the
    headers alone (nothing is decoded), checked against ``limits``.

    Args:
        path: File or series folder.
        axis: As for :func:`read`.
        orientation: As for :func:`read`.
        limits: The largest input accepted.

    Raises:
        UserError: As :func:`read` for what its headers say: a missing path, an unsupported or
            unreadable file, an :class:`~iqeclip.data.readers.limits.OverLimit`.
    """
    reader = _found(path)
    return reader.declared(Path(path), Reading(axis=axis, orientation=orientation, limits=limits))
