"""The inputs of a predict or calibrate run, before any is read: the walk of the folders
(:func:`expand_inputs`), the checks every input passes before the first batch
(:func:`check_inputs`, :func:`mask_for`) and the output stems (:func:`unique_stems`).

Output names are unique by construction. Every name an input writes begins with its stem
(:func:`unique_stems`) and ``_``: a 2-D input writes ``<stem>_overlay.png``, ...; an input with
slices writes ``<stem>_s000_...`` and ``<stem>_anomaly.nii.gz``, a folder of several series
``<stem>_series<N>_...`` or ``<stem>_<last 8 UID characters>_...``. So two inputs never take
the same stem (the later one gets ``<stem>-2``, ``-3``, ...), and an input that can write names
below its stem (a NIfTI file, a series folder, a DICOM file, a multi-page image: the reader
registry and the image header tell before reading) never keeps a stem ``P`` when another
input's stem begins with ``P_``: beside ``a_s000.png``, ``a.nii.gz`` writes ``a-2_s000_...``
(whichever comes first), so its slice 0 never overwrites the PNG's outputs. What an input is
(which reader takes it, whether it is one 2-D picture, where its mask lies) its reader says
(:func:`~iqeclip.data.readers.reader_for`).
"""

from __future__ import annotations

import bisect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from iqeclip.data.layout import in_mask_folder
from iqeclip.data.readers import (
    DEFAULT_READING,
    Reader,
    Reading,
    input_stem,
    label_slices,
    reader_for,
    reason_about,
    single_image,
)
from iqeclip.data.readers.itk import SEGMENTATION_SUFFIX
from iqeclip.data.readers.registry import supported
from iqeclip.data.sample import Sample
from iqeclip.data.validate import Skipped, validate_samples
from iqeclip.errors import UserError, as_flag, param
from iqeclip.inference.files import TABLES, is_output_name

logger = logging.getLogger(__name__)


def expand_inputs(
    paths: Sequence[str | Path],
    exclude: Path | None = None,
    unreadable: list[Skipped] | None = None,
    unsupported: list[Skipped] | None = None,
) -> list[Path]:
    """Files and DICOM series folders to read, in a stable order.

    A folder is searched recursively: images and NIfTI files are taken one by one, and every
    folder holding DICOM files is one input (:func:`~iqeclip.data.items.read_items` splits it by
    series). The
    ``exclude`` folder (predict's ``--out``) is not searched when it lies inside a walked
    folder, and where it *is* the walked folder its files named like predict's outputs
    (``*_overlay.png``, ``*_map.png``, ...) are left out, so an earlier run's outputs are never
    read back as inputs. Below a walked folder, the ground-truth masks of the BMAD layout
    (``.../anomaly_mask/*``) are left out and counted in a log line; a mask folder given itself
    is read. A folder the walk cannot list or enter (no read or execute permission) is never
    passed over in silence: with ``unreadable`` a list (``--on_bad_input skip``) it is appended
    to it, else it stops the run. A file below a walked folder that no reader takes (a report,
    a ``.txt``), or a 3D Slicer segmentation (``.seg.nrrd``: labels, not an image), is no input
    but never dropped in silence either: it is counted in a warning and, with ``unsupported`` a
    list, appended to it with its reason (predict lists them in ``skipped_inputs.csv``). The
    voxel file of a detached header of the same stem (``scan.raw`` beside ``scan.mhd``) belongs
    to that header's input.

    Raises:
        UserError: A missing input, no input found, or (without ``unreadable``) a folder that
            cannot be read, naming it.
    """
    skip = Path(exclude).resolve() if exclude is not None else None
    masks_left_out = 0

    def wanted(p: Path, root: Path, top: Path) -> bool:
        nonlocal masks_left_out
        if not p.is_file() or p.name.startswith("."):
            return False
        if in_mask_folder(p.relative_to(root).parts[:-1]):
            masks_left_out += 1
            return False
        if skip is None or not p.resolve().is_relative_to(skip):
            return True
        if skip == top or top.is_relative_to(skip):  # --out is the walked folder (or above it)
            ours = is_output_name(p.name) or p.name in TABLES
            return not ours or p.parent.resolve() != skip
        return False  # inside an --out below the walked folder

    def refused(folder: Path, reason: str) -> None:
        if unreadable is None:
            raise UserError(
                f"input folder {folder}: cannot read it ({reason}); {param('on_bad_input')} skip "
                "leaves it out"
            )
        unreadable.append(Skipped(folder, f"folder cannot be read ({reason})"))

    found: list[Path] = []
    left_out: list[Skipped] = []
    for raw in paths:
        path = Path(raw)
        if path.is_file():
            found.append(path)
        elif path.is_dir():
            top = path.resolve()
            files = sorted(p for p in _files_below(path, refused) if wanted(p, path, top))
            found += _inputs_among(files, left_out)
        else:
            raise UserError(f"input {path}: no such file or folder")
    _say_left_out(left_out, masks_left_out)
    if unsupported is not None:
        unsupported.extend(left_out)
    if not found:
        raise UserError(
            f"no input files in {', '.join(map(str, paths))} (supported: {supported()})"
        )
    return found


