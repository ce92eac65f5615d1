"""Text side: token ids, batched and truncated prompted text encoding."""

from __future__ import annotations

import torch

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


def test_batched_text_pass_equals_per_sequence_passes(tiny):
    head, tower = tiny.head, tiny.backbone.text
    cls = _class_tokens(tiny, 3)
    with torch.no_grad():
        batched = encode_prompts(tower, head.token_ids, cls, head.text_prompts)
        for i in range(3):
            for s in range(2):
                one = encode_prompts(
                    tower, head.token_ids[s : s + 1].repeat(2, 1), cls[i : i + 1], head.text_prompts
                )
                torch.testing.assert_close(batched[i, s], one[0, 0], rtol=1e-5, atol=1e-6)
    assert batched.shape == (3, 2, 128)
    torch.testing.assert_close(batched.norm(dim=-1), torch.ones(3, 2))


def test_truncated_text_equals_full_length_text(tiny):
    head, tower = tiny.head, tiny.backbone.text
    cls = _class_tokens(tiny, 2)
    with torch.no_grad():
        short = encode_prompts(tower, head.token_ids, cls, head.text_prompts)
        full = encode_prompts(tower, head.token_ids, cls, head.text_prompts, length=77)
    torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-6)


def test_truncation_is_exact_without_deep_prompts(tiny):
    tower = tiny.backbone.text
    cls = _class_tokens(tiny, 2)
    with torch.no_grad():
        short = encode_prompts(tower, tiny.head.token_ids, cls, None)
        full = encode_prompts(tower, tiny.head.token_ids, cls, None, length=77)
    torch.testing.assert_close(short, full, rtol=1e-5, atol=1e-6)


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
