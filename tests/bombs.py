"""Decompression bombs for the limit tests: small files whose headers declare huge pictures.

Each is a few hundred bytes to a few MB, built in a moment; decoded, each takes hundreds of MB to
gigabytes (which is what the readers' header checks refuse). Where the pixel data is there at
all it is zeros, compressed: a file a decoder would decode to the end.
"""

from __future__ import annotations

import io
import math
import struct
import zipfile
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

BLOCK = 2**22  # zeros per repeated deflate block


def deflated(prefix: bytes, zeros: int, suffix: bytes = b"") -> bytes:
    """Raw deflate of ``prefix``, ``zeros`` zero bytes and ``suffix``, made in a moment however
    many the zeros: one block of zeros is compressed after a full flush (so it stands alone) and
    repeated."""
    deflate = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS)
    parts = [deflate.compress(prefix) + deflate.flush(zlib.Z_FULL_FLUSH)]
    blocks, rest = divmod(zeros, BLOCK)
    if blocks:
        block = deflate.compress(bytes(BLOCK)) + deflate.flush(zlib.Z_FULL_FLUSH)
        parts.append(block * blocks)
    parts.append(deflate.compress(bytes(rest) + suffix) + deflate.flush())
    return b"".join(parts)


def _checksum(function, prefix: bytes, zeros: int, suffix: bytes, start: int) -> int:
    value = function(prefix, start)
    blocks, rest = divmod(zeros, BLOCK)
    for _ in range(blocks):
        value = function(bytes(BLOCK), value)
    return function(suffix, function(bytes(rest), value))


def gzipped(prefix: bytes, zeros: int) -> bytes:
    """A gzip file of ``prefix`` and ``zeros`` zero bytes."""
    crc = _checksum(zlib.crc32, prefix, zeros, b"", 0)
    size = (len(prefix) + zeros) % 2**32
    header = b"\x1f\x8b\x08\x00\x00\x00\x00\x00\x00\xff"
    return header + deflated(prefix, zeros) + struct.pack("<II", crc, size)


def zlibbed(zeros: int) -> bytes:
    """A zlib stream of ``zeros`` zero bytes (PNG's and TIFF's deflate)."""
    adler = _checksum(zlib.adler32, b"", zeros, b"", 1)
    return b"\x78\xda" + deflated(b"", zeros) + struct.pack(">I", adler)


def nifti(path: Path, shape: tuple[int, ...], voxels: bool = True) -> Path:
    """A gzipped NIfTI of uint8 ``shape``: its voxels all zero (``voxels``), or none at all (a
    header of about 100 bytes). NIfTI-2 where a side is over NIfTI-1's 32767."""
    import nibabel as nib

    header = (nib.Nifti2Header if max(shape) > 32767 else nib.Nifti1Header)()
    header.set_data_shape(shape)
    header.set_data_dtype(np.uint8)
    header.set_sform(np.diag([-1.0, -1.0, 1.0, 1.0]), code=1)
    block = header.binaryblock + b"\0" * 4  # no extensions
    header["vox_offset"] = len(block)
    block = header.binaryblock + b"\0" * 4
    path.write_bytes(gzipped(block, math.prod(shape) if voxels else 0))
    return path


