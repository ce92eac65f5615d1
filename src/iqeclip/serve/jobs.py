"""One upload through ``predict``: the file into a private folder, the answer out of the
predictions ``predict`` returns.

Every request gets its own folder under the server's temporary folder (``<id>/upload`` for the
file, ``<id>/out`` for predict's outputs, the download, ``<id>/view`` for the pictures the page
layers), so two requests never share a file. The scores, decisions and thresholds of the answer
are the values of predict's :class:`~iqeclip.inference.results.Predictions`, and its heat maps
and contours are drawn from the maps it keeps: the API says exactly what ``predict`` says, and
reads nothing back from the files written for the download.

What an upload may hold is bounded before anything of it is decoded (:class:`ServeLimits`):
a zip's files and unpacked bytes, each input's slices and pixels from its headers (the readers'
:class:`~iqeclip.data.readers.limits.Limits`), and the slices and pixels of all of the upload's
inputs together; an upload over a limit is an
:class:`~iqeclip.data.readers.limits.OverLimit` (HTTP 413). The pixels being read and scored at
once are bounded by a :class:`Budget`: an upload takes its declared pixels before it is read and
waits its turn, and one that finds too many waiting is :class:`Busy` (HTTP 503).
"""

from __future__ import annotations

import contextlib
import ctypes
import io
import os
import re
import shutil
import threading
import uuid
import zipfile
import zlib
from collections import OrderedDict, deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
import torch
from PIL import Image

from iqeclip.config import ServeConfig
from iqeclip.data.readers import Declared, Limits, OverLimit, declared
from iqeclip.data.readers.model_input import forget_volumes
from iqeclip.errors import UserError
from iqeclip.inference.dicom_outputs import available_dicom_outputs
from iqeclip.inference.files import DICOM_FILES, PREDICTIONS, VOLUMES
from iqeclip.inference.inputs import checkpoint_reading
from iqeclip.inference.listing import expand_inputs
from iqeclip.inference.predict import predict
from iqeclip.inference.results import Predictions
from iqeclip.inference.writers import CSV_COLUMNS, VOLUME_COLUMNS, write_table
from iqeclip.report.heatmaps import colorize, draw_contour

KEEP_RESULTS = 32  # finished results kept for the page's images and downloads (oldest dropped)
RETRY_AFTER_S = 5  # the Retry-After of a 503 (Busy)
MAX_PATH = 4096  # bytes in a path a zip member may unpack to (Linux's PATH_MAX)
MAX_PART = 255  # bytes in each name of that path (NAME_MAX)
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


@dataclass(frozen=True)
class ServeLimits:
    """What one upload may hold, and how much is read at once (``iqeclip serve``'s options).

    Attributes:
        reader: Each input's slice size, slices and pixels (``--max_megapixels``,
            ``--max_slices``, ``--max_total_megapixels``); the last two also bound the upload's
            inputs together.
        zip_members: Files in a zip upload (``--max_zip_members``).
        unpacked_bytes: Bytes a zip upload unpacks to (``--max_unpacked_mb``).
        pixels_at_once: Pixels of the uploads read and scored at once
            (``--max_megapixels_at_once``).
        waiting: Uploads that may wait for them (``--max_waiting``).
    """

    reader: Limits
    zip_members: int
    unpacked_bytes: int
    pixels_at_once: int
    waiting: int

    @classmethod
    def of(cls, cfg: ServeConfig) -> ServeLimits:
        """The limits of a serve configuration."""
        return cls(
            Limits(cfg.max_megapixels, cfg.max_slices, cfg.max_total_megapixels, options=True),
            cfg.max_zip_members,
            int(cfg.max_unpacked_mb * 1e6),
            int(cfg.max_megapixels_at_once * 1e6),
            cfg.max_waiting,
        )


class Busy(Exception):
    """The server reads and scores as much as it may at once and enough uploads wait: the
    client should try again after :data:`RETRY_AFTER_S` seconds (HTTP 503, ``Retry-After``)."""

    retry_after = RETRY_AFTER_S


class Budget:
    """The pixels of the uploads being read and scored at once: a counting semaphore of pixels,
    first come, first served.

    An upload takes its declared pixels (at most the whole budget: a larger one runs alone) and
    gives them back when its answer is made; meanwhile the others wait in turn, at most
    ``waiting`` of them, and one more is refused (:class:`Busy`).
    """

    def __init__(self, pixels: int, waiting: int) -> None:
        self.pixels, self.waiting = pixels, waiting
        self._free = pixels
        self._queue: deque[object] = deque()
        self._turn = threading.Condition()

    @property
    def queued(self) -> int:
        """How many uploads wait for their turn now."""
        with self._turn:
            return len(self._queue)

    @contextlib.contextmanager
    def hold(self, pixels: int) -> Iterator[None]:
        """Hold ``pixels`` of the budget while the block runs, after the uploads before.

        Raises:
            Busy: The upload must wait and ``waiting`` uploads already do.
        """
        need = min(pixels, self.pixels)
        ticket = object()
        with self._turn:
            if (self._queue or need > self._free) and len(self._queue) >= self.waiting:
                raise Busy(
                    f"the server is busy: {len(self._queue)} uploads wait for their turn "
                    f"(iqeclip serve --max_waiting); try again in {RETRY_AFTER_S} s"
                )
            self._queue.append(ticket)
            while self._queue[0] is not ticket or need > self._free:
                self._turn.wait()
            self._queue.popleft()
            self._free -= need
            self._turn.notify_all()  # the next in line may fit beside it
        try:
            yield
        finally:
            with self._turn:
                self._free += need
                self._turn.notify_all()