def _say_left_out(left_out: Sequence[Skipped], masks: int) -> None:
    """One log line for the files of the walked folders that are no input, one for the masks."""
    if left_out:
        logger.warning(
            f"left out {len(left_out)} files that are no input (of no supported format, or "
            f"labels), e.g. {left_out[0].path}: {left_out[0].reason}"
        )
    if masks:
        logger.info(
            f"left out {masks} ground-truth masks in anomaly_mask/ or Ungood/label/ folders (the "
            "MVFA and BMAD layouts; pass such a folder itself to score it, or --masks to draw them)"
        )


def _inputs_among(files: Sequence[Path], left_out: list[Skipped]) -> list[Path]:
    """The inputs of a walked folder's files, in order (a DICOM folder once); what is no input
    is appended to ``left_out`` with its reason."""
    found: dict[Path, None] = {}  # ordered, each once
    for f in files:
        reader = reader_for(f)
        why = _not_an_input(f, reader)
        if why is not None:
            left_out.append(Skipped(f, why))
        elif reader is not None:
            found.setdefault(reader.input_of(f), None)
    return list(found)


_DETACHED_HEADERS = (".mhd", ".nhdr")  # headers whose voxels lie in a file beside them


def _not_an_input(file: Path, reader: Reader | None) -> str | None:
    """Why a file found in a walked folder is no input (None: it is one, or the voxel file of
    a detached header beside it)."""
    if reader is not None:
        if file.name.lower().endswith(SEGMENTATION_SUFFIX):
            return "a 3D Slicer segmentation (labels, not an image): give it as a mask"
        return None
    stem = file.name.split(".")[0]
    if any(file.with_name(stem + h).is_file() for h in _DETACHED_HEADERS):
        return None  # read through its header
    return f"no reader for this file type (supported: {supported()})"


def _files_below(root: Path, refused: Callable[[Path, str], None]) -> Iterator[Path]:
    """Every file below ``root`` (symbolic links to folders are not followed, as rglob); a
    folder that cannot be listed or entered goes to ``refused``."""

    def failed(error: OSError) -> None:
        refused(Path(error.filename), error.strerror or str(error))

    for folder, folders, files in os.walk(root, onerror=failed):
        if not os.access(folder, os.R_OK | os.X_OK):  # listed, but its files cannot be opened
            refused(Path(folder), "permission denied")
            folders.clear()
            continue
        yield from (Path(folder, name) for name in files)


def mask_for(path: Path, masks: Path) -> Path:
    """The ground truth of an input in the ``--masks`` folder, where its reader says
    (:meth:`~iqeclip.data.readers.reader.Reader.mask_in`): the image mask of the same name for
    a 2-D image; the label volume of the same name for a NIfTI, NRRD or MetaImage volume (for
    NRRD and MetaImage, else 3D Slicer's ``<stem>.seg.nrrd``), ``<folder name>.nii.gz`` (or
    ``.nii``) for a DICOM series folder. A label volume may be NIfTI, NRRD, MetaImage or
    DICOM-SEG, on the input's grid or resampled onto it; the values of ``--label_values``
    count (default: any non-zero value; :mod:`~iqeclip.data.readers.labels`).

    Raises:
        UserError: An input that holds several pictures without a volume geometry (a
            multi-frame DICOM file, a multi-page TIFF): no mask can be drawn on it.
    """
    reader = reader_for(path)
    mask = None if reader is None else reader.mask_in(path, masks)
    if mask is not None:
        return mask
    raise UserError(
        f"{param('masks')}: {path} is a multi-frame or multi-page file; masks are drawn on 2-D "
        "images and on NIfTI volumes and DICOM series (label volumes)"
    )


