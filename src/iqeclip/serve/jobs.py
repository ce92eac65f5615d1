"""One upload through ``predict``: the file into a private folder, the answer out of what predict
wrote.

Every request gets its own folder under the server's temporary folder (``<id>/upload`` for the
file, ``<id>/out`` for predict's outputs, ``<id>/view`` for the pictures the page layers), so two
requests never share a file. The scores, decisions and thresholds of the answer are read back
from ``predictions.csv`` and ``volumes.csv``: the API says exactly what ``predict`` says.
"""

from __future__ import annotations

import contextlib
import csv
import io
import re
import shutil
import threading
import uuid
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from iqeclip.errors import UserError
from iqeclip.inference.predict import predict
from iqeclip.report.heatmaps import colorize, draw_contour
from iqeclip.runtime.files import atomic_write_text

KEEP_RESULTS = 32  # finished results kept for the page's images and downloads (oldest dropped)
UNZIP_FACTOR = 8  # a zip may hold at most this many times the upload limit, unpacked
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")


class Locked:
    """A detector whose forward passes run one at a time (reading and writing run in parallel)."""

    def __init__(self, detector: Any) -> None:
        self.detector = detector
        self.config, self.meta, self.device = detector.config, detector.meta, detector.device
        self._lock = threading.Lock()

    def predict(self, images: torch.Tensor, setting: str) -> tuple[torch.Tensor, torch.Tensor]:
        with self._lock:
            return self.detector.predict(images, setting)


def safe_name(filename: str | None) -> str:
    """The upload's base name with anything but letters, digits, ``.``, ``_``, ``-`` replaced."""
    name = _SAFE.sub("_", Path(filename or "upload").name).lstrip(".")
    return name or "upload"


def _unzip(archive: Path, dest: Path, limit: int) -> None:
    """Unpack a zip (a DICOM series, or images), refusing paths outside ``dest``, zip bombs and
    archives Python cannot unpack (encrypted, unknown compression, corrupt)."""
    try:
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
            if sum(m.file_size for m in members) > limit:
                raise UserError(f"{archive.name}: unpacks to more than {limit / 1e6:g} MB")
            for m in members:
                target = (dest / m.filename).resolve()
                if not target.is_relative_to(dest.resolve()) or m.filename.startswith("/"):
                    raise UserError(f"{archive.name}: member {m.filename!r} leaves the archive")
                if Path(m.filename).name.startswith(".") or "__MACOSX" in m.filename:
                    continue
                target.parent.mkdir(parents=True, exist_ok=True)
                with z.open(m) as src, target.open("wb") as dst:
                    shutil.copyfileobj(src, dst)
    except (zipfile.BadZipFile, RuntimeError, NotImplementedError, zlib.error, EOFError) as exc:
        raise UserError(f"{archive.name}: not a zip file iqeclip can unpack ({exc})") from None


def _public(text: str, folder: Path) -> str:
    """``text`` with the request's folder left out of every path (as the uploader named it)."""
    for base in {folder, folder.resolve()}:
        for sub in ("upload", "unpacked", ""):
            text = text.replace(f"{base / sub}/" if sub else f"{base}/", "")
    return text


