"""Tests for the DICOM reader on real sample files (pydicom's test data)."""

from __future__ import annotations

import importlib.util
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from iqeclip.data.readers.dicom import read_dicom
from iqeclip.data.readers.errors import INSTALL_HINT
from iqeclip.data.readers.intensity import Intensity
from iqeclip.errors import UserError
from tests.unit.data.readers.conftest import ct_hu, dicom_sample, image_copy, minmax, write_ct

RNG = np.random.default_rng(0)


def test_ct_rescale_to_hu(pydicom: Any) -> None:
    ds, raw, hu = ct_hu(pydicom)
    assert float(ds.RescaleIntercept) == -1024.0  # the sample really has an intercept
    (s,) = read_dicom(dicom_sample(pydicom, "CT_small.dcm"))
    assert s.index is None and s.image.shape == raw.shape and s.image.dtype == np.float32
    assert s.dicom.modality == "CT" and s.dicom.rescale == (1.0, -1024.0)
    assert s.levels.rule == "minmax" and s.levels.window is None  # no window in the file
    np.testing.assert_allclose(s.image, minmax(hu), atol=1e-6)
    # A window spanning exactly [min HU, max HU] maps the rescaled min to 0 and max to 1.
    lo, hi = hu.min(), hu.max()
    (w,) = read_dicom(
        dicom_sample(pydicom, "CT_small.dcm"), Intensity(window=((lo + hi) / 2, hi - lo))
    )
    np.testing.assert_allclose(w.image, minmax(hu), atol=1e-6)
    assert w.image[hu == lo].max() == 0.0 and w.image[hu == hi].min() == 1.0


def test_ct_explicit_window(tmp_path: Path, pydicom: Any) -> None:
    _, raw, _ = ct_hu(pydicom)
    pixels = raw.astype(np.int16)
    pixels[0, :4] = [1064, 0, 864, 1464]  # HU 40, -1024, -160, 440
    path = write_ct(pydicom, tmp_path / "ct.dcm", pixels=pixels)
    hu = pixels * 1.0 - 1024.0
    (s,) = read_dicom(path, Intensity(window=(40, 400)))
    assert s.levels.rule == "window" and s.levels.window == (40.0, 400.0)
    assert s.image[0, 0] == pytest.approx(0.5)
    assert s.image[0, 1] == 0.0 and s.image[0, 2] == 0.0 and s.image[0, 3] == 1.0
    assert np.all(s.image[hu <= -160] == 0.0) and np.all(s.image[hu >= 240] == 1.0)
    np.testing.assert_allclose(s.image, np.clip((hu + 160) / 400, 0, 1), atol=1e-6)


def test_mr_uses_file_window_unless_overridden(pydicom: Any) -> None:
    path = dicom_sample(pydicom, "MR_small.dcm")
    raw = pydicom.dcmread(path).pixel_array.astype(np.float64)
    (s,) = read_dicom(path)
    assert s.dicom.modality == "MR"
    assert s.levels.rule == "file-window" and s.levels.window == (600.0, 1600.0)
    np.testing.assert_allclose(s.image, np.clip((raw + 200) / 1600, 0, 1), atol=1e-6)
    (w,) = read_dicom(path, Intensity(window=(100, 50)))
    np.testing.assert_allclose(w.image, np.clip((raw - 75) / 50, 0, 1), atol=1e-6)
    (p,) = read_dicom(path, Intensity(percentile=(1, 99)))
    lo, hi = np.percentile(raw, [1, 99])
    assert p.levels.rule == "percentile"
    np.testing.assert_allclose(p.image, (np.clip(raw, lo, hi) - lo) / (hi - lo), atol=1e-6)


