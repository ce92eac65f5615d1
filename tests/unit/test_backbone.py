"""Backbone: taps, global embedding, activation and the weight-loading paths."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import save_file

from iqeclip.backbone import Architecture, Backbone, activation_name, create_clip, read_state_dict
from iqeclip.errors import UserError


def test_tiny_taps_and_global_shapes(tiny):
    patch, glob = tiny.features(torch.rand(3, 3, 64, 64))
    # 64 px / patch 16 = 4x4 grid, 4 taps (quartiles of 24 blocks), width 64, CLS dropped
    assert patch.shape == (4, 3, 16, 64)
    assert glob.shape == (3, 128)
    assert tiny.config.features_list == [6, 12, 18, 24]


def test_taps_are_raw_residual_stream_and_global_is_ln_post_cls(tiny):
    visual = tiny.backbone.visual
    x = torch.rand(2, 3, 64, 64)
    patch, glob = tiny.features(x)
    with torch.no_grad():
        h = visual.ln_pre(
            torch.cat(
                [
                    visual.class_embedding.expand(2, 1, -1),
                    visual.conv1(x).flatten(2).transpose(1, 2),
                ],
                dim=1,
            )
            + visual.positional_embedding
        )
        taps = iter(patch)
        for i, block in enumerate(visual.transformer.resblocks, start=1):
            h = block(h)
            if i in tiny.config.features_list:
                torch.testing.assert_close(next(taps), h[:, 1:])
        torch.testing.assert_close(glob, visual.ln_post(h[:, 0]) @ visual.proj)


def test_real_architecture_shapes():
    clip = create_clip("ViT-B-16", "none", 240, quick_gelu=False)
    backbone = Backbone(clip, [3, 6, 9, 12])
    patch, glob = backbone(torch.rand(1, 3, 240, 240))
    assert patch.shape == (4, 1, 15 * 15, 768)
    assert glob.shape == (1, 512)
    assert clip.visual.positional_embedding.shape == (226, 768)


def test_backbone_is_frozen_and_stays_in_eval(tiny):
    tiny.train()
    assert not tiny.backbone.training
    assert not any(p.requires_grad for p in tiny.backbone.parameters())


def test_activation_is_explicit():
    assert activation_name(create_clip("iqe-tiny", "none", 64, quick_gelu=False)) == "GELU"
    assert activation_name(create_clip("iqe-tiny", "none", 64, quick_gelu=True)) == "QuickGELU"


def test_architecture_dims_and_unknown_model():
    arch = Architecture.from_name("ViT-L-14-336")
    assert (arch.embed_dim, arch.vision_width, arch.vision_layers, arch.text_layers) == (
        768,
        1024,
        24,
        12,
    )
    with pytest.raises(UserError, match="--model_name 'nope'"):
        Architecture.from_name("nope")


def _native_tiny(seed: int = 1):
    torch.manual_seed(seed)
    return create_clip("iqe-tiny", "none", 224, quick_gelu=False)


def _reference_at(native, img_size: int):
    """The native model's weights with the grid resized by hand (bicubic, antialias), at img_size."""
    state = {k: v.clone() for k, v in native.state_dict().items()}
    pe = state["visual.positional_embedding"]
    grid = img_size // 16
    img = pe[1:].reshape(1, 14, 14, -1).permute(0, 3, 1, 2)
    img = F.interpolate(img, size=(grid, grid), mode="bicubic", antialias=True, align_corners=False)
    state["visual.positional_embedding"] = torch.cat(
        [pe[:1], img.permute(0, 2, 3, 1).reshape(grid * grid, -1)]
    )
    ref = create_clip("iqe-tiny", "none", img_size, quick_gelu=False)
    ref.load_state_dict(state)
    return Backbone(ref, [2, 4])


@pytest.mark.parametrize("fmt", ["torchscript", "state_dict", "wrapped_state_dict", "safetensors"])
def test_weight_files_load_through_the_user_path(tmp_path, fmt):
    native = _native_tiny()
    if fmt == "torchscript":
        # OpenAI's archive format: a traced CLIP whose state dict also holds int entries such as
        # input_resolution (context_length/vocab_size are attributes of open_clip's CLIP here).
        native.register_buffer("input_resolution", torch.tensor(224))
        path = tmp_path / "ViT-tiny.pt"
        example = (torch.ones(1, 3, 224, 224), torch.zeros(1, 77, dtype=torch.int))
        torch.jit.save(torch.jit.trace_module(native, {"forward": example}), str(path))
        del native.input_resolution
    elif fmt == "safetensors":
        path = tmp_path / "w.safetensors"
        save_file({k: v.contiguous() for k, v in native.state_dict().items()}, str(path))
    else:
        path = tmp_path / "w.pt"
        state = native.state_dict()
        if fmt == "wrapped_state_dict":
            state = {"state_dict": {f"module.{k}": v for k, v in state.items()}}
        torch.save(state, path)

    loaded = Backbone(create_clip("iqe-tiny", str(path), 96, quick_gelu=False), [2, 4])
    ref = _reference_at(native, 96)
    x = torch.rand(2, 3, 96, 96)
    got, want = loaded(x), ref(x)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])


def test_bad_weight_files(tmp_path):
    with pytest.raises(UserError, match="no such file"):
        read_state_dict(tmp_path / "missing.pt")
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(UserError, match=r"junk\.pt: cannot read weights"):
        read_state_dict(junk)
    other = tmp_path / "other.pt"
    torch.save({"foo.weight": torch.zeros(2)}, other)
    with pytest.raises(UserError, match="weights do not fit iqe-tiny"):
        create_clip("iqe-tiny", str(other), 64, quick_gelu=False)
    with pytest.raises(UserError, match="--pretrain 'nonsense'"):
        create_clip("iqe-tiny", "nonsense", 64, quick_gelu=False)
