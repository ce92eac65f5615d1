"""Checkpoints: round trip, configuration beside them, mismatch and corruption errors."""

from __future__ import annotations

import pytest
import torch
import yaml

from iqeclip.errors import UserError
from iqeclip.model.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from tests.conftest import build_tiny


def test_round_trip_gives_identical_outputs(tmp_path):
    a, b = build_tiny(seed=1), build_tiny(seed=1)
    with torch.no_grad():
        for p in b.head.parameters():
            p.add_(torch.randn_like(p))
    x = torch.rand(2, 3, 64, 64)
    path = save_checkpoint(tmp_path / "ckpt" / "Brain.pth", a, {"epoch": 3})
    assert not torch.equal(a(x).query, b(x).query)
    meta = load_checkpoint(b, path)
    assert meta == {"epoch": 3}
    torch.testing.assert_close(a(x).query, b(x).query, rtol=0, atol=0)
    torch.testing.assert_close(a(x).text, b(x).text, rtol=0, atol=0)
    beside = yaml.safe_load((tmp_path / "ckpt" / "Brain.yaml").read_text())
    assert beside["model"]["features_list"] == [6, 12, 18, 24] and beside["epoch"] == 3
    config, state, _ = read_checkpoint(path)
    assert config == a.config and set(state) == set(a.head.state_dict())


def test_other_configuration_is_refused_in_one_line(tmp_path):
    path = save_checkpoint(tmp_path / "a.pth", build_tiny())
    other = build_tiny(features_list=[2, 4])
    with pytest.raises(
        UserError,
        match=r"a.pth was built for another model: features_list=\[2, 4\] vs \[6, 12, 18, 24\]",
    ):
        load_checkpoint(other, path)
    with pytest.raises(UserError, match="use_global=False vs True"):
        load_checkpoint(build_tiny(use_global=False), path)


def test_corrupt_and_foreign_files(tmp_path):
    good = save_checkpoint(tmp_path / "good.pth", build_tiny())
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[:-100])
    model = build_tiny()
    with pytest.raises(UserError, match=r"truncated\.pth: not a readable iqeclip checkpoint"):
        load_checkpoint(model, truncated)
    pickle = tmp_path / "pickle.pth"
    torch.save({"iqm": torch.zeros(1)}, pickle)
    with pytest.raises(UserError, match=r"pickle\.pth: not a readable iqeclip checkpoint"):
        load_checkpoint(model, pickle)
    with pytest.raises(UserError, match="no such file"):
        load_checkpoint(model, tmp_path / "missing.pth")