def test_multiframe_one_slice_per_frame(tmp_path: Path, pydicom: Any) -> None:
    path = image_copy(pydicom, dicom_sample(pydicom, "rtdose.dcm"), tmp_path)
    frames = pydicom.dcmread(path).pixel_array
    assert frames.ndim == 3 and frames.shape[0] > 1
    slices = read_dicom(path)
    assert [s.index for s in slices] == list(range(frames.shape[0]))
    for s, frame in zip(slices, frames, strict=True):
        assert s.image.shape == frame.shape and s.dicom.frames == frames.shape[0]
        np.testing.assert_allclose(s.image, minmax(frame), atol=1e-6)


def test_enhanced_per_frame_rescale_and_window(tmp_path: Path, pydicom: Any) -> None:
    ds = pydicom.dcmread(image_copy(pydicom, dicom_sample(pydicom, "rtdose.dcm"), tmp_path))
    frames = ds.pixel_array.astype(np.float64)
    Dataset, Sequence = pydicom.Dataset, pydicom.Sequence
    rescale = Dataset()
    rescale.RescaleSlope, rescale.RescaleIntercept = 2, -5
    shared = Dataset()
    shared.PixelValueTransformationSequence = Sequence([rescale])
    ds.SharedFunctionalGroupsSequence = Sequence([shared])
    voi = Dataset()
    voi.WindowCenter, voi.WindowWidth = [round(frames[1].mean() * 2 - 5), 99], 1e5
    per_frame = [Dataset() for _ in frames]
    per_frame[1].FrameVOILUTSequence = Sequence([voi])
    ds.PerFrameFunctionalGroupsSequence = Sequence(per_frame)
    path = tmp_path / "enhanced.dcm"
    ds.save_as(path)
    slices = read_dicom(path)
    assert slices[0].dicom.rescale == (2.0, -5.0) and slices[0].levels.rule == "minmax"
    centre = voi.WindowCenter[0]
    assert slices[1].levels.rule == "file-window"
    assert slices[1].levels.window == (centre, 1e5)  # first value of a multi-valued window
    expected = np.clip((frames[1] * 2 - 5 - (centre - 5e4)) / 1e5, 0, 1)
    np.testing.assert_allclose(slices[1].image, expected, atol=1e-6)


@pytest.mark.parametrize("name", ["rtdose.dcm", "rtdose_1frame.dcm"])
def test_non_image_dicom_is_refused(tmp_path: Path, pydicom: Any, name: str) -> None:
    """An RT dose grid has pixel data but is no picture of the patient: refused by its SOP
    class, and by its modality when the SOP class is a private one."""
    path = dicom_sample(pydicom, name)
    with pytest.raises(UserError, match=r"not an image: its SOP class is RT Dose Storage"):
        read_dicom(path)
    ds = pydicom.dcmread(path)
    ds.SOPClassUID = "1.2.826.0.1.3680043.9.9999.1"  # private: read unless the modality says no
    ds.save_as(tmp_path / "private.dcm")
    with pytest.raises(UserError, match=r"not an image: its modality is RTDOSE"):
        read_dicom(tmp_path / "private.dcm")


def test_monochrome1_is_inverted(tmp_path: Path, pydicom: Any) -> None:
    _, _, hu = ct_hu(pydicom)
    path = write_ct(pydicom, tmp_path / "mono1.dcm", PhotometricInterpretation="MONOCHROME1")
    (s,) = read_dicom(path)
    assert s.dicom.photometric == "MONOCHROME1"
    np.testing.assert_allclose(s.image, 1.0 - minmax(hu), atol=1e-6)
    (w,) = read_dicom(path, Intensity(window=(40, 400)))
    np.testing.assert_allclose(w.image, 1.0 - np.clip((hu + 160) / 400, 0, 1), atol=1e-6)


def test_voi_lut_sequence(tmp_path: Path, pydicom: Any) -> None:
    _, _, hu = ct_hu(pydicom)
    item = pydicom.Dataset()
    item.add_new("LUTDescriptor", "US", [4096, 0, 16])
    item.add_new("LUTData", "US", list(range(0, 4096 * 16, 16)))
    path = write_ct(pydicom, tmp_path / "lut.dcm", VOILUTSequence=pydicom.Sequence([item]))
    (s,) = read_dicom(path)
    assert s.levels.rule == "voi-lut"
    np.testing.assert_allclose(s.image, np.clip(hu, 0, 4095) / 4095, atol=1e-6)


