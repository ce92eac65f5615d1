"""Backbone: taps, global embedding, activation and the weight-loading paths."""

from __future__ import annotations

import torch

from iqeclip.model.backbone import Backbone, activation_name, create_clip


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
        torch.testing.assert_close(glob, visual.ln_post(h[:, 0]) @ tiny.backbone.proj)


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


def test_features_of_an_image_do_not_depend_on_its_batch(tiny):
    """Bit for bit: what the feature cache relies on to equal --no_cache (docs/model.md)."""
    x = torch.rand(16, 3, 64, 64)
    patch, glob = tiny.features(x)
    for n in (1, 3, 5, 7, 8, 13):
        part = tiny.features(x[16 - n :])
        assert torch.equal(part[0], patch[:, 16 - n :]) and torch.equal(part[1], glob[16 - n :])
    # a plain (B, Dv) @ proj is not batch-invariant on this CPU: that is why proj goes row-wise
    pooled = torch.randn(16, tiny.backbone.proj.shape[0])
    rowwise = torch.cat([r @ tiny.backbone.proj for r in pooled.split(1)])
    assert torch.equal(rowwise[:1], pooled[:1] @ tiny.backbone.proj)
