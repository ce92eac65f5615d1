"""A CT volume read without an intensity rule is named once, with the rule its slices were read
by and a window to pass instead; nothing is said of MRI-like volumes or when a rule was given."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from iqeclip.data import items
from iqeclip.data.items import read_items
from iqeclip.data.readers import reading_from
from tests.scans import Study

sitk = pytest.importorskip("SimpleITK")


@pytest.fixture(autouse=True)
def _fresh(monkeypatch):
    monkeypatch.setattr(items, "_hinted", set())


def _volume(path: Path, low: int, high: int) -> Path:
    voxels = np.random.default_rng(0).integers(low, high, (4, 24, 20)).astype(np.int16)
    sitk.WriteImage(sitk.GetImageFromArray(voxels), str(path))
    return path


def _hints(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if "Hounsfield" in r.getMessage()]


def test_a_hounsfield_volume_is_named_once_with_its_rule(tmp_path, caplog):
    ct = _volume(tmp_path / "ct.nrrd", -1024, 1500)
    with caplog.at_level(logging.WARNING):
        list(read_items(ct, 32))
        list(read_items(ct, 32))
    (hint,) = _hints(caplog)
    assert "ct.nrrd looks like CT" in hint and "min-max scaled on its own" in hint
    assert "--window -600,1500" in hint


@pytest.mark.parametrize(
    ("low", "high", "reading"),
    [
        (0, 900, reading_from(None, None)),  # MRI: no negative values
        (-1024, 1500, reading_from("40,400", None)),  # a window was given
        (-1024, 1500, reading_from(None, "1,99")),  # a percentile was given
    ],
)
def test_nothing_is_said_otherwise(tmp_path, caplog, low, high, reading):
    path = _volume(tmp_path / "scan.mha", low, high)
    with caplog.at_level(logging.WARNING):
        list(read_items(path, 32, reading))
    assert _hints(caplog) == []


def test_a_dicom_ct_series_is_named_by_its_modality(tmp_path, caplog):
    pydicom = pytest.importorskip("pydicom")
    series = Study().write_dicom(pydicom, tmp_path / "series")
    with caplog.at_level(logging.WARNING):
        list(read_items(series, 32))
    (hint,) = _hints(caplog)
    assert "series is a CT" in hint
