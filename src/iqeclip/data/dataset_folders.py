"""The two folder layouts a benchmark may have under ``--data_path``, one class each, and the choice
between them (``--layout``).

MVFA's re-packaging of BMAD (:class:`MvfaLayout`)::

    <data_path>/<Name>_AD/{valid,test}/{good,Ungood}/img/<file>
    <data_path>/<Name>_AD/{valid,test}/Ungood/anomaly_mask/<same file name>

BMAD's own layout (:class:`BmadLayout`), as the BMAD authors distribute it and as anomalib's BMAD
data module downloads it (``train/good`` is not read)::

    <data_path>/<Name>/{train,valid,test}/{good,Ungood}/img/<file>     # pixel-mask datasets
    <data_path>/<Name>/{valid,test}/Ungood/label/<same file name>
    <data_path>/<Name>/{train,valid,test}/{good,Ungood}/<file>         # image-label datasets

Both name the datasets as :data:`~iqeclip.data.layout.CLASS_INDEX` does (Brain, Liver,
Retina_RESC, Retina_OCT2017, Chest, Histopathology); BMAD's README also shows the histopathology
dataset as ``camelyon16``, which is read as Histopathology. Where a dataset is found in one
layout only, that one is read; where in both, ``--layout`` chooses.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from iqeclip.errors import UserError, param

__all__ = [
    "LAYOUTS",
    "BmadLayout",
    "Layout",
    "MvfaLayout",
    "SplitFolders",
    "data_dir",
    "find_dataset",
    "layouts_for",
]

NORMAL = "good"
ABNORMAL = "Ungood"
IMG = "img"
SPLITS: tuple[str, ...] = ("valid", "test")


@dataclass(frozen=True)
class SplitFolders:
    """Where one split of a dataset keeps its images and masks.

    Attributes:
        split: the split folder (``.../valid``).
        normal: the folder of normal images.
        abnormal: the folder of abnormal images.
        masks: the folder of the abnormal images' masks (same file names); it may not exist.
    """

    split: Path
    normal: Path
    abnormal: Path
    masks: Path


class Layout:
    """One folder layout: where a dataset's folder is, which datasets a data folder holds, and
    where a split keeps its images and masks."""

    key = ""
    """The ``--layout`` value."""
    title = ""
    """Its name in messages."""

    def candidates(self, data: Path, name: str) -> list[Path]:
        """The folders that would hold dataset ``name`` in this layout."""
        raise NotImplementedError

    def holds(self, folder: Path) -> bool:
        """Whether ``folder`` (one of :meth:`candidates`) is a dataset of this layout."""
        return folder.is_dir()

    def names(self, data: Path) -> dict[str, Path]:
        """The datasets of this layout in ``data``: name -> folder."""
        raise NotImplementedError

    def split_folders(self, root: Path, split: str) -> SplitFolders:
        """The folders of one split of the dataset folder ``root``."""
        raise NotImplementedError

    def find(self, data: Path, name: str) -> Path | None:
        """The folder of dataset ``name`` in this layout, or None.

        Raises:
            UserError: two folders of this layout name the same dataset.
        """
        found = [p for p in self.candidates(data, name) if self.holds(p)]
        if len(found) > 1:
            raise UserError(
                f"{found[0]} and {found[1]} both hold dataset {name} ({self.title} layout): "
                "keep one of them"
            )
        return found[0] if found else None


class MvfaLayout(Layout):
    """MVFA's re-packaging: ``<Name>_AD`` folders, ``img`` sub-folders, ``anomaly_mask`` masks."""

    key = "mvfa"
    title = "MVFA"
    SUFFIX = "_AD"
    MASKS = "anomaly_mask"

    def candidates(self, data: Path, name: str) -> list[Path]:
        return [data / f"{name}{self.SUFFIX}"]

    def names(self, data: Path) -> dict[str, Path]:
        return {
            p.name[: -len(self.SUFFIX)]: p
            for p in sorted(data.iterdir())
            if p.is_dir() and p.name.endswith(self.SUFFIX) and len(p.name) > len(self.SUFFIX)
        }

    def split_folders(self, root: Path, split: str) -> SplitFolders:
        folder = root / split
        return SplitFolders(
            folder, folder / NORMAL / IMG, folder / ABNORMAL / IMG, folder / ABNORMAL / self.MASKS
        )


