"""The benchmark folder layouts under ``--data_path`` and the few-shot support lists.

A data folder (``--data_path``) holds datasets in MVFA's re-packaging of BMAD or in BMAD's own
layout (:mod:`iqeclip.data.dataset_folders`; ``--layout`` chooses where a dataset is in both)::

    <data_path>/<Name>_AD/{valid,test}/{good,Ungood}/img/<file>                  # MVFA
    <data_path>/<Name>_AD/{valid,test}/Ungood/anomaly_mask/<same file name>      # mask datasets
    <data_path>/<Name>/{valid,test}/{good,Ungood}[/img]/<file>                   # BMAD
    <data_path>/<Name>/{valid,test}/Ungood/label/<same file name>                # mask datasets

The six BMAD datasets are known by name (:data:`CLASS_INDEX`; a positive index means pixel masks
exist, a negative one image labels only). Any other dataset folder is a user's dataset; it has
pixel masks iff its ``test`` split has the mask folder.

Few-shot support lists live at ``<seed_dir>/<Name>/<K>-shot.txt`` and hold two lines, in either
order::

    a-0: 01388_60.png 01471_60.png 00154_60.png 01646_90.png
    n-0: 01325_99.png 00250_60.png 01555_60.png 01181_99.png

``a-0`` lists abnormal images of the dataset's ``valid`` split (``valid/Ungood/img`` in the MVFA
layout), ``n-0`` normal images (``valid/good/img``); the same lists serve both layouts, since
they name files only. Only iteration 0 exists.
"""

from __future__ import annotations

import itertools
import random
import re
from collections.abc import Sequence
from pathlib import Path

from iqeclip.data.dataset_folders import (
    LAYOUTS,
    MvfaLayout,
    SplitFolders,
    data_dir,
    find_dataset,
    layouts_for,
)
from iqeclip.data.sample import Sample
from iqeclip.errors import UserError, param
from iqeclip.runtime.files import read_text

__all__ = [
    "CLASS_INDEX",
    "IMAGE_SUFFIXES",
    "LAYOUTS",
    "MASK_FOLDERS",
    "SPLITS",
    "available_datasets",
    "dataset_root",
    "draw_support",
    "find_support_list",
    "has_masks",
    "has_split",
    "in_mask_folder",
    "list_images",
    "list_split",
    "read_support_list",
    "samples_from_folders",
    "split_folders",
    "support_set",
]

CLASS_INDEX: dict[str, int] = {
    "Brain": 3,
    "Liver": 2,
    "Retina_RESC": 1,
    "Retina_OCT2017": -1,
    "Chest": -2,
    "Histopathology": -3,
}
"""Known BMAD datasets; index > 0: pixel masks exist, < 0: image-level labels only."""

IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpeg", ".jpg", ".tif", ".tiff", ".bmp")
"""File suffixes (compared case-insensitively) that are listed as images."""

SPLITS: tuple[str, ...] = ("valid", "test")
"""The splits of a dataset folder."""

MASK_FOLDER = MvfaLayout.MASKS
"""The MVFA layout's mask folder."""
MASK_FOLDERS: tuple[str, ...] = (MvfaLayout.MASKS, "label")
"""The mask folders of both layouts (``Ungood/anomaly_mask``, BMAD's ``Ungood/label``)."""
_SUPPORT_LINE = re.compile(r"^([an])-([0-9]+)\s*:(.*)$")


def in_mask_folder(parts: Sequence[str]) -> bool:
    """Whether a file whose folders (relative to a walked folder) are ``parts`` is a ground-truth
    mask of either layout: inside an ``anomaly_mask`` folder, or a ``label`` folder of an
    ``Ungood`` folder (BMAD's; a ``label`` folder elsewhere may hold anything)."""
    return MvfaLayout.MASKS in parts or any(
        pair == ("Ungood", "label") for pair in itertools.pairwise(parts)
    )


def available_datasets(data_path: str | Path, layout: str | None = None) -> list[str]:
    """Names of the datasets in the data folder.

    Args:
        data_path: The data folder.
        layout: ``bmad`` or ``mvfa`` (``--layout``): that layout's datasets only; None: both.

    Returns:
        The names (``X`` of ``<X>_AD``; a BMAD folder's name), sorted, each once.

    Raises:
        UserError: If ``data_path`` is not a folder.
    """
    root = data_dir(data_path)
    return sorted({name for lay in layouts_for(layout) for name in lay.names(root)})


