"""Threshold rules on synthetic scores with hand-derived answers."""

from __future__ import annotations

import numpy as np
import pytest

from iqeclip.errors import UserError
from iqeclip.inference.thresholds import calibrate, f1_threshold, fpr_threshold


def test_fpr_threshold_lets_through_the_allowed_number_of_normals():
    normal = np.arange(100) / 100  # 0.00 .. 0.99
    t = fpr_threshold(normal, 0.05)
    # floor(0.05 * 100) = 5 normals may reach the threshold: 0.95 .. 0.99; 0.94 must not
    assert 0.94 < t <= 0.95
    assert (normal >= t).sum() == 5
    assert (normal >= fpr_threshold(normal, 0.0)).sum() == 0


def test_fpr_threshold_with_ties_never_exceeds_the_rate():
    normal = np.array([0.1] * 10 + [0.9] * 10)
    for fpr in (0.0, 0.05, 0.3, 0.5, 0.75):
        t = fpr_threshold(normal, fpr)
        assert (normal >= t).mean() <= fpr


def test_f1_threshold_by_hand():
    scores = np.array([0.1, 0.2, 0.3, 0.6, 0.7, 0.4])
    labels = np.array([0, 0, 0, 1, 1, 1])
    # >= 0.4 catches all three abnormal and no normal: F1 = 1
    assert f1_threshold(scores, labels) == pytest.approx(0.4)


def test_rules_and_errors():
    scores, labels = np.array([0.2, 0.8]), np.array([0, 1])
    assert calibrate(scores, labels, "target_fpr", 0.0) > 0.2
    with pytest.raises(UserError, match="--target_fpr"):
        fpr_threshold(scores, 1.5)
    with pytest.raises(UserError, match="normal and abnormal"):
        f1_threshold(scores, np.array([1, 1]))