def _trim() -> None:
    """Give the memory freed by a request back to the system (glibc keeps it in the arena of
    the thread that freed it, where another thread's request cannot reuse it)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None).malloc_trim(0)


def safe_name(filename: str | None) -> str:
    """The upload's base name with anything but letters, digits, ``.``, ``_``, ``-`` replaced."""
    name = _SAFE.sub("_", Path(filename or "upload").name).lstrip(".")
    return name or "upload"


def _unzip(archive: Path, dest: Path, limits: ServeLimits) -> None:
    """Unpack a zip (a DICOM series, or images), refusing paths outside ``dest``, paths no file
    can have here (over :data:`MAX_PATH` or :data:`MAX_PART` bytes, a file and a folder of one
    name), zip bombs and archives Python cannot unpack (encrypted, unknown compression, corrupt).
    More files or unpacked bytes than ``limits`` allow are an :class:`OverLimit`, from the zip's
    directory before anything is unpacked (zipfile checks each member's stated size as it
    unpacks)."""
    try:
        with zipfile.ZipFile(archive) as z:
            members = [m for m in z.infolist() if not m.is_dir()]
            if len(members) > limits.zip_members:
                raise OverLimit(
                    f"{archive.name}: holds {len(members)} files, more than the limit of "
                    f"{limits.zip_members} (iqeclip serve --max_zip_members)"
                )
            unpacked = sum(m.file_size for m in members)
            if unpacked > limits.unpacked_bytes:
                raise OverLimit(
                    f"{archive.name}: unpacks to {unpacked / 1e6:.1f} MB, more than the limit of "
                    f"{limits.unpacked_bytes / 1e6:g} MB (iqeclip serve --max_unpacked_mb)"
                )
            targets: dict[Path, zipfile.ZipInfo] = {}
            for m in members:
                target = (dest / m.filename).resolve()
                if not target.is_relative_to(dest.resolve()) or m.filename.startswith("/"):
                    raise UserError(f"{archive.name}: member {m.filename!r} leaves the archive")
                if Path(m.filename).name.startswith(".") or "__MACOSX" in m.filename:
                    continue
                if len(os.fsencode(target)) >= MAX_PATH or any(
                    len(os.fsencode(part)) > MAX_PART for part in target.parts
                ):
                    raise UserError(
                        f"{archive.name}: a member's path of {len(m.filename)} characters is too "
                        "long to unpack"
                    )
                targets[target] = m
            folders = {parent for target in targets for parent in target.parents}
            for target, m in targets.items():
                if target in folders:
                    raise UserError(
                        f"{archive.name}: {m.filename[:100]!r} is both a file and a folder"
                    )
            for target, m in targets.items():
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


def _publish(out: Path, predictions: Predictions, folder: Path) -> None:
    """predict's tables for the download written again from its values, without the server's
    folders in their paths (as the uploader named them)."""
    rows = [p.row() for p in predictions.slices]
    for row in rows:
        row["path"], row["source"] = _public(row["path"], folder), _public(row["source"], folder)
    write_table(out / PREDICTIONS, CSV_COLUMNS, rows)
    if predictions.volumes:
        volumes = [{**v.row(), "path": _public(v.path, folder)} for v in predictions.volumes]
        write_table(out / VOLUMES, VOLUME_COLUMNS, volumes)


