"""Tests for the intensity options: ``--window`` / ``--percentile`` parsing and :class:`Intensity`."""

from __future__ import annotations

import pytest

from iqeclip.data.readers.intensity import Intensity, parse_percentile, parse_window
from iqeclip.errors import UserError


def test_parse_window() -> None:
    assert parse_window("40,400") == (40.0, 400.0)
    assert parse_window(" -600 , 1500 ") == (-600.0, 1500.0)
    for bad in ["40", "40,400,1", "a,400", "40,0", "40,-10", "nan,400", "40,inf", ""]:
        with pytest.raises(UserError, match=r"^window expects CENTRE,WIDTH"):
            parse_window(bad)


def test_parse_percentile_and_intensity_checks() -> None:
    assert parse_percentile("1,99") == (1.0, 99.0)
    for bad in ["99,1", "-1,50", "1,101", "5", "x,y"]:
        with pytest.raises(UserError, match=r"^percentile expects LOW,HIGH"):
            parse_percentile(bad)
    assert Intensity(window=(40, 400)).window == (40.0, 400.0)
    with pytest.raises(UserError, match=r"^window expects CENTRE,WIDTH"):
        Intensity(window=(40, 0))
    with pytest.raises(UserError, match=r"^percentile expects LOW,HIGH"):
        Intensity(percentile=(50, 50))
    with pytest.raises(UserError, match="together"):
        Intensity(window=(40, 400), percentile=(1, 99))
