"""Architectures and parameter counts read from the config files, against models open_clip builds."""

from __future__ import annotations

import importlib.metadata
import json
import os
import subprocess
import sys

import pytest

from iqeclip.config import ModelConfig
from iqeclip.errors import UserError
from iqeclip.model import architecture
from iqeclip.model.architecture import Architecture
from iqeclip.model.backbone import activation_name, create_clip
from iqeclip.model.detector import IQEClip


def test_architecture_dims_and_unknown_model():
    arch = Architecture.from_name("ViT-L-14-336")
    assert (arch.embed_dim, arch.vision_width, arch.vision_layers, arch.text_layers) == (
        768,
        1024,
        24,
        12,
    )
    with pytest.raises(UserError, match=r"^model_name 'nope'"):
        Architecture.from_name("nope")


@pytest.mark.parametrize(
    "name",
    ["RN50", "ViT-B-16-SigLIP", "coca_ViT-B-32", "xlm-roberta-base-ViT-B-32", "ViT-L-14-CLIPA"],
)
def test_towers_that_are_not_a_plain_clip_vit_are_refused(name):
    with pytest.raises(UserError, match=f"^model_name {name!r}"):
        Architecture.from_name(name)


def test_the_config_files_are_open_clips_registry():
    import open_clip

    for name, cfg in architecture.model_configs().items():
        assert open_clip.get_model_config(name) == cfg, name


@pytest.mark.parametrize(
    ("name", "overrides"),
    [
        ("iqe-tiny", {"img_size": 64}),
        ("iqe-tiny", {"img_size": 96, "use_global": False, "total_d_layer_len": 0}),
        ("ViT-B-16", {"img_size": 240, "features_list": [3, 12], "prompt_len": 3}),
        ("ViT-L-14-336", {"img_size": 240}),  # the paper's configuration
        ("ViT-L-14-336", {"img_size": 336, "iqm_layers": 2, "deep_prompt_len": 4}),
        ("ViT-M-16-alt", {"img_size": 224}),  # LayerScale
        ("ViT-g-14", {"img_size": 224}),  # fractional mlp_ratio
        ("ViT-B-16-quickgelu", {"img_size": 224}),  # QuickGELU from the config
    ],
)
def test_counts_and_activation_equal_the_built_model(name, overrides):
    """What `iqeclip info` prints without torch equals what the built detector holds."""
    model = IQEClip.build(ModelConfig(model_name=name, pretrain="none", **overrides), device="meta")
    cfg = model.config
    assert architecture.backbone_parameters(name, cfg.img_size) == sum(
        p.numel() for p in model.backbone.parameters()
    )
    assert architecture.head_parameters(model.arch, cfg) == model.trainable_parameters()
    assert architecture.activation(name, cfg.quick_gelu) == model.activation
    forced = create_clip(name, "none", cfg.img_size, quick_gelu=True, device="meta")
    assert architecture.activation(name, True) == activation_name(forced) == "QuickGELU"


def _info_imports(argv: list[str], cache: str) -> list[str]:
    code = (
        "import sys\nfrom iqeclip.cli.main import main\nmain(sys.argv[1:])\n"
        "print([m for m in ('torch', 'open_clip', 'numpy', 'PIL') if m in sys.modules])"
    )
    env = {**os.environ, "XDG_CACHE_HOME": cache}
    proc = subprocess.run(
        [sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True, env=env
    )
    assert "trainable parameters: " in proc.stdout
    return json.loads(proc.stdout.strip().splitlines()[-1].replace("'", '"'))


def test_info_imports_nothing_heavy(tmp_path):
    """`iqeclip info` answers from the config files (start-up, docs/performance.md); an open_clip
    tag is checked against open_clip's list, read once and then kept in the cache."""
    cache = str(tmp_path / "cache")
    assert _info_imports(["info", "--pretrain", "none"], cache) == []
    assert "open_clip" in _info_imports(["info"], cache)  # the first time: open_clip's own list
    assert _info_imports(["info"], cache) == []
    assert _info_imports(["info", "--model_name", "ViT-B-16"], cache) == []
    (tags,) = (tmp_path / "cache" / "iqeclip").iterdir()
    assert "openai" in json.loads(tags.read_text())["ViT-L-14-336"]


def test_a_wrong_tag_is_refused_from_the_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    with pytest.raises(UserError, match=r"^pretrain .opanai..*openai"):
        architecture.pretrain_source("ViT-L-14-336", "opanai")


def test_an_unwritable_tag_cache_is_skipped(tmp_path, monkeypatch):
    """The tag list is a cache only: where it cannot be written, the tags come from open_clip."""
    import open_clip

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    version = importlib.metadata.version("open_clip_torch")
    blocked = tmp_path / "iqeclip" / f"open_clip-{version}-pretrained-tags.json"
    blocked.mkdir(parents=True)  # a folder where the cache file would go: the write fails
    assert "openai" in open_clip.list_pretrained_tags_by_model("ViT-B-16")
    assert architecture.pretrain_source("ViT-B-16", "openai") == "tag"
