"""The run directory (``RUN_DIR``) of a test or predict run: reading, checking and writing it.

The run directory contract
--------------------------

The test and predict commands write a run directory;
:func:`iqeclip.report.write.write_report` reads it::

    RUN_DIR/metrics.json      # required: one JSON object
    RUN_DIR/scores.csv        # optional: one row per scored image (or slice)
    RUN_DIR/examples/*.npz    # optional: a few images with their anomaly maps

``metrics.json``
    One JSON object, e.g. ``dataset``, ``setting``, ``shot``, ``n_images``, ``image_auroc``,
    ``pixel_auroc``, ``image_ap``, ``pixel_ap``, ``image_f1_max``, ``pixel_aupro``; more keys
    are allowed. Every key whose value is a number or ``null`` (or ``NaN``) is a row of the
    metrics table: floats with 4 decimals, integers as they are, ``null``/``NaN`` as "–".
    String and boolean values (``dataset``, ``setting``, ...) are shown as run information; the
    string ``note`` (e.g. the random-backbone disclaimer) is shown as a note line. Nested
    objects and lists are ignored.

``scores.csv``
    A header with the columns ``path``, ``slice``, ``label`` and ``score`` (any order, extra
    columns ignored), then one row per image: ``slice`` is empty for 2-D images, ``label`` is
    ``0`` (normal), ``1`` (anomalous) or empty (unknown; ``-1`` is read as unknown too) and
    ``score`` is a finite number. ROC and precision-recall curves are drawn when the labelled
    rows hold both labels; a histogram of the scores per label (normal, anomalous, unknown) is
    drawn whenever there are scores.

``examples/<name>.npz`` (written by :func:`save_example`)
    Arrays ``image`` ``(H, W, 3)`` uint8 (grey ``(H, W)`` and RGBA are accepted), ``map``
    ``(h, w)`` float (any range; resized to ``(H, W)`` when it differs), optional ``mask``
    ``(h, w)`` bool (the ground truth), and the scalars ``score`` (float), ``label`` (int, ``-1``
    unknown; optional) and ``path`` (string; optional, the file's stem by default).

Every problem with the run directory (missing folder or ``metrics.json``, invalid JSON, a
malformed ``scores.csv`` row, an unreadable example) raises :class:`~iqeclip.errors.UserError`
naming the file (and the line, for ``scores.csv``).
"""

from __future__ import annotations

import csv
import json
import math
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from iqeclip.errors import UserError
from iqeclip.runtime.files import atomic_write

__all__ = [
    "LABEL_NAMES",
    "SCORE_COLUMNS",
    "Example",
    "Scores",
    "label_text",
    "read_examples",
    "read_metrics",
    "read_scores",
    "save_example",
]

SCORE_COLUMNS = ("path", "slice", "label", "score")
"""The columns ``scores.csv`` must have."""

LABEL_NAMES = {0: "normal", 1: "anomalous", -1: "unknown"}
"""The name of each label: 0 normal, 1 anomalous, -1 unknown."""


@dataclass
class Scores:
    """The rows of ``scores.csv``.

    Attributes:
        paths: The image path of each row.
        slices: The slice of each row (``""`` for 2-D images).
        labels: ``(N,)`` int: 0 normal, 1 anomalous, -1 unknown.
        scores: ``(N,)`` float64 anomaly scores.
    """

    paths: list[str]
    slices: list[str]
    labels: np.ndarray
    scores: np.ndarray

    def counts(self) -> dict[int, int]:
        """Number of rows per label (0, 1, -1), zeros included."""
        return {k: int(np.sum(self.labels == k)) for k in (0, 1, -1)}

    def has_both_labels(self) -> bool:
        """Whether the labelled rows hold both normal and anomalous images."""
        c = self.counts()
        return c[0] > 0 and c[1] > 0


