"""Text side: token ids, batched and truncated prompted text encoding."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from open_clip.transformer import ResidualAttentionBlock

from iqeclip.config import ModelConfig
from iqeclip.errors import UserError
from iqeclip.model import architecture, detector
from iqeclip.model.architecture import Architecture
from iqeclip.model.backbone import TextTower, create_clip
from iqeclip.model.detector import IQEClip
from iqeclip.model.losses import iqe_loss
from iqeclip.model.prompts import ClassTokens, InstanceTokens, encode_prompts, prompt_token_ids

NORMAL_IDS = [49406, 320, 1125, 539, 320, 5967, 27, 347, 1874, 91, 29, 269, 49407]


def test_token_ids_are_the_published_ones():
    ids = prompt_token_ids("ViT-L-14-336")
    assert ids[0].tolist() == NORMAL_IDS
    abnormal = list(NORMAL_IDS)
    abnormal[5] = 40934
    assert ids[1].tolist() == abnormal
    assert prompt_token_ids("iqe-tiny").tolist() == ids.tolist()


def _class_tokens(tiny, batch: int) -> torch.Tensor:
    torch.manual_seed(3)
    return tiny.head.class_tokens(torch.randn(batch, 128))


def direct_text(tower, token_ids, class_tokens, prompts, length: int = 77) -> torch.Tensor:
    """The prompted text of every image computed the direct way, as the published code does: each
    image's two full-length sequences (SOT, prompt slot, words, class tokens, padding to
    ``length``) through open_clip's own blocks under the full causal mask, pooled at the last
    class token. ``encode_prompts`` must give the same function."""
    eot, n_cls = token_ids.shape[1] - 1, class_tokens.shape[1]
    n_prompt = prompts.prompt_len if prompts is not None else 0
    pos = tower.positional_embedding
    pad = torch.zeros(length - n_prompt - eot - n_cls, dtype=torch.long)
    assert tower.transformer.batch_first
    out = []
    for cls in class_tokens:
        for ids in token_ids:
            x = torch.cat([tower.token_embedding(ids[:eot]), cls, tower.token_embedding(pad)])
            x = (x + pos[: length - n_prompt]).unsqueeze(0)
            if prompts is not None:
                x = torch.cat([x[:, :1], prompts.shallow(), x[:, 1:]], dim=1)
            for i, block in enumerate(tower.transformer.resblocks):
                if prompts is not None and i > 0:
                    x = torch.cat([x[:, :1], prompts.deep(i), x[:, 1 + n_prompt :]], dim=1)
                x = block(x, attn_mask=tower.attn_mask[:length, :length])
            pooled = x[0, n_prompt + eot + n_cls - 1]
            if prompts is not None:
                pooled = prompts.prompt_norm(pooled)
            out.append(F.normalize(tower.project(tower.ln_final(pooled)), dim=-1))
    return torch.stack(out).view(len(class_tokens), 2, -1)


@pytest.mark.parametrize("deep", [True, False], ids=["deep-prompts", "no-deep-prompts"])
@pytest.mark.parametrize("batch", [1, 3])
def test_shared_prefix_equals_the_direct_per_image_pass(tiny, deep, batch):
    head, tower = tiny.head, tiny.backbone.text
    cls = _class_tokens(tiny, batch)
    prompts = head.text_prompts if deep else None
    with torch.no_grad():
        cached = encode_prompts(tower, head.token_ids, cls, prompts)
        direct = direct_text(tower, head.token_ids, cls, prompts)
    assert cached.shape == (batch, 2, 128)
    torch.testing.assert_close(cached, direct, rtol=0, atol=1e-6)
    torch.testing.assert_close(cached.norm(dim=-1), torch.ones(batch, 2))


def test_each_image_gets_its_own_text_whatever_the_batch(tiny):
    head, tower = tiny.head, tiny.backbone.text
    cls = _class_tokens(tiny, 3)
    with torch.no_grad():
        batched = encode_prompts(tower, head.token_ids, cls, head.text_prompts)
        for i in range(3):
            one = encode_prompts(tower, head.token_ids, cls[i : i + 1], head.text_prompts)
            torch.testing.assert_close(batched[i], one[0], rtol=0, atol=1e-6)
    assert not torch.allclose(batched[0], batched[1])  # the images' class tokens differ


def test_pooled_token_sees_both_class_tokens_and_each_deep_prompt(tiny):
    head, tower = tiny.head, tiny.backbone.text
    cls = _class_tokens(tiny, 1)
    # A constant shift of a token is invisible to the LayerNorm in front of every attention, so
    # the perturbation has a direction.
    step = torch.linspace(-1.0, 1.0, cls.shape[-1])
    with torch.no_grad():
        base = encode_prompts(tower, head.token_ids, cls, head.text_prompts)
        for k in range(cls.shape[1]):
            moved = cls.clone()
            moved[0, k] += step
            assert not torch.allclose(
                encode_prompts(tower, head.token_ids, moved, head.text_prompts), base
            )
        deep = head.text_prompts.deep_prompt_embeddings
        for layer in range(deep.shape[0]):
            saved = deep[layer].clone()
            deep[layer] += step
            assert not torch.allclose(
                encode_prompts(tower, head.token_ids, cls, head.text_prompts), base
            )
            deep[layer] = saved


def test_instance_tokens_with_and_without_global():
    torch.manual_seed(0)
    g = torch.randn(5, 16)
    on, off = InstanceTokens(2, 16, use_global=True), InstanceTokens(2, 16, use_global=False)
    assert on(g).shape == (5, 2, 16)
    assert off(g).shape == (1, 2, 16)
    # the conditioning is a 3-tap convolution of the global embedding, one output channel per token
    w, b = on.conv.weight, on.conv.bias  # (2, 1, 3), (2,)
    padded = torch.nn.functional.pad(g, (1, 1))
    by_hand = torch.stack(
        [sum(w[t, 0, j] * padded[:, j : j + 16] for j in range(3)) + b[t] for t in range(2)], 1
    )
    torch.testing.assert_close(on(g), on.tokens + by_hand)
    assert sum(p.numel() for p in ClassTokens(2, 768, True).parameters()) == 2 * 768 + 2 * 3 + 2 + 1


def _direct_model(monkeypatch) -> None:
    """Make the head encode its text the direct per-image way (:func:`direct_text`)."""
    monkeypatch.setattr(detector, "encode_prompts", direct_text)


def _trained_looking(model: IQEClip) -> IQEClip:
    torch.manual_seed(1)
    with torch.no_grad():  # not the initial head: every branch and prompt matters
        for p in model.head.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


@pytest.fixture(
    scope="module",
    params=[("iqe-tiny", False), ("ViT-B-16", False), ("ViT-S-32", True)],
    ids=["iqe-tiny", "ViT-B-16", "ViT-S-32-quickgelu"],  # text width 128/512/384, 4/8/6 heads
)
def arch_model(request) -> IQEClip:
    name, quick_gelu = request.param
    torch.manual_seed(0)
    config = ModelConfig(model_name=name, pretrain="none", img_size=64, quick_gelu=quick_gelu)
    return _trained_looking(IQEClip.build(config))


def test_maps_equal_those_of_the_direct_text_pass(arch_model, monkeypatch):
    images = torch.rand(3, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    features = arch_model.features(images)
    cached = {s: arch_model.predict_features(*features, s) for s in ("zero", "few")}
    text = arch_model.head.text_embeddings(features[1], arch_model.backbone.text)
    _direct_model(monkeypatch)
    for setting, (maps, scores) in cached.items():
        direct_maps, direct_scores = arch_model.predict_features(*features, setting)
        torch.testing.assert_close(maps, direct_maps, rtol=0, atol=1e-6)
        torch.testing.assert_close(scores, direct_scores, rtol=0, atol=1e-6)
    direct = arch_model.head.text_embeddings(features[1], arch_model.backbone.text)
    torch.testing.assert_close(text, direct, rtol=0, atol=1e-6)


def _step_gradients(model: IQEClip, features, masks, labels) -> dict[str, torch.Tensor]:
    """The gradients of one training step (the head and the loss of ``train_step``)."""
    model.head.zero_grad(set_to_none=True)
    torch.manual_seed(5)  # the same dropout draws in both runs
    logits = model.head(*features, model.backbone.text)
    iqe_loss(logits, masks, labels, segmentation=True).backward()
    return {n: p.grad.clone() for n, p in model.head.named_parameters() if p.grad is not None}


def test_training_gradients_equal_those_of_the_direct_text_pass(arch_model, monkeypatch):
    """In float64, so that what is compared is the function and not fp32 rounding: in fp32 the
    direct pass's own text gradients are up to 1.2e-5 (relative) from the float64 ones, and the
    two passes differ from each other by as much (docs/model.md)."""
    gen = torch.Generator().manual_seed(4)
    labels = torch.tensor([0, 1, 0, 1])
    masks = (torch.rand(4, 1, 64, 64, generator=gen) > 0.9).double() * labels.view(4, 1, 1, 1)
    features = arch_model.features(torch.rand(4, 3, 64, 64, generator=gen))
    model = copy.deepcopy(arch_model)
    model.head.double()  # and the text tower; the frozen vision tower is not used
    model.backbone.text.double()
    features = [f.double() for f in features]
    cached = _step_gradients(model, features, masks, labels)
    _direct_model(monkeypatch)
    direct = _step_gradients(model, features, masks, labels)
    assert cached.keys() == direct.keys() == dict(model.head.named_parameters()).keys()
    for name in cached:  # every text parameter, and the rest of the head with them
        # (+1e-12: a few are 0 in exact arithmetic, e.g. class_tokens.conv.bias, a per-token
        # constant that the LayerNorms in front of every use remove)
        assert (cached[name] - direct[name]).norm() <= 1e-5 * direct[name].norm() + 1e-12, name
    for name in ("class_tokens.conv.weight", "text_prompts.deep_prompt_embeddings"):
        assert direct[name].norm() > 1e-6


def test_every_supported_text_tower_is_the_block_the_prefix_pass_runs():
    """The prefix pass uses each text block's pieces itself (``_cached_block``): a pre-LN block
    with one packed-projection multi-head attention and no extra key/value biases (the mask is
    open_clip's causal one, sliced, as the direct pass uses it whole). Every architecture iqeclip accepts is checked (built on the meta device, no weights)."""
    accepted = []
    for name, cfg in architecture.model_configs().items():
        try:
            Architecture.from_name(name)
        except UserError:
            continue
        accepted.append(name)
        clip = create_clip(name, "none", cfg["vision_cfg"]["image_size"], False, device="meta")
        tower = TextTower(clip)
        for block in tower.transformer.resblocks:
            assert type(block) is ResidualAttentionBlock, name
            attn = block.attn
            assert attn._qkv_same_embed_dim and attn.in_proj_bias is not None, name
            assert attn.bias_k is None and not attn.add_zero_attn and attn.dropout == 0, name
            assert not hasattr(block, "ln_1_kv"), name
    assert {"iqe-tiny", "ViT-B-16", "ViT-L-14-336", "ViT-H-14"} <= set(accepted)
