"""One study built in the tests and written as its users' tools write it: a DICOM series (CT,
one file per slice, non-square, oblique), PNG slices as a viewer exports them, and NIfTI
conversions (SimpleITK's, where installed, and nibabel's own on the grid ITK reads).

The volume is defined in world coordinates (DICOM PS3.3 C.7.6.2.1.1), so every file can be
checked against it rather than against another file the code wrote.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image


def rotation(axis: int, degrees: float) -> np.ndarray:
    """The rotation by ``degrees`` about the world axis ``axis``."""
    c, s = np.cos(np.radians(degrees)), np.sin(np.radians(degrees))
    i, j = [a for a in range(3) if a != axis]
    r = np.eye(3)
    r[i, i], r[i, j], r[j, i], r[j, j] = c, -s, s, c
    return r


@dataclass
class Study:
    """A CT volume ``hu[k, r, c]`` (slice k, row r, column c) with its DICOM geometry (LPS)."""

    rows: int = 40
    columns: int = 48
    slices: int = 6
    spacing: tuple[float, float] = (0.8, 0.7)  # PixelSpacing: between rows, between columns
    step_mm: float = 2.0
    origin: np.ndarray = field(default_factory=lambda: np.array([-20.0, -15.0, 40.0]))
    tilt: tuple[float, float] = (20.0, 10.0)  # degrees about S, then about L-R: oblique
    seed: int = 0
    patient: str = "P1"
    series_uid: str = "1.2.826.0.1.3680043.8.498.41"
    study_uid: str = "1.2.826.0.1.3680043.8.498.40"
    frame_uid: str = "1.2.826.0.1.3680043.8.498.42"

    def __post_init__(self) -> None:
        rng = np.random.default_rng(self.seed)
        hu = rng.integers(-150, 150, size=(self.slices, self.rows, self.columns)).astype(np.int16)
        hu += np.linspace(0, 60, self.columns, dtype=np.int16)[None, None, :]  # left-right ramp
        if self.slices >= 4:  # lesions off every axis of symmetry
            hu[2, 5:9, 30:40] = 900
            hu[3, 25:34, 6:10] = 700
        self.hu = hu
        turn = rotation(0, self.tilt[1]) @ rotation(2, self.tilt[0])
        self.row_dir = turn @ np.array([1.0, 0.0, 0.0])  # IOP[:3]: columns grow along it
        self.col_dir = turn @ np.array([0.0, 1.0, 0.0])  # IOP[3:]: rows grow along it
        self.normal = np.cross(self.row_dir, self.col_dir)

    def position(self, k: int) -> np.ndarray:
        return self.origin + k * self.step_mm * self.normal

    def world_ras(self, r: float, c: float, k: float) -> np.ndarray:
        """Where pixel (row r, column c) of slice k lies, RAS mm."""
        lps = (
            self.position(0)
            + k * self.step_mm * self.normal
            + c * self.spacing[1] * self.row_dir
            + r * self.spacing[0] * self.col_dir
        )
        return lps * np.array([-1.0, -1.0, 1.0])

    def dataset(self, pydicom: Any, k: int, **changes: Any) -> Any:
        """Slice ``k`` as a CT Image Storage dataset (explicit VR little endian)."""
        from pydicom.dataset import FileMetaDataset
        from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian

        sop = f"{self.series_uid}.{k + 1}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = CTImageStorage, sop
        ds.Modality, ds.PatientID, ds.PatientName = "CT", self.patient, self.patient
        ds.StudyInstanceUID, ds.SeriesInstanceUID = self.study_uid, self.series_uid
        ds.FrameOfReferenceUID = self.frame_uid
        ds.SeriesNumber, ds.InstanceNumber = 3, k + 1
        ds.ImageOrientationPatient = [round(float(v), 6) for v in (*self.row_dir, *self.col_dir)]
        ds.ImagePositionPatient = [round(float(v), 6) for v in self.position(k)]
        ds.PixelSpacing = [float(v) for v in self.spacing]
        ds.SliceThickness = self.step_mm
        ds.Rows, ds.Columns = self.rows, self.columns
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
        ds.RescaleSlope, ds.RescaleIntercept = 1, -1024
        ds.PixelData = (self.hu[k].astype(np.int32) + 1024).astype(np.int16).tobytes()
        for key, value in changes.items():
            setattr(ds, key, value)
        return ds

    def write_dicom(self, pydicom: Any, folder: Path, prefix: str = "", **changes: Any) -> Path:
        """The series, one file per slice, file names against the slice order."""
        folder.mkdir(parents=True, exist_ok=True)
        for k in range(self.slices):
            name = f"{prefix}IM{self.slices - k:04d}.dcm"
            self.dataset(pydicom, k, **changes).save_as(folder / name, enforce_file_format=True)
        return folder

    def write_pngs(self, folder: Path, window: tuple[float, float]) -> list[Path]:
        """Each slice as a viewer exports it: the stored pixels, windowed to 8 bits."""
        folder.mkdir(parents=True, exist_ok=True)
        centre, width = window
        paths = []
        for k in range(self.slices):
            grey = np.clip((self.hu[k].astype(np.float64) - (centre - width / 2)) / width, 0, 1)
            path = folder / f"slice_{k:02d}.png"
            Image.fromarray(np.rint(grey * 255).astype(np.uint8)).save(path)
            paths.append(path)
        return paths

    def grid_affine(self) -> np.ndarray:
        """The RAS affine of the grid ITK reads, voxel (column, row, slice)."""
        affine = np.eye(4)
        flip = np.diag([-1.0, -1.0, 1.0])
        affine[:3, 0] = flip @ (self.row_dir * self.spacing[1])
        affine[:3, 1] = flip @ (self.col_dir * self.spacing[0])
        affine[:3, 2] = flip @ (self.normal * self.step_mm)
        affine[:3, 3] = flip @ self.position(0)
        return affine

    def write_nifti(self, nib: Any, path: Path, codes: str | None = None) -> Path:
        """The volume as a NIfTI on ITK's grid (``hu`` transposed to column, row, slice),
        optionally stored with other voxel axes (``codes``, e.g. "PIR") by nibabel."""
        data = np.transpose(self.hu, (2, 1, 0))
        image = nib.Nifti1Image(data, self.grid_affine())
        if codes is not None:
            from nibabel.orientations import axcodes2ornt, io_orientation, ornt_transform

            image = image.as_reoriented(
                ornt_transform(io_orientation(image.affine), axcodes2ornt(tuple(codes)))
            )
        nib.save(image, str(path))
        return path


def sitk_convert(folder: Path, path: Path, orient: str | None = None) -> Path:
    """The series converted by SimpleITK (ITK's DICOM reader, GDCM ordering), as dcm2niix or
    3D Slicer would hand it over, in the format of ``path``'s suffix (NIfTI, NRRD, MetaImage);
    ``orient``: its voxel axes first turned to these DICOM axis codes (ITK's ``DICOMOrient``:
    ``"PIR"`` stores the voxel axes towards posterior, inferior and right)."""
    import SimpleITK as sitk

    reader = sitk.ImageSeriesReader()
    reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
    image = reader.Execute()
    if orient is not None:
        image = sitk.DICOMOrient(image, orient)
    sitk.WriteImage(image, str(path))
    return path
