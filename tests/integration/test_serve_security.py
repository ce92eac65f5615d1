"""``iqeclip serve`` against a hostile page and a hostile client (issue 26): other sites and
rebound names are refused, the upload limit counts the bytes that arrive, odd names are the
client's one-line 400, a full disk is a 507, and bad limits stop the command before the model
loads.

Requests go through FastAPI's test client, or as raw HTTP to a real uvicorn on 127.0.0.1 where
the test client cannot say it (a chunked body that lies about its length)."""

from __future__ import annotations

import base64
import dataclasses
import errno
import functools
import http.server
import importlib.util
import io
import json
import math
import socket
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from iqeclip import config as config_module
from iqeclip.cli.main import main
from iqeclip.config.option import option_of
from iqeclip.errors import UserError
from iqeclip.model.detector import IQEClip

pytest.importorskip("fastapi")
pytest.importorskip("pydicom")
pytest.importorskip("nibabel")
from fastapi.testclient import TestClient

from iqeclip.inference import detectors, writers
from iqeclip.serve import jobs as jobs_module
from iqeclip.serve.app import create_app
from tests.integration.test_serve import cli_rows, png16, series_zip

ROOT = Path(__file__).resolve().parents[2]
_spec = importlib.util.spec_from_file_location(
    "screenshot_serve", ROOT / "scripts" / "screenshot_serve.py"
)
shot = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(shot)

LOOPBACK = "http://127.0.0.1:8000"  # the test client's address, as a loopback server's


@pytest.fixture(scope="module")
def detector(checkpoint):
    return IQEClip.from_checkpoint(checkpoint)


@pytest.fixture
def root(tmp_path):
    folder = tmp_path / "server"
    folder.mkdir()
    return folder


def app_for(detector, checkpoint, root, max_upload_mb=20.0, allowed_hosts=()):
    return create_app(
        detector, str(checkpoint), root, max_upload_mb, 4, "torch", allowed_hosts=allowed_hosts
    )


@pytest.fixture
def client(detector, checkpoint, root):
    """A client of a server bound to 127.0.0.1:8000; server errors raise in the test."""
    return TestClient(app_for(detector, checkpoint, root), base_url=LOOPBACK)


@pytest.fixture
def scored(monkeypatch):
    """The uploads that reached predict (none, for a refused request)."""
    calls = []
    real = jobs_module.predict

    def recording(*args, **kwargs):
        calls.append(args[1])
        return real(*args, **kwargs)

    monkeypatch.setattr(jobs_module, "predict", recording)
    return calls


def one_line_error(response) -> str:
    body = response.json()
    assert set(body) == {"error"}
    assert "\n" not in body["error"] and "Traceback" not in body["error"]
    return body["error"]


def no_traceback(caplog) -> None:
    assert not [r for r in caplog.records if r.exc_info], caplog.text
    assert "Traceback" not in caplog.text


def no_cors(response) -> None:
    assert not [h for h in response.headers if h.lower().startswith("access-control-")]


# 1. other sites and DNS rebinding


def test_cross_site_form_post_is_refused_and_never_scored(client, root, scored, tmp_path):
    image = png16(tmp_path / "a.png")
    for origin in ("http://evil.example", "http://127.0.0.1:9999", "null", "http://127.0.0.1"):
        r = client.post(
            "/api/predict",
            files={"file": (image.name, image.read_bytes())},  # multipart, as a form sends it
            headers={"Origin": origin},
        )
        assert r.status_code == 403, origin
        assert "another site" in one_line_error(r)
        assert r.headers["connection"] == "close"
        no_cors(r)
    r = client.options(
        "/api/predict",
        headers={"Origin": "http://evil.example", "Access-Control-Request-Method": "POST"},
    )
    assert r.status_code == 403
    no_cors(r)
    assert scored == [] and list(root.iterdir()) == []
    # the page's own origin (every loopback name with the port), and no Origin at all, are served
    for origin in ("http://127.0.0.1:8000", "http://localhost:8000", "http://[::1]:8000", None):
        headers = {"Origin": origin} if origin else {}
        r = client.post(
            "/api/predict", files={"file": (image.name, image.read_bytes())}, headers=headers
        )
        assert r.status_code == 200, (origin, r.text)
        no_cors(r)
    assert len(scored) == 4