def _read_csv(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _number(text: str) -> float | None:
    return float(text) if text else None


class Jobs:
    """The server's requests: each upload scored by ``predict`` into its own folder.

    Args:
        detector: a loaded detector (wrapped in :class:`Locked` here).
        source: the checkpoint or model file it came from (for predict's records).
        root: the server's temporary folder.
        limit: the upload limit in bytes (a zip may unpack to :data:`UNZIP_FACTOR` times it).
        batch_size: slices per forward pass.
    """

    def __init__(self, detector: Any, source: str, root: Path, limit: int, batch_size: int) -> None:
        self.detector = Locked(detector)
        self.source, self.root, self.limit, self.batch_size = source, root, limit, batch_size
        thresholds = detector.meta.get("thresholds") or {}
        self.outputs = "input,overlay,map,npy" + (
            ",mask" if thresholds.get("pixel") is not None else ""
        )
        self.done: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()

    def run(self, filename: str | None, data: BinaryIO) -> dict[str, Any]:
        """Score one uploaded file; returns the API's answer (docs/serve.md).

        Raises:
            UserError: the readers' or predict's one-line message, with the server's folders
                left out of it.
        """
        rid = uuid.uuid4().hex[:12]
        folder = self.root / rid
        name = safe_name(filename)
        try:
            path = folder / "upload" / name
            path.parent.mkdir(parents=True)
            with path.open("wb") as f:
                shutil.copyfileobj(data, f)
            if zipfile.is_zipfile(path):  # unpacked beside, into a folder named after it
                unpacked = folder / "unpacked" / (Path(name).stem or "archive")
                _unzip(path, unpacked, self.limit * UNZIP_FACTOR)
                path = unpacked
            out = folder / "out"
            predict(
                self.source,
                [path],
                out,
                detector=self.detector,
                outputs=self.outputs,
                batch_size=self.batch_size,
                workers=0,  # one upload: no reader processes forked from the server's threads
            )
            for table in ("predictions.csv", "volumes.csv"):  # no server paths in the files
                if (out / table).is_file():
                    public = _public((out / table).read_text("utf-8"), folder)
                    atomic_write_text(out / table, public)
            answer = self._answer(rid, folder, name)
        except UserError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise UserError(_public(str(exc), folder)) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._keep(rid, folder)
        return answer

    def _keep(self, rid: str, folder: Path) -> None:
        with self._lock:
            self.done[rid] = folder
            while len(self.done) > KEEP_RESULTS:
                _, old = self.done.popitem(last=False)
                shutil.rmtree(old, ignore_errors=True)

    def file(self, rid: str, name: str) -> bytes | None:
        """A file of a kept result (``out/`` or ``view/``), or None (also when the result was
        dropped meanwhile)."""
        with self._lock:
            folder = self.done.get(rid)
        if folder is None or Path(name).name != name:
            return None
        for sub in ("out", "view"):
            with contextlib.suppress(OSError):
                return (folder / sub / name).read_bytes()
        return None

    def archive(self, rid: str) -> bytes | None:
        """A zip of everything predict wrote for a kept result, or None."""
        with self._lock:
            folder = self.done.get(rid)
        if folder is None:
            return None
        buffer = io.BytesIO()
        try:
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as z:
                for f in sorted((folder / "out").iterdir()):
                    if f.is_file() and not f.name.startswith("."):
                        z.write(f, f.name)
        except OSError:  # dropped while it was zipped
            return None
        return buffer.getvalue()

    def _answer(self, rid: str, folder: Path, name: str) -> dict[str, Any]:
        out, view = folder / "out", folder / "view"
        view.mkdir()
        url = f"/api/results/{rid}"
        slices, blank = [], []
        for row in _read_csv(out / "predictions.csv"):
            if row["decision"] == "blank":  # a constant slice: no score, no pictures
                blank.append(int(row["slice"]) if row["slice"] else None)
                continue
            files = {f.rsplit("_", 1)[-1]: f for f in row["outputs"].split(";") if f}
            stem = files["input.png"][: -len("_input.png")]
            amap = np.load(out / files["map.npy"])
            heat = f"{stem}_heat.png"
            Image.fromarray(colorize(amap)).save(view / heat)
            contour = None
            if "mask.png" in files:
                mask = np.asarray(Image.open(out / files["mask.png"])) > 0
                rgba = np.zeros((*mask.shape, 4), np.uint8)
                rgba = draw_contour(rgba, mask, (0, 255, 0, 255))
                contour = f"{stem}_contour.png"
                Image.fromarray(rgba, "RGBA").save(view / contour)
            slices.append(
                {
                    "index": int(row["slice"]) if row["slice"] else None,
                    "path": Path(row["path"]).name,
                    "score": float(row["score"]),
                    "decision": row["decision"] or None,
                    "threshold": _number(row["threshold"]),
                    "input": f"{url}/{files['input.png']}",
                    "heat": f"{url}/{heat}",
                    "contour": f"{url}/{contour}" if contour else None,
                    "overlay": f"{url}/{files['overlay.png']}",
                    "map_png": f"{url}/{files['map.png']}",
                    "map_npy": f"{url}/{files['map.npy']}",
                    "mask": f"{url}/{files['mask.png']}" if "mask.png" in files else None,
                }
            )
        volumes = [
            {
                "path": Path(v["path"]).name,
                "n_slices": int(v["n_slices"]),
                "n_blank": int(v["n_blank"]),
                "score": _number(v["score"]),
                "decision": v["decision"] or None,
                "threshold": _number(v["threshold"]),
                "abnormal_slices": [int(s) for s in v["abnormal_slices"].split(";") if s],
            }
            for v in _read_csv(out / "volumes.csv")
        ]
        # the headline: the one volume, or the one image (a zip of several inputs has none)
        head = {}
        if len(volumes) == 1 and volumes[0]["n_slices"] == len(slices) + len(blank):
            head = volumes[0]
        elif not volumes and len(slices) == 1:
            head = slices[0]
        return {
            "id": rid,
            "filename": name,
            "kind": "volume" if volumes else "image",
            "score": head.get("score"),
            "decision": head.get("decision"),
            "threshold": head.get("threshold"),
            "slices": slices,
            "blank_slices": blank,
            "volumes": volumes,
            "download": f"{url}/download",
        }
