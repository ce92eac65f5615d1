"""Counts typed by the user are ASCII decimal digits: ``str.isdigit`` also accepts a superscript
(``²``, which ``int`` then refuses with a traceback) and other scripts' digits (``٣``, which
``int`` reads as 3)."""

from __future__ import annotations

import numpy as np
import pytest

from iqeclip.errors import UserError
from iqeclip.inference.thresholds import volume_aggregate
from iqeclip.reproduce.grid import parse_settings


@pytest.mark.parametrize("k", ["²", "٣", "0", "-1", ""])
def test_volume_score_topk_takes_ascii_digits(k):
    with pytest.raises(UserError, match=rf"^volume_score 'topk:{k}': use max or topk:K"):
        volume_aggregate(f"topk:{k}")
    assert volume_aggregate("topk:2")(np.array([1.0, 4.0, 2.0])) == 3.0


@pytest.mark.parametrize("shots", ["²", "٣", "0"])
def test_settings_take_ascii_shot_counts(shots):
    with pytest.raises(UserError, match=rf"^settings '{shots}': use zero or a shot count"):
        parse_settings(["zero", shots])
    assert parse_settings(["zero", "16", "4", "zero+bank-8"]) == [(0, 0), (16, 0), (4, 0), (0, 8)]
