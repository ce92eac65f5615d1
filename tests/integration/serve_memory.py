"""The memory half of ``test_serve_limits.py``, run in a fresh process so that its peak RSS
(a high-water mark of the whole process) starts low.

``python -m tests.integration.serve_memory MODE CHECKPOINT FOLDER [OPTIONS_JSON]`` loads the
detector, serves it in-process through FastAPI's test client, warms it up, and measures the
growth of the peak RSS over each step of MODE: from the RSS the step starts at (the peak is reset
to it where Linux allows, ``/proc/self/clear_refs``) to the peak after it. It prints one JSON
object:

- ``bombs``: every file of FOLDER is posted to the server, then given to ``predict`` (with the
  loaded detector, as the command line runs it once loaded); the answer
  is each one's status and message (or predict's error), ``grown_mb`` the growth over them all;
- ``concurrent``: FOLDER's ``one.png`` is posted alone (``one_mb``: its growth), then every
  ``*.png`` of FOLDER at once, each from its own thread (``all_mb``); the answer is their
  statuses.

OPTIONS_JSON holds :class:`~iqeclip.config.ServeConfig` options (the server's limits).
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import resource
import sys
import tempfile
import threading
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from iqeclip.config import ServeConfig
from iqeclip.errors import UserError
from iqeclip.inference.predict import predict
from iqeclip.model.detector import IQEClip
from iqeclip.serve.app import create_app
from iqeclip.serve.jobs import ServeLimits


def peak_mb() -> float:
    """The process's peak resident memory so far, in MB: Linux's ``VmHWM``, else ``ru_maxrss``
    (which on Linux also holds the peak of the process this one was forked from, before its
    exec: a test runner's, larger than this server's)."""
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def start_step() -> float:
    """Free what the last step left (glibc's arenas) and reset the peak to the RSS now, where
    Linux allows it; returns the peak the step starts from."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")
    return peak_mb()


def post(client: TestClient, path: Path) -> dict[str, Any]:
    r = client.post("/api/predict", files={"file": (path.name, path.read_bytes())})
    return {"status": r.status_code, "error": r.json().get("error"), "headers": dict(r.headers)}


def warm_up(client: TestClient, detector: IQEClip, checkpoint: Path, folder: Path) -> None:
    """One small upload of each format and one predict run: the imports and first
    allocations of every reader are in the baseline, not in the measured requests."""
    from tests.bombs import dicom_deflated, dicom_rle, nifti, png_zeros, tiff_pages

    warm = folder / "warm"
    warm.mkdir()
    files = [
        png_zeros(warm / "w.png", 64, 48),
        nifti(warm / "w.nii.gz", (32, 24, 2)),
        dicom_deflated(warm / "w.dcm", 32, 24),
        dicom_rle(warm / "wr.dcm", 32, 24),
        tiff_pages(warm / "w.tif", 2, 32),
    ]
    for path in files:
        assert post(client, path)["status"] == 200, path
    predict(checkpoint, files[:2], warm / "out", detector=detector)


def bombs(client: TestClient, detector: IQEClip, checkpoint: Path, folder: Path) -> dict[str, Any]:
    answers: dict[str, Any] = {}
    start = start_step()
    for path in sorted(p for p in folder.iterdir() if p.is_file()):
        served = post(client, path)
        try:
            predict(checkpoint, [path], folder / f"out_{path.name}", detector=detector)
            cli = None
        except UserError as exc:
            cli = str(exc)
        answers[path.name] = {**served, "predict": cli, "peak_mb": peak_mb()}
    return {"answers": answers, "start_mb": start, "grown_mb": peak_mb() - start}


def concurrent(
    client: TestClient, detector: IQEClip, checkpoint: Path, folder: Path
) -> dict[str, Any]:
    start = start_step()
    alone = post(client, folder / "one.png")
    one = peak_mb() - start
    start = start_step()
    images = sorted(folder.glob("*.png"))
    answers: dict[str, Any] = {}

    def ask(path: Path) -> None:
        answers[path.name] = post(client, path)

    threads = [threading.Thread(target=ask, args=(p,)) for p in images]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=600)
    return {"alone": alone, "one_mb": one, "all_mb": peak_mb() - start, "answers": answers}


def main(argv: list[str]) -> None:
    mode, checkpoint, folder = argv[0], Path(argv[1]), Path(argv[2])
    options = json.loads(argv[3]) if len(argv) > 3 else {}
    detector = IQEClip.from_checkpoint(checkpoint)
    with tempfile.TemporaryDirectory() as root:
        limits = ServeLimits.of(ServeConfig(**options))
        app = create_app(detector, str(checkpoint), Path(root), 200.0, 4, "torch", limits=limits)
        client = TestClient(app)
        warm_up(client, detector, checkpoint, Path(tempfile.mkdtemp(dir=root)))
        step = {"bombs": bombs, "concurrent": concurrent}[mode]
        result = step(client, detector, checkpoint, folder)
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