def check_inputs(
    paths: Sequence[Path],
    masks: Path | None,
    size: int,
    policy: str,
    reading: Reading = DEFAULT_READING,
) -> tuple[list[Path], list[Skipped]]:
    """The checks training applies, run over every predict input before the first batch.

    Each input is checked as :func:`~iqeclip.data.validate.check_sample` checks a training
    image (header size first, against ``reading``'s limits, then one decode: too small, too
    large, corrupt, unreadable); with
    ``masks`` each input needs its mask there (:func:`mask_for`): a 2-D image's of its size and
    binary, a volume's label volume on its grid (:func:`~iqeclip.data.readers.label_slices`).
    DICOM series folders are read whole under ``error`` (the first bad file stops the run);
    under ``skip`` their bad files are left out one by one while scoring.

    Returns:
        The usable inputs in order, and the skipped ones (empty under ``error``).

    Raises:
        UserError: Under ``error``, the first unusable input or mask.
    """
    good: list[Path] = []
    skipped: list[Skipped] = []
    for path in paths:
        try:
            mask = mask_for(path, masks) if masks is not None else None
            if mask is not None and not mask.is_file():
                raise UserError(f"no mask {mask.name} in {param('masks')} {masks}")
            if mask is not None and not single_image(path):
                label_slices(mask, path, reading)  # a label volume on the input's grid
                mask = None  # checked: the sample below is the input alone
        except UserError as exc:
            if policy == "error":
                raise UserError(
                    f"{path}: {reason_about(exc, path)} ({param('on_bad_input')} skip leaves "
                    "such inputs out)"
                ) from None
            skipped.append(Skipped(path, exc.render(as_flag)))
            continue
        reader = reader_for(path)
        if policy == "skip" and reader is not None and reader.partial:
            good.append(path)
            continue
        sample = Sample(path, 0, mask, reading=reading)  # checked against its limits
        usable, bad = validate_samples([sample], size, policy)
        good += [s.image for s in usable]
        skipped += bad
    return good, skipped


def unique_stems(paths: Sequence[Path]) -> dict[Path, str]:
    """Output stems of the inputs, such that no two inputs write a file of the same name.

    Every name an input writes begins with its stem and ``_`` (module docstring), so in input
    order each input takes the first of ``name``, ``name-2``, ``name-3``, ... that no earlier
    input took and, for an input that writes names below its stem (:func:`_has_sub_names`),
    that begins no other input's stem followed by ``_``.
    """
    bases = [input_stem(path) for path in paths]
    ordered = sorted(bases)
    stems: dict[Path, str] = {}
    taken: set[str] = set()
    for path, base in zip(paths, bases, strict=True):
        stem, n = base, 1
        while stem in taken or (_begins_another(stem, ordered) and _has_sub_names(path)):
            n += 1
            stem = f"{base}-{n}"
        stems[path] = stem
        taken.add(stem)
    return stems


def _begins_another(stem: str, ordered: list[str]) -> bool:
    """Whether ``<stem>_`` begins one of the (sorted) stems. Checking the inputs' own stems is
    enough: ``<base>-N`` begins with ``<stem>_`` only where ``<base>`` does."""
    i = bisect.bisect_left(ordered, f"{stem}_")
    return i < len(ordered) and ordered[i].startswith(f"{stem}_")


def _has_sub_names(path: Path) -> bool:
    """Whether an input may write names below its stem (``<stem>_s000``, ``<stem>_series2``):
    all but one 2-D picture (a NIfTI file, a series folder, a DICOM file, which may hold
    frames, or a multi-page image), known before reading from its reader."""
    return not single_image(path)
