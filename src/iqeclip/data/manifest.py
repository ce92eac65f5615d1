"""Labelled data from a CSV manifest (``--manifest FILE.csv``): any input, slices labelled by masks.

A manifest is a CSV file with a header row. Columns (names in any order, extra columns ignored)::

    path,label,mask,split,slice
    scans/p01_flair.nii.gz,,scans/p01_seg.nii.gz,train,
    scans/p02_flair.nii.gz,normal,,test,
    ct/series_0042,abnormal,,valid,
    ct/series_0043,,ct/series_0043_seg.dcm,test,
    slicer/p03.nrrd,,slicer/p03.seg.nrrd,train,
    photos/a.png,abnormal,photos/a_mask.png,test,

- ``path`` (required): any input the readers take: an image, a DICOM file, a DICOM series folder,
  a NIfTI, NRRD or MetaImage volume. Relative paths are relative to the manifest's folder.
- ``label``: ``normal`` / ``abnormal`` (or ``0`` / ``1``). May be empty for a volume with a label
  volume (the slices' labels then come from it); required otherwise.
- ``mask`` (optional): an image mask for a 2-D input, or a label volume for a volume or a DICOM
  series: a NIfTI, NRRD or MetaImage file (a 3D Slicer ``.seg.nrrd`` included) or a DICOM-SEG.
  The voxels whose value is one of ``--label_values`` are anomalous (default: any non-zero
  value; a DICOM-SEG's values are its segment numbers). It is aligned to the image by
  :func:`~iqeclip.data.readers.label_slices` (:mod:`~iqeclip.data.readers.labels`): a DICOM-SEG
  on the series it references by its source instances, a label volume on the image's grid up
  to axis order as it is, and one on another grid resampled by nearest neighbour (a log line
  says so); one that does not overlap its image is refused.
- ``split`` (optional): ``train`` (few-shot support, an extra zero-shot source), ``valid``
  (``calibrate``) or ``test`` (``test-*`` and the final test of a training run). An empty split
  puts the row in every split.
- ``slice`` (optional): use only this slice of a volume (its position along ``--axis``, or in a
  series) instead of all of them; ASCII digits. A 2-D input has one slice, 0.

A volume (NIfTI, DICOM series, multi-frame DICOM; a multi-page TIFF, page by page) becomes one
sample per slice along ``--axis``.
With a label volume, a slice is abnormal when it has at least ``min_lesion_px`` labelled pixels
(``--min_lesion_px``) and normal when it has none and no labelled slice lies within ``margin``
slices of it (``--margin``); slices with fewer labelled pixels, and normal-looking slices that
close to a lesion, are left out (counted). Without a label volume every slice takes the row's
label. Constant slices (empty background, e.g. the ends of a skull-stripped MRI) are left out and
counted too. Each volume row is also one volume (its label: any labelled voxel, else the row's
label) for calibrating the volume score.

A manifest defines the experiment, so these are refused whatever ``--on_bad_input`` says (like a
support list naming a missing file), before any input is read, in one line naming the manifest
and the lines: a column named twice in the header; two rows of the same sample (the same file,
compared as resolved paths, and the same slice; a row without ``slice`` holds every slice) with
different labels or masks; and, with the same label and mask, two such rows whose splits overlap
(equal, or one empty), which would count the sample twice. The same sample in rows of different
splits (``train`` and ``test``) is allowed (a warning says the test is optimistic).
"""

from __future__ import annotations

import csv
import io
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from iqeclip.data.readers import (
    MissingPackage,
    Reading,
    label_slices,
    read_slices,
    reader_for,
    reason_about,
    single_image,
)
from iqeclip.data.sample import Sample
from iqeclip.data.validate import Skipped
from iqeclip.errors import UserError, param
from iqeclip.runtime.files import read_text

__all__ = ["LABELS", "MANIFEST_SPLITS", "Manifest", "Volume", "has_pixel_masks", "read_manifest"]

MANIFEST_SPLITS: tuple[str, ...] = ("train", "valid", "test")
"""Values of the ``split`` column (an empty value: every split)."""

