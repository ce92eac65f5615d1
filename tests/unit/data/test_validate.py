"""Tests for input checking and the ``--on_bad_input {error,skip}`` policy."""

from __future__ import annotations

import csv
import io
import struct
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from iqeclip.data.readers import DEFAULT_LIMITS, load_image, load_mask
from iqeclip.data.sample import Sample
from iqeclip.data.validate import (
    Skipped,
    check_sample,
    validate_samples,
    write_skipped,
)
from iqeclip.errors import UserError

RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------------------------
# Helpers.


def _rgb(path: Path, h: int = 24, w: int = 32, **save: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)).save(path, **save)
    return path


def _grey(path: Path, array: np.ndarray, **save: Any) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array).save(path, **save)
    return path


def _disc(h: int = 24, w: int = 32, high: int = 255) -> np.ndarray:
    yy, xx = np.mgrid[:h, :w]
    inside = (yy - h / 2) ** 2 + (xx - w / 2) ** 2 < (min(h, w) / 3) ** 2
    return (inside * high).astype(np.uint8)


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header(path: Path, width: int, height: int) -> Path:
    """A PNG with a valid header claiming ``width x height`` and no pixel data (tiny on disk)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + _chunk(b"IHDR", ihdr) + _chunk(b"IEND", b""))
    return path


def _truncated(path: Path, source: Path, keep: float = 0.6) -> Path:
    data = source.read_bytes()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data[: int(len(data) * keep)])
    return path


# --------------------------------------------------------------------------------------------
# The bad inputs: each builds (sample, masks_expected, file at fault, expected reason fragment).

Case = tuple[Sample, bool, Path, str]


def _empty(tmp: Path) -> Case:
    path = tmp / "empty.png"
    path.write_bytes(b"")
    return Sample(path, 0, None), False, path, "empty file (0 bytes)"


def _missing(tmp: Path) -> Case:
    path = tmp / "missing.png"
    return Sample(path, 0, None), False, path, "no such file"


def _truncated_png(tmp: Path) -> Case:
    path = _truncated(tmp / "cut.png", _rgb(tmp / "src" / "full.png", 64, 64))
    return Sample(path, 0, None), False, path, "truncated or corrupt PNG"


def _truncated_jpeg(tmp: Path) -> Case:
    path = _truncated(tmp / "cut.jpg", _rgb(tmp / "src" / "full.jpg", 64, 64, quality=90))
    return Sample(path, 0, None), False, path, "truncated or corrupt JPEG"


def _header_only_png(tmp: Path) -> Case:
    path = _truncated(tmp / "head.png", _rgb(tmp / "src" / "full.png", 64, 64), keep=0.02)
    return Sample(path, 0, None), False, path, "truncated or corrupt PNG"


def _not_an_image(tmp: Path) -> Case:
    path = tmp / "notes.png"
    path.write_text("these are my notes, not a picture\n", encoding="utf-8")
    return Sample(path, 0, None), False, path, "not an image file"


def _one_pixel(tmp: Path) -> Case:
    path = _grey(tmp / "dot.png", np.zeros((1, 1), np.uint8))
    return Sample(path, 0, None), False, path, "image is 1x1 pixels"


def _one_row(tmp: Path) -> Case:
    path = _grey(tmp / "row.png", np.zeros((1, 40), np.uint8))
    return Sample(path, 0, None), False, path, "image is 40x1 pixels"


def _large(tmp: Path) -> Case:
    path = _png_header(tmp / "large.png", 8000, 7000)  # 56 MP: under PIL's limit, over ours
    reason = "image is 8000 x 7000 pixels, larger than the 50-megapixel limit"
    return Sample(path, 0, None), False, path, reason


def _bomb(tmp: Path) -> Case:
    path = _png_header(tmp / "bomb.png", 20000, 10000)  # 200 MP: PIL's DecompressionBombError
    reason = "image is 20000 x 10000 pixels, larger than the 50-megapixel limit"
    return Sample(path, 0, None), False, path, reason


def _no_mask(tmp: Path) -> Case:
    path = _rgb(tmp / "ab.png")
    return Sample(path, 1, None), True, path, "abnormal image has no mask"


def _missing_mask(tmp: Path) -> Case:
    mask = tmp / "masks" / "ab.png"
    return Sample(_rgb(tmp / "ab.png"), 1, mask), True, mask, "no such file"


def _mask_size(tmp: Path) -> Case:
    mask = _grey(tmp / "masks" / "ab.png", _disc(20, 30))
    return Sample(_rgb(tmp / "ab.png"), 1, mask), True, mask, "mask is 30x20 pixels but its image"


def _mask_grey_levels(tmp: Path) -> Case:
    ramp = np.tile(np.linspace(0, 255, 32).astype(np.uint8), (24, 1))
    mask = _grey(tmp / "masks" / "ab.png", ramp)
    return Sample(_rgb(tmp / "ab.png"), 1, mask), True, mask, "mask is not binary: 32 distinct"


def _mask_two_values(tmp: Path) -> Case:
    mask = _grey(tmp / "masks" / "ab.png", np.where(_disc() > 0, 255, 3).astype(np.uint8))
    reason = "mask values are 3 and 255, not 0 and one other value"
    return Sample(_rgb(tmp / "ab.png"), 1, mask), True, mask, reason


def _mask_dim(tmp: Path) -> Case:
    mask = _grey(tmp / "masks" / "ab.png", _disc(high=100))
    reason = "largest mask value is 100"
    return Sample(_rgb(tmp / "ab.png"), 1, mask), True, mask, reason


def _mask_jpeg_noise(tmp: Path) -> Case:
    noise = RNG.integers(0, 256, size=(24, 32), dtype=np.uint8)
    mask = _grey(tmp / "masks" / "ab.jpg", noise, quality=95)
    reason = "JPEG mask is not binary"
    return Sample(_rgb(tmp / "ab.png"), 1, mask), True, mask, reason


def _mask_truncated(tmp: Path) -> Case:
    full = _grey(tmp / "src" / "m.png", RNG.integers(0, 2, (24, 32), dtype=np.uint8) * 255)
    mask = _truncated(tmp / "masks" / "ab.png", full, keep=0.5)
    return Sample(_rgb(tmp / "ab.png"), 1, mask), True, mask, "truncated or corrupt PNG"


BAD: dict[str, Callable[[Path], Case]] = {
    "empty": _empty,
    "missing": _missing,
    "truncated-png": _truncated_png,
    "truncated-jpeg": _truncated_jpeg,
    "header-only-png": _header_only_png,
    "not-an-image": _not_an_image,
    "1x1": _one_pixel,
    "1-row": _one_row,
    "large": _large,
    "bomb": _bomb,
    "no-mask": _no_mask,
    "missing-mask": _missing_mask,
    "mask-size": _mask_size,
    "mask-grey-levels": _mask_grey_levels,
    "mask-two-values": _mask_two_values,
    "mask-dim": _mask_dim,
    "mask-jpeg-noise": _mask_jpeg_noise,
    "mask-truncated": _mask_truncated,
}


def _goods(tmp: Path) -> tuple[Sample, Sample]:
    first = Sample(_rgb(tmp / "good" / "a.png"), 0, None)
    mask = _grey(tmp / "good" / "masks" / "b.png", _disc())
    second = Sample(_rgb(tmp / "good" / "b.png"), 1, mask)
    return first, second


# --------------------------------------------------------------------------------------------
# Bad inputs under both policies.


@pytest.mark.parametrize("name", list(BAD))
def test_check_sample_rejects(tmp_path: Path, name: str) -> None:
    sample, masks_expected, fault, reason = BAD[name](tmp_path)
    with pytest.raises(UserError) as info:
        check_sample(sample, 32, masks_expected=masks_expected)
    message = str(info.value)
    assert str(fault) in message and reason in message
    assert "\n" not in message


@pytest.mark.parametrize("name", list(BAD))
def test_policy_error_raises_the_first_problem(tmp_path: Path, name: str) -> None:
    sample, masks_expected, fault, reason = BAD[name](tmp_path)
    first, second = _goods(tmp_path)
    with pytest.raises(UserError, match=r"\(on_bad_input skip leaves such samples out\)$") as info:
        validate_samples([first, sample, second], 32, "error", masks_expected=masks_expected)
    assert str(fault) in str(info.value) and reason in str(info.value)


@pytest.mark.parametrize("name", list(BAD))
def test_policy_skip_lists_the_problem(tmp_path: Path, name: str) -> None:
    sample, masks_expected, fault, reason = BAD[name](tmp_path)
    first, second = _goods(tmp_path)
    good, skipped = validate_samples(
        [first, sample, second], 32, "skip", masks_expected=masks_expected
    )
    assert good == [first, second]
    assert len(skipped) == 1
    assert skipped[0].path == sample.image
    assert reason in skipped[0].reason and "\n" not in skipped[0].reason
    if fault != sample.image:  # a mask problem names the mask
        assert str(fault) in skipped[0].reason


def test_skip_keeps_exactly_the_good_samples_in_order(tmp_path: Path) -> None:
    bad = []
    for name in ("empty", "truncated-jpeg", "mask-dim"):
        (tmp_path / name).mkdir()
        bad.append(BAD[name](tmp_path / name)[0])
    goods = [Sample(_rgb(tmp_path / "g" / f"{i}.png", 8 + i, 9 + i), 0, None) for i in range(4)]
    mixed = [goods[0], bad[0], bad[1], goods[1], goods[2], bad[2], goods[3]]
    good, skipped = validate_samples(mixed, 16, "skip", masks_expected=True)
    assert good == goods
    assert [s.path for s in skipped] == [b.image for b in bad]
    with pytest.raises(UserError, match="empty file"):
        validate_samples(mixed, 16, "error", masks_expected=True)


# --------------------------------------------------------------------------------------------
# Inputs that must pass.


def _accepted(tmp: Path) -> list[Sample]:
    h, w = 24, 32
    grey16 = RNG.integers(0, 65536, size=(h, w), dtype=np.uint16)
    jpeg_disc = _disc(64, 64)
    return [
        Sample(_rgb(tmp / "rgb.png"), 0, None),
        Sample(_rgb(tmp / "rgb.jpg", quality=80), 0, None),
        Sample(_grey(tmp / "grey.bmp", _disc(high=200)), 0, None),
        Sample(_grey(tmp / "wide.png", grey16), 0, None),
        Sample(_rgb(tmp / "two.png", 2, 2), 0, None),
        Sample(_rgb(tmp / "01.png"), 1, _grey(tmp / "m" / "01.png", _disc(high=1))),
        Sample(_rgb(tmp / "0255.png"), 1, _grey(tmp / "m" / "0255.png", _disc())),
        Sample(_rgb(tmp / "0200.png"), 1, _grey(tmp / "m" / "0200.png", _disc(high=200))),
        Sample(_rgb(tmp / "empty-mask.png"), 1, _grey(tmp / "m" / "e.png", np.zeros((h, w), "u1"))),
        Sample(_rgb(tmp / "full-mask.png"), 1, _grey(tmp / "m" / "f.png", np.ones((h, w), "u1"))),
        Sample(
            _rgb(tmp / "m16.png"), 1, _grey(tmp / "m" / "m16.png", _disc().astype(np.uint16) * 257)
        ),
        Sample(
            _rgb(tmp / "lossy.png", 64, 64),
            1,
            _grey(tmp / "m" / "lossy.jpg", jpeg_disc, quality=75),  # JPEG noise around the edge
        ),
        Sample(_rgb(tmp / "no-mask.png"), 1, None),  # fine unless masks are expected
    ]


def test_good_inputs_pass_and_load(tmp_path: Path) -> None:
    samples = _accepted(tmp_path)
    jpeg_mask = np.asarray(Image.open(samples[-2].mask))
    assert len(np.unique(jpeg_mask)) > 2  # really lossy
    for sample in samples:
        check_sample(sample, 16)
        assert load_image(sample.image, 16).shape == (3, 16, 16)
        if sample.mask is not None:
            assert load_mask(sample.mask, 16).dtype == torch.bool
    assert validate_samples(samples, 16, "error") == (samples, [])
    assert validate_samples(samples, 16, "skip") == (samples, [])


def test_normal_image_needs_no_mask(tmp_path: Path) -> None:
    sample = Sample(_rgb(tmp_path / "n.png"), 0, None)
    check_sample(sample, 16, masks_expected=True)


def test_just_under_the_pixel_limit_passes_the_header_check(tmp_path: Path) -> None:
    side = int((DEFAULT_LIMITS.megapixels * 1e6) ** 0.5)
    path = _png_header(tmp_path / "big.png", side, side)
    with pytest.raises(UserError) as info:  # the header passes; the missing pixel data does not
        check_sample(Sample(path, 0, None), 16)
    assert "truncated or corrupt PNG" in str(info.value)
    assert "megapixel" not in str(info.value)


@pytest.mark.parametrize("name", ["scan ä 1.png", "Patient Müller – 東京.jpg", "a,b;c 'q'.png"])
def test_spaces_and_non_ascii_names(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "Dossier médical" / "séance 2"
    image = _rgb(folder / name, quality=90) if name.endswith(".jpg") else _rgb(folder / name)
    mask = _grey(folder / "masques ü" / f"{Path(name).stem}.png", _disc())
    sample = Sample(image, 1, mask)
    check_sample(sample, 16, masks_expected=True)
    assert validate_samples([sample], 16, "skip", masks_expected=True) == ([sample], [])

    broken = folder / f"kaputt {name}"
    broken.write_bytes(b"")
    good, skipped = validate_samples([Sample(broken, 0, None), sample], 16, "skip")
    assert good == [sample] and skipped == [Skipped(broken, "empty file (0 bytes)")]
    with pytest.raises(UserError) as info:
        validate_samples([Sample(broken, 0, None)], 16, "error")
    assert str(broken) in str(info.value)


# --------------------------------------------------------------------------------------------
# Arguments.


def test_bad_policy_and_size(tmp_path: Path) -> None:
    sample = Sample(_rgb(tmp_path / "a.png"), 0, None)
    with pytest.raises(UserError, match=r"^on_bad_input must be one of error, skip"):
        validate_samples([sample], 16, "ignore")
    for size in (0, -1, 1.5, True):
        with pytest.raises(UserError, match="image size"):
            check_sample(sample, size)  # type: ignore[arg-type]
        with pytest.raises(UserError, match="image size"):
            validate_samples([sample], size, "skip")  # type: ignore[arg-type]
    assert validate_samples([], 16, "skip") == ([], [])


# --------------------------------------------------------------------------------------------
# write_skipped.


def test_write_skipped_round_trip(tmp_path: Path) -> None:
    skipped = [
        Skipped(tmp_path / "scan ä 1.png", "empty file (0 bytes)"),
        Skipped(tmp_path / "x,y.png", 'mask m.png: values are 3 and 255, "odd"'),
        Skipped(tmp_path / "z.png", "two\nlines"),
    ]
    out = tmp_path / "out" / "skipped.csv"
    write_skipped(skipped, out)
    text = out.read_text(encoding="utf-8")
    assert text.startswith("path,reason\n")
    rows = list(csv.reader(io.StringIO(text)))
    assert rows[0] == ["path", "reason"]
    assert rows[1:] == [
        [str(tmp_path / "scan ä 1.png"), "empty file (0 bytes)"],
        [str(tmp_path / "x,y.png"), 'mask m.png: values are 3 and 255, "odd"'],
        [str(tmp_path / "z.png"), "two lines"],
    ]
    assert sorted(p.name for p in out.parent.iterdir()) == ["skipped.csv"]  # no temp file left

    write_skipped([], out)
    assert out.read_text(encoding="utf-8") == "path,reason\n"


def test_write_skipped_from_validation(tmp_path: Path) -> None:
    sample, masks_expected, _, reason = _mask_size(tmp_path)
    _, skipped = validate_samples([sample], 16, "skip", masks_expected=masks_expected)
    write_skipped(skipped, tmp_path / "skipped.csv")
    rows = list(csv.DictReader((tmp_path / "skipped.csv").open(encoding="utf-8", newline="")))
    assert rows == [{"path": str(sample.image), "reason": skipped[0].reason}]
    assert reason in rows[0]["reason"]


# --------------------------------------------------------------------------------------------
# DICOM and NIfTI (optional packages).


def test_nifti_full_of_nan_reads_as_zeros(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    from iqeclip.data.readers import read

    path = tmp_path / "nan scan ä.nii.gz"
    volume = np.full((6, 5, 3), np.nan, dtype=np.float32)
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    slices = read(path)
    assert len(slices) == 3
    for s in slices:
        assert s.image.shape == (5, 6) and not s.image.any()  # rows: the A-P axis
        assert s.levels.nonfinite == 30 and s.levels.constant
    sample = Sample(path, 0, None)
    check_sample(sample, 16)
    assert validate_samples([sample], 16, "error") == ([sample], [])


def test_nifti_with_some_nan_and_inf_passes(tmp_path: Path) -> None:
    nib = pytest.importorskip("nibabel")
    path = tmp_path / "partial.nii"
    volume = RNG.normal(size=(8, 7, 2)).astype(np.float32)
    volume[0, 0, 0], volume[1, 1, 1], volume[2, 2, 0] = np.nan, np.inf, -np.inf
    nib.save(nib.Nifti1Image(volume, np.eye(4)), str(path))
    check_sample(Sample(path, 0, None), 16)


def test_dicom_with_max_values_passes(tmp_path: Path) -> None:
    pydicom = pytest.importorskip("pydicom")
    ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
    pixels = ds.pixel_array.copy()
    pixels[:4] = np.iinfo(pixels.dtype).max
    ds.PixelData = pixels.tobytes()
    path = tmp_path / "ct ä.dcm"
    ds.save_as(path)
    sample = Sample(path, 0, None)
    check_sample(sample, 16)
    height, width = pixels.shape
    mask = _grey(tmp_path / "ct mask.png", _disc(height, width))
    check_sample(Sample(path, 1, mask), 16, masks_expected=True)
    wrong = _grey(tmp_path / "wrong.png", _disc(height + 1, width))
    with pytest.raises(UserError, match="mask is"):
        check_sample(Sample(path, 1, wrong), 16)


def test_broken_medical_files_are_skipped(tmp_path: Path) -> None:
    pytest.importorskip("nibabel")
    pytest.importorskip("pydicom")
    nifti = tmp_path / "broken.nii.gz"
    nifti.write_bytes(b"not a nifti file at all")
    dicom = tmp_path / "broken.dcm"
    dicom.write_bytes(b"\x00" * 10)
    good, skipped = validate_samples([Sample(nifti, 0, None), Sample(dicom, 0, None)], 16, "skip")
    assert good == []
    assert [s.path for s in skipped] == [nifti, dicom]
    for s in skipped:
        assert s.reason and "\n" not in s.reason
    with pytest.raises(UserError, match=r"broken\.nii\.gz"):
        validate_samples([Sample(nifti, 0, None)], 16, "error")