@dataclass
class Example:
    """One example image of ``examples/*.npz``, validated.

    Attributes:
        name: The file's stem.
        image: ``(H, W, 3)`` uint8 RGB.
        amap: ``(H, W)`` float64 anomaly map (resized to the image when it differed).
        mask: ``(H, W)`` bool ground truth, or None.
        score: The image's anomaly score.
        label: 0 normal, 1 anomalous, -1 unknown.
        path: The image's path.
    """

    name: str
    image: np.ndarray
    amap: np.ndarray
    mask: np.ndarray | None
    score: float
    label: int
    path: str


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    """Read ``RUN_DIR/metrics.json``.

    Args:
        run_dir: The run directory.

    Returns:
        The JSON object.

    Raises:
        UserError: The folder or ``metrics.json`` is missing, or it is not one JSON object.
    """
    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        raise UserError(f"run directory {run_dir} does not exist")
    path = run_dir / "metrics.json"
    if not path.is_file():
        raise UserError(f"{path} does not exist (expected the run's metrics as one JSON object)")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise UserError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(record, dict):
        raise UserError(f"{path}: expected one JSON object, got {type(record).__name__}")
    return record


def _parse_label(text: str) -> int | None:
    text = text.strip()
    if text in ("", "-1"):
        return -1
    if text in ("0", "1"):
        return int(text)
    return None


def read_scores(path: str | Path) -> Scores:
    """Read and check a ``scores.csv`` file.

    Args:
        path: The CSV file (header ``path,slice,label,score``).

    Returns:
        The rows.

    Raises:
        UserError: Naming the file and line of the first malformed row (missing columns, wrong
            number of fields, a label other than 0, 1, -1 or empty, a score that is not a
            finite number).
    """
    path = Path(path)
    paths: list[str] = []
    slices: list[str] = []
    labels: list[int] = []
    scores: list[float] = []
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            try:
                header = reader.fieldnames
                if header is None:
                    raise UserError(
                        f"{path}: empty file, expected the header {','.join(SCORE_COLUMNS)}"
                    )
                missing = [c for c in SCORE_COLUMNS if c not in header]
                if missing:
                    raise UserError(
                        f"{path} line 1: the header lacks {','.join(missing)}"
                        f" (expected {','.join(SCORE_COLUMNS)}, got {','.join(header)})"
                    )
                for row in reader:
                    where = f"{path} line {reader.line_num}"
                    if None in row or any(v is None for v in row.values()):
                        n = sum(1 for k, v in row.items() if k is not None and v is not None)
                        n += len(row.get(None) or [])
                        raise UserError(f"{where}: expected {len(header)} fields, got {n}")
                    label = _parse_label(row["label"])
                    if label is None:
                        raise UserError(
                            f"{where}: label {row['label']!r} is not 0, 1 or empty (unknown)"
                        )
                    try:
                        score = float(row["score"])
                    except ValueError:
                        raise UserError(
                            f"{where}: score {row['score']!r} is not a number"
                        ) from None
                    if not math.isfinite(score):
                        raise UserError(f"{where}: score {row['score']!r} is not finite")
                    paths.append(row["path"])
                    slices.append(row["slice"])
                    labels.append(label)
                    scores.append(score)
            except csv.Error as e:
                raise UserError(f"{path} line {reader.line_num}: {e}") from None
    except UnicodeDecodeError as e:
        raise UserError(f"{path}: not UTF-8 text ({e.reason})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot be read ({e.strerror or e})") from None
    return Scores(
        paths=paths,
        slices=slices,
        labels=np.asarray(labels, dtype=np.int64),
        scores=np.asarray(scores, dtype=np.float64),
    )


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 1:
        image = image[..., 0]
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4):
        raise ValueError(f"image must be (H, W, 3) uint8, got shape {image.shape}")
    if min(image.shape[:2]) == 0:
        raise ValueError(f"image is empty, shape {image.shape}")
    return np.ascontiguousarray(image[..., :3])


def _check_map(amap: np.ndarray, name: str = "map") -> np.ndarray:
    amap = np.asarray(amap)
    if amap.ndim != 2 or min(amap.shape) == 0:
        raise ValueError(f"{name} must be a 2-D (H, W) array, got shape {amap.shape}")
    if name == "map" and not (
        np.issubdtype(amap.dtype, np.floating) or np.issubdtype(amap.dtype, np.integer)
    ):
        raise ValueError(f"map must be numeric, got {amap.dtype}")
    return amap