LABELS: dict[str, int] = {"normal": 0, "0": 0, "abnormal": 1, "1": 1}
"""Values of the ``label`` column (case-insensitive)."""


@dataclass(frozen=True)
class Volume:
    """A volume row, for calibrating the volume score: its input, label and split."""

    path: Path
    label: int
    split: str | None


@dataclass
class Manifest:
    """A manifest's samples and volumes, by split.

    Attributes:
        path: The manifest file.
        rows: ``(split, sample)`` for every slice or image, in file order.
        volumes: The volume rows (without a ``slice`` value).
        left_out: Slices left out near lesions or with too few labelled pixels.
        constant: Constant slices left out.
        skipped: Rows left out under ``--on_bad_input skip``.
    """

    path: Path
    rows: list[tuple[str | None, Sample]] = field(default_factory=list)
    volumes: list[Volume] = field(default_factory=list)
    left_out: int = 0
    constant: int = 0
    skipped: list[Skipped] = field(default_factory=list)

    def split(self, name: str) -> list[Sample]:
        """The samples of a split (rows with an empty split belong to every split)."""
        return [s for split, s in self.rows if split in (None, name)]

    def split_volumes(self, name: str) -> list[Volume]:
        """The volume rows of a split."""
        return [v for v in self.volumes if v.split in (None, name)]

    def summary(self, name: str) -> str:
        """One line: the split's counts, and what was left out."""
        samples = self.split(name)
        abnormal = sum(s.label for s in samples)
        return (
            f"manifest {self.path} [{name}]: {len(samples) - abnormal} normal + {abnormal} "
            f"abnormal samples; in the whole manifest, left out {self.left_out} slices near "
            f"lesions or below --min_lesion_px and {self.constant} constant slices; skipped "
            f"{len(self.skipped)} rows (--on_bad_input skip)"
        )


def has_pixel_masks(samples: Sequence[Sample]) -> bool:
    """Whether pixel metrics apply: there are abnormal samples and every one has a mask."""
    abnormal = [s for s in samples if s.label == 1]
    return bool(abnormal) and all(s.mask is not None for s in abnormal)


class _RowError(Exception):
    def __init__(self, path: Path, reason: str) -> None:
        super().__init__(reason)
        self.path, self.reason = path, reason


def _cell(row: dict[str, str | None], name: str) -> str:
    return (row.get(name) or "").strip()


@dataclass(frozen=True)
class _Row:
    """One manifest row, its fields checked (``path`` and ``mask`` also as written)."""

    line: int
    raw: str
    item: Path
    label_text: str
    label: int | None
    mask_text: str
    mask: Path | None
    split: str | None
    chosen: int | None

    @property
    def name(self) -> str:
        """The row's sample as written: its path, and its slice when it names one."""
        return self.raw if self.chosen is None else f"{self.raw} slice {self.chosen}"


def _label(text: str, line: int, where: Path) -> int | None:
    if not text:
        return None
    if text.lower() not in LABELS:
        raise UserError(
            f"{param('manifest')} {where} line {line}: label {text!r} is not normal, abnormal, "
            "0 or 1"
        )
    return LABELS[text.lower()]


def _check_header(reader: csv.DictReader, where: Path) -> None:
    """Strip the header's column names; refuse a name given twice, or no path or label column."""
    names = [(c or "").strip() for c in reader.fieldnames or ()]
    twice = sorted(name for name, n in Counter(names).items() if name and n > 1)
    if twice:
        raise UserError(
            f"{param('manifest')} {where} line {reader.line_num}: the header names "
            f"{' and '.join(map(repr, twice))} more than once (a column has one name)"
        )
    if not {"path", "label"} <= set(names):
        raise UserError(
            f"{param('manifest')} {where}: the header must name the columns path and label (and "
            f"optionally mask, split, slice), got {', '.join(sorted(set(names))) or 'nothing'}"
        )
    reader.fieldnames = names


