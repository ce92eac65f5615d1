"""Checkpoints: round trip, configuration beside them, mismatch and corruption errors, locked
updates and file modes."""

from __future__ import annotations

import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file, safe_open, save_file

from iqeclip.errors import UserError
from iqeclip.model.checkpoint import (
    load_checkpoint,
    read_checkpoint,
    save_checkpoint,
    update_checkpoint_meta,
)
from iqeclip.model.detector import IQEClip
from iqeclip.runtime.files import locked
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


def _tamper(path: Path, state: dict[str, torch.Tensor] | None = None, **metadata: str | None):
    """Rewrite the checkpoint at ``path`` with ``state`` and the given metadata entries
    replaced (None removes one), as a corrupted or hand-edited file would hold them."""
    with safe_open(str(path), framework="pt") as f:
        stored = dict(f.metadata())
    for key, value in metadata.items():
        if value is None:
            stored.pop(key)
        else:
            stored[key] = value
    save_file(load_file(str(path)) if state is None else state, str(path), metadata=stored)
    return path


_DROP = object()  # a configuration key to leave out


def _config_with(path: Path, **changes) -> str:
    """The checkpoint's stored configuration with ``changes``, as JSON."""
    with safe_open(str(path), framework="pt") as f:
        config = json.loads(f.metadata()["config"])
    return json.dumps({k: v for k, v in {**config, **changes}.items() if v is not _DROP})


@pytest.fixture
def never_built(monkeypatch):
    """Fail the test if a model is built: the refusals come before any model is."""

    def build(cls, *args, **kwargs):
        pytest.fail("a model was built")

    monkeypatch.setattr(IQEClip, "build", classmethod(build))


def test_non_finite_weights_are_refused_in_one_line_before_any_model_is_built(
    tiny, tmp_path, never_built
):
    path = save_checkpoint(tmp_path / "x.pth", tiny)
    state = load_file(str(path))
    state["iqm.norm_in.weight"] = state["iqm.norm_in.weight"].clone()
    state["iqm.norm_in.weight"][:3] = torch.tensor([float("nan"), float("inf"), -1e39])
    _tamper(path, state)
    message = (
        f"ckpt_path {path}: tensor iqm.norm_in.weight holds 3 non-finite values "
        "(NaN/inf): the checkpoint is corrupt"
    )
    with pytest.raises(UserError) as caught:
        IQEClip.from_checkpoint(path)
    assert str(caught.value) == message


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"config": "{model_name: iqe-tiny"}, "its config metadata is not JSON"),
        ({"config": None}, "its metadata holds no config"),
        ({"config": '"iqe-tiny"'}, "its config metadata is not a JSON object (got str)"),
        ({"config": "[]"}, "its config metadata is not a JSON object (got list)"),
        ({"meta": "{'epoch': 1}"}, "its meta metadata is not JSON"),
        ({"meta": "42"}, "its meta metadata is not a JSON object (got int)"),
        ({"meta": '{"run": "few"}'}, "its meta.run is 'few', not a JSON object"),
        (
            {"meta": '{"run": {"setting": "median"}}'},
            "its meta.run.setting is 'median': not one of zero, few (the checkpoint is corrupt)",
        ),
        (
            {"meta": '{"run": {"axis": "abc"}}'},
            "its meta.run.axis is 'abc': not 0, 1 or 2 (the checkpoint is corrupt)",
        ),
        (
            {"meta": '{"run": {"orientation": "sideways"}}'},
            "its meta.run.orientation is 'sideways': not one of radiological, canonical, native",
        ),
        (
            {"meta": '{"run": {"window": "40"}}'},
            "its meta.run.window is '40': window expects CENTRE,WIDTH",
        ),
        (
            {"meta": '{"run": {"percentile": [1, 99]}}'},
            "its meta.run.percentile is [1, 99]: not text (the checkpoint is corrupt)",
        ),
        (
            {"config": {"img_size": "abc"}},
            "its stored model configuration is invalid: img_size must be int, got 'abc'",
        ),
        (
            {"config": {"img_size": 20000}},
            "its stored model configuration is invalid: img_size must be in [8, 1024], got 20000",
        ),
        ({"config": {"img_size": 64.0}}, "img_size must be int, got 64.0"),
        ({"config": {"use_global": 1}}, "use_global must be bool, got 1"),
        ({"config": {"iqm_layers": True}}, "iqm_layers must be int, got True"),
        ({"config": {"dropout": float("nan")}}, "dropout must be float, got nan"),
        ({"config": {"features_list": "6 12"}}, "features_list must be list[int] | None"),
        ({"config": {"iqm_heads": 0}}, "invalid: iqm_heads must be at least 1, got 0"),
        ({"config": {"features_list": [6, 99]}}, "invalid: features_list [99] is outside 1..24"),
        ({"config": {"normalize": "imagenet"}}, "invalid: normalize must be 'none' or 'clip'"),
        ({"config": {"model_name": _DROP}}, "missing model configuration keys: model_name"),
        ({"config": {"colour": "red"}}, "unknown model configuration keys: colour"),
    ],
)
def test_bad_metadata_is_refused_in_one_line_before_any_model_is_built(
    tiny, tmp_path, never_built, metadata, message
):
    path = save_checkpoint(tmp_path / "x.pth", tiny)
    if isinstance(metadata.get("config"), dict):
        metadata = {"config": _config_with(path, **metadata["config"])}
    _tamper(path, **metadata)
    with pytest.raises(UserError) as caught:
        IQEClip.from_checkpoint(path)
    text = str(caught.value)
    assert text.startswith(f"ckpt_path {path}: ") and "\n" not in text
    assert message in text


def test_concurrent_updates_each_see_the_previous_one(tiny, tmp_path):
    path = save_checkpoint(tmp_path / "x.pth", tiny)

    def append(n: int):
        def update(meta):
            history = [*meta.get("history", []), n]
            time.sleep(0.3)  # without the lock, every update would read the same history
            return {"history": history}

        return update_checkpoint_meta(path, update)

    with ThreadPoolExecutor(3) as pool:
        written = list(pool.map(append, range(3)))
    assert sorted(read_checkpoint(path)[2]["history"]) == [0, 1, 2]
    assert sorted(len(meta["history"]) for meta in written) == [1, 2, 3]


def test_a_held_lock_is_waited_for_then_refused_in_one_line(tiny, tmp_path):
    path = save_checkpoint(tmp_path / "x.pth", tiny)
    held, again = locked(path, "--ckpt_path"), locked(path, "--ckpt_path", timeout=0.2)
    with held, pytest.raises(UserError) as caught, again:
        pytest.fail("a held lock was taken")
    assert str(caught.value) == (
        f"--ckpt_path {path}: another process has been updating it for 0.2 s (it holds "
        "x.pth.lock); try again when it is done"
    )
    with locked(path, "--ckpt_path", timeout=0.2):  # released when its holder is done
        pass


@pytest.mark.parametrize(("umask", "mode"), [(0o022, 0o644), (0o027, 0o640)])
def test_checkpoints_and_their_lock_follow_the_umask(tiny, tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        path = save_checkpoint(tmp_path / "x.pth", tiny)
        assert path.stat().st_mode & 0o777 == mode
        assert path.with_suffix(".yaml").stat().st_mode & 0o777 == mode
        update_checkpoint_meta(path, lambda meta: {"epoch": 2})
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == mode
    assert (tmp_path / "x.pth.lock").stat().st_mode & 0o777 == mode
