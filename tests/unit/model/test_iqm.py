"""IQM: parameter counts derived from its definition, level batching, dropout, the attention's
hand-written backward."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from iqeclip.model.iqm import IQM, AttentionBlock, IQMLayer, MemoryAttention, attend


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


def _direct(block: AttentionBlock, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
    """The textbook form: every memory token projected into keys and values (no dropout)."""
    n, q, d = x.shape
    h = block.heads

    def heads(t: torch.Tensor) -> torch.Tensor:
        return t.view(n, -1, h, d // h).transpose(1, 2)

    k, v = heads(block.key(memory)), heads(block.value(memory))
    att = (heads(block.query(x)) @ k.transpose(-1, -2) / (d // h) ** 0.5).softmax(-1)
    return block.norm(x + block.out((att @ v).transpose(1, 2).reshape(n, q, d)))


def test_attention_equals_the_direct_key_value_form():
    torch.manual_seed(0)
    block = AttentionBlock(32, 4, 0.0).eval()
    x, memory = torch.randn(3, 2, 32), torch.randn(3, 17, 32)
    torch.testing.assert_close(block(x, memory), _direct(block, x, memory), rtol=1e-5, atol=1e-5)


def _attention_inputs(dtype: torch.dtype) -> tuple[torch.Tensor, ...]:
    n, q, h, d, m = 3, 2, 4, 16, 7
    shapes = ((n, q, h, d), (n, h, q, 1), (n, m, d))
    return tuple(torch.randn(s, dtype=dtype, requires_grad=True) for s in shapes)


def test_memory_attention_backward_is_the_gradient_of_its_forward():
    torch.manual_seed(0)
    inputs = _attention_inputs(torch.float64)
    assert torch.autograd.gradcheck(lambda *t: MemoryAttention.apply(*t, 4, 0.0), inputs)


@pytest.mark.parametrize("dropout", [0.0, 0.3])
def test_memory_attention_gradients_equal_autograds(dropout: float):
    """Against autograd through :func:`attend` itself, the same random stream for dropout."""
    torch.manual_seed(0)
    inputs = _attention_inputs(torch.float64)
    grads = []
    for fn in (
        lambda *t: MemoryAttention.apply(*t, 4, dropout),
        lambda *t: attend(*t, 4, dropout)[2:],
    ):
        torch.manual_seed(1)
        att, pooled = fn(*inputs)
        torch.manual_seed(2)
        loss = (att.sum(-1) * torch.randn_like(att.sum(-1))).sum() + (
            pooled * torch.randn_like(pooled)
        ).sum()
        grads.append(torch.autograd.grad(loss, inputs))
    for mine, theirs in zip(*grads, strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-12, atol=1e-12)


def test_attention_dropout_draws_as_f_dropout():
    """The mask comes from the random stream ``F.dropout`` of the weights would have used."""
    torch.manual_seed(0)
    q_mem, key_bias, memory = (t.detach() for t in _attention_inputs(torch.float32))
    torch.manual_seed(5)
    probs, noise, att, _ = attend(q_mem, key_bias, memory, 4, 0.3)
    torch.manual_seed(5)
    assert noise is not None and torch.equal(att, F.dropout(probs, 0.3, training=True))


def test_block_gradients_equal_the_direct_forms():
    """Every parameter's and both inputs' gradients (self-attention: the memory is the input)."""
    torch.manual_seed(0)
    block = AttentionBlock(32, 4, 0.0).double().train()
    x = torch.randn(3, 2, 32, dtype=torch.float64, requires_grad=True)
    memory = torch.randn(3, 17, 32, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(3, 2, 32, dtype=torch.float64)
    for mem in (memory, x):
        grads = []
        for forward in (block, lambda a, b: _direct(block, a, b)):
            inputs = (x, mem) if mem is memory else (x,)
            loss = (forward(x, mem) * weight).sum()
            grads.append(torch.autograd.grad(loss, [*inputs, *block.parameters()]))
        for mine, direct in zip(*grads, strict=True):
            torch.testing.assert_close(mine, direct, rtol=1e-9, atol=1e-12)