def test_rebound_host_is_refused(client):
    for host in ("evil.example:8000", "evil.example", "127.0.0.1:8001", "127.0.0.1.evil.example"):
        r = client.get("/api/model", headers={"Host": host})
        assert r.status_code == 403, host
        assert "is not this server's address" in one_line_error(r)
    for host in ("127.0.0.1:8000", "localhost:8000", "[::1]:8000", "LOCALHOST:8000", "localhost"):
        assert client.get("/api/model", headers={"Host": host}).status_code == 200, host


def test_cross_site_fetch_is_refused_but_a_followed_link_opens_the_page(client):
    fetch = {"Sec-Fetch-Site": "cross-site", "Sec-Fetch-Mode": "cors", "Sec-Fetch-Dest": "empty"}
    r = client.get("/api/model", headers=fetch)
    assert r.status_code == 403 and "cross-site" in one_line_error(r)
    frame = {
        "Sec-Fetch-Site": "cross-site",
        "Sec-Fetch-Mode": "navigate",
        "Sec-Fetch-Dest": "iframe",
    }
    assert client.get("/", headers=frame).status_code == 403
    link = {**frame, "Sec-Fetch-Dest": "document"}
    r = client.get("/", headers=link)
    assert r.status_code == 200 and r.headers["x-frame-options"] == "DENY"
    same = {"Sec-Fetch-Site": "same-origin", "Sec-Fetch-Mode": "cors", "Origin": LOOPBACK}
    assert client.get("/api/model", headers=same).status_code == 200


class Statuses:
    """ASGI wrapper: the status of every answer, by path."""

    def __init__(self, app):
        self.app, self.seen = app, []

    async def __call__(self, scope, receive, send):
        async def noted(message):
            if message["type"] == "http.response.start":
                self.seen.append((scope["path"], message["status"]))
            await send(message)

        await self.app(scope, receive, noted)


@pytest.mark.slow
@pytest.mark.skipif(shot.browser_paths() is None, reason="chromium and chromedriver are needed")
def test_a_page_of_another_origin_cannot_drive_the_server_in_chromium(
    detector, checkpoint, root, scored, tmp_path
):
    from selenium.webdriver.support.ui import WebDriverWait

    server = Statuses(app_for(detector, checkpoint, root))
    image = base64.b64encode(png16(tmp_path / "a.png").read_bytes()).decode()
    evil = tmp_path / "evil"
    evil.mkdir()
    with shot.start_server(server) as url, shot.chromium() as driver:
        # another origin on this machine (a page the user opened): posts a scan with a simple
        # request (multipart, no preflight) and tries to read the model
        (evil / "index.html").write_text(
            f"""<script>
const bytes = Uint8Array.from(atob("{image}"), c => c.charCodeAt(0));
const form = new FormData();
form.append("file", new Blob([bytes]), "a.png");
fetch("{url}/api/predict", {{method: "POST", body: form, mode: "no-cors"}})
  .then(() => fetch("{url}/api/model"))
  .then(r => r.text(), e => "unread")
  .then(t => {{ document.title = "done " + t; }});
</script>"""
        )
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=evil)
        with http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler) as other:
            threading.Thread(target=other.serve_forever, daemon=True).start()
            try:
                driver.get(f"http://localhost:{other.server_address[1]}/index.html")
                WebDriverWait(driver, 30).until(lambda d: d.title.startswith("done"))
            finally:
                other.shutdown()
        assert driver.title == "done unread"
        # the browser sent both (with the other page's Origin), and the server refused both
        assert server.seen == [("/api/predict", 403), ("/api/model", 403)]
        # the page itself still works in the same browser
        scan = tmp_path / "scan.png"
        scan.write_bytes(base64.b64decode(image))
        shot.upload_and_wait(driver, url, scan)
        assert ("/api/predict", 200) in server.seen
    assert len(scored) == 1


