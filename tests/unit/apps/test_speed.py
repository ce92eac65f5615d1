"""bf16 backbone and the benchmark command (a smoke test; the real figures are in docs)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from iqeclip.apps.breakdown import backbone_flops
from iqeclip.cli.main import main
from iqeclip.config import ModelConfig
from iqeclip.engine.trainer import make_optimizer, train_step
from iqeclip.model.detector import IQEClip
from tests.conftest import build_tiny


def vit_flops(img: int, patch: int, width: int, layers: int, mlp_ratio: int = 4) -> int:
    """A ViT's forward FLOPs by hand: 2 per multiply-add of the patch convolution and, per block,
    of the qkv, attention (scores and values), output and MLP products, over L = grid² + 1."""
    tokens = (img // patch) ** 2 + 1
    conv = 2 * 3 * patch * patch * width * (tokens - 1)
    qkv, out = 2 * tokens * width * 3 * width, 2 * tokens * width * width
    attention = 2 * (2 * tokens * tokens * width)
    mlp = 2 * (2 * tokens * width * mlp_ratio * width)
    return conv + layers * (qkv + attention + out + mlp)


def test_backbone_flops_are_counted_as_derived_by_hand():
    for name, img, patch, width, layers in (
        ("iqe-tiny", 64, 16, 64, 24),
        ("ViT-B-16", 224, 16, 768, 12),
        ("ViT-L-14-336", 240, 14, 1024, 24),  # the paper's, counted on a meta build
    ):
        model = IQEClip.build(
            ModelConfig(model_name=name, pretrain="none", img_size=img), device="meta"
        )
        images = torch.empty(2, 3, img, img, device="meta")
        assert backbone_flops(model, images) == vit_flops(img, patch, width, layers), name


def test_bf16_backbone_maps_stay_close_to_fp32():
    fp32, bf16 = build_tiny(), build_tiny(precision="bf16")
    bf16.head.load_state_dict(fp32.head.state_dict())
    assert bf16.backbone.visual.conv1.weight.dtype == torch.bfloat16
    assert bf16.backbone.text.token_embedding.weight.dtype == torch.float32
    x = torch.rand(2, 3, 64, 64)
    patch, glob = bf16.features(x)
    assert patch.dtype == glob.dtype == torch.float32
    a, _ = fp32.predict(x, "zero")
    b, _ = bf16.predict(x, "zero")
    assert (a - b).abs().max() < 1e-2


def test_benchmark_prints_the_figures(capsys):
    assert (
        main(
            [
                "benchmark",
                "--model_name",
                "iqe-tiny",
                "--img_size",
                "64",
                "--batch_size",
                "2",
                "--n_images",
                "2",
            ]
        )
        == 0
    )
    result = json.loads(capsys.readouterr().out)
    for key in (
        "backbone_ms_per_image",
        "inference_ms_per_image",
        "inference_over_backbone",
        "train_ms_per_image_uncached",
        "train_ms_per_image_cached",
        "train_uncached_over_backbone",
        "train_cached_over_backbone",
        "peak_rss_mb",
        "torch_threads",
        "backbone_gflop_per_image",
        "backbone_gflops_per_s",
    ):
        assert result[key] > 0, key
    parts = result["breakdown_ms_per_image"]
    assert set(parts) == {
        "backbone",
        "text",
        "iqm",
        "maps",
        "blur",
        "head_other",
        "metrics",
        "data",
    }
    assert all(v >= 0 for v in parts.values()) and parts["backbone"] > 0 and parts["data"] > 0
    flops = vit_flops(64, 16, 64, 24)  # iqe-tiny's vision tower (model_configs/iqe-tiny.json)
    assert result["backbone_gflop_per_image"] == round(flops / 1e9, 3)
    assert (
        result["inference_over_backbone"]
        == round(result["inference_ms_per_image"] / result["backbone_ms_per_image"], 3)
        or abs(
            result["inference_over_backbone"]
            - result["inference_ms_per_image"] / result["backbone_ms_per_image"]
        )
        < 0.01
    )
    assert result["pipeline_images"] == 2 and result["pipeline_workers"] == 2
    for key in ("pipeline_model_images_per_s", "pipeline_images_per_s"):
        assert result[key] > 0, key
    assert result["pipeline_over_model"] == pytest.approx(
        result["pipeline_images_per_s"] / result["pipeline_model_images_per_s"], rel=1e-2
    )
    assert result["pipeline_over_model_workers_0"] > 0


def test_bf16_runs_the_head_under_autocast_and_fp32_does_not():
    fp32, bf16 = build_tiny(), build_tiny(precision="bf16")
    bf16.load_state_dict(fp32.state_dict())
    seen = {}
    for name, model in (("fp32", fp32), ("bf16", bf16)):
        linear = next(m for m in model.head.iqm.modules() if isinstance(m, torch.nn.Linear))
        hook = linear.register_forward_hook(
            lambda module, args, out, name=name: seen.update({name: out.dtype})  # returns None
        )
        images = (torch.rand(4, 3, 64, 64, generator=torch.Generator().manual_seed(0)) * 255).to(
            torch.uint8
        )
        masks = torch.zeros(4, 64, 64, dtype=torch.bool)
        masks[2:, 8:30, 8:30] = True
        batch = (images, masks, torch.tensor([0, 0, 1, 1]), torch.ones(4, dtype=torch.bool))
        seen[f"{name}_loss"] = train_step(model, make_optimizer(model, 1e-4), batch)
        hook.remove()
    assert seen["fp32"] == torch.float32 and seen["bf16"] == torch.bfloat16
    assert np.isfinite(seen["bf16_loss"])
    np.testing.assert_allclose(seen["bf16_loss"], seen["fp32_loss"], rtol=5e-2)


def test_the_pipeline_figure_with_readers_in_the_main_process(capsys):
    """--workers 0 times the same predict twice a round: each timed run has its own folder."""
    argv = ["benchmark", "--model_name", "iqe-tiny", "--img_size", "64", "--batch_size", "2"]
    assert main([*argv, "--n_images", "2", "--workers", "0"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["pipeline_workers"] == 0 and result["pipeline_over_model_workers_0"] > 0
