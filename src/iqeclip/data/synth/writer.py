"""Folder, image and few-shot list writing of the synthetic benchmark, in the MVFA or the BMAD
layout (:mod:`iqeclip.data.dataset_folders`)."""

from __future__ import annotations

import os
import shutil
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
from PIL import Image

from iqeclip.data.synth.geometry import Array
from iqeclip.data.synth.modalities import _RENDERERS
from iqeclip.errors import UserError, param

__all__ = ["DATASETS", "LAYOUTS", "MASK_DATASETS", "SHOTS", "write_benchmark"]

DATASETS: tuple[str, ...] = (
    "Brain",
    "Liver",
    "Retina_RESC",
    "Retina_OCT2017",
    "Chest",
    "Histopathology",
)
"""Names of the synthetic datasets, written as ``<Name>_AD`` (MVFA) or ``<Name>`` (BMAD) folders."""

MASK_DATASETS: tuple[str, ...] = ("Brain", "Liver", "Retina_RESC")
"""Datasets that get pixel masks, under ``Ungood/anomaly_mask`` (MVFA) or ``Ungood/label`` (BMAD)."""

LAYOUTS: tuple[str, ...] = ("mvfa", "bmad")
"""The layouts :func:`write_benchmark` writes."""

SHOTS: tuple[int, ...] = (2, 4, 8, 16)
"""The K of the ``fewshot_seed/<Name>/<K>-shot.txt`` support lists."""

_MIN_IMAGE_SIZE = 32
_SPLITS = ("valid", "test")
_CLASSES = ("good", "Ungood")
_FEWSHOT_POOL = max(SHOTS)  # support lists draw from the first 16 valid images of each class


def _stream(seed: int, *keys: str | int) -> np.random.Generator:
    """Independent random stream for (seed, keys...), stable across runs and platforms."""
    words = [seed] + [zlib.crc32(k.encode()) if isinstance(k, str) else int(k) for k in keys]
    return np.random.default_rng(np.random.SeedSequence(words))


def _extension(name: str) -> str:
    return ".jpeg" if name == "Retina_OCT2017" else ".png"


