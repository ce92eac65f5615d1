"""docs/img/orientation.png: one CT slice as the model sees it, from a DICOM series and from its
NIfTI conversion (SimpleITK's), under the radiological rule and under the older canonical one.

    .venv/bin/python scripts/orientation_figure.py [OUT.png]

The slice is pydicom's own CT_small.dcm (a real axial CT), so the figure needs no data.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from iqeclip.data.readers import read, reading_from
from iqeclip.data.readers.pil import to_uint8

WINDOW = reading_from("40,400", None).intensity  # a soft-tissue CT window
SCALE = 2  # CT_small is 128 x 128 pixels


def _panel(image: np.ndarray, title: str, note: str) -> Image.Image:
    picture = Image.fromarray(to_uint8(image)).convert("RGB")
    picture = picture.resize((picture.width * SCALE, picture.height * SCALE), Image.NEAREST)
    canvas = Image.new("RGB", (picture.width + 20, picture.height + 56), "white")
    canvas.paste(picture, (10, 40))
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=13)
    draw.text((10, 4), title, fill="black", font=font)
    draw.text((10, 20), note, fill="dimgray", font=font)
    return canvas


def main(out: Path) -> None:
    import pydicom
    import SimpleITK as sitk

    with tempfile.TemporaryDirectory() as tmp:
        series = Path(tmp, "series")
        series.mkdir()
        ds = pydicom.dcmread(pydicom.data.get_testdata_file("CT_small.dcm"))
        ds.save_as(series / "IM0001.dcm")
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(series)))
        nifti = Path(tmp, "ct.nii.gz")
        sitk.WriteImage(reader.Execute(), str(nifti))
        dicom = read(series, intensity=WINDOW)[0].image
        now = read(nifti, intensity=WINDOW)[0].image
        before = read(nifti, intensity=WINDOW, orientation="canonical")[0].image
    assert np.array_equal(dicom, now), "the DICOM series and its NIfTI must look the same"
    panels = [
        _panel(dicom, "DICOM series", "radiological: A up, R on the left"),
        _panel(now, "its NIfTI conversion", "radiological (now): the same picture"),
        _panel(before, "the same NIfTI, older rule", "canonical: RAS+ array, on its side"),
    ]
    figure = Image.new("RGB", (sum(p.width for p in panels), panels[0].height), "white")
    x = 0
    for p in panels:
        figure.paste(p, (x, 0))
        x += p.width
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.save(out)
    print(f"written {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else Path("docs/img/orientation.png"))
