"""The ``iqeclip serve`` page in a real headless Chromium (selenium): upload a volume, wait for the
overlay, and check that what the page shows is what the API answers."""

from __future__ import annotations

import importlib.util
import io
from pathlib import Path

import httpx
import numpy as np
import pytest
from PIL import Image

from iqeclip.model.detector import IQEClip

pytest.importorskip("fastapi")
pytest.importorskip("selenium")
nib = pytest.importorskip("nibabel")

from iqeclip.serve.app import create_app  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "screenshot_serve", ROOT / "scripts" / "screenshot_serve.py"
)
shot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shot)

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        shot.browser_paths() is None,
        reason="chromium and chromedriver are not installed (scripts/install_browser.sh)",
    ),
]


@pytest.fixture(scope="module")
def page(checkpoint, tmp_path_factory):
    root = tmp_path_factory.mktemp("server")
    app = create_app(IQEClip.from_checkpoint(checkpoint), str(checkpoint), root, 20, 4, "torch")
    with shot.start_server(app) as url, shot.chromium() as driver:
        yield url, driver


def test_page_shows_the_api_answer_for_a_volume(page, tmp_path):
    from selenium.webdriver.common.by import By

    url, driver = page
    data = np.random.default_rng(5).random((40, 40, 4)).astype(np.float32)
    data[8:18, 8:18, 1:3] += 2
    scan = tmp_path / "scan.nii.gz"
    nib.Nifti1Image(data, np.eye(4)).to_filename(scan)
    shot.upload_and_wait(driver, url, scan)
    assert not driver.find_element(By.ID, "error").is_displayed()
    with scan.open("rb") as f:
        api = httpx.post(f"{url}/api/predict", files={"file": (scan.name, f)}, timeout=60).json()
    assert driver.find_element(By.ID, "score").text == f"{api['score']:.4f}"
    assert driver.find_element(By.ID, "volume-score").text == f"{api['volumes'][0]['score']:.4f}"
    assert driver.find_element(By.ID, "volume").is_displayed()
    slider = driver.find_element(By.ID, "slice")
    assert slider.get_attribute("max") == "3"
    # the overlay is drawn: the heat map image has loaded at the scan's size
    heat = driver.find_element(By.ID, "heat")
    assert driver.execute_script("return arguments[0].naturalWidth", heat) == 40
    # move to slice 0: the label shows that slice's score
    driver.execute_script(
        "arguments[0].value = 0; arguments[0].dispatchEvent(new Event('input'))", slider
    )
    label = driver.find_element(By.ID, "slice-label").text
    assert label.startswith("slice 0 (1 of 4)")
    assert f"{api['slices'][0]['score']:.4f}" in label
    # the opacity slider sets the heat map's opacity
    opacity = driver.find_element(By.ID, "opacity")
    driver.execute_script(
        "arguments[0].value = 0.2; arguments[0].dispatchEvent(new Event('input'))", opacity
    )
    assert float(heat.value_of_css_property("opacity")) == pytest.approx(0.2)
    png = Image.open(io.BytesIO(driver.get_screenshot_as_png())).convert("L")
    assert np.asarray(png, dtype=np.float64).std() > 10  # a drawn page, not a blank one


def test_page_shows_the_readers_error(page, tmp_path):
    from selenium.webdriver.common.by import By

    url, driver = page
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"no image in here")
    shot.upload_and_wait(driver, url, bad)
    error = driver.find_element(By.ID, "error")
    assert error.is_displayed()
    assert error.text.startswith("error: image broken.png: not an image file")
    assert not driver.find_element(By.ID, "result").is_displayed()
