"""Scoring formulas on small hand-made tensors, and the blur against SciPy."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.ndimage import gaussian_filter

from iqeclip.model.scoring import (
    gaussian_blur,
    gaussian_kernel,
    patch_scores,
    probability_maps,
    score,
    score_range,
)


@pytest.mark.parametrize("shape", [(2, 64, 64), (1, 20, 30), (3, 240, 240)])
def test_blur_equals_scipy_reflect(shape):
    rng = np.random.default_rng(0)
    maps = rng.random(shape)
    want = gaussian_filter(maps, sigma=8, mode="reflect", truncate=4.0, axes=(1, 2))
    got = gaussian_blur(torch.from_numpy(maps)).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-10, atol=1e-12)


def test_kernel_has_65_taps_for_sigma_8():
    k = gaussian_kernel()
    assert k.numel() == 65
    assert float(k.sum()) == pytest.approx(1.0)


def test_maps_are_upsampled_before_the_softmax():
    # 2x2 patches, normal logits n, abnormal logits a; size 3 with align_corners puts the
    # corners on the patch centres and the middle pixel at the mean of the four logits.
    normal = torch.tensor([0.5, -1.0, 0.0, 1.0])
    abn = torch.tensor([0.0, 2.0, -1.0, 3.0])
    logits = torch.stack([normal, abn], dim=-1)  # (L=4, 2)
    m = probability_maps(logits, 3)
    assert m.shape == (3, 3)
    softmax = lambda n, a: torch.softmax(torch.stack([n, a]), 0)[1]  # noqa: E731
    torch.testing.assert_close(m[1, 1], softmax(normal.mean(), abn.mean()))
    torch.testing.assert_close(m[0, 0], softmax(normal[0], abn[0]))
    torch.testing.assert_close(m[2, 2], softmax(normal[3], abn[3]))
    assert not torch.isclose(m[1, 1], torch.sigmoid(abn - normal).mean())


def test_maps_equal_softmax_of_the_upsampled_two_channel_logits():
    torch.manual_seed(0)
    logits = torch.randn(3, 2, 16, 2)
    two = torch.nn.functional.interpolate(
        logits.reshape(6, 4, 4, 2).permute(0, 3, 1, 2),
        size=(20, 20),
        mode="bilinear",
        align_corners=True,
    )
    torch.testing.assert_close(
        probability_maps(logits, 20), two.softmax(1)[:, 1].reshape(3, 2, 20, 20)
    )


def test_patch_scores_are_mean_abnormal_probabilities():
    logits = torch.tensor([[[0.0, 1.0], [2.0, 0.0], [0.0, 0.0], [1.0, 1.0]]])
    want = (torch.sigmoid(torch.tensor(1.0)) + torch.sigmoid(torch.tensor(-2.0)) + 0.5 + 0.5) / 4
    torch.testing.assert_close(patch_scores(logits), want.view(1))


def _constant_logits(values: list[float], batch: int = 1, n_patch: int = 4) -> torch.Tensor:
    """(T, B, L, 2) with normal logit 0 and abnormal logit values[t] everywhere at level t."""
    v = torch.tensor(values).view(-1, 1, 1).expand(-1, batch, n_patch)
    return torch.stack([torch.zeros_like(v), v], dim=-1)


def test_zero_and_few_shot_aggregation():
    query = _constant_logits([1.0, -1.0])
    text = _constant_logits([2.0, 0.0])
    sq, st = torch.sigmoid(torch.tensor([1.0, -1.0])), torch.sigmoid(torch.tensor([2.0, 0.0]))
    maps, image = score(query, text, 8, "zero")
    # constant maps survive the blur; blend 0.2 text + 0.8 query of the level means
    torch.testing.assert_close(
        maps, torch.full((1, 8, 8), float(0.2 * st.mean() + 0.8 * sq.mean()))
    )
    torch.testing.assert_close(image, (sq.sum() + st.sum()).view(1))
    _, few = score(query, text, 8, "few")
    torch.testing.assert_close(few, (sq.mean() + st.mean()).view(1))


def test_few_shot_image_score_uses_unsmoothed_maps():
    query = torch.zeros(1, 1, 4, 2)
    query[0, 0, 0, 1] = 4.0  # one hot patch
    text = torch.zeros(1, 1, 4, 2)
    maps, image = score(query, text, 6, "few")
    raw_query = probability_maps(query, 6)[0, 0]
    torch.testing.assert_close(image, (raw_query.mean() + 0.5).view(1))
    # the map itself is blurred: the peak at the hot patch's corner is spread out
    assert maps[0, 0, 0] < 0.8 * raw_query[0, 0] + 0.2 * 0.5 - 1e-3


@pytest.mark.parametrize("setting", ["zero", "few"])
def test_score_range_is_the_range_score_reaches(setting):
    levels, batch, patches = 4, 1, 16
    sure = torch.zeros(levels, batch, patches, 2)
    sure[..., 1] = 100.0  # every patch abnormal with probability 1
    low, high = score_range(setting, levels)
    _, top = score(sure, sure, 32, setting)
    _, bottom = score(-sure, -sure, 32, setting)
    assert top.item() == pytest.approx(high)
    assert bottom.item() == pytest.approx(low, abs=1e-6)