def test_rgb_and_palette_dicom(pydicom: Any) -> None:
    path = dicom_sample(pydicom, "SC_rgb_small_odd.dcm")
    rgb = pydicom.dcmread(path).pixel_array
    (s,) = read_dicom(path)
    assert s.image.shape == (3, 3, 3) and s.image.dtype == np.float32
    np.testing.assert_allclose(s.image, minmax(rgb), atol=1e-6)  # joint over the channels
    (p,) = read_dicom(dicom_sample(pydicom, "examples_palette.dcm"))
    assert p.image.shape[2] == 3 and p.image.min() == 0.0 and p.image.max() == 1.0


def test_dicom_errors(tmp_path: Path, pydicom: Any) -> None:
    garbage = tmp_path / "garbage.dcm"
    garbage.write_bytes(RNG.integers(0, 256, 2000, dtype=np.uint8).tobytes())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(UserError, match=r"cannot read DICOM .*garbage\.dcm"):
            read_dicom(garbage)
    with pytest.raises(UserError, match=r"cannot read DICOM .*no such file"):
        read_dicom(tmp_path / "missing.dcm")
    with pytest.raises(UserError, match=r"cannot read DICOM .*MR_truncated"):
        read_dicom(dicom_sample(pydicom, "MR_truncated.dcm"))
    with pytest.raises(UserError, match="no pixel data"):
        read_dicom(dicom_sample(pydicom, "rtplan.dcm"))


# --- Compressed transfer syntaxes -----------------------------------------------------------
# Every compressed syntax with a sample in pydicom's wheel, read through the project's reader and
# compared with the same image stored uncompressed (or losslessly) where the wheel has one. Each
# case names the module of the `medical` extra that decodes it (None: pydicom or Pillow alone).

# (compressed file, reference file, decoder module): the reader's output must be identical.
LOSSLESS = [
    ("MR_small_RLE.dcm", "MR_small.dcm", None),  # RLE Lossless, signed 16-bit grey
    ("rtdose_rle.dcm", "rtdose.dcm", None),  # RLE Lossless, 32-bit, 15 frames
    ("rtdose_rle_1frame.dcm", "rtdose_1frame.dcm", None),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", "jpeg_ls"),  # JPEG-LS Lossless
    ("MR_small_jp2klossless.dcm", "MR_small.dcm", "openjpeg"),  # JPEG 2000 Lossless
    # SC_rgb itself is not in the wheel: two independent lossless codecs of it must agree.
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm", "gdcm"),  # JPEG Lossless SV1, RGB
    ("SC_rgb_gdcm_KY.dcm", "SC_rgb_rle.dcm", "openjpeg"),  # JPEG 2000 (reversibly coded)
]