class BmadLayout(Layout):
    """BMAD's own layout: ``<Name>`` folders; images in ``img`` sub-folders (pixel-mask datasets)
    or straight in ``good`` and ``Ungood`` (image-label datasets); masks in ``Ungood/label``
    (``Ungood/anomaly_mask`` is read too)."""

    key = "bmad"
    title = "BMAD"
    MASKS = ("label", "anomaly_mask")
    ALIASES: ClassVar[dict[str, tuple[str, ...]]] = {"Histopathology": ("camelyon16",)}
    """Other folder names of a dataset, as BMAD's README shows them."""

    def candidates(self, data: Path, name: str) -> list[Path]:
        return [data / name] + [data / alias for alias in self.ALIASES.get(name, ())]

    def holds(self, folder: Path) -> bool:
        # a folder is a BMAD dataset when a split has a class folder: an MVFA <Name>_AD folder
        # has them too, and is left to the MVFA layout by its name
        return not folder.name.endswith(MvfaLayout.SUFFIX) and any(
            (folder / split / kind).is_dir() for split in SPLITS for kind in (NORMAL, ABNORMAL)
        )

    def names(self, data: Path) -> dict[str, Path]:
        canonical = {alias: name for name, aliases in self.ALIASES.items() for alias in aliases}
        found: dict[str, Path] = {}
        for p in sorted(data.iterdir()):
            if p.name.startswith(".") or not self.holds(p):
                continue
            name = canonical.get(p.name, p.name)
            if name in found:
                raise UserError(
                    f"{found[name]} and {p} both hold dataset {name} ({self.title} layout): "
                    "keep one of them"
                )
            found[name] = p
        return dict(sorted(found.items()))

    def split_folders(self, root: Path, split: str) -> SplitFolders:
        folder = root / split

        def images(kind: Path) -> Path:
            return kind / IMG if (kind / IMG).is_dir() else kind

        abnormal = folder / ABNORMAL
        masks = next(
            (abnormal / m for m in self.MASKS if (abnormal / m).is_dir()), abnormal / self.MASKS[0]
        )
        return SplitFolders(folder, images(folder / NORMAL), images(abnormal), masks)


LAYOUTS: dict[str, Layout] = {layout.key: layout for layout in (BmadLayout(), MvfaLayout())}
"""The layouts by ``--layout`` value."""


def data_dir(data_path: str | Path) -> Path:
    """``--data_path`` as a folder.

    Raises:
        UserError: it is not a folder.
    """
    path = Path(data_path)
    if not path.is_dir():
        raise UserError(
            f"data folder {path} ({param('data_path')}) does not exist or is not a folder"
        )
    return path


def layouts_for(layout: str | None) -> list[Layout]:
    """The layouts ``--layout`` lets be read: the one asked for, or all (None).

    Raises:
        UserError: an unknown ``--layout``.
    """
    if layout is None:
        return list(LAYOUTS.values())
    if layout not in LAYOUTS:
        raise UserError(
            f"{param('layout')} {layout!r}: expected one of {', '.join(sorted(LAYOUTS))}"
        )
    return [LAYOUTS[layout]]


def find_dataset(
    data_path: str | Path, name: str, layout: str | None = None
) -> tuple[Layout, Path]:
    """The layout and folder of dataset ``name`` in ``--data_path``.

    Args:
        data_path: The data folder.
        name: The dataset name.
        layout: ``bmad`` or ``mvfa`` (``--layout``); None: the one layout that holds it.

    Raises:
        UserError: The data folder is missing; the dataset is in neither layout (the message
            lists the datasets there are); it is in both and ``layout`` is None; it is only in the
            other layout than ``layout`` (the message names what was found).
    """
    data = data_dir(data_path)
    layouts_for(layout)  # an unknown value fails before the folders are looked at
    found = {key: lay.find(data, name) for key, lay in LAYOUTS.items()}
    present = {key: path for key, path in found.items() if path is not None}
    if layout is not None and layout in present:
        return LAYOUTS[layout], present[layout]
    if layout is None and len(present) == 1:
        key, path = next(iter(present.items()))
        return LAYOUTS[key], path
    if len(present) > 1:
        both = " and ".join(f"{p} ({LAYOUTS[k].title})" for k, p in present.items())
        raise UserError(
            f"dataset {name} is in both layouts in {data}: {both}; choose one with "
            f"{param('layout')} bmad or {param('layout')} mvfa"
        )
    wanted = LAYOUTS[layout] if layout is not None else LAYOUTS["mvfa"]
    expected = wanted.candidates(data, name)[0]
    if present:  # only in the other layout than --layout asked for
        key, path = next(iter(present.items()))
        raise UserError(
            f"{param('layout')} {layout}: no {wanted.title}-layout folder {expected} for {name}; "
            f"{data} holds it in the {LAYOUTS[key].title} layout ({path})"
        )
    listing = ", ".join(p.name for lay in layouts_for(layout) for p in lay.names(data).values())
    if layout != "mvfa" and (data / name).is_dir():  # there, but not in BMAD's shape
        problem = f"{data / name} has no valid/ or test/ folder holding good/ or Ungood/"
        if layout is None:
            problem = f"dataset folder {expected} does not exist, and {problem}"
    else:
        problem = f"dataset folder {expected} does not exist"
        if layout is None:
            problem += f" nor BMAD-layout folder {data / name}"
    raise UserError(f"{problem}; datasets in {data}: {listing or 'none'}")
