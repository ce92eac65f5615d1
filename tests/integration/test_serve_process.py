"""``iqeclip serve`` as a process on 127.0.0.1: slow clients cut off at their deadlines, a cap on
connections, its temporary folder removed on SIGTERM and, after a SIGKILL, by the next server,
and a bounded load test (``scripts/serve_load.py``)."""

from __future__ import annotations

import importlib.util
import json
import os
import select
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from iqeclip.serve import MARKER, PREFIX, process_start, remove_stale

pytest.importorskip("fastapi")
pytest.importorskip("nibabel")
pytest.importorskip("pydicom")

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location("serve_load", ROOT / "scripts" / "serve_load.py")
load = importlib.util.module_from_spec(_spec)
sys.modules[_spec.name] = load  # its dataclass looks its module up
_spec.loader.exec_module(load)

HEADER_S, BODY_S, MAX_CONNECTIONS = 2.0, 3.0, 24
MARGIN_S = 2.0  # a closed connection is seen at most this long after its deadline
TRICKLE_S = 0.25  # a slow client sends one byte this often
RSS_GROWTH_MB = 150  # 300 uploads after the warm-up: measured 50-60 MB (the same at 1500)
FD_MARGIN = 2

pytestmark = pytest.mark.slow


def png() -> bytes:
    return load.uploads()[0][2]


@pytest.fixture(scope="module")
def timed(checkpoint, tmp_path_factory):
    """A server with short deadlines, a cap of 24 connections and a 1 MB upload limit."""
    tmp = tmp_path_factory.mktemp("timed")
    args = ["--header_timeout_s", str(HEADER_S), "--body_timeout_s", str(BODY_S)]
    args += ["--max_connections", str(MAX_CONNECTIONS), "--max_upload_mb", "1"]
    with load.start_server(checkpoint, tmp, *args) as server:
        yield server


class Slow:
    """A client socket that sends ``first`` at once, then one byte of ``trickle`` at a time;
    records what the server answers and when it closes the connection."""

    def __init__(self, port: int, kind: str, first: bytes, trickle: bytes) -> None:
        self.kind, self.trickle, self.answer = kind, trickle, b""
        self.sock = socket.create_connection(("127.0.0.1", port))
        self.opened = time.monotonic()
        self.sock.sendall(first)
        self.closed: float | None = None

    def poll(self) -> None:
        """Read what arrived; on end of stream (or a reset), record the closing time."""
        try:
            while select.select([self.sock], [], [], 0)[0]:
                chunk = self.sock.recv(65536)
                if not chunk:
                    break
                self.answer += chunk
            else:
                return
        except ConnectionResetError:
            pass
        self.closed = time.monotonic() - self.opened
        self.sock.close()

    def step(self) -> None:
        self.poll()
        if self.closed is None:
            try:
                self.sock.sendall(self.trickle[:1])
                self.trickle = self.trickle[1:] or self.trickle
            except OSError:  # closed meanwhile: the next poll sees it
                pass


def slow_clients(port: int, n: int) -> list[Slow]:
    host = f"Host: 127.0.0.1:{port}\r\n".encode()
    post = b"POST /api/predict HTTP/1.1\r\n" + host
    multipart = b"Content-Type: multipart/form-data; boundary=b\r\n"
    kinds = {
        "silent": (b"", b""),
        "header": (b"P", b"OST /api/predict HTTP/1.1\r\nX-Slow: " + b"a" * 200),
        "body": (post + multipart + b"Content-Length: 100000\r\n\r\n--b\r\n", b"x" * 1000),
        # answered at once (over --max_upload_mb): the trickled body must not hold it open
        "answered": (post + multipart + b"Content-Length: 5000000\r\n\r\n", b"x" * 1000),
        # one request served on a kept-alive connection, then the next one's headers trickle
        "kept-alive": (b"GET /api/model HTTP/1.1\r\n" + host + b"\r\nG", b"ET / HTTP/1.1\r\n"),
    }
    names = list(kinds)
    return [Slow(port, names[i % len(names)], *kinds[names[i % len(names)]]) for i in range(n)]


def test_slow_clients_are_cut_off_at_their_deadlines_while_others_are_served(timed):
    port = int(timed.url.rsplit(":", 1)[1])
    clients = slow_clients(port, 20)
    served: dict[str, tuple[int, float]] = {}

    def normal() -> None:
        time.sleep(0.5)
        status, _ = load.get(f"{timed.url}/api/model")
        served["model"] = (status, time.monotonic())
        status, _ = load.post(timed.url, "ramp.png", png())
        served["predict"] = (status, time.monotonic())

    thread = threading.Thread(target=normal)
    thread.start()
    deadline = time.monotonic() + max(HEADER_S, BODY_S) + MARGIN_S + 1
    while time.monotonic() < deadline and any(c.closed is None for c in clients):
        for client in clients:
            if client.closed is None:
                client.step()
        time.sleep(TRICKLE_S)
    thread.join(60)
    timed_out = [c for c in clients if c.kind != "answered"]
    first_close = min(c.opened + c.closed for c in timed_out if c.closed is not None)
    assert served["model"][0] == 200 and served["model"][1] < first_close
    assert served["predict"][0] == 200
    for c in clients:
        assert c.closed is not None, f"{c.kind} client still connected"
        body = c.kind in ("body", "answered")
        limit, flag = (BODY_S, "body_timeout_s") if body else (HEADER_S, "header_timeout_s")
        assert c.closed <= limit + MARGIN_S, (c.kind, c.closed)
        if c.kind != "answered":  # the others are closed by their deadline, never before it
            assert c.closed >= limit - 0.05, (c.kind, c.closed)
        *before, last = c.answer.split(b"HTTP/1.1 ")
        if c.kind == "answered":
            assert last.startswith(b"413 ")
        else:
            assert last.startswith(b"408 Request Timeout"), (c.kind, c.answer)
            error = json.loads(last.split(b"\r\n\r\n", 1)[1])["error"]
            assert f"--{flag}" in error
        assert len(before) == 1 + (c.kind == "kept-alive")  # the served request's answer
    log = timed.log.read_text()
    assert "Traceback" not in log and "did not arrive within" in log