def test_allowed_hosts_add_names_and_ports(detector, checkpoint, root):
    app = app_for(detector, checkpoint, root, allowed_hosts=["Viewer.LAN", "proxy.lan:443"])
    client = TestClient(app, base_url=LOOPBACK)
    for host in ("viewer.lan:8000", "viewer.lan", "proxy.lan", "proxy.lan:443", "localhost:8000"):
        assert client.get("/api/model", headers={"Host": host}).status_code == 200, host
    for host in ("viewer.lan:9000", "proxy.lan:8000", "other.lan:8000"):
        assert client.get("/api/model", headers={"Host": host}).status_code == 403, host
    for origin, status in (
        ("http://viewer.lan:8000", 200),
        ("https://proxy.lan", 200),  # port 443
        ("http://proxy.lan", 403),  # port 80
        ("http://viewer.lan", 403),
    ):
        r = client.get("/api/model", headers={"Origin": origin})
        assert r.status_code == status, origin


def test_allowed_hosts_option_is_a_comma_list_checked_before_the_model_loads(
    checkpoint, monkeypatch, capsys
):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(detectors, "load_detector", no_model)
    argv = ["serve", "--ckpt_path", str(checkpoint), "--print_config"]
    assert main([*argv, "--allowed_hosts", "viewer.lan,10.0.0.5:8000"]) == 0
    assert "- viewer.lan\n  - 10.0.0.5:8000" in capsys.readouterr().out
    argv = ["serve", "--ckpt_path", str(checkpoint), "--allowed_hosts", "http://viewer.lan"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--allowed_hosts" in err and "'http://viewer.lan'" in err


# 2. the upload limit counts the bytes that arrive


class Received:
    """ASGI wrapper: the sizes of the body messages the app received."""

    def __init__(self, app):
        self.app, self.sizes = app, []

    async def __call__(self, scope, receive, send):
        async def counted():
            message = await receive()
            if message["type"] == "http.request":
                self.sizes.append(len(message.get("body", b"")))
            return message

        await self.app(scope, counted, send)


def raw_request(port: int, head: str, chunks, seconds: float = 20) -> tuple[bytes, int]:
    """Send ``head`` and then ``chunks`` as HTTP chunked encoding to 127.0.0.1:port until the
    server answers or closes; returns its answer and the body bytes sent."""
    sent = 0
    deadline = time.monotonic() + seconds
    with socket.create_connection(("127.0.0.1", port), timeout=seconds) as s:
        s.sendall(head.encode())
        s.setblocking(False)
        answer = b""
        for chunk in chunks:
            assert time.monotonic() < deadline, "the server neither answered nor closed"
            try:
                answer += s.recv(65536)
                break  # answered (or closed: b"") while the body was still coming
            except BlockingIOError:
                pass
            try:
                s.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
                sent += len(chunk)
            except (BrokenPipeError, ConnectionResetError, BlockingIOError):
                break
        s.settimeout(max(deadline - time.monotonic(), 0.1))
        try:
            while part := s.recv(65536):
                answer += part
        except (ConnectionResetError, TimeoutError):
            pass
    return answer, sent


def multipart_start(name: str = "big.png") -> bytes:
    return (
        f'--x\r\nContent-Disposition: form-data; name="file"; filename="{name}"\r\n'
        "Content-Type: application/octet-stream\r\n\r\n"
    ).encode()


def test_chunked_body_with_a_small_length_stops_at_the_limit(
    detector, checkpoint, root, scored, caplog
):
    limit = 1_000_000
    received = Received(app_for(detector, checkpoint, root, max_upload_mb=limit / 1e6))
    chunk = bytes(64 * 1024)
    with shot.start_server(received) as url:
        port = int(url.rsplit(":", 1)[1])
        head = (
            f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
            "Content-Type: multipart/form-data; boundary=x\r\nContent-Length: 100\r\n"
            "Transfer-Encoding: chunked\r\n\r\n"
        )
        body = [multipart_start(), *[chunk] * 320]  # 20 MB, twenty times the limit
        answer, sent = raw_request(port, head, body)
        status, _, rest = answer.partition(b"\r\n")
        assert status.startswith(b"HTTP/1.1 413"), answer[:300]
        error = json.loads(rest.partition(b"\r\n\r\n")[2])["error"]
        assert error.startswith("upload stopped at 1.") and "--max_upload_mb" in error
        # the app stopped at the first message over the limit: at most one chunk beyond it
        assert sum(received.sizes[:-1]) <= limit < sum(received.sizes)
        assert sum(received.sizes) <= limit + max(received.sizes)
        assert sent < 20 * limit  # the client could not push it all
        # chunked without any length: refused from the headers, before a byte of the body
        received.sizes.clear()
        head = head.replace("Content-Length: 100\r\n", "")
        answer, _ = raw_request(port, head, [multipart_start(), chunk, chunk])
        assert answer.startswith(b"HTTP/1.1 411"), answer[:300]
        assert sum(received.sizes) == 0
        # the server still serves: a client without Origin, as curl or a script
        import httpx

        assert httpx.get(f"{url}/api/model", timeout=10).status_code == 200
        r = httpx.get(f"{url}/api/model", headers={"Host": f"evil.example:{port}"}, timeout=10)
        assert r.status_code == 403  # rebinding, over a real socket
    assert scored == [] and list(root.iterdir()) == []
    no_traceback(caplog)


# 3. names


def test_odd_names_are_the_clients_400(client, root, scored, tmp_path, caplog):
    image = png16(tmp_path / "a.png")
    r = client.post("/api/predict", files={"file": ("a" * 296 + ".png", image.read_bytes())})
    assert r.status_code == 400
    assert one_line_error(r) == "upload name of 300 characters is longer than 200: rename the file"
    dicom = (series_zip(tmp_path / "s.zip", n=1)).read_bytes()
    member = zipfile.ZipFile(io.BytesIO(dicom)).namelist()[0]
    data = zipfile.ZipFile(io.BytesIO(dicom)).read(member)
    cases = {
        "clash.zip": ({"scan": b"a file", "scan/IM0001.dcm": data}, "'scan' is both a file"),
        "deep.zip": ({"/".join(["d" * 200] * 25) + "/IM.dcm": data}, "is too long to unpack"),
        "wide.zip": ({"n" * 300 + ".dcm": data}, "is too long to unpack"),
    }
    for name, (members, expected) in cases.items():
        path = tmp_path / name
        with zipfile.ZipFile(path, "w") as z:
            for member_name, content in members.items():
                z.writestr(member_name, content)
        r = client.post("/api/predict", files={"file": (name, path.read_bytes())})
        assert r.status_code == 400, (name, r.text)
        error = one_line_error(r)
        assert error.startswith(f"{name}: ") and expected in error and len(error) < 300
    assert scored == [] and list(root.iterdir()) == []
    answer = client.post("/api/predict", files={"file": ("a.png", image.read_bytes())}).json()
    for url in (
        f"/api/results/{answer['id']}/a%00_map.npy",
        f"/api/results/{answer['id']}%00/download",
        "/static/viewer%00.js",
    ):
        r = client.get(url)
        assert r.status_code == 400 and one_line_error(r) == "the URL holds a NUL character"
    no_traceback(caplog)


def test_png_with_a_zip_appended_is_scored_as_the_png(client, checkpoint, tmp_path):
    polyglot = tmp_path / "x.png"
    study = series_zip(tmp_path / "study.zip")
    polyglot.write_bytes(png16(tmp_path / "a.png").read_bytes() + study.read_bytes())
    assert zipfile.is_zipfile(polyglot)  # what the server used to trust
    answer = client.post("/api/predict", files={"file": ("x.png", polyglot.read_bytes())}).json()
    (row,) = cli_rows(checkpoint, polyglot, tmp_path / "cli")  # the command line: a PNG
    assert answer["kind"] == "image" and answer["volumes"] == []
    assert answer["score"] == float(row["score"])
    # the name decides: a zip named .ZIP is unpacked, the same bytes named otherwise are not
    r = client.post("/api/predict", files={"file": ("STUDY.ZIP", study.read_bytes())})
    assert r.status_code == 200 and r.json()["kind"] == "volume"


# 4. status codes and limits


def test_full_disk_is_507_and_leaves_nothing(client, root, tmp_path, monkeypatch, caplog):
    image = png16(tmp_path / "a.png")

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    with monkeypatch.context() as m:  # the upload's own write
        m.setattr(jobs_module.shutil, "copyfileobj", full)
        r = client.post("/api/predict", files={"file": ("a.png", image.read_bytes())})
    assert r.status_code == 507
    assert one_line_error(r).startswith("the server's disk is full (No space left on device)")
    with monkeypatch.context() as m:  # one of predict's writes: its UserError says why
        m.setattr(writers.np, "save", full)
        r = client.post("/api/predict", files={"file": ("a.png", image.read_bytes())})
    assert r.status_code == 507, r.text
    assert list(root.iterdir()) == []
    no_traceback(caplog)
    # another failure of the server's disk is still the server's: a 500, not a 507 or a 400

    def broken(*args, **kwargs):
        raise OSError(errno.EIO, "Input/output error")

    with monkeypatch.context() as m:
        m.setattr(jobs_module.shutil, "copyfileobj", broken)
        r = TestClient(client.app, base_url=LOOPBACK, raise_server_exceptions=False).post(
            "/api/predict", files={"file": ("a.png", image.read_bytes())}
        )
    assert r.status_code == 500
    assert one_line_error(r) == "internal error (OSError); the server log has the details"
    assert list(root.iterdir()) == []


def test_server_failure_is_500_in_one_line(detector, checkpoint, root, tmp_path, monkeypatch):
    def broken(*args, **kwargs):
        raise RuntimeError("secret detail\nsecond line")

    monkeypatch.setattr(jobs_module, "predict", broken)
    client = TestClient(
        app_for(detector, checkpoint, root), base_url=LOOPBACK, raise_server_exceptions=False
    )
    image = png16(tmp_path / "a.png")
    r = client.post("/api/predict", files={"file": ("a.png", image.read_bytes())})
    assert r.status_code == 500
    assert one_line_error(r) == "internal error (RuntimeError); the server log has the details"


@pytest.mark.parametrize("value", ["-5", "0", "nan", "inf", "-inf", "10001"])
def test_bad_upload_limit_is_refused_before_the_model_loads(checkpoint, monkeypatch, capsys, value):
    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(detectors, "load_detector", no_model)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["serve", "--ckpt_path", str(checkpoint), "--port", str(port)]
    assert main([*argv, f"--max_upload_mb={value}"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: --max_upload_mb must be ") and err.count("\n") == 1, err


def test_iqeclip_serve_with_nan_limit_exits_2_without_serving(checkpoint):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    argv = ["serve", "--ckpt_path", str(checkpoint), "--port", str(port), "--max_upload_mb", "nan"]
    done = subprocess.run(
        [sys.executable, "-m", "iqeclip", *argv], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 2
    assert done.stderr == "error: --max_upload_mb must be a finite number, got nan\n"


def test_every_float_option_refuses_nan_and_infinity():
    classes = [
        getattr(config_module, name)
        for name in config_module.__all__
        if name.endswith("Config") and dataclasses.is_dataclass(getattr(config_module, name))
    ]
    checked = []
    for cls in classes:
        for field in dataclasses.fields(cls):
            option = option_of(field)
            if option is None or str(field.type).split("|")[0].strip() != "float":
                continue
            for value in (math.nan, math.inf, -math.inf):
                with pytest.raises(UserError, match="must be a finite number"):
                    option.check(field.name, value)
            checked.append(f"{cls.__name__}.{field.name}")
    assert "ServeConfig.max_upload_mb" in checked and len(checked) >= 5, checked
