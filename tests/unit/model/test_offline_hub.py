"""``--pretrain openai`` offline: the run stops at once with what to do, instead of after the
hub client's minute of retries; weights in the local cache are used without asking the hub."""

from __future__ import annotations

import socket
import time

import open_clip
import pytest

from iqeclip.errors import UserError
from iqeclip.model import backbone


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """No weights cached: a fresh Hugging Face cache and home."""
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HOME", str(tmp_path))
    return tmp_path


def _no_network(*args, **kwargs):
    raise OSError("[Errno -2] Name or service not known")


def test_an_unreachable_hub_stops_the_run_at_once(empty_cache, monkeypatch):
    monkeypatch.setattr(socket, "create_connection", _no_network)

    def never(*args, **kwargs):
        raise AssertionError("open_clip was asked to download")

    monkeypatch.setattr(open_clip, "create_model", never)
    start = time.monotonic()
    with pytest.raises(UserError) as caught:
        backbone.create_clip("ViT-B-32", "openai", 224, True)
    assert time.monotonic() - start < 5
    message = str(caught.value)
    assert "pretrain openai: cannot obtain the weights" in message
    assert "huggingface.co cannot be reached" in message and "weights file" in message
    assert "\n" not in message


def test_hub_offline_mode_is_named(empty_cache, monkeypatch):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    assert "HF_HUB_OFFLINE" in backbone.weights_unreachable("ViT-B-32", "openai")


def test_cached_weights_need_no_network(empty_cache, monkeypatch):
    import huggingface_hub

    monkeypatch.setattr(socket, "create_connection", _no_network)
    monkeypatch.setattr(huggingface_hub, "try_to_load_from_cache", lambda repo, name: "/x.bin")
    assert backbone.weights_unreachable("ViT-B-32", "openai") is None


def test_a_reachable_host_is_left_to_open_clip(empty_cache, monkeypatch):
    class Connection:
        def close(self):
            pass

    asked = []
    monkeypatch.setattr(
        socket, "create_connection", lambda address, timeout: asked.append(address) or Connection()
    )
    assert backbone.weights_unreachable("ViT-B-32", "openai") is None
    assert asked == [("huggingface.co", 443)]
