"""A bounded load test of ``iqeclip serve``, on this machine only: valid and invalid uploads,
several at once, and what the server holds before and after (docs/serve.md, "Load test").

    # against a running server (its pid: for its memory, descriptors and temporary folder)
    python scripts/serve_load.py --url http://127.0.0.1:8000 --pid PID
    # or start `iqeclip serve --ckpt_path CKPT` on a free port, and stop it with SIGTERM after
    python scripts/serve_load.py --ckpt CKPT [--requests 300] [--concurrency 16] [--out r.json]

The uploads cycle through a PNG, a NIfTI volume (3 slices), a DICOM file (pydicom's CT_small)
and two invalid files (random bytes named ``.png``, a PNG cut in half), all built here. Every
valid upload must be answered 200 and every invalid one 4xx. The report (JSON, on stdout or in
``--out``) gives the error rate of the valid uploads, the latency percentiles, the requests per
second, the server's resident memory (``VmRSS``) and open file descriptors before (after one
warm-up request of each kind) and after, and what is left in its temporary folder: entries other
than its marker and the folders of the results it keeps (the answers' ids, at most
``KEEP_RESULTS``). When the script started the server, it also says whether SIGTERM removed the
folder. Only ``127.0.0.1``/``localhost`` URLs are accepted; ``--requests`` and ``--time_limit_s``
bound the run.
"""

from __future__ import annotations

import argparse
import http.client
import io
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import numpy as np
from PIL import Image

from iqeclip.serve import MARKER, PREFIX
from iqeclip.serve.jobs import KEEP_RESULTS

LOOPBACK = ("127.0.0.1", "localhost")
START_TIMEOUT_S = 180  # importing torch and loading the model, on a busy machine


@dataclass
class Server:
    """An ``iqeclip serve`` process started by :func:`start_server`."""

    url: str
    proc: subprocess.Popen
    tmpdir: Path  # its TMPDIR
    log: Path  # its stdout and stderr

    def folder(self) -> Path | None:
        """The server's temporary folder (the one whose marker has its pid), or None."""
        return server_folder(self.proc.pid, self.tmpdir)

    def stop(self, sig: int = signal.SIGTERM, timeout_s: float = 60) -> int:
        """Send ``sig`` and wait for the process; returns its return code."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.proc.wait(timeout=timeout_s)


def server_folder(pid: int, tmpdir: Path) -> Path | None:
    """The temporary folder of the server with process id ``pid`` in ``tmpdir``, or None."""
    for marker in tmpdir.glob(f"{PREFIX}*/{MARKER}"):
        try:
            if json.loads(marker.read_text("utf-8")).get("pid") == pid:
                return marker.parent
        except (OSError, ValueError):
            continue
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url: str, timeout_s: float = 10) -> tuple[int, bytes]:
    """``GET url``: its status and body (an HTTP error status too)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


