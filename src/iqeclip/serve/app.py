"""The web app of ``iqeclip serve``: one page and a JSON API (docs/serve.md), on FastAPI.

Routes: ``GET /`` the page and ``/static/*`` its script and style (nothing from the internet);
``GET /api/model`` the resolved configuration, calibration and version; ``POST /api/predict``
(multipart field ``file``) scores one upload through ``predict``
(:class:`~iqeclip.serve.jobs.Jobs`); ``GET /api/results/{id}/{file}`` one of its pictures or
maps; ``GET /api/results/{id}/download`` a zip of what predict wrote.

Two middlewares stand in front of the routes. :class:`Gate` answers only requests addressed to
this server (``Host``) and sent by its own page or by no page at all (``Origin``,
``Sec-Fetch-Site``): DNS rebinding and cross-site requests from other pages in the user's browser
are refused. :class:`UploadLimit` refuses a body over ``--max_upload_mb`` from its
``Content-Length``, and counts the bytes that actually arrive.

Errors are JSON ``{"error": "<one line>"}``, the parameters they name written as the server's
flags (``--max_slices``: its operator set them on the command line):

- 400: what the readers or predict refuse, an upload name over :data:`MAX_NAME` characters, a
  zip that cannot be unpacked here, a NUL in the URL;
- 403: a ``Host`` that is not this server's, an ``Origin`` that is not its own, a cross-site
  request (:class:`Gate`);
- 404: an unknown result or route;
- 411/413: an upload without a length, or over ``--max_upload_mb`` by its ``Content-Length`` or by
  the bytes received;
- 413 also: an upload over a limit of what it may hold, from the zip's directory and the
  headers before anything is decoded (``--max_megapixels``, ``--max_slices``,
  ``--max_total_megapixels``, ``--max_zip_members``, ``--max_unpacked_mb``;
  :class:`~iqeclip.data.readers.limits.OverLimit`);
- 503 with ``Retry-After``: ``--max_waiting`` uploads already wait for
  ``--max_megapixels_at_once`` (:class:`~iqeclip.serve.jobs.Busy`);
- 500: a failure of the server itself (the ASGI server logs the traceback, once);
- 507: the server's disk is full (the upload was not scored; nothing is left of it).
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import mimetypes
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.datastructures import Headers
from starlette.exceptions import HTTPException

from iqeclip import __version__
from iqeclip.config.apps import HOST
from iqeclip.data.readers.limits import OverLimit
from iqeclip.errors import UserError, as_flag, first_line
from iqeclip.inference.thresholds import describe
from iqeclip.model.scoring import score_range
from iqeclip.serve.jobs import Busy, Jobs, ServeLimits, safe_name

STATIC = Path(__file__).parent / "static"
MAX_NAME = 200
"""The longest upload name (after :func:`~iqeclip.serve.jobs.safe_name`), in characters: predict
adds suffixes such as ``_s000_overlay.png`` to it, and a file name has at most 255 bytes."""
LOOPBACK = ("127.0.0.1", "localhost", "[::1]")
"""The names a server bound to a loopback address answers to (with its port)."""
DISK_FULL = (errno.ENOSPC, errno.EDQUOT)
_ORIGIN = re.compile(r"(https?)://(.+)", re.IGNORECASE)
logger = logging.getLogger(__name__)


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _refusal(status: int, message: str) -> JSONResponse:
    """An error answered before the body is read: the connection is closed after it, so that a
    client cannot go on sending a body nobody reads."""
    return _error(status, message, {"Connection": "close"})


def address(text: str) -> tuple[str, int | None] | None:
    """A ``host[:port]`` (a ``Host`` header, an ``--allowed_hosts`` entry) as its lower-case name,
    IPv6 in brackets, and its port (None where it has none), or None if it is not one."""
    match = HOST.fullmatch(text.strip())
    if match is None:
        return None
    name, port = match.group(1).lower(), match.group(2)
    return name.rstrip(".") or name, int(port) if port else None


def _bound_names(server: tuple[str, int] | None) -> list[str]:
    """The names of the address a connection came in on (the ASGI scope's ``server``)."""
    if not server or not server[0]:
        return []
    host = server[0].lower()
    name = f"[{host}]" if ":" in host else host
    try:
        loopback = ipaddress.ip_address(host).is_loopback
    except ValueError:
        loopback = host == "localhost"
    return [name, *LOOPBACK] if loopback else [name]


class Gate:
    """ASGI middleware: answer only requests addressed to this server and sent by its own page or
    by no page at all; refuse the others with a 403 (a NUL in the path with a 400).

    - ``Host`` must be the address the connection came in on (``127.0.0.1``, ``localhost`` or
      ``[::1]`` when it is a loopback address), or one of ``allowed_hosts``, with the server's
      port or without one: a page of another site whose name was made to resolve to this machine
      (DNS rebinding) sends its own name.
    - ``Origin``, when there is one, must be ``http(s)://`` one of those names with the server's
      port: the page itself. Browsers send it with every POST and every script's request to
      another origin; curl and Python scripts send none, and stay welcome.
    - ``Sec-Fetch-Site: cross-site`` is refused, except for a top-level GET navigation (a link to
      the page followed from elsewhere), which cannot read or change anything.

    No CORS header is ever sent, and every answer carries ``X-Frame-Options: DENY``: no other
    page can frame this one.

    Args:
        app: the ASGI app behind.
        allowed_hosts: other ``host`` or ``host:port`` values ``Host`` may hold (``--host``,
            ``--allowed_hosts``); an entry without a port takes the server's.
    """

    def __init__(self, app: Any, allowed_hosts: Iterable[str]) -> None:
        self.app = app
        self.allowed = [a for a in map(address, allowed_hosts) if a is not None]

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"]:
            await _refusal(400, "the URL holds a NUL character")(scope, receive, send)
            return
        problem = self.refusal(scope)
        if problem is not None:
            logger.warning(f"{scope['method']} {scope['path']}: refused, {problem}")
            await _refusal(403, problem)(scope, receive, send)
            return

        async def framed(message: dict) -> None:
            if message["type"] == "http.response.start":
                message = {
                    **message,
                    "headers": [*message["headers"], (b"x-frame-options", b"DENY")],
                }
            await send(message)

        await self.app(scope, receive, framed)

    def hosts(self, scope: dict) -> set[tuple[str, int | None]]:
        """The (name, port) pairs this request may name in ``Host`` and ``Origin``."""
        server = scope.get("server")
        port = server[1] if server else None
        pairs = {(name, port) for name in _bound_names(server)}
        return pairs | {(name, given or port) for name, given in self.allowed}

    def refusal(self, scope: dict) -> str | None:
        """Why the request is refused (one line), or None."""
        headers = Headers(scope=scope)
        pairs = self.hosts(scope)
        host = headers.get("host")
        named = address(host) if host is not None else None
        if named is None or not any(
            named[0] == name and named[1] in (None, port) for name, port in pairs
        ):
            return (
                f"Host {host[:100]!r} is not this server's address (iqeclip serve --allowed_hosts)"
                if host is not None
                else "the request has no Host header"
            )
        origin = headers.get("origin")
        if origin is not None:
            match = _ORIGIN.fullmatch(origin)
            named = address(match.group(2)) if match else None
            default = 443 if match and match.group(1).lower() == "https" else 80
            if named is None or (named[0], named[1] or default) not in pairs:
                return f"a request from another site ({origin[:100]}) is refused"
        if headers.get("sec-fetch-site") == "cross-site" and not (
            scope["method"] in ("GET", "HEAD")
            and headers.get("sec-fetch-mode") == "navigate"
            and headers.get("sec-fetch-dest") == "document"
        ):
            return "a cross-site request is refused (Sec-Fetch-Site: cross-site)"
        return None


class TooLarge(HTTPException):
    """A body whose bytes, as they arrive, go over the upload limit: a 413, and the connection
    closed."""

    def __init__(self, message: str) -> None:
        super().__init__(413, message, headers={"Connection": "close"})


class UploadLimit:
    """ASGI middleware: refuse a POST whose ``Content-Length`` is missing (411), a body whose
    ``Content-Length`` is over ``limit`` (413), both from the headers, before the body is read;
    and stop a body at the first chunk that takes the bytes received over ``limit`` (413), whatever
    its headers said (``Transfer-Encoding: chunked`` beside a small ``Content-Length``)."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    def _over(self, size: int, how: str) -> str:
        return (
            f"upload {how} {size / 1e6:.2f} MB, over the limit of {self.limit / 1e6:g} MB "
            "(iqeclip serve --max_upload_mb)"
        )

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = Headers(scope=scope).get("content-length")
        problem = None
        if length is not None and length.isdigit() and int(length) > self.limit:
            problem = _refusal(413, self._over(int(length), "of"))
        elif scope["method"] == "POST" and (length is None or not length.isdigit()):
            problem = _refusal(411, "the upload must say its size (Content-Length)")
        if problem is not None:
            await problem(scope, receive, send)
            return
        received = 0

        async def counted() -> dict:
            nonlocal received
            message = await receive()
            received += len(message.get("body", b""))
            if received > self.limit:  # raised into the form parser; answered by the app
                raise TooLarge(self._over(received, "stopped at"))
            return message

        await self.app(scope, counted, send)


def disk_full(exc: BaseException) -> OSError | None:
    """The "disk full" error behind ``exc``: itself, or what it was raised from or while handling
    (a :class:`UserError` that says ``cannot write ...``), or None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        if isinstance(current, OSError) and current.errno in DISK_FULL:
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None


def _insufficient(request: Request, full: OSError) -> JSONResponse:
    message = (
        f"the server's disk is full ({first_line(full)}): the upload was not scored; free space "
        "on the server and send it again"
    )
    logger.warning(f"{request.method} {request.url.path}: {message}")
    return _error(507, message)


def model_info(detector: Any, source: str, backend: str) -> dict[str, Any]:
    """``GET /api/model``: what scores the uploads and how its numbers read."""
    meta = detector.meta
    run = meta.get("run", {})
    setting = run.get("setting", "zero")
    thresholds = meta.get("thresholds")
    low, high = score_range(setting, len(detector.config.features_list))
    return {
        "version": __version__,
        "backend": backend,
        "source": Path(source).name,
        "setting": setting,
        "config": detector.config.to_dict(),
        "score_range": [low, high],
        "map_range": [0.0, 1.0],
        "calibration": {**thresholds, "rule": describe(thresholds)} if thresholds else None,
        "run": run,
    }


def _answer_errors(app: FastAPI) -> None:
    """Every error as a one-line JSON answer with its status: 413 over a limit, 503 busy, 400 a
    bad file or request, 507 a full disk, 500 (logged in one line) anything else."""

    @app.exception_handler(OverLimit)
    async def over_limit(request: Request, exc: OverLimit) -> JSONResponse:
        return _error(413, exc.render(as_flag))  # an upload over --max_slices, --max_zip_members...

    @app.exception_handler(Busy)
    async def busy(request: Request, exc: Busy) -> JSONResponse:
        return _error(503, str(exc), {"Retry-After": str(exc.retry_after)})

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        full = disk_full(exc)
        return _insufficient(request, full) if full else _error(400, exc.render(as_flag))

    @app.exception_handler(OSError)
    async def os_error(request: Request, exc: OSError) -> JSONResponse:
        full = disk_full(exc)
        if full is None:
            raise exc  # a failure of the server: the 500 below
        return _insufficient(request, full)

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail), exc.headers)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        # one line here: Starlette raises the error on, and the ASGI server logs its traceback
        logger.error(f"{request.method} {request.url.path} failed: {type(exc).__name__}")
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "POST /api/predict needs one file in the multipart field 'file'")


