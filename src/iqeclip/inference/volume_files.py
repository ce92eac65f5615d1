"""A volume's files in the input's own format: one writer per format, keyed by its suffix.

predict writes each volume's map (float32) and mask (uint8) in the format the volume came in
(:attr:`~iqeclip.data.readers.base.Geometry.suffix`), so that source and maps open together in
a viewer: NIfTI with nibabel (``.nii.gz``: NIfTI files and DICOM series), NRRD and MetaImage
with SimpleITK (``.nrrd``, ``.mha``). Every file carries the source's geometry (its affine, for
ITK formats turned into ITK's LPS origin, spacing and direction by
:func:`~iqeclip.data.readers.itk.itk_image`) and is written atomically: to a temporary name
(:func:`~iqeclip.inference.files.volume_temporary`), then renamed. Another format is one
:func:`register_volume_writer` call.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from iqeclip.data.readers import Geometry
from iqeclip.errors import UserError
from iqeclip.inference.files import VOLUME_FORMATS, volume_temporary

__all__ = ["VolumeWrite", "register_volume_writer", "save_volume"]

VolumeWrite = Callable[[Path, np.ndarray, Geometry], None]
"""``write(tmp, data, geometry)``: write ``data`` (in the source's voxel order, of
``geometry.source_shape``, already of its dtype) to the temporary file ``tmp``."""
_WRITERS: dict[str, VolumeWrite] = {}


def register_volume_writer(suffix: str, write: VolumeWrite) -> None:
    """Write the maps of volumes whose :attr:`Geometry.suffix` is ``suffix`` with ``write``;
    the suffix joins the table of names (:data:`~iqeclip.inference.files.VOLUME_FORMATS`)."""
    if not suffix.startswith(".") or suffix in _WRITERS:
        raise ValueError(f"volume format {suffix!r}: not a suffix, or already registered")
    _WRITERS[suffix] = write
    if suffix not in VOLUME_FORMATS:
        VOLUME_FORMATS.append(suffix)


def save_volume(path: Path, data: np.ndarray, geometry: Geometry) -> None:
    """``data`` written to ``path`` in the format of ``geometry.suffix`` with its geometry,
    atomically (a killed run leaves the old file or none, and a temporary one that
    ``--overwrite`` and ``--resume`` remove).

    Raises:
        UserError: The file cannot be written (naming it).
    """
    write = _WRITERS[geometry.suffix]
    tmp = volume_temporary(path)
    try:
        write(tmp, data, geometry)
        tmp.replace(path)
    except OSError as exc:
        raise UserError(f"cannot write {path}: {exc.strerror or exc}") from None
    except RuntimeError as exc:  # SimpleITK's writers raise RuntimeError with ITK's text
        raise UserError(f"cannot write {path}: {str(exc).strip().splitlines()[-1]}") from None
    finally:
        tmp.unlink(missing_ok=True)


def _write_nifti(tmp: Path, data: np.ndarray, geometry: Geometry) -> None:
    """A NIfTI with the source's affine and header; a DICOM series (no header) gets its
    affine as scanner coordinates in mm, as ITK writes them."""
    import nibabel as nib

    image = nib.Nifti1Image(data, geometry.affine, geometry.header)
    image.set_data_dtype(data.dtype)
    if geometry.header is None:
        image.set_qform(geometry.affine, code=1)
        image.set_sform(geometry.affine, code=1)
        image.header.set_xyzt_units(xyz="mm")
    image.to_filename(str(tmp))


def _write_itk(tmp: Path, data: np.ndarray, geometry: Geometry) -> None:
    """An NRRD or MetaImage file (by ``tmp``'s suffix) with the source's origin, spacing and
    direction (LPS), compressed."""
    import SimpleITK as sitk

    from iqeclip.data.readers.itk import itk_image

    sitk.WriteImage(itk_image(data, geometry.affine), str(tmp), useCompression=True)


register_volume_writer(".nii.gz", _write_nifti)
register_volume_writer(".nrrd", _write_itk)
register_volume_writer(".mha", _write_itk)
