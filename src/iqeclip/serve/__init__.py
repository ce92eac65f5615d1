"""``iqeclip serve``: a local web viewer and JSON API over ``predict`` (docs/serve.md).

The detector is loaded once; each upload is scored by the same ``predict`` as the command line
(:mod:`iqeclip.serve.jobs`), and the page (:mod:`iqeclip.serve.app`, ``static/``) shows the image
with its heat map, the score, the decision and, for a volume, every slice. FastAPI and uvicorn
come with the ``iqeclip[serve]`` extra and are imported only here.
"""

from __future__ import annotations

import logging
import socket
import tempfile
from pathlib import Path
from typing import Any

from iqeclip.config import ServeConfig
from iqeclip.errors import UserError

logger = logging.getLogger(__name__)


def _check_port(host: str, port: int) -> None:
    """Refuse, before the model is loaded, an address that cannot be listened on."""
    try:
        with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((host, port))
    except OSError as exc:
        raise UserError(
            f"--host {host} --port {port}: cannot listen there ({exc.strerror})"
        ) from None


def serve(cfg: ServeConfig, model_overrides: dict[str, Any]) -> None:
    """Load the detector and serve the page and API until interrupted."""
    try:
        import uvicorn

        from iqeclip.serve.app import create_app
    except ImportError as exc:
        raise UserError(
            f"iqeclip serve needs {exc.name}: pip install 'iqeclip[serve]' (FastAPI, uvicorn)"
        ) from None
    from iqeclip.inference.export import load_detector

    _check_port(cfg.host, cfg.port)
    detector = load_detector(cfg.backend, cfg.ckpt_path, cfg.model, cfg.device, model_overrides)
    source = str(cfg.model if cfg.backend == "onnx" else cfg.ckpt_path)
    if cfg.host not in ("127.0.0.1", "localhost", "::1"):
        logger.warning(
            f"warning: --host {cfg.host}: every machine that reaches it can upload scans and "
            "read the results; there is no login"
        )
    with tempfile.TemporaryDirectory(prefix="iqeclip-serve-") as tmp:
        app = create_app(
            detector, source, Path(tmp), cfg.max_upload_mb, cfg.batch_size, cfg.backend
        )
        logger.info(f"serving {source} at http://{cfg.host}:{cfg.port}/ (Ctrl-C stops)")
        uvicorn.run(app, host=cfg.host, port=cfg.port, log_level="warning")
