"""The assembled detector: parameter counts, shapes, determinism of the frozen half."""

from __future__ import annotations

import pytest
import torch

from iqeclip.config import ModelConfig
from iqeclip.errors import UserError
from iqeclip.model.detector import IQEClip

PAPER = dict(
    model_name="ViT-L-14-336",
    pretrain="none",
    img_size=240,
    features_list=[6, 12, 18, 24],
    prompt_len=2,
    deep_prompt_len=1,
    total_d_layer_len=11,
    use_global=True,
)


def test_paper_configuration_parameter_counts():
    model = IQEClip.build(ModelConfig(**PAPER), device="meta")
    d, dv = 768, 1024
    want = {
        "projections": 4 * (dv * d + d),
        "class_tokens": 2 * d + (2 * 3 + 2) + 1,
        "text_prompts": d + 11 * d + (d * d + d) + 2 * d,
        "queries": 2 * d + (2 * 3 + 2),
        "iqm": 47_264_256,  # derived layer by layer in test_iqm.py
    }
    assert model.trainable_parameters() == want
    assert sum(want.values()) == 51_017_489
    assert model.activation == "GELU"


def test_switching_off_options_removes_their_parameters():
    model = IQEClip.build(
        ModelConfig(**{**PAPER, "use_global": False, "total_d_layer_len": 0}), device="meta"
    )
    counts = model.trainable_parameters()
    assert counts["class_tokens"] == 2 * 768 + 1 and counts["queries"] == 2 * 768
    assert "text_prompts" not in counts


def test_tiny_forward_shapes_and_scores(tiny):
    x = torch.rand(2, 3, 64, 64)
    logits = tiny(x)
    assert logits.query.shape == logits.text.shape == (4, 2, 16, 2)
    # query branch: cosine logits, no temperature
    assert logits.query.abs().max() <= 1.0 + 1e-5
    for setting in ("zero", "few"):
        maps, image = tiny.predict(x, setting)
        assert maps.shape == (2, 64, 64) and image.shape == (2,)
        assert torch.isfinite(maps).all() and ((maps >= 0) & (maps <= 1)).all()


def test_real_architecture_forward():
    torch.manual_seed(0)
    model = IQEClip.build(ModelConfig(model_name="ViT-B-16", pretrain="none", img_size=240))
    assert model.config.features_list == [3, 6, 9, 12]
    logits = model(torch.rand(1, 3, 240, 240))
    assert logits.query.shape == (4, 1, 225, 2)


def test_without_global_the_text_is_image_independent():
    torch.manual_seed(0)
    model = IQEClip.build(
        ModelConfig(model_name="iqe-tiny", pretrain="none", img_size=64, use_global=False)
    )
    _, glob = model.features(torch.rand(3, 3, 64, 64))
    text = model.head.text_embeddings(glob, model.backbone.text)
    assert text.shape == (3, 2, 128)
    torch.testing.assert_close(text[0], text[2])


def test_only_the_head_gets_gradients(tiny):
    logits = tiny(torch.rand(1, 3, 64, 64))
    (logits.query.sum() + logits.text.sum()).backward()
    assert all(p.grad is None for p in tiny.backbone.parameters())
    assert tiny.head.iqm.layers[0].image_attn.key.weight.grad is not None
    assert tiny.head.text_prompts.deep_prompt_embeddings.grad is not None
    tiny.head.zero_grad(set_to_none=True)


@pytest.mark.parametrize(
    ("overrides", "name"),
    [
        ({"features_list": [0, 2]}, "^features_list"),
        ({"total_d_layer_len": 2}, "^total_d_layer_len"),
        ({"normalize": "imagenet"}, "^normalize"),
        ({"img_size": 4}, "^img_size"),
    ],
)
def test_bad_configuration_names_the_parameter(overrides, name):
    with pytest.raises(UserError, match=name):
        IQEClip.build(
            ModelConfig(model_name="iqe-tiny", pretrain="none", **overrides), device="meta"
        )