def _dicom_header(rows: int, columns: int, syntax: str) -> tuple[bytes, bytes]:
    """(preamble with file meta, dataset without pixel data in explicit VR little endian) of a
    secondary-capture 8-bit grey image."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.filebase import DicomBytesIO
    from pydicom.filewriter import write_dataset, write_file_meta_info
    from pydicom.uid import SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = syntax
    ds = Dataset()
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "OT"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    head = DicomBytesIO()
    head.write(b"\0" * 128 + b"DICM")
    write_file_meta_info(head, meta)
    body = DicomBytesIO()
    body.is_little_endian, body.is_implicit_VR = True, False
    write_dataset(body, ds)
    return head.getvalue(), body.getvalue()


def _pixel_element(length: int) -> bytes:
    return b"\xe0\x7f\x10\x00OB\0\0" + struct.pack("<I", length)


def dicom_deflated(path: Path, rows: int, columns: int, padding: int = 0) -> Path:
    """A Deflated Explicit VR Little Endian DICOM of ``rows`` x ``columns`` zeros (20000 x 20000:
    about 400 KB), with ``padding`` more bytes of zeros after the pixel data (a trailing padding
    element, which pydicom inflates with the rest)."""
    from pydicom.uid import DeflatedExplicitVRLittleEndian

    head, body = _dicom_header(rows, columns, DeflatedExplicitVRLittleEndian)
    pad = b"\xfc\xff\xfc\xffOB\0\0" + struct.pack("<I", padding) if padding else b""
    if padding:  # the pixel data, then the padding element's zeros
        data = deflated(
            body + _pixel_element(rows * columns) + bytes(rows * columns) + pad, padding
        )
    else:
        data = deflated(body + _pixel_element(rows * columns), rows * columns)
    path.write_bytes(head + data)
    return path


def dicom_rle(path: Path, rows: int, columns: int) -> Path:
    """An RLE Lossless DICOM of ``rows`` x ``columns`` zeros, each row its own runs (12000 x
    12000: about 2 MB)."""
    from pydicom.encaps import encapsulate
    from pydicom.uid import RLELossless

    head, body = _dicom_header(rows, columns, RLELossless)
    runs, rest = divmod(columns, 128)
    row = b"\x81\x00" * runs + (bytes([257 - rest, 0]) if rest > 1 else b"\x00\x00" * rest)
    segment = struct.pack("<16I", 1, 64, *[0] * 14) + row * rows
    pixels = encapsulate([segment]) + b"\xfe\xff\xdd\xe0\0\0\0\0"  # with its delimiter
    element = b"\xe0\x7f\x10\x00OB\0\0" + struct.pack("<I", 0xFFFFFFFF)
    path.write_bytes(head + body + element + pixels)
    return path


def tiff_pages(path: Path, pages: int, side: int) -> Path:
    """A TIFF of ``pages`` pages of ``side`` x ``side`` zeros, every page's strip the same
    deflated bytes (120 pages of 7000 x 7000: about 50 KB)."""
    strip = zlibbed(side * side)
    entries = 9
    ifd_size = 2 + entries * 12 + 4
    first_ifd = 8 + len(strip)
    out = io.BytesIO()
    out.write(b"II*\0" + struct.pack("<I", first_ifd) + strip)
    for page in range(pages):
        following = first_ifd + (page + 1) * ifd_size if page + 1 < pages else 0
        tags = [
            (256, 4, side),  # width
            (257, 4, side),  # height
            (258, 3, 8),  # bits per sample
            (259, 3, 8),  # deflate
            (262, 3, 1),  # black is zero
            (273, 4, 8),  # the strip's offset
            (277, 3, 1),  # samples per pixel
            (278, 4, side),  # rows per strip
            (279, 4, len(strip)),  # the strip's bytes
        ]
        out.write(struct.pack("<H", entries))
        for tag, kind, value in tags:
            out.write(struct.pack("<HHI", tag, kind, 1))
            out.write(struct.pack("<HH", value, 0) if kind == 3 else struct.pack("<I", value))
        out.write(struct.pack("<I", following))
    path.write_bytes(out.getvalue())
    return path


def png_zeros(path: Path, width: int, height: int) -> Path:
    """An 8-bit grey PNG of zeros (8000 x 7000: about 60 KB)."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    data = zlibbed(height * (1 + width))  # each row: filter 0, then zeros
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", data) + chunk(b"IEND", b"")
    )
    return path


def zip_of_pngs(path: Path, count: int, side: int = 4) -> Path:
    """A zip of ``count`` tiny grey PNGs, each a different ramp."""
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as z:
        for i in range(count):
            ramp = (np.arange(side * side).reshape(side, side) * 7 + i) % 251
            buffer = io.BytesIO()
            Image.fromarray(ramp.astype(np.uint8)).save(buffer, "PNG")
            z.writestr(f"img{i:04d}.png", buffer.getvalue())
    return path