@contextmanager
def start_server(ckpt: Path, tmpdir: Path, *args: str) -> Iterator[Server]:
    """Run ``iqeclip serve --ckpt_path ckpt --device cpu *args`` on a free port of 127.0.0.1,
    with ``TMPDIR=tmpdir``; yields it once it answers, and kills it (if still running) after."""
    port = free_port()
    log = tmpdir / f"serve-{port}.log"
    argv = [sys.executable, "-m", "iqeclip", "serve", "--ckpt_path", str(ckpt)]
    argv += ["--port", str(port), "--device", "cpu", *args]
    with log.open("wb") as out:
        proc = subprocess.Popen(
            argv, stdout=out, stderr=subprocess.STDOUT, env={**os.environ, "TMPDIR": str(tmpdir)}
        )
    server = Server(f"http://127.0.0.1:{port}", proc, tmpdir, log)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"iqeclip serve did not start:\n{log.read_text()[-2000:]}")
            try:
                if get(f"{server.url}/api/model", timeout_s=2)[0] == 200:
                    break
            except OSError:
                time.sleep(0.2)
        yield server
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def uploads() -> list[tuple[str, str, bytes, bool]]:
    """The uploads cycled through: (kind, file name, bytes, valid)."""
    import nibabel as nib
    from pydicom.data import get_testdata_file

    ramp = np.linspace(0, 255, 48 * 40).reshape(48, 40).astype(np.uint8)
    ramp[10:20, 10:20] = 255
    buffer = io.BytesIO()
    Image.fromarray(ramp).save(buffer, format="PNG")
    png = buffer.getvalue()
    volume = np.random.default_rng(0).random((32, 32, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "scan.nii.gz"
        nib.Nifti1Image(volume, np.eye(4)).to_filename(path)
        nifti = path.read_bytes()
    dicom = Path(get_testdata_file("CT_small.dcm")).read_bytes()
    garbage = np.random.default_rng(1).bytes(4096)
    return [
        ("png", "ramp.png", png, True),
        ("nifti", "scan.nii.gz", nifti, True),
        ("dicom", "CT_small.dcm", dicom, True),
        ("garbage", "garbage.png", garbage, False),
        ("truncated", "truncated.png", png[: len(png) // 2], False),
    ]


def post(url: str, name: str, data: bytes, timeout_s: float = 120) -> tuple[int, dict[str, Any]]:
    """``POST /api/predict`` of one file (multipart, no ``Origin``): status and JSON answer."""
    boundary = uuid.uuid4().hex
    body = (
        (
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode()
        + data
        + f"\r\n--{boundary}--\r\n".encode()
    )
    request = urllib.request.Request(
        f"{url}/api/predict",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status, text = response.status, response.read()
    except urllib.error.HTTPError as exc:
        status, text = exc.code, exc.read()
    try:
        return status, json.loads(text)
    except ValueError:
        return status, {"error": text[:200].decode("utf-8", "replace")}


def rss_mb(pid: int) -> tuple[float, float]:
    """The process's resident memory now and at its peak (``VmRSS``, ``VmHWM``), in MB."""
    fields = dict(
        line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines()
    )
    return tuple(int(fields[key].split()[0]) / 1024 for key in ("VmRSS", "VmHWM"))


def open_fds(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/fd"))


def settled_fds(pid: int, target: int, wait_s: float = 5) -> int:
    """The open descriptors, once they are down to ``target`` or ``wait_s`` passed (closed
    connections are released by the server's event loop a moment later)."""
    deadline = time.monotonic() + wait_s
    while (count := open_fds(pid)) > target and time.monotonic() < deadline:
        time.sleep(0.1)
    return count


def percentile(values: list[float], q: float) -> float | None:
    return float(np.percentile(values, q)) if values else None


def run_load(
    url: str,
    pid: int | None,
    tmpdir: Path | None = None,
    requests: int = 300,
    concurrency: int = 16,
    time_limit_s: float = 600,
) -> dict[str, Any]:
    """Send ``requests`` uploads, ``concurrency`` at once, to the server at ``url``; with its
    ``pid`` (and the ``tmpdir`` it runs with), measure it before and after. Requests not sent
    within ``time_limit_s`` are counted as ``not_sent``."""
    host = urlsplit(url).hostname
    if host not in LOOPBACK:
        raise SystemExit(f"--url {url}: only a server on this machine ({'/'.join(LOOPBACK)})")
    files = uploads()
    for kind, name, data, valid in files:  # warm-up: lazy imports, first allocations
        status, answer = post(url, name, data)
        if (status == 200) != valid:
            raise SystemExit(f"warm-up {kind} upload answered {status}: {answer}")
    before = (rss_mb(pid), open_fds(pid)) if pid else None
    start = time.monotonic()

    def one(i: int) -> dict[str, Any]:
        kind, name, data, valid = files[i % len(files)]
        if time.monotonic() - start > time_limit_s:
            return {"kind": kind, "valid": valid, "status": None}
        t0 = time.monotonic()
        try:
            status, answer = post(url, name, data)
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, cut, timed out
            status, answer = 0, {"error": f"{type(exc).__name__}: {exc}"}
        seconds = time.monotonic() - t0
        return {"kind": kind, "valid": valid, "status": status, "s": seconds, **answer}

    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(requests)))
    wall = time.monotonic() - start
    sent = [r for r in results if r["status"] is not None]
    valid = [r for r in sent if r["valid"]]
    invalid = [r for r in sent if not r["valid"]]
    bad_valid = [r for r in valid if r["status"] != 200]
    latencies = [r["s"] * 1000 for r in sent]
    report: dict[str, Any] = {
        "url": url,
        "requests": requests,
        "concurrency": concurrency,
        "not_sent": requests - len(sent),
        "wall_s": round(wall, 2),
        "requests_per_s": round(len(sent) / wall, 2),
        "valid": {
            "count": len(valid),
            "errors": len(bad_valid),
            "error_rate": len(bad_valid) / len(valid) if valid else None,
            "first_errors": [(r["kind"], r["status"], r.get("error")) for r in bad_valid[:5]],
        },
        "invalid": {
            "count": len(invalid),
            "statuses": _count(r["status"] for r in invalid),
            "not_4xx": sum(not 400 <= r["status"] < 500 for r in invalid),
        },
        "latency_ms": {
            f"p{q}": round(percentile(latencies, q), 1) for q in (50, 95, 99) if latencies
        },
        "server": None,
        "temp": None,
    }
    if pid:
        (rss_before, _), fds_before = before
        rss_after, peak = rss_mb(pid)
        report["server"] = {
            "pid": pid,
            "rss_mb_before": round(rss_before, 1),
            "rss_mb_after": round(rss_after, 1),
            "rss_growth_mb": round(rss_after - rss_before, 1),
            "rss_peak_mb": round(peak, 1),
            "fds_before": fds_before,
            "fds_after": settled_fds(pid, fds_before),
        }
        folder = server_folder(pid, tmpdir or Path(tempfile.gettempdir()))
        if folder is not None:
            ids = {r["id"] for r in valid if r["status"] == 200}
            entries = [p for p in folder.iterdir() if p.name != MARKER]
            kept = [p for p in entries if p.is_dir() and p.name in ids]
            stray = sorted(p.name for p in entries if p not in kept)
            report["temp"] = {
                "folder": str(folder),
                "kept_results": len(kept),
                "keep_limit": KEEP_RESULTS,
                "stray": stray,
                "left": len(stray) + max(0, len(kept) - KEEP_RESULTS),
            }
    return report


def _count(values: Any) -> dict[str, int]:
    counts: dict[str, int] = {}
    for value in values:
        counts[str(value)] = counts.get(str(value), 0) + 1
    return counts


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument("--url", help="a running server, http://127.0.0.1:PORT")
    target.add_argument("--ckpt", type=Path, help="start `iqeclip serve --ckpt_path CKPT` here")
    parser.add_argument("--pid", type=int, help="with --url: the server's process id")
    parser.add_argument(
        "--tmpdir", type=Path, help="with --url: the server's TMPDIR (default: this one's)"
    )
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--time_limit_s", type=float, default=600)
    parser.add_argument("--out", type=Path, help="write the report here (default: stdout)")
    args = parser.parse_args(argv)
    bounds = dict(
        requests=args.requests, concurrency=args.concurrency, time_limit_s=args.time_limit_s
    )
    if args.url:
        report = run_load(args.url.rstrip("/"), args.pid, args.tmpdir, **bounds)
    else:
        with (
            tempfile.TemporaryDirectory(prefix="serve-load-") as tmp,
            start_server(args.ckpt, Path(tmp)) as server,
        ):
            report = run_load(server.url, server.proc.pid, Path(tmp), **bounds)
            folder = server.folder()
            code = server.stop()
            report["after_sigterm"] = {
                "returncode": code,
                "folder_removed": folder is not None and not folder.exists(),
            }
    text = json.dumps(report, indent=2)
    if args.out:
        args.out.write_text(text + "\n")
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
