"""Property-based fuzzing of the input readers: any bytes give a result or a ``UserError``.

Each reader is fed arbitrary byte strings and mutations (bit flips, truncation, insertion,
deletion, and chunk edits with a valid CRC) of small valid PNG / JPEG / TIFF / BMP files. It must
either return the documented type and shape or raise :class:`~iqeclip.errors.UserError`; any
other exception is a bug. CI runs ``FUZZ_EXAMPLES`` (200) examples per test; a longer run::

    IQECLIP_FUZZ_EXAMPLES=20000 .venv/bin/pytest tests/unit/data/test_fuzz.py

Hypothesis and pytest's ``tmp_path`` fixture do not mix (one folder for all examples), so each
example writes into its own :class:`tempfile.TemporaryDirectory`. The example database is off so
that no ``.hypothesis`` folder is written.
"""

from __future__ import annotations

import importlib.util
import io
import os
import struct
import tempfile
import zlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from iqeclip.data.layout import read_support_list
from iqeclip.data.readers import load_image, load_mask
from iqeclip.data.sample import Sample
from iqeclip.data.validate import check_sample
from iqeclip.errors import UserError

FUZZ_EXAMPLES = int(os.environ.get("IQECLIP_FUZZ_EXAMPLES", 200))

FUZZ = settings(
    max_examples=FUZZ_EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)

pytestmark = pytest.mark.filterwarnings(
    "ignore::PIL.Image.DecompressionBombWarning",  # mutated headers may claim huge sizes
    "ignore::UserWarning",  # PIL / pydicom / nibabel warn about odd files
    "ignore::RuntimeWarning",  # numpy casts of garbage pixel values
)

T = TypeVar("T")


# --------------------------------------------------------------------------------------------
# Seeds and strategies.


def _encode(array: np.ndarray | Image.Image, fmt: str, **save: Any) -> bytes:
    buffer = io.BytesIO()
    image = array if isinstance(array, Image.Image) else Image.fromarray(array)
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


def _seeds() -> dict[str, bytes]:
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, size=(6, 7, 3), dtype=np.uint8)
    grey = rng.integers(0, 256, size=(5, 4), dtype=np.uint8)
    mask = (rng.random((6, 7)) > 0.5).astype(np.uint8) * 255
    palette = Image.fromarray(rgb).convert("P", palette=Image.Palette.ADAPTIVE, colors=8)
    buffer = io.BytesIO()
    palette.save(buffer, "PNG")
    pages = io.BytesIO()
    Image.fromarray(grey).save(pages, "TIFF", save_all=True, append_images=[Image.fromarray(rgb)])
    return {
        "rgb.png": _encode(rgb, "PNG"),
        "grey.png": _encode(grey, "PNG"),
        "mask.png": _encode(mask, "PNG"),
        "rgba.png": _encode(np.dstack([rgb, rgb[..., :1]]), "PNG"),
        "wide.png": _encode(grey.astype(np.uint16) * 257, "PNG"),
        "palette.png": buffer.getvalue(),
        "rgb.jpg": _encode(rgb, "JPEG", quality=90),
        "grey.jpg": _encode(grey, "JPEG", quality=75),
        "rgb.tif": _encode(rgb, "TIFF"),
        "rgb.bmp": _encode(rgb, "BMP"),
        "bilevel.png": _encode(mask > 0, "PNG"),
        "la.png": _encode(Image.fromarray(grey).convert("LA"), "PNG"),
        "cmyk.jpg": _encode(Image.fromarray(rgb).convert("CMYK"), "JPEG", quality=80),
        "wide.tif": _encode(grey.astype(np.uint16) * 257, "TIFF"),
        "float.tif": _encode(rng.random((4, 5)).astype(np.float32), "TIFF"),
        "pages.tif": pages.getvalue(),
        "palette.gif": _encode(rgb, "GIF"),
    }


SEEDS = _seeds()
PNG_SEEDS = [data for name, data in SEEDS.items() if name.endswith(".png")]
SUFFIXES = [".png", ".jpg", ".jpeg", ".tif", ".bmp", ".PNG"]


@st.composite
def _mutation(draw: st.DrawFn, data: bytes, start: int = 0) -> bytes:
    """One edit of ``data`` at or after byte ``start``.

    The edit flips a bit, sets a byte, truncates, or inserts or deletes bytes.
    """
    out = bytearray(data)
    kind = draw(st.sampled_from(["flip", "set", "truncate", "insert", "delete"]))
    lowest = min(start, len(out))
    position = draw(st.integers(lowest, max(len(out) - 1, lowest)))
    if kind == "flip" and position < len(out):
        out[position] ^= 1 << draw(st.integers(0, 7))
    elif kind == "set" and position < len(out):
        out[position] = draw(st.sampled_from([0x00, 0xFF, 0x7F, 0x80, 0x01]) | st.integers(0, 255))
    elif kind == "truncate":
        del out[position:]
    elif kind == "insert":
        out[position:position] = draw(st.binary(min_size=1, max_size=64))
    elif kind == "delete":
        del out[position : position + draw(st.integers(1, 64))]
    return bytes(out)