def create_app(
    detector: Any,
    source: str,
    root: Path,
    max_upload_mb: float,
    batch_size: int,
    backend: str,
    allowed_hosts: Iterable[str] = (),
    limits: ServeLimits | None = None,
) -> FastAPI:
    """The app over a loaded detector; uploads and results live under ``root`` (a temporary
    folder the caller owns). ``allowed_hosts``: the names, besides the address a request came in
    on, that its ``Host`` may hold (:class:`Gate`). ``limits``: what an upload may hold and how
    much is read at once (:class:`~iqeclip.serve.jobs.ServeLimits`; None: the defaults)."""
    limit = int(max_upload_mb * 1e6)
    jobs = Jobs(detector, source, root, limit, batch_size, limits)
    info = model_info(detector, source, backend)
    app = FastAPI(title="iqeclip", version=__version__, docs_url=None, redoc_url=None)
    app.add_middleware(UploadLimit, limit=limit)
    app.add_middleware(Gate, allowed_hosts=list(allowed_hosts))  # the outer one: runs first
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    _answer_errors(app)

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/model")
    def get_model() -> dict[str, Any]:
        return info

    @app.post("/api/predict")
    async def post_predict(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
        name = safe_name(file.filename)
        if len(name) > MAX_NAME:
            raise UserError(
                f"upload name of {len(name)} characters is longer than {MAX_NAME}: rename the file"
            )
        # the work (reading, the locked forward pass, writing) runs in a worker thread
        return await run_in_threadpool(jobs.run, file.filename, file.file)

    @app.get("/api/results/{rid}/download")
    def download(rid: str) -> Response:
        data = jobs.archive(rid)
        if data is None:
            return _error(404, f"no result {rid} (results are kept for the last few uploads)")
        headers = {"Content-Disposition": f'attachment; filename="iqeclip_{rid}.zip"'}
        return Response(data, media_type="application/zip", headers=headers)

    @app.get("/api/results/{rid}/{name}")
    def result_file(rid: str, name: str) -> Response:
        data = jobs.file(rid, name)
        if data is None:
            return _error(404, f"no file {name} in result {rid}")
        kind = mimetypes.guess_type(name)[0] or "application/octet-stream"
        return Response(data, media_type=kind)

    return app