def dataset_root(data_path: str | Path, name: str, layout: str | None = None) -> Path:
    """The folder of a dataset: ``<data_path>/<name>_AD`` (MVFA) or ``<data_path>/<name>``
    (BMAD).

    Args:
        data_path: The data folder.
        name: The dataset name, e.g. ``"Brain"``.
        layout: ``bmad`` or ``mvfa`` (``--layout``); None: the one layout that holds it.

    Returns:
        The dataset folder.

    Raises:
        UserError: If the data folder or the dataset folder does not exist (the message lists
            the datasets that do exist), or the dataset is in both layouts and ``layout`` is
            None, or only in the other layout.
    """
    return find_dataset(data_path, name, layout)[1]


def split_folders(
    data_path: str | Path, name: str, split: str, layout: str | None = None
) -> SplitFolders:
    """The folders of one split of a dataset (images of each class, masks), in its layout.

    Raises:
        UserError: As :func:`dataset_root`, or for an unknown split.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)}")
    lay, root = find_dataset(data_path, name, layout)
    return lay.split_folders(root, split)


def has_split(data_path: str | Path, name: str, split: str, layout: str | None = None) -> bool:
    """Whether the data folder holds the dataset with that split folder (False where the data
    folder, the dataset or the split is missing).

    Raises:
        UserError: The dataset is in both layouts and ``layout`` is None, or only in the other
            layout than ``layout``.
    """
    if not Path(data_path).is_dir():
        return False
    present = [lay.find(Path(data_path), name) for lay in LAYOUTS.values()]
    if not any(present):
        return False
    return split_folders(data_path, name, split, layout).split.is_dir()


def has_masks(data_path: str | Path, name: str, layout: str | None = None) -> bool:
    """Whether a dataset has pixel-level anomaly masks.

    Known datasets answer from :data:`CLASS_INDEX`; a user's dataset has masks iff its ``test``
    split's mask folder exists (``test/Ungood/anomaly_mask``; BMAD: ``test/Ungood/label``).

    Args:
        data_path: The data folder.
        name: The dataset name.
        layout: ``bmad``, ``mvfa`` or None (``--layout``).

    Returns:
        True if pixel masks exist.

    Raises:
        UserError: If a user's dataset folder does not exist.
    """
    if name in CLASS_INDEX:
        return CLASS_INDEX[name] > 0
    return split_folders(data_path, name, "test", layout).masks.is_dir()


def list_images(folder: Path) -> list[Path]:
    """Image files of a folder, sorted by name; hidden files and other suffixes are skipped."""
    if not folder.is_dir():
        raise UserError(f"image folder {folder} does not exist")
    return sorted(
        (
            p
            for p in folder.iterdir()
            if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMAGE_SUFFIXES
        ),
        key=lambda p: p.name,
    )


def list_split(
    data_path: str | Path,
    name: str,
    split: str,
    missing_masks: str = "error",
    layout: str | None = None,
) -> list[Sample]:
    """All images of one split of a dataset.

    Args:
        data_path: The data folder.
        name: The dataset name.
        split: ``"valid"`` or ``"test"``.
        missing_masks: ``"error"`` raises for an abnormal image without its mask; ``"keep"``
            lists it with ``mask=None`` for the caller's validation (``--on_bad_input skip``).
        layout: ``bmad``, ``mvfa`` or None (``--layout``; None: the one layout that holds it).

    Returns:
        The normal images sorted by file name, then the abnormal images sorted by file name. For
        mask datasets each abnormal image carries its mask of the same name in the mask folder.
        The same files give the same samples in the same order in either layout.

    Raises:
        UserError: If the split is unknown, the split folder or one of its image folders is
            missing, the split holds no image, or an abnormal image of a mask dataset has no mask.
    """
    folders = split_folders(data_path, name, split, layout)
    if not folders.split.is_dir():
        raise UserError(f"split folder {folders.split} does not exist")
    masks = has_masks(data_path, name, layout)
    normal = list_images(folders.normal)
    abnormal = list_images(folders.abnormal)
    if not normal and not abnormal:
        raise UserError(
            f"split folder {folders.split} holds no image ({', '.join(IMAGE_SUFFIXES)}) in "
            f"{folders.normal.relative_to(folders.split)} or "
            f"{folders.abnormal.relative_to(folders.split)}"
        )
    samples = [Sample(image=p, label=0, mask=None) for p in normal]
    for p in abnormal:
        mask = None
        if masks:
            mask = folders.masks / p.name
            if not mask.is_file():
                if missing_masks == "error":
                    raise UserError(f"abnormal image {p} has no mask: expected {mask}")
                mask = None  # "keep": the caller's validation reports it (--on_bad_input skip)
        samples.append(Sample(image=p, label=1, mask=mask))
    return samples


def read_support_list(path: Path) -> tuple[list[str], list[str]]:
    """Parse a few-shot support list file.

    The file holds one ``a-0:`` line (abnormal names) and one ``n-0:`` line (normal names), in
    either order, names separated by white space. CRLF line ends, blank lines and a missing final
    newline are tolerated.

    Args:
        path: The ``<K>-shot.txt`` file.

    Returns:
        ``(abnormal_names, normal_names)`` in file order.

    Raises:
        UserError: If the file cannot be read or is malformed (the message names file and line).
    """
    path = Path(path)
    text = read_text(path, "support list")
    found: dict[str, list[str]] = {}
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        match = _SUPPORT_LINE.match(line)
        if match is None:
            raise UserError(
                f"support list {path} line {number}: expected 'a-0: <names>' or "
                f"'n-0: <names>', got {line[:60]!r}"
            )
        kind, iteration, rest = match.groups()
        if iteration.strip("0"):  # not int(): a 5000-digit number would raise ValueError
            raise UserError(
                f"support list {path} line {number}: only iteration 0 exists, got "
                f"'{kind}-{iteration[:20]}'"
            )
        if kind in found:
            raise UserError(f"support list {path} line {number}: second '{kind}-0' line")
        names = rest.split()
        if not names:
            raise UserError(f"support list {path} line {number}: '{kind}-0' lists no image")
        found[kind] = names
    missing = [f"'{k}-0'" for k in ("a", "n") if k not in found]
    if missing:
        raise UserError(f"support list {path} has no {' or '.join(missing)} line")
    return found["a"], found["n"]


def find_support_list(
    name: str, shot: int, seed_dir: str | Path | None, data_path: str | Path
) -> Path:
    """Locate the support list ``<name>/<shot>-shot.txt``.

    Args:
        name: The dataset name.
        shot: Number of shots K.
        seed_dir: Folder of the support lists; if None, ``<data_path>/fewshot_seed`` and then
            ``./dataset/fewshot_seed`` (relative to the working folder) are tried in that order.
        data_path: The data folder.

    Returns:
        The first existing candidate file.

    Raises:
        UserError: If no candidate exists; the message lists the places searched.
    """
    rel = Path(name) / f"{shot}-shot.txt"
    if seed_dir is not None:
        candidates = [Path(seed_dir) / rel]
    else:
        candidates = [
            Path(data_path) / "fewshot_seed" / rel,
            Path("dataset") / "fewshot_seed" / rel,
        ]
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise UserError(
        f"no {shot}-shot support list for {name}; searched: "
        + ", ".join(str(c) for c in candidates)
    )


def support_set(
    data_path: str | Path,
    name: str,
    shot: int,
    iterate: int,
    seed_dir: str | Path | None = None,
    seed: int = 42,
    layout: str | None = None,
) -> tuple[list[Sample], list[Sample]]:
    """The few-shot support set, K abnormal and K normal images of the ``valid`` split.

    A list file names files only, so the same lists serve the MVFA and the BMAD layout.

    Args:
        data_path: The data folder.
        name: The dataset name.
        shot: Number of shots K per class (``--shot``).
        iterate: ``>= 0``: read the support list file (only iteration 0 exists);
            ``< 0``: draw K names per class with ``random.Random(seed).sample`` from the sorted
            folder listings (abnormal first, then normal, from the same generator).
        seed_dir: Folder of the support lists, see :func:`find_support_list`.
        seed: Seed for ``iterate < 0``.
        layout: ``bmad``, ``mvfa`` or None (``--layout``; None: the one layout that holds it).

    Returns:
        ``(abnormal, normal)``: K samples each. From a list file they keep the file's order.

    Raises:
        UserError: If ``shot < 1``, ``iterate > 0``, the list file is missing, malformed, does not
            list K names per class or names an image that does not exist, or if a class has fewer
            than K images.
    """
    if shot < 1:
        raise UserError(f"{param('shot')} must be at least 1, got {shot}")
    if iterate > 0:
        raise UserError(
            f"{param('iterate')} {iterate}: only iteration 0 exists in the support lists"
        )
    samples = list_split(data_path, name, "valid", layout=layout)
    normal = [s for s in samples if s.label == 0]
    abnormal = [s for s in samples if s.label == 1]
    valid = split_folders(data_path, name, "valid", layout)

    if iterate < 0:
        return draw_support(abnormal, normal, shot, seed, (valid.abnormal, valid.normal))

    list_file = find_support_list(name, shot, seed_dir, data_path)
    abnormal_names, normal_names = read_support_list(list_file)
    chosen: list[list[Sample]] = []
    for kind, names, pool, folder in (
        ("a-0", abnormal_names, abnormal, valid.abnormal),
        ("n-0", normal_names, normal, valid.normal),
    ):
        if len(names) != shot:
            raise UserError(
                f"support list {list_file}: '{kind}' lists {len(names)} images, expected {shot}"
            )
        by_name = {s.image.name: s for s in pool}
        picked = []
        for n in names:
            if n not in by_name:
                raise UserError(
                    f"support list {list_file} names {n}, but {folder / n} does not exist"
                )
            picked.append(by_name[n])
        chosen.append(picked)
    return chosen[0], chosen[1]


def draw_support(
    abnormal: list[Sample],
    normal: list[Sample],
    shot: int,
    seed: int,
    where: tuple[str | Path, str | Path],
) -> tuple[list[Sample], list[Sample]]:
    """Draw K abnormal and K normal samples with ``random.Random(seed).sample`` (abnormal first,
    then normal, from the same generator).

    Args:
        abnormal: The abnormal pool, in a stable order.
        normal: The normal pool.
        shot: K.
        seed: The generator's seed.
        where: What holds each pool (abnormal, normal), named when it is too small.

    Raises:
        UserError: A pool with fewer than K samples.
    """
    for kind, pool, place in (("abnormal", abnormal, where[0]), ("normal", normal, where[1])):
        if len(pool) < shot:
            raise UserError(
                f"{param('shot')} {shot} needs {shot} {kind} images but {place} holds {len(pool)}"
            )
    rng = random.Random(seed)
    return rng.sample(abnormal, shot), rng.sample(normal, shot)


def samples_from_folders(
    normal_dir: str | Path, abnormal_dir: str | Path, masks_dir: str | Path | None
) -> tuple[list[Sample], list[Sample]]:
    """A user's own support set: ``(abnormal, normal)`` samples from two image folders.

    Args:
        normal_dir: folder of normal images (``--normal``).
        abnormal_dir: folder of abnormal images (``--abnormal``).
        masks_dir: folder of masks named like the abnormal images (``--masks``), or ``None``.

    Raises:
        UserError: if a folder is missing or empty, or an abnormal image has no mask.
    """
    folders = {"normal_dir": Path(normal_dir), "abnormal_dir": Path(abnormal_dir)}
    images = {}
    for name, folder in folders.items():
        if not folder.is_dir():
            raise UserError(f"{param(name)} {folder}: no such folder")
        images[name] = list_images(folder)
        if not images[name]:
            raise UserError(f"{param(name)} {folder}: no images ({', '.join(IMAGE_SUFFIXES)})")
    abnormal = []
    for image in images["abnormal_dir"]:
        mask = None
        if masks_dir is not None:
            mask = Path(masks_dir) / image.name
            if not mask.is_file():
                raise UserError(f"abnormal image {image} has no mask: expected {mask}")
        abnormal.append(Sample(image=image, label=1, mask=mask))
    normal = [Sample(image=image, label=0, mask=None) for image in images["normal_dir"]]
    return abnormal, normal