def _resize(values: np.ndarray, size: tuple[int, int], nearest: bool = False) -> np.ndarray:
    """Resize a 2-D array to ``size`` = (H, W)."""
    if values.shape == size:
        return values
    if nearest:
        img = Image.fromarray(values.astype(np.uint8) * 255)
        return np.asarray(img.resize((size[1], size[0]), Image.Resampling.NEAREST)) > 127
    img = Image.fromarray(values.astype(np.float32), mode="F")
    return np.asarray(img.resize((size[1], size[0]), Image.Resampling.BILINEAR), dtype=np.float64)


def _load_example(path: Path) -> Example:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as e:
        raise UserError(f"{path}: not a readable .npz file ({e})") from None
    for key in ("image", "map", "score"):
        if key not in arrays:
            raise UserError(f"{path}: lacks the array {key!r} (has {', '.join(sorted(arrays))})")
    try:
        image = _check_image(arrays["image"])
        amap = _check_map(arrays["map"]).astype(np.float64)
        mask = _check_map(arrays["mask"], "mask").astype(bool) if "mask" in arrays else None
        score = float(np.asarray(arrays["score"]).reshape(()))
        label = int(np.asarray(arrays.get("label", -1)).reshape(()))
        name = str(np.asarray(arrays.get("path", path.stem)).reshape(()))
    except (ValueError, TypeError) as e:
        raise UserError(f"{path}: {e}") from None
    if label not in LABEL_NAMES:
        raise UserError(f"{path}: label {label} is not 0, 1 or -1 (unknown)")
    if not math.isfinite(score):
        raise UserError(f"{path}: score {score} is not finite")
    size = image.shape[:2]
    amap = _resize(np.nan_to_num(amap, nan=0.0, posinf=0.0, neginf=0.0), size)
    if mask is not None:
        mask = _resize(mask, size, nearest=True)
    return Example(path.stem, image, amap, mask, score, label, name)


def read_examples(run_dir: str | Path) -> list[Example]:
    """Read ``RUN_DIR/examples/*.npz`` (none when the folder is missing), sorted by file name.

    Raises:
        UserError: An example cannot be read or lacks ``image``, ``map`` or ``score``.
    """
    folder = Path(run_dir) / "examples"
    if not folder.is_dir():
        return []
    return [_load_example(p) for p in sorted(folder.glob("*.npz"))]


def save_example(
    run_dir: str | Path,
    name: str,
    image: np.ndarray,
    amap: np.ndarray,
    score: float,
    label: int,
    path: str,
    mask: np.ndarray | None = None,
) -> Path:
    """Write ``RUN_DIR/examples/<name>.npz`` atomically, in the form :func:`.write_report` reads.

    Args:
        run_dir: The run directory (created if needed).
        name: The file's stem (no path separators).
        image: ``(H, W, 3)`` uint8 RGB (grey ``(H, W)`` and RGBA are converted).
        amap: ``(H, W)`` anomaly map (stored as float32).
        score: The image's anomaly score.
        label: 0 normal, 1 anomalous, -1 unknown.
        path: The image's path, shown in captions.
        mask: Optional ``(H, W)`` ground-truth mask (stored as bool).

    Returns:
        The path of the written file.

    Raises:
        ValueError: Bad name, shapes, dtype or label.
    """
    if not name or "/" in name or "\\" in name or name in (".", ".."):
        raise ValueError(f"example name {name!r} must be a plain file name")
    if int(label) not in LABEL_NAMES:
        raise ValueError(f"label must be 0, 1 or -1 (unknown), got {label}")
    arrays: dict[str, np.ndarray] = {
        "image": _check_image(image),
        "map": _check_map(amap).astype(np.float32),
        "score": np.asarray(float(score), dtype=np.float64),
        "label": np.asarray(int(label), dtype=np.int64),
        "path": np.asarray(str(path)),
    }
    if mask is not None:
        arrays["mask"] = _check_map(mask, "mask").astype(bool)
    out = Path(run_dir) / "examples" / f"{name}.npz"

    def write(tmp: Path) -> None:
        with tmp.open("wb") as f:  # a file object: np.savez would append .npz to a path
            np.savez_compressed(f, **arrays)

    atomic_write(out, write)
    return out


def label_text(label: int) -> str:
    """The name of a label (the number itself for one outside :data:`LABEL_NAMES`)."""
    return LABEL_NAMES.get(label, str(label))