def test_connections_over_the_cap_are_answered_503(timed):
    port = int(timed.url.rsplit(":", 1)[1])
    for idle, expected in ((MAX_CONNECTIONS - 1, 200), (MAX_CONNECTIONS, 503)):
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(idle)]
        time.sleep(0.3)  # accepted by the server's event loop
        assert load.get(f"{timed.url}/api/model")[0] == expected
        for s in held:
            s.close()
        time.sleep(0.3)
    assert load.get(f"{timed.url}/api/model")[0] == 200


def upload(server) -> str:
    status, answer = load.post(server.url, "ramp.png", png())
    assert status == 200, answer
    return answer["id"]


def test_sigterm_removes_the_server_folder(checkpoint, tmp_path):
    with load.start_server(checkpoint, tmp_path) as server:
        folder = server.folder()
        rid = upload(server)
        assert (folder / rid / "out" / "predictions.csv").is_file()
        assert json.loads((folder / MARKER).read_text())["pid"] == server.proc.pid
        assert server.stop(signal.SIGTERM) == -signal.SIGTERM  # ends as SIGTERM means
    assert not folder.exists() and not list(tmp_path.glob(f"{PREFIX}*"))


def test_next_server_removes_what_a_killed_one_left(checkpoint, tmp_path):
    with load.start_server(checkpoint, tmp_path) as killed:
        left = killed.folder()
        rid = upload(killed)
        killed.stop(signal.SIGKILL)
    assert (left / rid / "out" / "predictions.csv").is_file()  # SIGKILL: nothing can clean
    unmarked = tmp_path / f"{PREFIX}unmarked"
    (unmarked / "upload").mkdir(parents=True)
    running = tmp_path / f"{PREFIX}running"  # a server that still runs: this test's process
    running.mkdir()
    marker = {"host": socket.gethostname(), "pid": os.getpid(), "start": process_start(os.getpid())}
    (running / MARKER).write_text(json.dumps(marker))
    with load.start_server(checkpoint, tmp_path) as server:
        assert not left.exists()
        assert unmarked.is_dir() and running.is_dir()
        assert server.folder().is_dir()
        assert "removed 1 folder(s) earlier servers left" in server.log.read_text()
        server.stop()


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def marked(folder: Path, pid: int, start: str | None, host: str | None = None) -> Path:
    folder.mkdir()
    marker = {"host": host or socket.gethostname(), "pid": pid, "start": start}
    (folder / MARKER).write_text(json.dumps(marker))
    (folder / "result").mkdir()
    return folder


def test_remove_stale_removes_only_dead_servers_folders(tmp_path):
    me = os.getpid()
    dead = marked(tmp_path / f"{PREFIX}dead", dead_pid(), None)
    reused = marked(tmp_path / f"{PREFIX}reused", me, "1")  # the pid now names another process
    alive = marked(tmp_path / f"{PREFIX}alive", me, process_start(me))
    remote = marked(tmp_path / f"{PREFIX}remote", dead_pid(), None, host="another-host")
    (tmp_path / f"{PREFIX}garbled").mkdir()
    (tmp_path / f"{PREFIX}garbled" / MARKER).write_text("{not json")
    (tmp_path / f"{PREFIX}nomarker").mkdir()
    elsewhere = marked(tmp_path / "elsewhere", dead_pid(), None)
    (tmp_path / f"{PREFIX}link").symlink_to(elsewhere)
    other = marked(tmp_path / "other-name", dead_pid(), None)  # not named iqeclip-serve-*
    assert sorted(remove_stale(tmp_path)) == [dead, reused]
    left = {p.name for p in tmp_path.iterdir()}
    assert left == {alive.name, remote.name, elsewhere.name, other.name} | {
        f"{PREFIX}{name}" for name in ("garbled", "nomarker", "link")
    }
    assert (elsewhere / "result").is_dir()


@pytest.mark.skipif(os.getuid() != 0, reason="giving a folder to another user needs root")
def test_remove_stale_keeps_another_users_folder(tmp_path):
    folder = marked(tmp_path / f"{PREFIX}theirs", dead_pid(), None)
    os.chown(folder, 54321, 54321)
    assert remove_stale(tmp_path) == [] and folder.is_dir()


def test_load_short_form(checkpoint, tmp_path):
    with load.start_server(checkpoint, tmp_path) as server:
        report = load.run_load(server.url, server.proc.pid, tmp_path, 300, 16, time_limit_s=120)
        folder = server.folder()
        assert server.stop() == -signal.SIGTERM
    assert report["not_sent"] == 0
    assert report["valid"]["count"] == 180 and report["valid"]["errors"] == 0
    assert report["invalid"]["count"] == 120 and report["invalid"]["not_4xx"] == 0
    s = report["server"]
    assert s["rss_growth_mb"] < RSS_GROWTH_MB, s
    assert s["fds_after"] <= s["fds_before"] + FD_MARGIN, s
    assert report["temp"]["left"] == 0, report["temp"]
    assert report["temp"]["kept_results"] == load.KEEP_RESULTS
    assert not folder.exists()
