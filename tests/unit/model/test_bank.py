"""The memory bank's pieces against hand-derived and brute-force values."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from iqeclip.errors import UserError
from iqeclip.model.bank import MemoryBank, coreset, fuse, nearest_distance


def test_nearest_distance_equals_brute_force_in_any_chunk():
    rng = np.random.default_rng(0)
    patches = rng.normal(size=(3, 11, 16))
    memory = rng.normal(size=(50, 16))
    patches /= np.linalg.norm(patches, axis=-1, keepdims=True)
    memory /= np.linalg.norm(memory, axis=-1, keepdims=True)
    expected = np.empty((3, 11))
    for b in range(3):
        for i in range(11):
            expected[b, i] = 1 - max(float(patches[b, i] @ m) for m in memory)
    for chunk in (7, 50, 4096):
        got = nearest_distance(torch.tensor(patches), torch.tensor(memory), chunk=chunk)
        np.testing.assert_allclose(got.numpy(), expected, atol=1e-12)


def test_coreset_picks_the_farthest_point_each_time():
    points = torch.tensor([[0.0], [1.0], [2.0], [10.0]])
    assert coreset(points, 3, first=3).tolist() == [3, 0, 2]  # from 10: 0, then 2 (2 from 0)
    assert coreset(points, 3, first=1).tolist() == [1, 3, 0]  # 0 and 2 tie at 1: the first
    assert coreset(points, 9).tolist() == [0, 1, 2, 3]  # all of them
    drawn = coreset(points, 2, seed=5).tolist()  # a drawn start, then the farthest from it
    assert drawn[1] == (0 if drawn[0] == 3 else 3)


def test_fuse_weighs_both_alike():
    maps, scores = fuse(
        torch.ones(1, 2, 2), torch.tensor([4.0]), torch.zeros(1, 2, 2), torch.tensor([2.0]), 0.25
    )
    assert torch.equal(maps, torch.full((1, 2, 2), 0.75)) and scores.item() == 3.5


def _state(sizes=(5, 6), dim=8):
    return {f"bank.{i}": F.normalize(torch.randn(n, dim), dim=-1) for i, n in enumerate(sizes)}


@pytest.mark.parametrize(
    ("change", "says"),
    [
        (lambda s, r: s.pop("bank.1"), "expected ['bank.0', 'bank.1']"),
        (lambda s, r: s.__setitem__("bank.0", s["bank.0"] * 2), "not unit vectors"),
        (lambda s, r: s.__setitem__("bank.0", torch.ones(5, 3) / 3**0.5), "expected (N, 8)"),
        (lambda s, r: r.__setitem__("sizes", [5, 7]), "record says [5, 7]"),
        (lambda s, r: r.__setitem__("weight", 1.5), "not a number in [0, 1]"),
    ],
)
def test_a_tampered_bank_is_one_line(change, says):
    state, record = _state(), {"sizes": [5, 6], "weight": 0.5}
    MemoryBank.from_state(state, record, 2, 8, "ck.pth")  # as written: accepted
    change(state, record)
    with pytest.raises(UserError) as caught:
        MemoryBank.from_state(state, record, 2, 8, "ck.pth")
    assert says in str(caught.value) and "\n" not in str(caught.value)


def test_the_bank_map_is_the_level_mean_upsampled_and_its_score_the_patch_maximum():
    state = _state((4, 4), dim=8)
    bank = MemoryBank([state["bank.0"], state["bank.1"]], 0.5)
    patches = F.normalize(torch.randn(2, 3, 16, 8), dim=-1)  # (T, B, L = 4x4, D)
    maps, scores = bank.score(patches, 32)
    distances = torch.stack([nearest_distance(patches[t], bank.levels[t]) for t in range(2)]).mean(
        dim=0
    )
    assert maps.shape == (3, 32, 32)
    torch.testing.assert_close(scores, distances.amax(dim=1))