def _parse(row: dict[str, str | None], line: int, where: Path) -> _Row:
    """A record's fields, checked; paths are relative to the manifest's folder."""
    raw = _cell(row, "path")
    if not raw:
        raise UserError(f"{param('manifest')} {where} line {line}: empty path")
    label_text, mask_text = _cell(row, "label"), _cell(row, "mask")
    label = _label(label_text, line, where)
    split = _cell(row, "split").lower() or None
    if split is not None and split not in MANIFEST_SPLITS:
        raise UserError(
            f"{param('manifest')} {where} line {line}: split {split!r} is not one of "
            f"{', '.join(MANIFEST_SPLITS)} (or empty)"
        )
    chosen = _cell(row, "slice")
    if chosen and not (chosen.isascii() and chosen.isdigit()):
        raise UserError(
            f"{param('manifest')} {where} line {line}: slice {chosen!r} is not a number"
        )
    base = where.parent
    return _Row(
        line,
        raw,
        base / raw,
        label_text,
        label,
        mask_text,
        base / mask_text if mask_text else None,
        split,
        int(chosen) if chosen else None,
    )


def _refuse_overlaps(rows: Sequence[_Row], where: Path) -> None:
    """Refuse two rows of one sample: the same file (resolved) and overlapping slices (a row
    without ``slice`` holds them all) with different labels or masks, or with the same ones and
    overlapping splits (equal, or one empty). Rows of different splits may share a sample."""
    seen: dict[Path, list[_Row]] = {}
    for row in rows:
        same_file = seen.setdefault(_resolved(row.item), [])
        for earlier in same_file:
            if None not in (row.chosen, earlier.chosen) and row.chosen != earlier.chosen:
                continue
            differ = []
            if row.label != earlier.label:
                differ.append(f"label {row.label_text!r} vs {earlier.label_text!r}")
            if not _same_file(row.mask, earlier.mask):
                differ.append(f"mask {row.mask_text!r} vs {earlier.mask_text!r}")
            if not differ and None not in (row.split, earlier.split) and row.split != earlier.split:
                continue
            also = f" ({earlier.name})" if earlier.name != row.name else ""
            verb = "contradicts" if differ else "duplicates"
            detail = f": {', '.join(differ)}" if differ else ""
            raise UserError(
                f"{param('manifest')} {where} line {row.line}: {row.name} {verb} "
                f"line {earlier.line}"
                f"{also}{detail}"
            )
        same_file.append(row)


def _resolved(path: Path) -> Path:
    """``path`` with its symbolic links followed (absolute, as given, on a link loop)."""
    try:
        return path.resolve()
    except (OSError, RuntimeError):  # Python < 3.13 raises RuntimeError on a loop
        return path.absolute()


def _same_file(a: Path | None, b: Path | None) -> bool:
    return a == b if a is None or b is None else _resolved(a) == _resolved(b)


def read_manifest(
    path: str | Path,
    reading: Reading,
    min_lesion_px: int = 1,
    margin: int = 0,
    policy: str = "error",
) -> Manifest:
    """Read a manifest and expand its volumes into labelled slices (see the module docstring).

    Args:
        path: The CSV file.
        reading: How inputs are read (intensity rule, ``--axis``, ``--orientation``) and which
            label values of the label volumes count (``--label_values``).
        min_lesion_px: Labelled pixels that make a slice abnormal (``--min_lesion_px``, >= 1).
        margin: Slices next to a lesion left out (``--margin``, >= 0).
        policy: ``error``: the first unusable row stops the run before any work; ``skip``: it is
            left out and listed in :attr:`Manifest.skipped`.

    Returns:
        The :class:`Manifest`.

    Raises:
        UserError: The manifest missing or malformed (naming the file and line), a column
            named twice, two rows of one sample (duplicated or contradicting, whatever
            ``policy``), a bad option, or (``error``) an unreadable input or label volume
            (naming the row).
    """
    where = Path(path)
    if min_lesion_px < 1:
        raise UserError(f"{param('min_lesion_px')} must be at least 1, got {min_lesion_px}")
    if margin < 0:
        raise UserError(f"{param('margin')} must be at least 0, got {margin}")
    text = read_text(where, param("manifest"))
    reader = csv.DictReader(io.StringIO(text, newline=""))  # only CSV records split
    try:
        _check_header(reader, where)
        records = [(reader.line_num, row) for row in reader]
    except csv.Error as exc:
        raise UserError(f"{param('manifest')} {where} line {reader.line_num + 1}: {exc}") from None
    rows = [_parse(row, line, where) for line, row in records]
    _refuse_overlaps(rows, where)
    manifest = Manifest(where)
    for row in rows:
        try:
            _expand(manifest, row, reading, min_lesion_px, margin)
        except _RowError as bad:
            if policy != "skip":
                raise UserError(
                    f"{param('manifest')} {where} line {row.line}: {bad.path}: {bad.reason} "
                    f"({param('on_bad_input')} skip leaves such rows out)"
                ) from None
            manifest.skipped.append(Skipped(bad.path, bad.reason))
        except MissingPackage:
            raise
        except UserError as exc:
            raise UserError(f"{param('manifest')} {where} line {row.line}: {exc.message}") from None
    if not manifest.rows and not manifest.skipped:
        raise UserError(f"{param('manifest')} {where}: no rows")
    return manifest


