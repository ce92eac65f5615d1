"""Tests for what the readers share: the missing-package message of the optional extra.

The missing-package messages are tested with ``sys.modules`` patched.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import pytest

from iqeclip.data.readers import read, read_dicom_series
from iqeclip.data.readers.dicom import read_dicom
from iqeclip.data.readers.nifti import read_nifti
from iqeclip.errors import UserError


@pytest.mark.parametrize(
    ("module", "call"),
    [
        ("pydicom", lambda p: read_dicom(p / "a.dcm")),
        ("pydicom", lambda p: read_dicom_series(p)),
        ("nibabel", lambda p: read_nifti(p / "a.nii.gz")),
        ("nibabel", lambda p: read(p / "a.nii")),
    ],
)
def test_missing_optional_module(tmp_path: Path, monkeypatch: Any, module: str, call: Any) -> None:
    for name in ("a.dcm", "a.nii.gz", "a.nii"):
        (tmp_path / name).write_bytes(b"\0" * 300)
    monkeypatch.setitem(sys.modules, module, None)
    with pytest.raises(UserError, match=rf"needs {module}: pip install 'iqeclip\[medical\]'"):
        call(tmp_path)
