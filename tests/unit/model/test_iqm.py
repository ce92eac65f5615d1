"""IQM: parameter counts derived from its definition, level batching, dropout."""

from __future__ import annotations

import torch

from iqeclip.model.iqm import IQM, AttentionBlock, IQMLayer


def _attention_params(d: int) -> int:
    return 4 * (d * d + d) + 2 * d  # Q, K, V, O with biases + post-LN


def _layer_params(d: int) -> int:
    ffn = (d * 4 * d + 4 * d) + (4 * d * d + d) + 2 * d
    return 3 * _attention_params(d) + ffn


def test_parameter_counts_match_the_paper_configuration():
    assert _layer_params(768) == 11_815_680
    assert sum(p.numel() for p in IQMLayer(768, 8, 0.0).parameters()) == _layer_params(768)
    iqm = IQM(768, layers=4, heads=8)
    assert (
        sum(p.numel() for p in iqm.parameters()) == 2 * 768 + 4 * _layer_params(768) == 47_264_256
    )


def test_stacked_levels_equal_per_level_calls():
    torch.manual_seed(0)
    iqm = IQM(32, layers=2, heads=4).eval()
    levels, batch = 4, 3
    q = torch.randn(batch, 2, 32)
    image = torch.randn(levels, batch, 9, 32)
    text = torch.randn(batch, 2, 32)
    stacked = iqm(q.repeat(levels, 1, 1), image.flatten(0, 1), text.repeat(levels, 1, 1)).view(
        levels, batch, 2, 32
    )
    for lvl in range(levels):
        torch.testing.assert_close(stacked[lvl], iqm(q, image[lvl], text), rtol=1e-5, atol=1e-6)


def test_queries_attend_to_the_image_and_the_text():
    torch.manual_seed(0)
    iqm = IQM(32, layers=1, heads=4).eval()
    q, image, text = torch.randn(2, 2, 32), torch.randn(2, 9, 32), torch.randn(2, 2, 32)
    base = iqm(q, image, text)
    assert not torch.allclose(iqm(q, image + 1, text), base)
    assert not torch.allclose(iqm(q, image, text + 1), base)
    # each sample only sees its own memory
    other = image.clone()
    other[1] += 1
    torch.testing.assert_close(iqm(q, other, text)[0], base[0])


def test_dropout_is_inactive_at_zero_and_in_eval():
    torch.manual_seed(0)
    args = torch.randn(2, 2, 32), torch.randn(2, 9, 32), torch.randn(2, 2, 32)
    off = IQM(32, layers=1, heads=4, dropout=0.0).train()
    torch.testing.assert_close(off(*args), off.eval()(*args))
    on = IQM(32, layers=1, heads=4, dropout=0.5).train()
    assert not torch.allclose(on(*args), on.eval()(*args))


def test_attention_equals_the_direct_key_value_form():
    torch.manual_seed(0)
    block = AttentionBlock(32, 4, 0.0).eval()
    x, memory = torch.randn(3, 2, 32), torch.randn(3, 17, 32)
    n, q, d, h = 3, 2, 32, 4

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(n, -1, h, d // h).transpose(1, 2)

    k, v = heads(block.key(memory)), heads(block.value(memory))
    att = (heads(block.query(x)) @ k.transpose(-1, -2) / (d // h) ** 0.5).softmax(-1)
    direct = block.norm(x + block.out((att @ v).transpose(1, 2).reshape(n, q, d)))
    torch.testing.assert_close(block(x, memory), direct, rtol=1e-5, atol=1e-5)
