"""The web app of ``iqeclip serve``: one page and a JSON API (docs/serve.md), on FastAPI.

Routes: ``GET /`` the page and ``/static/*`` its script and style (nothing from the internet);
``GET /api/model`` the resolved configuration, calibration and version; ``POST /api/predict``
(multipart field ``file``) scores one upload through ``predict``
(:class:`~iqeclip.serve.jobs.Jobs`); ``GET /api/results/{id}/{file}`` one of its pictures or
maps; ``GET /api/results/{id}/download`` a zip of what predict wrote. Errors are JSON
``{"error": "<one line>"}``: 400 for what the readers or predict refuse, 404 for an unknown
result or route, 411/413 for an upload without a length or over ``--max_upload_mb`` (refused
from its headers, before the body is read), 500 for a failure of the server itself (its log has
the traceback).
"""

from __future__ import annotations

import logging
import mimetypes
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Request, UploadFile
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException

from iqeclip import __version__
from iqeclip.errors import UserError
from iqeclip.inference.thresholds import describe
from iqeclip.model.scoring import score_range
from iqeclip.serve.jobs import Jobs

STATIC = Path(__file__).parent / "static"
logger = logging.getLogger(__name__)


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


class UploadLimit:
    """ASGI middleware: refuse a POST whose ``Content-Length`` is missing or over ``limit``."""

    def __init__(self, app: Any, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: dict, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            length = dict(scope["headers"]).get(b"content-length")
            problem = None
            if length is None or not length.isdigit():
                problem = _error(411, "the upload must say its size (Content-Length)")
            elif int(length) > self.limit:
                problem = _error(
                    413,
                    f"upload of {int(length) / 1e6:.1f} MB is over the limit of "
                    f"{self.limit / 1e6:g} MB (iqeclip serve --max_upload_mb)",
                )
            if problem is not None:
                await problem(scope, receive, send)
                return
        await self.app(scope, receive, send)


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


def create_app(
    detector: Any, source: str, root: Path, max_upload_mb: float, batch_size: int, backend: str
) -> FastAPI:
    """The app over a loaded detector; uploads and results live under ``root`` (a temporary
    folder the caller owns)."""
    limit = int(max_upload_mb * 1e6)
    jobs = Jobs(detector, source, root, limit, batch_size)
    info = model_info(detector, source, backend)
    app = FastAPI(title="iqeclip", version=__version__, docs_url=None, redoc_url=None)
    app.add_middleware(UploadLimit, limit=limit)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.exception_handler(UserError)
    async def user_error(request: Request, exc: UserError) -> JSONResponse:
        return _error(400, str(exc))

    @app.exception_handler(HTTPException)
    async def http_error(request: Request, exc: HTTPException) -> JSONResponse:
        return _error(exc.status_code, str(exc.detail))

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception) -> JSONResponse:
        logger.exception(f"{request.method} {request.url.path} failed")
        return _error(500, f"internal error ({type(exc).__name__}); the server log has the details")

    @app.exception_handler(RequestValidationError)
    async def bad_request(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _error(400, "POST /api/predict needs one file in the multipart field 'file'")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html")

    @app.get("/api/model")
    def get_model() -> dict[str, Any]:
        return info

    @app.post("/api/predict")
    async def post_predict(file: Annotated[UploadFile, File()]) -> dict[str, Any]:
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