def _expand(
    manifest: Manifest, row: _Row, reading: Reading, min_lesion_px: int, margin: int
) -> None:
    """Add one row's samples (and volume) to ``manifest``; :class:`_RowError` for a bad file."""
    item, label, mask, split, chosen = row.item, row.label, row.mask, row.split, row.chosen
    if reader_for(item) is None:
        why = "no such file or folder" if not item.exists() else "unsupported file type"
        raise _RowError(item, why)
    if mask is not None and not mask.exists():
        raise _RowError(mask, "mask: no such file")
    if chosen is None and single_image(item):
        if label is None:
            raise UserError(f"{item}: a 2-D image needs a label")
        manifest.rows.append((split, Sample(item, label, mask, None, reading)))
        return
    try:
        slices = read_slices(item, reading)
    except MissingPackage:
        raise
    except UserError as exc:
        raise _RowError(item, reason_about(exc, item)) from None
    if len(slices) == 1 and slices[0].index is None:  # a 2-D DICOM or NIfTI (or a 2-D image)
        if chosen not in (None, 0):  # one slice, 0: rows of "other" slices would repeat it
            raise _RowError(item, f"has no slice {chosen} (it is one 2-D image)")
        if label is None:
            raise UserError(f"{item}: a 2-D image needs a label")
        manifest.rows.append((split, Sample(item, label, mask, None, reading)))
        return
    if chosen is not None and not 0 <= chosen < len(slices):
        raise _RowError(item, f"has no slice {chosen} (it holds {len(slices)})")
    indices = range(len(slices)) if chosen is None else [chosen]
    if mask is None:
        if label is None:
            raise UserError(f"{item}: a volume without a label volume needs a label")
        labels = {i: label for i in indices}
        volume_label = label
    else:
        try:
            planes = label_slices(mask, item, reading)
        except UserError as exc:
            raise _RowError(mask, reason_about(exc, mask)) from None
        counts = np.array([int(p.sum()) for p in planes])
        labels = _slice_labels(counts, min_lesion_px, margin)
        volume_label = int(counts.any())
    for i in indices:
        if slices[i].levels.constant:
            manifest.constant += 1
        elif labels.get(i) is None:
            manifest.left_out += 1
        else:
            keep = mask if labels[i] == 1 else None
            manifest.rows.append((split, Sample(item, labels[i], keep, i, reading)))
    if chosen is None:
        manifest.volumes.append(Volume(item, volume_label, split))


def _slice_labels(counts: np.ndarray, min_lesion_px: int, margin: int) -> dict[int, int | None]:
    """Each slice's label from its labelled-pixel count (None: left out)."""
    lesion = np.flatnonzero(counts > 0)
    out: dict[int, int | None] = {}
    for i, n in enumerate(counts):
        if n >= min_lesion_px:
            out[i] = 1
        elif n == 0 and (lesion.size == 0 or np.abs(lesion - i).min() > margin):
            out[i] = 0
        else:
            out[i] = None
    return out