class Jobs:
    """The server's requests: each upload scored by ``predict`` into its own folder.

    Args:
        detector: a loaded detector (wrapped in :class:`Locked` here).
        source: the checkpoint or model file it came from (for predict's records).
        root: the server's temporary folder.
        limit: the upload limit in bytes.
        batch_size: slices per forward pass.
        limits: what an upload may hold and how much is read at once (None: the defaults of
            :class:`~iqeclip.config.ServeConfig`).
    """

    def __init__(
        self,
        detector: Any,
        source: str,
        root: Path,
        limit: int,
        batch_size: int,
        limits: ServeLimits | None = None,
    ) -> None:
        self.detector = Locked(detector)
        self.source, self.root, self.limit, self.batch_size = source, root, limit, batch_size
        self.limits = limits or ServeLimits.of(ServeConfig())
        self.budget = Budget(self.limits.pixels_at_once, self.limits.waiting)
        self.reading = checkpoint_reading(detector.meta, None, None)  # its axis and orientation
        thresholds = detector.meta.get("thresholds") or {}
        self.pixel = thresholds.get("pixel")
        self.outputs = "input,overlay,map,npy" + (",mask" if self.pixel is not None else "")
        self.done: OrderedDict[str, Path] = OrderedDict()
        self._lock = threading.Lock()

    def run(self, filename: str | None, data: BinaryIO) -> dict[str, Any]:
        """Score one uploaded file; returns the API's answer (docs/serve.md).

        Raises:
            UserError: the readers' or predict's one-line message, with the server's folders
                left out of it; an :class:`OverLimit` for an upload over a limit.
            Busy: the upload would wait and ``--max_waiting`` uploads already do.
        """
        rid = uuid.uuid4().hex[:12]
        folder = self.root / rid
        name = safe_name(filename)
        try:
            path = folder / "upload" / name
            path.parent.mkdir(parents=True)
            with path.open("wb") as f:
                shutil.copyfileobj(data, f)
            if path.suffix.lower() == ".zip":  # by its name, as predict reads any file
                unpacked = folder / "unpacked" / (Path(name).stem or "archive")
                _unzip(path, unpacked, self.limits)
                path = unpacked
            with self.budget.hold(self._declared(path, name).pixels):
                try:
                    answer = self._score(rid, folder, name, path)
                finally:
                    _trim()
        except UserError as exc:
            shutil.rmtree(folder, ignore_errors=True)
            raise type(exc)(_public(exc.message, folder)) from None
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        self._keep(rid, folder)
        return answer

    def _declared(self, path: Path, name: str) -> Declared:
        """The slices and pixels of the upload's inputs together, from their headers, checked
        against the limits (each input's, then the upload's): an :class:`OverLimit` before
        anything is decoded. An input whose headers cannot be read counts nothing: predict
        names what is wrong with it."""
        reader = self.limits.reader
        sizes = []
        for item in expand_inputs([path]):
            try:
                sizes.append(declared(item, self.reading.axis, self.reading.orientation, reader))
            except OverLimit:
                raise
            except UserError:
                continue
        total = Declared(sum(d.slices for d in sizes), sum(d.pixels for d in sizes))
        reader.check_input(name, total.slices, total.pixels)
        return total

    def _score(self, rid: str, folder: Path, name: str, path: Path) -> dict[str, Any]:
        """predict on the upload (inside its share of the budget), and the answer."""
        out = folder / "out"
        reader = self.limits.reader
        # a DICOM series also gets its Parametric Map, and its Segmentation with a pixel
        # threshold: what a PACS viewer shows over the series
        dicom = available_dicom_outputs(expand_inputs([path]), self.pixel)
        try:
            predictions = predict(
                self.source,
                [path],
                out,
                detector=self.detector,
                outputs=",".join([self.outputs, *dicom]),
                batch_size=self.batch_size,
                workers=0,  # one upload: no reader processes forked from the server's threads
                max_megapixels=reader.megapixels,
                max_slices=reader.slices,
                max_total_megapixels=reader.total_megapixels,
                keep_maps=True,
            )
        finally:
            forget_volumes()  # decoded volumes are not kept for the next request
        _publish(out, predictions, folder)
        return self._answer(rid, folder, name, predictions)

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

    def _answer(
        self, rid: str, folder: Path, name: str, predictions: Predictions
    ) -> dict[str, Any]:
        view = folder / "view"
        view.mkdir()
        url = f"/api/results/{rid}"
        slices, blank = [], []
        for p in predictions.slices:
            if p.blank:  # a constant slice: no score, no pictures
                blank.append(p.slice)
                continue
            assert p.map is not None  # predict kept it (keep_maps)
            stem = p.files["input"][: -len("_input.png")]
            heat = f"{stem}_heat.png"
            Image.fromarray(colorize(p.map)).save(view / heat)
            contour = None
            mask = predictions.mask(p)
            if mask is not None:
                rgba = draw_contour(np.zeros((*mask.shape, 4), np.uint8), mask, (0, 255, 0, 255))
                contour = f"{stem}_contour.png"
                Image.fromarray(rgba, "RGBA").save(view / contour)
            slices.append(
                {
                    "index": p.slice,
                    "path": Path(p.path).name,
                    "score": p.score,
                    "decision": p.decision or None,
                    "threshold": p.threshold,
                    "input": f"{url}/{p.files['input']}",
                    "heat": f"{url}/{heat}",
                    "contour": f"{url}/{contour}" if contour else None,
                    "overlay": f"{url}/{p.files['overlay']}",
                    "map_png": f"{url}/{p.files['map']}",
                    "map_npy": f"{url}/{p.files['npy']}",
                    "mask": f"{url}/{p.files['mask']}" if "mask" in p.files else None,
                }
            )
        volumes = [
            {
                "path": Path(v.path).name,
                "n_slices": v.n_slices,
                "n_blank": v.n_blank,
                "score": v.score,
                "decision": v.decision or None,
                "threshold": v.threshold,
                "abnormal_slices": list(v.abnormal_slices),
            }
            for v in predictions.volumes
        ]
        dicom = [
            {"kind": kind, "name": name, "url": f"{url}/{name}"}
            for p in predictions.slices
            for kind, name in p.files.items()
            if kind in DICOM_FILES
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
            "dicom": dicom,
            "download": f"{url}/download",
        }