@st.composite
def mutated(draw: st.DrawFn, seeds: list[bytes] | None = None) -> bytes:
    """A valid small image with one to eight random edits.

    Three times in four the first 8 bytes (the magic number) are spared, so that the format's
    decoder is reached.
    """
    data = draw(st.sampled_from(seeds or list(SEEDS.values())))
    start = draw(st.sampled_from([8, 8, 8, 0]))
    for _ in range(draw(st.integers(1, 8))):
        data = draw(_mutation(data, start))
    return data


MAGICS = [
    b"\x89PNG\r\n\x1a\n",
    b"\xff\xd8\xff",
    b"\xff\xd8\xff\xe0\x00\x10JFIF\x00",
    b"II*\x00",
    b"MM\x00*",
    b"BM",
    b"GIF89a",
    b"\x00\x00\x01\x00",
    b"RIFF\x00\x00\x00\x00WEBPVP8 ",
    b"P6\n",
    b"8BPS",
    b"DDS ",
    b"\x0a\x05\x01\x08",
    b"qoif",
    b"\x00\x00\x00\x0cjP  \r\n\x87\n",
]
"""Format signatures: garbage behind them reaches each PIL plugin's header parser."""

magic_then_garbage = st.builds(
    lambda magic, rest: magic + rest, st.sampled_from(MAGICS), st.binary(max_size=4096)
)


def _chunks(png: bytes) -> list[tuple[bytes, bytes]]:
    chunks, offset = [], 8
    while offset + 8 <= len(png):
        (length,) = struct.unpack(">I", png[offset : offset + 4])
        kind = png[offset + 4 : offset + 8]
        chunks.append((kind, png[offset + 8 : offset + 8 + length]))
        offset += 12 + length
    return chunks


def _assemble(chunks: list[tuple[bytes, bytes]]) -> bytes:
    out = [b"\x89PNG\r\n\x1a\n"]
    for kind, data in chunks:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        out.append(struct.pack(">I", len(data)) + kind + data + crc)
    return b"".join(out)


