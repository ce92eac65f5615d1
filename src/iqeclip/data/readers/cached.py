"""The inputs read once and kept for the next slices: a small per-process cache of decoded
volumes, keyed by path, modification time, size and :class:`~iqeclip.data.readers.reading.Reading`.

A data loader walking a volume slice by slice decodes it once; the model input
(:mod:`~iqeclip.data.readers.model_input`) and the label volumes aligned to it
(:mod:`~iqeclip.data.readers.labels`) share it.
"""

from __future__ import annotations

import functools
from pathlib import Path

from iqeclip.data.readers.base import Slice
from iqeclip.data.readers.reading import DEFAULT_READING, Reading
from iqeclip.data.readers.registry import read

__all__ = ["CACHED_VOLUMES", "file_stamp", "forget_slices", "read_slices"]

CACHED_VOLUMES = 16
"""Volumes (and label volumes) kept decoded per process (a BraTS FLAIR is 36 MB as float32)."""


def file_stamp(path: Path) -> tuple[int, int]:
    """A file's modification time and size (zeros when it cannot be looked at): part of a cache
    key, so that a rewritten file is read again."""
    try:
        st = Path(path).stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


@functools.lru_cache(maxsize=CACHED_VOLUMES)
def _read(path: str, stamp: tuple[int, int], reading: Reading) -> tuple[Slice, ...]:
    del stamp  # part of the key: a rewritten file is read again
    return tuple(
        read(
            Path(path),
            axis=reading.axis,
            intensity=reading.intensity,
            orientation=reading.orientation,
            limits=reading.limits,
        )
    )


def read_slices(path: Path, reading: Reading = DEFAULT_READING) -> tuple[Slice, ...]:
    """The slices of ``path`` as :func:`~iqeclip.data.readers.registry.read` gives them (cached).

    The slices are shared with later calls: do not modify them.
    """
    path = Path(path)
    return _read(str(path), file_stamp(path), reading)


def forget_slices() -> None:
    """Drop the decoded inputs kept for the next slices."""
    _read.cache_clear()
