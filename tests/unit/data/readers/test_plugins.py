"""A format added from outside the package: a reader class registered with
:func:`~iqeclip.data.readers.register` is asked like the built-in ones, and removed again.

:class:`ToyReader` reads ``.toy`` files: pages of whitespace-separated numbers, pages separated
by a blank line; one page is a 2-D picture, several are slices.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from iqeclip.data.readers import (
    DEFAULT_READING,
    FileReader,
    ImageReader,
    Reader,
    Reading,
    Slice,
    UnreadableFile,
    cannot_read,
    input_stem,
    model_input,
    normalise,
    read,
    reader_for,
    register,
    single_image,
    unregister,
)
from iqeclip.errors import UserError


class ToyReader(FileReader):
    """``.toy``: pages of numbers (rows of whitespace-separated values), a blank line between
    pages."""

    name = "toy"
    suffixes = (".toy",)

    def read(
        self, path: Path, reading: Reading, bad: list[tuple[Path, str]] | None = None
    ) -> list[Slice]:
        pages = [p for p in Path(path).read_text().split("\n\n") if p.strip()]
        try:
            arrays = [np.array([row.split() for row in p.splitlines()], float) for p in pages]
        except ValueError as exc:
            raise cannot_read("toy", path, f"not numbers: {exc}") from None
        if not arrays or any(a.ndim != 2 for a in arrays):
            raise cannot_read("toy", path, "no page of rows")
        slices = []
        for index, values in enumerate(arrays):
            image, levels = normalise(values, reading.intensity)
            slices.append(Slice(image, Path(path), index if len(arrays) > 1 else None, levels))
        return slices


def write_toy(path: Path, *pages: np.ndarray) -> Path:
    """A ``.toy`` file of the given pages."""
    text = "\n\n".join("\n".join(" ".join(f"{v:g}" for v in row) for row in p) for p in pages)
    path.write_text(text + "\n")
    return path


@contextlib.contextmanager
def registered(reader: Reader, first: bool = False) -> Iterator[Reader]:
    """``reader`` registered while the context lasts."""
    register(reader, first=first)
    try:
        yield reader
    finally:
        unregister(reader)


@pytest.fixture
def toy() -> Iterator[Reader]:
    with registered(ToyReader()) as reader:
        yield reader


RAMP = np.arange(48, dtype=float).reshape(6, 8)


def test_a_registered_format_is_read_like_a_built_in_one(tmp_path, toy):
    one = write_toy(tmp_path / "One.TOY", RAMP)
    two = write_toy(tmp_path / "two.toy", RAMP, RAMP[::-1])
    assert reader_for(one) is toy and input_stem(one) == "One"
    (s,) = read(one)
    assert s.index is None and s.image.shape == (6, 8) and s.levels.rule == "minmax"
    np.testing.assert_allclose(s.image, RAMP / 47, atol=1e-6)
    assert [s.index for s in read(two)] == [0, 1]
    assert not single_image(one)  # known only once read: it may hold pages
    # the model input of a toy slice is the path every format takes
    assert tuple(model_input(two, 1, 16, DEFAULT_READING).shape) == (3, 16, 16)
    bad = tmp_path / "bad.toy"
    bad.write_text("1 2\nx y\n")
    with pytest.raises(UnreadableFile, match=r"cannot read toy .*bad\.toy: not numbers") as info:
        read(bad)
    assert info.value.path == bad and info.value.reason.startswith("not numbers")


def test_a_removed_reader_is_asked_no_more(tmp_path):
    path = write_toy(tmp_path / "a.toy", RAMP)
    with registered(ToyReader()) as reader:
        assert reader_for(path) is reader
    assert reader_for(path) is None
    with pytest.raises(UserError, match="unsupported file type"):
        read(path)


def test_a_reader_registered_first_wins_a_suffix(tmp_path):
    class PngAsToy(ToyReader):
        suffixes = (".png",)

    path = write_toy(tmp_path / "numbers.png", RAMP)
    assert isinstance(reader_for(path), ImageReader)
    with registered(PngAsToy(), first=True) as reader:
        assert reader_for(path) is reader and len(read(path)) == 1
    assert isinstance(reader_for(path), ImageReader)
