"""``iqeclip serve``: a local web viewer and JSON API over ``predict`` (docs/serve.md).

The detector is loaded once; each upload is scored by the same ``predict`` as the command line
(:mod:`iqeclip.serve.jobs`), and the page (:mod:`iqeclip.serve.app`, ``static/``) shows the image
with its heat map, the score, the decision and, for a volume, every slice. FastAPI and uvicorn
come with the ``iqeclip[serve]`` extra and are imported only here.

Uploads and results live in the server's own temporary folder, ``iqeclip-serve-*`` in the
system's temporary folder (``TMPDIR``). It is removed when the server stops, on Ctrl-C and on
SIGTERM alike, and a marker file in it names the process that made it: a server that starts
removes the folders of earlier servers that were killed (SIGKILL, a power cut) and are gone.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import signal
import socket
import stat
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from iqeclip.config import ServeConfig
from iqeclip.errors import UserError, param
from iqeclip.runtime.files import atomic_write_text

logger = logging.getLogger(__name__)

PREFIX = "iqeclip-serve-"
"""The name of every server's temporary folder begins with it."""
MARKER = "iqeclip-serve.json"
"""The file in the server's folder that marks it as a server's: its host, pid and start time."""


def _check_port(host: str, port: int) -> None:
    """Refuse, before the model is loaded, an address that cannot be listened on."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise UserError(
            f"{param('host')} {host} {param('port')} {port}: cannot listen there ({exc.strerror})"
        ) from None


def process_start(pid: int) -> str | None:
    """When process ``pid`` started, in the kernel's clock ticks since boot (Linux), or None
    where that cannot be read (no such process, no ``/proc``). With the pid it names one process
    for good: a pid is reused, a pid and its start time are not."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[19]  # field 22; the name in (...) may hold spaces


def _running(pid: int, start: str | None) -> bool:
    """Whether the process a marker names still runs (when unsure: yes)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process now has the pid: ours is gone
        return False
    now = process_start(pid)
    return start is None or now is None or now == start


def _marker(folder: Path) -> dict[str, Any] | None:
    """The marker of a server's folder, or None where there is none (then it is not ours)."""
    path = folder / MARKER
    try:
        if not path.is_file() or path.is_symlink():
            return None
        marker = json.loads(path.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(marker, dict) or not isinstance(marker.get("pid"), int):
        return None
    return marker


def remove_stale(tmp: Path) -> list[Path]:
    """Remove what earlier servers left in ``tmp``: folders named ``iqeclip-serve-*``, owned by
    this user, with the marker of a server on this host whose process is gone. Anything else is
    kept: another user's folder, a link, a folder without a marker, one of another host (a
    shared or mounted temporary folder: its pids are not this host's), one whose server runs.

    Returns:
        The folders removed.
    """
    removed = []
    for folder in sorted(tmp.glob(f"{PREFIX}*")):
        try:
            info = folder.lstat()
        except OSError:
            continue
        if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.getuid():  # lstat: no links
            continue
        marker = _marker(folder)
        if (
            marker is None
            or marker.get("host") != socket.gethostname()
            or _running(marker["pid"], marker.get("start"))
        ):
            continue
        shutil.rmtree(folder, ignore_errors=True)
        if not folder.exists():
            removed.append(folder)
    return removed


@contextlib.contextmanager
def workspace() -> Iterator[Path]:
    """The server's temporary folder, marked with this host's name and this process's pid and
    start time, removed on exit; folders that killed servers left are removed first
    (:func:`remove_stale`)."""
    tmp = Path(tempfile.gettempdir())
    removed = remove_stale(tmp)
    if removed:
        logger.info(f"removed {len(removed)} folder(s) earlier servers left in {tmp}")
    root = Path(tempfile.mkdtemp(prefix=PREFIX, dir=tmp))
    try:
        pid = os.getpid()
        host = socket.gethostname()
        marker = {"host": host, "pid": pid, "start": process_start(pid), "time": time.time()}
        atomic_write_text(root / MARKER, json.dumps(marker))
        yield root
    finally:
        shutil.rmtree(root, ignore_errors=True)


class _Terminated(Exception):
    """SIGTERM: unwinds the server, so that its folder is removed before the process ends."""


def _terminate(signum: int, frame: Any) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)  # once: a second one cannot cut the clean-up
    raise _Terminated


def serve(cfg: ServeConfig, model_overrides: dict[str, Any]) -> None:
    """Load the detector and serve the page and API until interrupted (Ctrl-C or SIGTERM)."""
    try:
        import uvicorn

        from iqeclip.serve.app import create_app
        from iqeclip.serve.protocol import timed_protocol
    except ImportError as exc:
        raise UserError(
            f"iqeclip serve needs {exc.name}: pip install 'iqeclip[serve]' (FastAPI, uvicorn)"
        ) from None
    from iqeclip.inference.detectors import load_detector
    from iqeclip.serve.jobs import ServeLimits

    _check_port(cfg.host, cfg.port)
    detector = load_detector(cfg.backend, cfg.ckpt_path, cfg.model, cfg.device, model_overrides)
    source = str(cfg.model if cfg.backend == "onnx" else cfg.ckpt_path)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            f"warning: --host {cfg.host}: every machine that reaches it can upload scans and "
            "read the results; there is no login"
        )
    # uvicorn handles SIGTERM by stopping, then raises it again once its own handler is gone: ours
    # turns it into an exception that unwinds through workspace(), then ends the process with it
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        with workspace() as tmp:
            app = create_app(
                detector,
                source,
                tmp,
                cfg.max_upload_mb,
                cfg.batch_size,
                cfg.backend,
                allowed_hosts=[cfg.host, *cfg.allowed_hosts],
                limits=ServeLimits.of(cfg),
            )
            logger.info(f"serving {source} at http://{cfg.host}:{cfg.port}/ (Ctrl-C stops)")
            uvicorn.run(
                app,
                host=cfg.host,
                port=cfg.port,
                log_level="warning",
                http=timed_protocol(cfg.header_timeout_s, cfg.body_timeout_s),
                limit_concurrency=cfg.max_connections + 1,  # uvicorn counts the one asking
            )
    except _Terminated:
        sys.stdout.flush()
        sys.stderr.flush()
        signal.signal(signal.SIGTERM, previous)
        signal.raise_signal(signal.SIGTERM)
    finally:
        signal.signal(signal.SIGTERM, previous)