# (compressed file, reference file, decoder module, max |Δ|, mean |Δ|) on the reader's [0, 1]
# output. JPEG baseline is lossy; the files with 4:2:0 chroma (halved in both directions) smear
# the sharp colour-band edges of SC_rgb, so their maximum is large while the mean stays small.
LOSSY = [
    # Decoded reference (dcmdjpeg / gdcmconv output): only decoder rounding may differ.
    ("SC_rgb_jpeg.dcm", "SC_rgb_jpeg_dcmd.dcm", None, 0.01, 0.002),
    ("SC_jpeg_no_color_transform.dcm", "SC_rgb_jpeg_dcmd.dcm", None, 0.01, 0.002),
    ("SC_rgb_dcmtk_+eb+cy+n2.dcm", "SC_ybr_full_422_uncompressed.dcm", None, 0.01, 0.002),
    # The original image (as RLE): the loss of the JPEG encoding itself.
    ("SC_rgb_jpeg_dcmtk.dcm", "SC_rgb_rle.dcm", None, 0.03, 0.005),  # YBR_FULL 4:4:4
    ("SC_rgb_dcmtk_+eb+cr.dcm", "SC_rgb_rle.dcm", None, 0.03, 0.005),  # RGB (APP14)
    ("SC_rgb_dcmtk_+eb+cy+s4.dcm", "SC_rgb_rle.dcm", None, 0.03, 0.005),  # YBR_FULL 4:4:4
    ("SC_rgb_dcmtk_+eb+cy+s2.dcm", "SC_rgb_rle.dcm", None, 0.03, 0.005),  # YBR_FULL_422 4:2:2
    ("SC_rgb_dcmtk_+eb+cy+n2.dcm", "SC_rgb_rle.dcm", None, 0.03, 0.005),  # YBR_FULL 4:2:2
    ("SC_rgb_dcmtk_+eb+cy+n1.dcm", "SC_rgb_rle.dcm", None, 0.35, 0.015),  # YBR_FULL 4:2:0
    ("SC_rgb_dcmtk_+eb+cy+np.dcm", "SC_rgb_rle.dcm", None, 0.35, 0.015),  # YBR_FULL_422 4:2:0
    ("SC_rgb_jpeg_lossy_gdcm.dcm", "SC_rgb_rle.dcm", None, 0.35, 0.015),  # YBR_FULL 4:2:0
    ("SC_rgb_small_odd_jpeg.dcm", "SC_rgb_small_odd.dcm", None, 0.06, 0.02),  # 3x3, YBR_FULL
    # JPEG-LS near-lossless with NEAR = 2 (read from the scan header): |Δ| <= 2 of 255.
    ("SC_rgb_jls_lossy_line.dcm", "SC_rgb_rle.dcm", "jpeg_ls", 2 / 255 + 1e-6, 0.005),
    ("SC_rgb_jls_lossy_sample.dcm", "SC_rgb_rle.dcm", "jpeg_ls", 2 / 255 + 1e-6, 0.005),
]

# (file, decoder module, slices, shape of each): no reference image in the wheel.
DECODE_ONLY = [
    ("examples_ybr_color.dcm", None, 30, (240, 320, 3)),  # JPEG baseline YBR_FULL_422
    ("SC_jpeg_no_color_transform_2.dcm", None, 1, (256, 256, 3)),  # JPEG baseline RGB, APP14
    ("SC_rgb_jpeg_app14_dcmd.dcm", None, 1, (256, 256, 3)),
    ("JPEG2000.dcm", "openjpeg", 1, (1024, 256)),  # JPEG 2000 (lossy), signed 16-bit
    ("693_J2KI.dcm", "openjpeg", 1, (512, 512)),  # Bits Stored differs from the J2K data
    ("J2K_pixelrep_mismatch.dcm", "openjpeg", 1, (512, 512)),  # JPEG 2000 Lossless
    ("GDCMJ2K_TextGBR.dcm", "openjpeg", 1, (400, 400, 3)),  # YBR_RCT, JP2 header
    ("examples_jpeg2k.dcm", "openjpeg", 1, (480, 640, 3)),  # YBR_RCT
    ("JPEGLSNearLossless_08.dcm", "jpeg_ls", 1, (45, 10)),  # JPEG-LS near-lossless
    ("JPEGLSNearLossless_16.dcm", "jpeg_ls", 1, (50, 10)),
]


def _needs(module: str | None) -> None:
    """Skip when the `medical` extra's decoder for a syntax is not installed."""
    if module is not None:
        pytest.importorskip(module)


