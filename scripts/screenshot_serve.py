"""Screenshot of the ``iqeclip serve`` page with a scored upload, for the docs.

Usage: python scripts/screenshot_serve.py CKPT INPUT OUT.png

Starts the app on a free local port, opens it in headless Chromium (Debian's ``chromium`` and
``chromium-driver``; ``scripts/install_browser.sh`` installs them), uploads INPUT, waits for the
overlay and saves the window as OUT.png. The browser test (tests/integration/test_serve_page.py)
drives the page through the same two helpers, :func:`start_server` and :func:`chromium`.
"""

from __future__ import annotations

import shutil
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

CHROMIUM = ("chromium", "chromium-browser")
DRIVER = "chromedriver"


def browser_paths() -> tuple[str, str] | None:
    """Chromium and its driver, or None where either is missing."""
    binary = next((p for name in CHROMIUM if (p := shutil.which(name))), None)
    driver = shutil.which(DRIVER)
    return (binary, driver) if binary and driver else None


@contextmanager
def start_server(app: Any) -> Iterator[str]:
    """Serve ``app`` with uvicorn on a free port of 127.0.0.1 in a thread; yields its URL."""
    import uvicorn

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@contextmanager
def chromium(width: int = 1200, height: int = 1000) -> Iterator[Any]:
    """A headless Chromium driven by selenium, offline (no background networking)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    paths = browser_paths()
    if paths is None:
        raise RuntimeError(
            "chromium and chromedriver are not installed (scripts/install_browser.sh)"
        )
    options = webdriver.ChromeOptions()
    options.binary_location = paths[0]
    profile = tempfile.mkdtemp(prefix="iqeclip-chromium-")
    for flag in (
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={profile}",
        f"--window-size={width},{height}",
    ):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=paths[1]), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def upload_and_wait(driver: Any, url: str, path: Path, timeout: float = 60) -> None:
    """Open the page, upload ``path`` and wait until the overlay (or an error) is shown."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    driver.get(url)
    WebDriverWait(driver, timeout).until(
        lambda d: "loading" not in d.find_element(By.ID, "model").text
    )
    driver.find_element(By.ID, "file").send_keys(str(Path(path).resolve()))
    WebDriverWait(driver, timeout).until(
        lambda d: (
            d.find_element(By.ID, "stage").get_attribute("data-ready") == "true"
            or d.find_element(By.ID, "error").is_displayed()
        )
    )


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.splitlines()[2], file=sys.stderr)
        return 2
    ckpt, source, out = argv
    from iqeclip.model.detector import IQEClip
    from iqeclip.serve.app import create_app

    detector = IQEClip.from_checkpoint(ckpt)
    with tempfile.TemporaryDirectory() as tmp:
        app = create_app(detector, ckpt, Path(tmp), 200, 8, "torch")
        with start_server(app) as url, chromium() as driver:
            upload_and_wait(driver, url, Path(source))
            driver.save_screenshot(out)
    print(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
