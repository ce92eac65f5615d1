"""bf16 backbone and the benchmark command (a smoke test; the real figures are in docs)."""

from __future__ import annotations

import json

import torch

from iqeclip.cli.main import main
from tests.conftest import build_tiny


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
    ):
        assert result[key] > 0, key
    assert (
        result["inference_over_backbone"]
        == round(result["inference_ms_per_image"] / result["backbone_ms_per_image"], 3)
        or abs(
            result["inference_over_backbone"]
            - result["inference_ms_per_image"] / result["backbone_ms_per_image"]
        )
        < 0.01
    )