@st.composite
def png_chunk_edits(draw: st.DrawFn) -> bytes:
    """A valid PNG whose chunks are edited with their CRCs fixed, so the decoder sees them.

    Edits: header fields (size, bit depth, colour type, ...), the bytes of any chunk, the
    (re-compressed) pixel stream, dropped or duplicated chunks.
    """
    chunks = _chunks(draw(st.sampled_from(PNG_SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        index = draw(st.integers(0, len(chunks) - 1))
        kind, data = chunks[index]
        edit = draw(st.sampled_from(["header", "bytes", "pixels", "drop", "duplicate"]))
        if edit == "header" and kind == b"IHDR" and len(data) == 13:
            width, height, depth, colour, comp, filt, inter = struct.unpack(">IIBBBBB", data)
            width = draw(st.sampled_from([width, 0, 1, 2, 3, 64, 2**16]) | st.integers(0, 2**31))
            height = draw(st.sampled_from([height, 0, 1, 2, 5, 64]) | st.integers(0, 2**31))
            depth = draw(st.sampled_from([depth, 1, 2, 4, 8, 16, 3, 0, 255]))
            colour = draw(st.sampled_from([colour, 0, 2, 3, 4, 6, 1, 5, 7]))
            comp, filt, inter = (draw(st.sampled_from([v, 0, 1])) for v in (comp, filt, inter))
            data = struct.pack(">IIBBBBB", width, height, depth, colour, comp, filt, inter)
        elif edit == "pixels" and kind == b"IDAT":
            try:  # an earlier edit may have broken the stream: keep what decompresses
                raw = bytearray(zlib.decompressobj().decompress(data))
            except zlib.error:
                raw = bytearray()
            if raw:
                for _ in range(draw(st.integers(1, 8))):
                    raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
            raw = raw[: draw(st.integers(0, len(raw)))] if draw(st.booleans()) else raw
            data = zlib.compress(bytes(raw))
        elif edit == "bytes":
            data = draw(_mutation(data)) if data else draw(st.binary(max_size=16))
        elif edit == "drop" and len(chunks) > 1:
            del chunks[index]
            continue
        elif edit == "duplicate":
            chunks.insert(index, (kind, data))
        chunks[index] = (kind, data)
    return _assemble(chunks)


ANY_IMAGE_BYTES = st.one_of(
    st.binary(max_size=4096), magic_then_garbage, mutated(), png_chunk_edits()
)


@contextmanager
def _written(files: dict[str, bytes]) -> Iterator[dict[str, Path]]:
    """Write files into a fresh folder (with a space and a non-ASCII letter in its name)."""
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "fuzz ä"
        folder.mkdir()
        paths = {}
        for name, data in files.items():
            paths[name] = folder / name
            paths[name].write_bytes(data)
        yield paths


def _result_or_user_error(call: Callable[[], T]) -> T | None:
    """Run ``call``; a UserError (one line) gives None, any other exception fails the test."""
    try:
        return call()
    except UserError as exc:
        assert "\n" not in str(exc)
        return None


# --------------------------------------------------------------------------------------------
# io.load_image / io.load_mask.


@FUZZ
@given(data=ANY_IMAGE_BYTES, suffix=st.sampled_from(SUFFIXES), size=st.integers(1, 12))
def test_fuzz_load_image(data: bytes, suffix: str, size: int) -> None:
    with _written({f"image{suffix}": data}) as paths:
        out = _result_or_user_error(lambda: load_image(paths[f"image{suffix}"], size))
    if out is not None:
        assert isinstance(out, torch.Tensor)
        assert out.dtype == torch.uint8 and out.shape == (3, size, size)


@FUZZ
@given(data=ANY_IMAGE_BYTES, suffix=st.sampled_from(SUFFIXES), size=st.integers(1, 12))
def test_fuzz_load_mask(data: bytes, suffix: str, size: int) -> None:
    with _written({f"mask{suffix}": data}) as paths:
        out = _result_or_user_error(lambda: load_mask(paths[f"mask{suffix}"], size))
    if out is not None:
        assert isinstance(out, torch.Tensor)
        assert out.dtype == torch.bool and out.shape == (size, size)


# --------------------------------------------------------------------------------------------
# layout.read_support_list.

_NAME = st.text(alphabet=st.sampled_from(list("abc019_.-äé東 \t")), min_size=0, max_size=12).map(
    lambda s: s + ".png"
)
_LINE = st.one_of(
    st.builds(
        lambda kind, number, sep, names: f"{kind}-{number}{sep}{' '.join(names)}",
        st.sampled_from(["a", "n", "A", "x", "a-", ""]),
        st.sampled_from(["0", "00", "1", "-1", "", "٠", "0" * 50, "0" * 5000, "1" + "0" * 5000]),
        st.sampled_from([":", " : ", "", "::", ";"]),
        st.lists(_NAME, max_size=5),
    ),
    st.text(max_size=40),
)


@st.composite
def support_files(draw: st.DrawFn) -> bytes:
    """Nearly well-formed support lists: shuffled/odd lines, CR/CRLF, BOM, odd encodings."""
    lines = draw(st.lists(_LINE, max_size=5))
    text = draw(st.sampled_from(["\n", "\r\n", "\r", "\u2028", "\x0c"])).join(lines)
    encoding = draw(st.sampled_from(["utf-8", "utf-8-sig", "utf-16", "latin-1"]))
    return text.encode(encoding, errors="replace")


@FUZZ
@given(data=st.one_of(st.binary(max_size=4096), support_files()))
def test_fuzz_read_support_list(data: bytes) -> None:
    with _written({"4-shot.txt": data}) as paths:
        out = _result_or_user_error(lambda: read_support_list(paths["4-shot.txt"]))
    if out is not None:
        abnormal, normal = out
        for names in (abnormal, normal):
            assert isinstance(names, list) and names
            assert all(isinstance(n, str) and n and n == n.strip() for n in names)


def test_read_support_list_long_iteration_numbers(tmp_path: Path) -> None:
    """Regression (found by fuzzing): over 4300 digits made ``int()`` raise ValueError."""
    path = tmp_path / "1-shot.txt"
    path.write_text(f"a-{'0' * 5000}: a.png\nn-0: b.png\n", encoding="utf-8")
    assert read_support_list(path) == (["a.png"], ["b.png"])
    path.write_text(f"a-1{'0' * 5000}: a.png\nn-0: b.png\n", encoding="utf-8")
    with pytest.raises(UserError, match="only iteration 0 exists"):
        read_support_list(path)
    path.write_text("a-\u0660: a.png\nn-0: b.png\n", encoding="utf-8")  # Arabic-Indic zero
    with pytest.raises(UserError, match="expected 'a-0: <names>'"):
        read_support_list(path)


def test_read_support_list_accepts_its_own_format(tmp_path: Path) -> None:
    """Sanity check for the strategy: a well-formed file parses."""
    path = tmp_path / "1-shot.txt"
    path.write_bytes("\ufeffn-0: b.png\r\na-0: a.png c.png".encode())
    assert read_support_list(path) == (["a.png", "c.png"], ["b.png"])


# --------------------------------------------------------------------------------------------
# validate.check_sample.

_MASK_BYTES = st.one_of(
    st.just(SEEDS["mask.png"]),
    mutated([SEEDS["mask.png"], SEEDS["grey.png"], SEEDS["grey.jpg"]]),
    st.binary(max_size=512),
)


@FUZZ
@given(
    image=ANY_IMAGE_BYTES,
    suffix=st.sampled_from([*SUFFIXES, ".dcm", ".nii"]),
    mask=st.none() | _MASK_BYTES,
    label=st.integers(0, 1),
    masks_expected=st.booleans(),
)
def test_fuzz_check_sample(
    image: bytes, suffix: str, mask: bytes | None, label: int, masks_expected: bool
) -> None:
    files = {f"scan ä{suffix}": image}
    if mask is not None:
        files["mask ü.png"] = mask
    with _written(files) as paths:
        sample = Sample(paths[f"scan ä{suffix}"], label, paths.get("mask ü.png"))
        ok = _result_or_user_error(
            lambda: check_sample(sample, 8, masks_expected=masks_expected) or True
        )
        if ok and suffix not in (".dcm", ".nii"):
            # what the check accepts, the dataset can load
            assert load_image(sample.image, 8).shape == (3, 8, 8)
            if sample.mask is not None:
                assert load_mask(sample.mask, 8).shape == (8, 8)


def _medical_seeds() -> list[tuple[bytes, str]]:
    """A small CT and MR DICOM (from pydicom's test data) and a NIfTI volume, if installed."""
    seeds = []
    if importlib.util.find_spec("pydicom") is not None:
        import pydicom.data

        for name in ("CT_small.dcm", "MR_small.dcm"):
            seeds.append((Path(pydicom.data.get_testdata_file(name)).read_bytes(), ".dcm"))
    if importlib.util.find_spec("nibabel") is not None:
        import nibabel

        volume = np.random.default_rng(0).random((4, 5, 3)).astype(np.float32)
        volume[0, 0, 0] = np.nan
        seeds.append((nibabel.Nifti1Image(volume, np.eye(4)).to_bytes(), ".nii"))
    return seeds


MEDICAL_SEEDS = _medical_seeds()


@st.composite
def medical_files(draw: st.DrawFn) -> tuple[bytes, str]:
    """A DICOM or NIfTI file with one to eight random edits, and its suffix."""
    data, suffix = draw(st.sampled_from(MEDICAL_SEEDS))
    start = draw(st.sampled_from([0, 132, 132, 352]))  # spare the DICM magic / NIfTI header
    for _ in range(draw(st.integers(1, 8))):
        data = draw(_mutation(data, start))
    return data, suffix


@pytest.mark.skipif(not MEDICAL_SEEDS, reason="needs pydicom or nibabel (the medical extra)")
@FUZZ
@given(file=medical_files() if MEDICAL_SEEDS else st.nothing())
def test_fuzz_check_sample_medical(file: tuple[bytes, str]) -> None:
    data, suffix = file
    with _written({f"scan ä{suffix}": data}) as paths:
        _result_or_user_error(lambda: check_sample(Sample(paths[f"scan ä{suffix}"], 0, None), 8))


def test_dicom_with_a_corrupt_position_reads(tmp_path: Path) -> None:
    """Regression (found by fuzzing): a NUL inside ImagePositionPatient raised ValueError."""
    pydicom = pytest.importorskip("pydicom")
    from iqeclip.data.readers import read

    data = Path(pydicom.data.get_testdata_file("CT_small.dcm")).read_bytes()
    good = b"-158.135803\\-179.035797"
    assert good in data
    path = tmp_path / "ct.dcm"
    path.write_bytes(data.replace(good, good.replace(b"\\", b"\x00")))
    (s,) = read(path)
    assert s.dicom.position is None and s.image.shape == (128, 128)
    check_sample(Sample(path, 0, None), 8)


@pytest.mark.parametrize("name", sorted(SEEDS))
def test_seeds_are_valid(name: str) -> None:
    """Sanity check for the strategies: every unmodified seed reads."""
    with _written({name: SEEDS[name]}) as paths:
        assert load_image(paths[name], 4).shape == (3, 4, 4)
        assert load_mask(paths[name], 4).shape == (4, 4)
    chunks = _chunks(SEEDS["rgb.png"])
    assert _assemble(chunks) == SEEDS["rgb.png"]