def _read_quiet(path: Path) -> list[Any]:
    """read_dicom without pydicom's warnings about odd but decodable files."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return read_dicom(path)


def _syntax(pydicom: Any, path: Path) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return pydicom.dcmread(path, stop_before_pixels=True).file_meta.TransferSyntaxUID


@pytest.mark.parametrize(("name", "reference", "module"), LOSSLESS, ids=[c[0] for c in LOSSLESS])
def test_lossless_syntax_decodes_exactly(
    tmp_path: Path, pydicom: Any, name: str, reference: str, module: str | None
) -> None:
    _needs(module)
    path, reference_path = dicom_sample(pydicom, name), dicom_sample(pydicom, reference)
    if name.startswith("rtdose"):  # a dose grid is no image: relabelled, pixels untouched
        path = image_copy(pydicom, path, tmp_path)
        reference_path = image_copy(pydicom, reference_path, tmp_path)
    assert _syntax(pydicom, path).is_compressed
    slices = _read_quiet(path)
    expected = read_dicom(reference_path)
    assert len(slices) == len(expected)
    for s, e in zip(slices, expected, strict=True):
        assert s.image.dtype == np.float32 and s.index == e.index
        assert np.array_equal(s.image, e.image)
        assert s.levels.rule == e.levels.rule and s.levels.window == e.levels.window
        assert s.dicom.rescale == e.dicom.rescale and s.dicom.photometric == e.dicom.photometric


@pytest.mark.parametrize("bits", [16, 32])
def test_rle_16_and_32_bit_colour(pydicom: Any, bits: int) -> None:
    """RLE with 2 or 4 byte segments per sample: SC_rgb scaled to the full range."""
    (expected,) = read_dicom(dicom_sample(pydicom, "SC_rgb_rle.dcm"))
    (s,) = read_dicom(dicom_sample(pydicom, f"SC_rgb_rle_{bits}bit.dcm"))
    np.testing.assert_allclose(s.image, expected.image, atol=1e-6)
    first, second = read_dicom(dicom_sample(pydicom, f"SC_rgb_rle_{bits}bit_2frame.dcm"))
    np.testing.assert_allclose(first.image, expected.image, atol=1e-6)
    np.testing.assert_allclose(second.image, 1.0 - expected.image, atol=1e-6)  # frame 2: inverted


def test_rle_2frame_colour(pydicom: Any) -> None:
    (expected,) = read_dicom(dicom_sample(pydicom, "SC_rgb_rle.dcm"))
    first, second = read_dicom(dicom_sample(pydicom, "SC_rgb_rle_2frame.dcm"))
    assert (first.index, second.index) == (0, 1)
    assert np.array_equal(first.image, expected.image)
    np.testing.assert_allclose(second.image, 1.0 - expected.image, atol=1e-6)


@pytest.mark.parametrize(
    ("name", "reference", "module", "max_error", "mean_error"), LOSSY, ids=[c[0] for c in LOSSY]
)
def test_lossy_syntax_decodes_within_tolerance(
    pydicom: Any, name: str, reference: str, module: str | None, max_error: float, mean_error: float
) -> None:
    _needs(module)
    path = dicom_sample(pydicom, name)
    assert _syntax(pydicom, path).is_compressed
    (s,) = _read_quiet(path)
    (e,) = _read_quiet(dicom_sample(pydicom, reference))
    assert s.image.shape == e.image.shape and s.image.dtype == np.float32
    error = np.abs(s.image.astype(np.float64) - e.image)
    assert error.max() <= max_error and error.mean() <= mean_error


@pytest.mark.parametrize(
    ("name", "module", "count", "shape"), DECODE_ONLY, ids=[c[0] for c in DECODE_ONLY]
)
def test_compressed_syntax_decodes(
    pydicom: Any, name: str, module: str | None, count: int, shape: tuple[int, ...]
) -> None:
    _needs(module)
    path = dicom_sample(pydicom, name)
    assert _syntax(pydicom, path).is_compressed
    slices = _read_quiet(path)
    assert len(slices) == count
    for s in slices:
        assert s.image.shape == shape and s.image.dtype == np.float32
        assert 0.0 <= s.image.min() < s.image.max() <= 1.0 and not s.levels.constant


def _gdcm_compress(gdcm: Any, source: Path, target: Path, syntax: str) -> Path:
    """Re-encode a DICOM file with GDCM (the only non-GPL JPEG lossless codec here)."""
    reader = gdcm.ImageReader()
    reader.SetFileName(str(source))
    assert reader.Read()
    change = gdcm.ImageChangeTransferSyntax()
    change.SetTransferSyntax(gdcm.TransferSyntax(getattr(gdcm.TransferSyntax, syntax)))
    change.SetInput(reader.GetImage())
    assert change.Change()
    writer = gdcm.ImageWriter()
    writer.SetFileName(str(target))
    writer.SetFile(reader.GetFile())
    writer.SetImage(change.GetOutput())
    assert writer.Write()
    return target


@pytest.mark.parametrize(
    ("syntax", "uid"),
    [
        ("JPEGLosslessProcess14_1", "1.2.840.10008.1.2.4.70"),
        ("JPEGLosslessProcess14", "1.2.840.10008.1.2.4.57"),
    ],
)
def test_jpeg_lossless_ct_keeps_hu(tmp_path: Path, pydicom: Any, syntax: str, uid: str) -> None:
    """JPEG lossless, the usual PACS export of CT: signed 16-bit, rescaled to HU exactly."""
    gdcm = pytest.importorskip("gdcm")
    ct = dicom_sample(pydicom, "CT_small.dcm")
    path = _gdcm_compress(gdcm, ct, tmp_path / "ct_jpll.dcm", syntax)
    assert _syntax(pydicom, path) == uid
    _, _, hu = ct_hu(pydicom)
    for intensity in (Intensity(), Intensity(window=(40, 400))):
        (s,) = read_dicom(path, intensity)
        (e,) = read_dicom(ct, intensity)
        assert np.array_equal(s.image, e.image)
        assert s.dicom.rescale == (1.0, -1024.0) and s.levels.rule == e.levels.rule
    np.testing.assert_allclose(read_dicom(path)[0].image, minmax(hu), atol=1e-6)


# (file, reference, pydicom plugin, module of the extra, atol): each decoder of the extra alone
# gives the same image (JPEG baseline: within decoder rounding, 1 of 255).
PLUGINS = [
    ("MR_small_RLE.dcm", "MR_small.dcm", "pydicom", None, 0.0),
    ("MR_small_RLE.dcm", "MR_small.dcm", "pylibjpeg", "rle", 0.0),
    ("SC_rgb_jpeg_gdcm.dcm", "SC_rgb_rle.dcm", "gdcm", "gdcm", 0.0),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", "pyjpegls", "jpeg_ls", 0.0),
    ("MR_small_jpeg_ls_lossless.dcm", "MR_small.dcm", "gdcm", "gdcm", 0.0),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm", "pylibjpeg", "openjpeg", 0.0),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm", "gdcm", "gdcm", 0.0),
    ("MR_small_jp2klossless.dcm", "MR_small.dcm", "pillow", None, 0.0),
    ("SC_rgb_dcmtk_+eb+cy+n2.dcm", "SC_ybr_full_422_uncompressed.dcm", "pillow", None, 1 / 255),
    ("SC_rgb_dcmtk_+eb+cy+n2.dcm", "SC_ybr_full_422_uncompressed.dcm", "gdcm", "gdcm", 1 / 255),
]


def _decoder(pydicom: Any, path: Path) -> Any:
    """pydicom's decoder for the file's transfer syntax (pydicom >= 3)."""
    if not hasattr(pydicom, "pixels") or not hasattr(pydicom.pixels, "get_decoder"):
        pytest.skip("pydicom < 3 has no pixel data decoder objects")
    return pydicom.pixels.get_decoder(_syntax(pydicom, path))


@pytest.mark.parametrize(
    ("name", "reference", "plugin", "module", "atol"),
    PLUGINS,
    ids=[f"{c[0]}-{c[2]}" for c in PLUGINS],
)
def test_each_decoder_plugin_alone(
    monkeypatch: pytest.MonkeyPatch,
    pydicom: Any,
    name: str,
    reference: str,
    plugin: str,
    module: str | None,
    atol: float,
) -> None:
    """With only one decoder plugin installed (simulated) the reader gives the same image."""
    _needs(module)
    path = dicom_sample(pydicom, name)
    decoder = _decoder(pydicom, path)
    if plugin not in decoder.available_plugins:
        pytest.skip(f"pydicom's {plugin} plugin is not available")
    monkeypatch.setattr(decoder, "_available", {plugin: decoder._available[plugin]})
    (s,) = _read_quiet(path)
    (e,) = read_dicom(dicom_sample(pydicom, reference))
    np.testing.assert_allclose(s.image, e.image, rtol=0, atol=atol)


def test_jpeg_12_bit_is_not_decodable(pydicom: Any) -> None:
    """JPEG Extended 12-bit decodes only with pylibjpeg-libjpeg (GPL-3, not in the extra)."""
    if importlib.util.find_spec("libjpeg") is not None:
        pytest.skip("pylibjpeg-libjpeg is installed: 12-bit JPEG decodes")
    for name in ("JPEG-lossy.dcm", "JPGExtended.dcm"):
        with pytest.raises(UserError) as err:
            _read_quiet(dicom_sample(pydicom, name))
        message = str(err.value)
        assert "\n" not in message
        assert message.startswith(f"cannot read DICOM {dicom_sample(pydicom, name)}: ")
        assert "cannot decode pixel data: " in message
        assert "JPEG Extended (Process 2 and 4), 1.2.840.10008.1.2.4.51" in message


def test_syntax_without_decoder_is_one_line_error(tmp_path: Path, pydicom: Any) -> None:
    """A video syntax (MPEG-2) has no pydicom decoder at all."""
    ds = pydicom.dcmread(dicom_sample(pydicom, "SC_rgb_jpeg_dcmtk.dcm"))
    ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.100"
    path = tmp_path / "video.dcm"
    ds.save_as(path)
    with pytest.raises(
        UserError, match=r"cannot read DICOM .*video\.dcm: cannot decode pixel data: "
    ) as err:
        read_dicom(path)
    assert "\n" not in str(err.value) and "MPEG2 Main Profile / Main Level" in str(err.value)


def test_missing_decoder_names_the_extra(monkeypatch: pytest.MonkeyPatch, pydicom: Any) -> None:
    """Without the extra's packages (simulated): one line naming the syntax and the install."""
    path = dicom_sample(pydicom, "MR_small_jpeg_ls_lossless.dcm")
    decoder = _decoder(pydicom, path)
    monkeypatch.setattr(decoder, "_available", {})
    monkeypatch.setattr(
        decoder, "_unavailable", {"gdcm": ("gdcm>=3.0.10",), "pyjpegls": ("pyjpegls>=1.2",)}
    )
    with pytest.raises(UserError) as err:
        read_dicom(path)
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith(f"cannot read DICOM {path}: cannot decode pixel data: ")
    assert "missing dependencies" in message and "pyjpegls>=1.2" in message
    assert "JPEG-LS Lossless Image Compression, 1.2.840.10008.1.2.4.80" in message
    assert message.endswith(INSTALL_HINT)


def test_corrupt_compressed_data_is_one_line_error(pydicom: Any) -> None:
    """JPEG2000.dcm with four codestream bytes overwritten: every decoder fails."""
    _needs("openjpeg")
    name = "JPEG2000-embedded-sequence-delimiter.dcm"
    with pytest.raises(UserError, match=r"cannot read DICOM .*: cannot decode pixel data: ") as err:
        _read_quiet(dicom_sample(pydicom, name))
    assert "\n" not in str(err.value) and name in str(err.value)
