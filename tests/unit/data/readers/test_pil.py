"""Tests for the PIL reader: images and masks as model input, and images as slices."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from iqeclip.data.readers.base import Slice
from iqeclip.data.readers.intensity import Intensity
from iqeclip.data.readers.pil import (
    load_image,
    load_mask,
    read_wide_image,
    slice_to_uint8_rgb,
    to_float,
)
from iqeclip.data.readers.registry import read
from iqeclip.errors import UserError
from tests.unit.data.readers.conftest import minmax

RNG = np.random.default_rng(0)


def _rgb_array(h: int = 29, w: int = 37) -> np.ndarray:
    return RNG.integers(0, 256, size=(h, w, 3), dtype=np.uint8)


def _reference(path: Path, size: int) -> np.ndarray:
    """The reference pre-processing done by hand: PIL RGB + bicubic resize, (3, size, size)."""
    with Image.open(path) as im:
        rgb = im.convert("RGB").resize((size, size), Image.BICUBIC)
    return np.asarray(rgb).transpose(2, 0, 1)


@pytest.mark.parametrize(
    ("mode", "suffix"),
    [("RGB", ".png"), ("L", ".png"), ("RGBA", ".png"), ("RGB", ".jpg"), ("L", ".jpeg")],
)
def test_load_image_bit_exact(tmp_path: Path, mode: str, suffix: str) -> None:
    array = _rgb_array()
    if mode == "L":
        array = array[..., 0]
    elif mode == "RGBA":
        alpha = RNG.integers(0, 256, size=(*array.shape[:2], 1), dtype=np.uint8)
        array = np.concatenate([array, alpha], axis=2)
    path = tmp_path / f"img{suffix}"
    Image.fromarray(array).save(path)
    out = load_image(path, 24)
    assert out.dtype == torch.uint8
    assert out.shape == (3, 24, 24)
    assert out.is_contiguous()
    np.testing.assert_array_equal(out.numpy(), _reference(path, 24))
    if mode == "L":
        assert torch.equal(out[0], out[1]) and torch.equal(out[0], out[2])


def test_load_image_rgba_drops_alpha(tmp_path: Path) -> None:
    array = _rgb_array(8, 8)
    rgba = np.concatenate([array, np.zeros((8, 8, 1), np.uint8)], axis=2)
    path = tmp_path / "a.png"
    Image.fromarray(rgba).save(path)
    out = load_image(path, 8)  # same size: bicubic resize is the identity
    np.testing.assert_array_equal(out.numpy(), array.transpose(2, 0, 1))


def test_load_image_16bit_png(tmp_path: Path) -> None:
    values = np.array([0, 128, 129, 257, 300, 32767, 65278, 65535] * 8, dtype=np.uint16)
    values = values.reshape(8, 8)
    path = tmp_path / "wide.png"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode in ("I;16", "I")
    out = load_image(path, 8)
    expected = np.rint(values / 257.0).astype(np.uint8)
    assert out.dtype == torch.uint8 and out.shape == (3, 8, 8)
    for c in range(3):
        np.testing.assert_array_equal(out[c].numpy(), expected)
    assert out.max() == 255 and out.min() == 0


def test_load_image_16bit_resized(tmp_path: Path) -> None:
    values = RNG.integers(0, 65536, size=(20, 20), dtype=np.uint16)
    path = tmp_path / "wide.png"
    Image.fromarray(values).save(path)
    out = load_image(path, 12)
    grey = Image.fromarray(np.rint(values / 257.0).astype(np.uint8))
    expected = np.asarray(grey.convert("RGB").resize((12, 12), Image.BICUBIC)).transpose(2, 0, 1)
    np.testing.assert_array_equal(out.numpy(), expected)


def test_load_image_32bit_int_clipped(tmp_path: Path) -> None:
    values = np.array([[-5, 0, 65535, 100000]], dtype=np.int32).repeat(4, axis=0)
    path = tmp_path / "int.tif"
    Image.fromarray(values).save(path)
    out = load_image(path, 4)
    np.testing.assert_array_equal(out[0, 0].numpy(), [0, 0, 255, 255])


def test_load_image_size_check(tmp_path: Path) -> None:
    path = tmp_path / "a.png"
    Image.fromarray(_rgb_array(4, 4)).save(path)
    with pytest.raises(UserError, match="size"):
        load_image(path, 0)


def _bad_files(tmp_path: Path) -> list[Path]:
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    text = tmp_path / "text.png"
    text.write_text("this is not an image\n")
    good = tmp_path / "full.png"
    Image.fromarray(RNG.integers(0, 256, size=(64, 64, 3), dtype=np.uint8)).save(good)
    truncated = tmp_path / "truncated.png"
    data = good.read_bytes()
    truncated.write_bytes(data[: len(data) // 2])
    return [empty, text, truncated, tmp_path / "missing.png"]


def test_load_image_unreadable(tmp_path: Path) -> None:
    for path in _bad_files(tmp_path):
        with pytest.raises(UserError) as err:
            load_image(path, 8)
        msg = str(err.value)
        assert msg.startswith(f"cannot read image {path}: "), msg
        assert len(msg) > len(f"cannot read image {path}: ")
        if path.name == "empty.png":
            assert msg.endswith("empty file")
    with pytest.raises(UserError, match="cannot read image"):
        load_image(tmp_path, 8)  # a folder


def test_load_mask_unreadable(tmp_path: Path) -> None:
    for path in _bad_files(tmp_path):
        with pytest.raises(UserError) as err:
            load_mask(path, 8)
        assert str(path) in str(err.value)


def _pattern(h: int = 20, w: int = 30) -> np.ndarray:
    pattern = np.zeros((h, w), dtype=bool)
    pattern[3:11, 5:19] = True
    pattern[14:18, 22:27] = True
    return pattern


@pytest.mark.parametrize("size", [20, 16, 7])
def test_load_mask_01_equals_0255(tmp_path: Path, size: int) -> None:
    pattern = _pattern()
    p01 = tmp_path / "m01.png"
    p255 = tmp_path / "m255.png"
    Image.fromarray(pattern.astype(np.uint8)).save(p01)
    Image.fromarray(pattern.astype(np.uint8) * 255).save(p255)
    m01 = load_mask(p01, size)
    m255 = load_mask(p255, size)
    assert m01.dtype == torch.bool and m01.shape == (size, size)
    assert torch.equal(m01, m255)
    with Image.open(p255) as im:
        expected = np.asarray(im.resize((size, size), Image.NEAREST)) >= 128
    np.testing.assert_array_equal(m255.numpy(), expected)
    assert m255.any()


def test_load_mask_threshold_and_formats(tmp_path: Path) -> None:
    pattern = _pattern(30, 30)
    # grey levels: >= 128 anomalous, below not
    levels = np.where(pattern, 128, 127).astype(np.uint8)
    path = tmp_path / "levels.png"
    Image.fromarray(levels).save(path)
    np.testing.assert_array_equal(load_mask(path, 30).numpy(), pattern)
    # RGB white-on-black, 1-bit, 16-bit 0/65535 and 16-bit 0/1 masks
    rgb = tmp_path / "rgb.png"
    Image.fromarray(np.stack([pattern.astype(np.uint8) * 255] * 3, axis=2)).save(rgb)
    one_bit = tmp_path / "bit.png"
    Image.fromarray(pattern).save(one_bit)
    wide = tmp_path / "wide.png"
    Image.fromarray(pattern.astype(np.uint16) * 65535).save(wide)
    wide01 = tmp_path / "wide01.png"
    Image.fromarray(pattern.astype(np.uint16)).save(wide01)
    jpg = tmp_path / "mask.jpg"
    Image.fromarray(pattern.astype(np.uint8) * 255).save(jpg, quality=95)
    for p in (rgb, one_bit, wide, wide01):
        np.testing.assert_array_equal(load_mask(p, 30).numpy(), pattern, err_msg=str(p))
    # lossy JPEG masks: nearly identical after thresholding
    assert (load_mask(jpg, 30).numpy() != pattern).mean() < 0.02
    # empty mask stays empty
    empty = tmp_path / "zeros.png"
    Image.fromarray(np.zeros((20, 30), np.uint8)).save(empty)
    assert not load_mask(empty, 10).any()


def test_to_float() -> None:
    x = torch.tensor([[[0, 128, 255]]], dtype=torch.uint8)
    y = to_float(x)
    assert y.dtype == torch.float32 and y.shape == x.shape
    torch.testing.assert_close(y, torch.tensor([[[0.0, 128 / 255, 1.0]]]))
    with pytest.raises(TypeError):
        to_float(y)


def test_float_matches_totensor_reference(tmp_path: Path) -> None:
    path = tmp_path / "img.png"
    Image.fromarray(_rgb_array()).save(path)
    out = to_float(load_image(path, 16))
    ref = torch.from_numpy(_reference(path, 16).astype(np.float32) / 255.0)
    assert torch.equal(out, ref)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_wide_image_default_is_load_images_rule_and_options_win(
    tmp_path: Path, suffix: str
) -> None:
    values = RNG.integers(1000, 3000, size=(20, 30), dtype=np.uint16)
    values[0, 0], values[0, 1] = 1000, 2999
    path = tmp_path / f"scan{suffix}"
    Image.fromarray(values).save(path)
    with Image.open(path) as im:
        assert im.mode.startswith("I;16")
    (s,) = read_wide_image(path)
    assert s.index is None and s.levels.rule == "fullrange16"
    np.testing.assert_allclose(s.image, values / 65535.0, atol=1e-7)
    # every command gives the same model input for the same 16-bit file: load_image's rule
    assert torch.equal(slice_to_uint8_rgb(s, 30), load_image(path, 30))
    (m,) = read(path, intensity=Intensity(percentile=(0, 100)))  # min-max, asked for
    np.testing.assert_allclose(m.image, minmax(values), atol=1e-6)
    (p,) = read(path, intensity=Intensity(percentile=(5, 95)))
    lo, hi = np.percentile(values.astype(np.float64), [5, 95])
    np.testing.assert_allclose(p.image, (np.clip(values, lo, hi) - lo) / (hi - lo), atol=1e-6)
    (w,) = read_wide_image(path, Intensity(window=(2000, 1000)))
    np.testing.assert_allclose(w.image, np.clip((values - 1500.0) / 1000, 0, 1), atol=1e-6)


def test_every_16_bit_value_gives_load_images_8_bit_value(tmp_path: Path) -> None:
    values = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    path = tmp_path / "ramp.png"
    Image.fromarray(values).save(path)
    (s,) = read_wide_image(path)
    assert torch.equal(slice_to_uint8_rgb(s, 256), load_image(path, 256))


def test_multipage_tiff(tmp_path: Path) -> None:
    pages = [Image.fromarray((np.arange(12, dtype=np.uint16) * k).reshape(3, 4)) for k in (1, 3)]
    path = tmp_path / "stack.tiff"
    pages[0].save(path, save_all=True, append_images=pages[1:])
    slices = read_wide_image(path)
    assert [s.index for s in slices] == [0, 1]
    np.testing.assert_allclose(slices[1].image, np.arange(12).reshape(3, 4) * 3 / 65535, atol=1e-7)


def test_eight_bit_images_match_load_image(tmp_path: Path) -> None:
    grey = tmp_path / "grey.png"
    Image.fromarray(RNG.integers(40, 200, size=(21, 17), dtype=np.uint8)).save(grey)
    colour = tmp_path / "colour.png"
    Image.fromarray(RNG.integers(0, 256, size=(13, 19, 3), dtype=np.uint8)).save(colour)
    for path, shape in [(grey, (21, 17)), (colour, (13, 19, 3))]:
        (s,) = read(path)
        assert s.image.shape == shape and s.levels.rule == "8bit"
        out = slice_to_uint8_rgb(s, 24)
        assert out.dtype == torch.uint8 and out.shape == (3, 24, 24)
        assert torch.equal(out, load_image(path, 24))


def test_slice_to_uint8_rgb() -> None:
    image = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    out = slice_to_uint8_rgb(Slice(image=image, source=Path("x"), index=None), 8)
    assert out.shape == (3, 8, 8) and out.dtype == torch.uint8
    assert torch.equal(out[0], out[1]) and torch.equal(out[1], out[2])
    assert int(out[0, 0, 0]) == 0 and int(out[0, 7, 7]) == 255
    zeros = Slice(image=np.zeros((5, 5), np.float32), source=Path("x"), index=0)
    assert not slice_to_uint8_rgb(zeros, 16).any()
    with pytest.raises(UserError):
        slice_to_uint8_rgb(zeros, 0)


def test_exif_orientation_applied_by_every_reader(tmp_path):
    """A scan stored sideways with EXIF orientation 6 (display: rotate 90 degrees clockwise) is
    read upright everywhere, so a mask drawn as viewers show the image lines up with it."""
    from iqeclip.data.readers import load_mask, model_input, read_wide_image
    from iqeclip.data.sample import Sample
    from iqeclip.data.validate import check_sample

    upright = np.zeros((20, 30), np.uint8)
    upright[2:6, 20:28] = 255  # a lesion in the top right corner, as a viewer shows it
    exif = Image.Exif()
    exif[0x0112] = 6
    stored = np.rot90(upright, k=1)  # the sensor's order: 30 rows x 20 columns
    image = tmp_path / "scan.png"
    Image.fromarray(np.ascontiguousarray(stored)).save(image, exif=exif)
    jpeg = tmp_path / "scan.jpg"
    Image.fromarray(np.ascontiguousarray(stored)).save(jpeg, exif=exif, quality=95)
    mask = tmp_path / "mask.png"
    Image.fromarray(upright).save(mask)  # drawn upright: 30 wide, 20 high

    assert read_wide_image(image)[0].image.shape == (20, 30)
    np.testing.assert_array_equal(read_wide_image(image)[0].image * 255, upright)
    want = torch.from_numpy(
        np.array(Image.fromarray(upright).convert("RGB").resize((16, 16), Image.BICUBIC))
    ).permute(2, 0, 1)
    assert torch.equal(load_image(image, 16), want)
    assert torch.equal(model_input(image, None, 16), want)
    assert torch.equal(
        load_mask(mask, 16),
        torch.from_numpy(
            np.asarray(Image.fromarray(upright).resize((16, 16), Image.NEAREST)) > 127
        ),
    )
    check_sample(Sample(image, 1, mask), 16)  # sizes agree once upright
    check_sample(Sample(jpeg, 1, mask), 16)
    assert load_image(jpeg, 16)[:, 2, 13].float().mean() > 128  # the lesion is top right