def _replace(path: Path, write: Callable[[Path], object]) -> None:
    """Write a file under a temporary name in the same folder, then move it into place."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def _save_image(array: Array, path: Path) -> None:
    """Write an image (JPEG quality 95 for ``.jpeg``, else PNG) via :func:`_replace`."""
    image = Image.fromarray(array)
    if path.suffix == ".jpeg":
        _replace(path, lambda tmp: image.save(tmp, format="JPEG", quality=95))
    else:
        _replace(path, lambda tmp: image.save(tmp, format="PNG"))


def _save_text(text: str, path: Path) -> None:
    _replace(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def _file_name(index: int, ext: str) -> str:
    return f"{index:05d}{ext}"


def _check_int(value: object, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise UserError(f"{name} must be an integer, got {value!r}")
    if value < minimum:
        raise UserError(f"{name} must be at least {minimum}")
    return int(value)


def _check_out(root: Path, overwrite: bool) -> None:
    if root.exists() and not root.is_dir():
        raise UserError(f"output folder {root} is a file, not a folder")
    if root.is_dir() and any(root.iterdir()) and not overwrite:
        raise UserError(
            f"output folder {root} is not empty; use an empty folder or {param('overwrite')}"
        )


def _image_folder(ds_root: Path, split: str, label: str, name: str, layout: str) -> Path:
    """The image folder of one class of one split: ``img`` sub-folders in the MVFA layout and
    for BMAD's pixel-mask datasets; BMAD's image-label datasets keep images in the class folder."""
    folder = ds_root / split / label
    return folder if layout == "bmad" and name not in MASK_DATASETS else folder / "img"


def _write_split(
    ds_root: Path, name: str, split: str, size: int, seed: int, image_size: int, layout: str
) -> int:
    """Write one split of one dataset (both classes, and the masks of a mask dataset); returns
    its number of images."""
    render = _RENDERERS[name]
    ext = _extension(name)
    per_class = max(_FEWSHOT_POOL, size) if split == "valid" else size
    for label in _CLASSES:
        img_dir = _image_folder(ds_root, split, label, name, layout)
        img_dir.mkdir(parents=True, exist_ok=True)
        mask_dir = ds_root / split / label / ("anomaly_mask" if layout == "mvfa" else "label")
        with_mask = label == "Ungood" and name in MASK_DATASETS
        if with_mask:
            mask_dir.mkdir(parents=True, exist_ok=True)
        for index in range(per_class):
            rng = _stream(seed, name, split, label, index)
            image, mask = render(rng, image_size, label == "Ungood")
            file_name = _file_name(index, ext)
            if with_mask:
                assert mask is not None
                _save_image(mask.astype(np.uint8) * 255, mask_dir / file_name)
            _save_image(image, img_dir / file_name)
    return 2 * per_class


def write_benchmark(
    out: str | Path,
    size: int = 12,
    seed: int = 0,
    image_size: int = 128,
    overwrite: bool = False,
    layout: str = "mvfa",
) -> dict[str, dict[str, int]]:
    """Write the synthetic six-dataset benchmark in the MVFA or the BMAD layout under ``out``.

    Each of Brain, Liver, Retina_RESC, Retina_OCT2017, Chest and Histopathology gets a dataset
    folder with ``valid`` and ``test`` splits of normal (``good``) and abnormal (``Ungood``)
    images, pixel masks for Brain, Liver and Retina_RESC, and few-shot support lists
    ``fewshot_seed/<Name>/<K>-shot.txt`` for K = 2, 4, 8, 16. Output is deterministic per seed,
    and both layouts hold the same files under the same names: MVFA writes
    ``<Name>_AD/<split>/<class>/img`` and ``Ungood/anomaly_mask``; BMAD writes ``<Name>/<split>/
    <class>/img`` and ``Ungood/label`` for the mask datasets, ``<Name>/<split>/<class>`` for the
    others (BMAD's ``train/good`` is not written: nothing reads it).

    Args:
        out: Folder to write into (``--out``); created if missing, and must be empty unless
            ``overwrite`` is set.
        size: Images per class in each ``test`` split (``--size``); ``valid`` holds
            ``max(16, size)`` per class so that every 16-shot list exists.
        seed: Random seed (``--seed``); the same seed writes byte-identical files.
        image_size: Side of the square images in pixels (``--image_size``), at least 32.
        overwrite: Allow a non-empty ``out`` (``--overwrite``); the dataset folders this
            function writes (``<Name>_AD`` or ``<Name>``, and ``fewshot_seed/<Name>``) are
            replaced, anything else in ``out`` is left alone.
        layout: ``"mvfa"`` or ``"bmad"``.

    Returns:
        Number of images (both classes together) per dataset and split, e.g.
        ``{"Brain": {"valid": 32, "test": 24}, ...}``.

    Raises:
        UserError: If an argument is out of range, ``layout`` is unknown, ``out`` is a file, or
            ``out`` is not empty and ``overwrite`` is false.
    """
    if layout not in LAYOUTS:
        raise UserError(f"{param('layout')} {layout!r}: expected one of {', '.join(LAYOUTS)}")
    size = _check_int(size, "size", 1)
    seed = _check_int(seed, "seed", 0)
    image_size = _check_int(image_size, "image_size", _MIN_IMAGE_SIZE)
    root = Path(out)
    _check_out(root, overwrite)

    counts: dict[str, dict[str, int]] = {}
    for name in DATASETS:
        ext = _extension(name)
        ds_root = root / (f"{name}_AD" if layout == "mvfa" else name)
        shot_root = root / "fewshot_seed" / name
        for stale in (ds_root, shot_root):
            if stale.exists():
                shutil.rmtree(stale)
        counts[name] = {
            split: _write_split(ds_root, name, split, size, seed, image_size, layout)
            for split in _SPLITS
        }
        shot_root.mkdir(parents=True, exist_ok=True)
        for k in SHOTS:
            rng = _stream(seed, "fewshot", name, k)
            lines = []
            for tag in ("a", "n"):  # abnormal (valid/Ungood) first, then normal (valid/good)
                picks = sorted(int(i) for i in rng.choice(_FEWSHOT_POOL, size=k, replace=False))
                lines.append(f"{tag}-0: " + " ".join(_file_name(i, ext) for i in picks))
            _save_text("\n".join(lines) + "\n", shot_root / f"{k}-shot.txt")
    return counts
