"""IQM, the instance-aware query module: a small Q-Former in plain torch.

Two learnable queries per image (normal / abnormal) pass through ``L`` post-LN layers of

    self-attention -> cross-attention to the projected patch tokens of one level
    -> cross-attention to the two text embeddings -> feed-forward (GELU)

One set of weights serves every tapped level; the levels are stacked along the batch dimension
and run as one call. Weights keep PyTorch's default initialisation, which is what the published
runs started from (their HF wrapper defined no ``_init_weights``).
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

LN_EPS = 1e-12


def attend(
    q_mem: torch.Tensor,
    key_bias: torch.Tensor,
    memory: torch.Tensor,
    head_dim: int,
    dropout: float = 0.0,
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor, torch.Tensor]:
    """The attention of queries (already in the memory's space) over a memory.

    Args:
        q_mem: ``(N, Q, h, D)`` queries times the key weights of their head.
        key_bias: ``(N, h, Q, 1)`` queries times the key bias.
        memory: ``(N, M, D)``.
        head_dim: ``D / h`` (the scores are divided by its square root).
        dropout: the probability of dropping an attention weight (0: none).

    Returns:
        The probabilities ``(N, h, Q, M)``; the dropout mask scaled by ``1 / (1 - p)`` (None
        without dropout), drawn as ``F.dropout`` draws it; the probabilities after dropout; the
        attention-weighted memory ``(N, Q, h, D)``.
    """
    scores = (torch.einsum("nqhc,nmc->nhqm", q_mem, memory) + key_bias) / math.sqrt(head_dim)
    probs = scores.softmax(dim=-1)
    noise = F.dropout(torch.ones_like(probs), dropout, training=True) if dropout > 0 else None
    att = probs if noise is None else probs * noise
    return probs, noise, att, torch.einsum("nhqm,nmc->nqhc", att, memory)


class MemoryAttention(torch.autograd.Function):
    """:func:`attend` with a backward that computes the memory's gradient in one product.

    The memory is used twice, in the scores and in the weighted sum, so autograd gives its
    gradient as two ``(N, M, D)`` products with only ``h * Q = 16`` terms each (one of them
    written transposed), and their sum. The two are one product of the stacked factors,

        dL/dm = sum_hq dS_hqm q_hq + sum_hq A_hqm dP_hq = [dS | A]^T [q ; dP]

    with ``dS`` the gradient of the scores before scaling, ``A`` the attention after dropout and
    ``dP`` the gradient of the weighted memory. The forward is :func:`attend` itself; the
    gradients are the same function's, checked with ``torch.autograd.gradcheck`` and against
    autograd's through :func:`attend`, both in float64 (``tests/unit/model/test_iqm.py``;
    docs/model.md). Products run in the memory's dtype, as autocast ran them in the forward.
    """

    @staticmethod
    def forward(ctx: Any, q_mem, key_bias, memory, head_dim, dropout):  # type: ignore[override]
        probs, noise, att, pooled = attend(q_mem, key_bias, memory, head_dim, dropout)
        ctx.save_for_backward(q_mem, memory, probs, att, noise)
        ctx.head_dim, ctx.bias_dtype = head_dim, key_bias.dtype
        return att, pooled

    @staticmethod
    def backward(ctx: Any, g_att, g_pooled):  # type: ignore[override]
        q_mem, memory, probs, att, noise = ctx.saved_tensors
        low = memory.dtype
        g = g_att + torch.einsum("nqhc,nmc->nhqm", g_pooled.to(low), memory)
        if noise is not None:
            g = g * noise
        d_scores = probs * (g - (g * probs).sum(dim=-1, keepdim=True))  # softmax backward
        d_raw = (d_scores / math.sqrt(ctx.head_dim)).to(low)
        g_q = torch.einsum("nhqm,nmc->nqhc", d_raw, memory)
        left = torch.cat([d_raw, att.to(low)], dim=1).flatten(1, 2)  # (N, 2h * Q, M)
        right = torch.cat([q_mem.to(low), g_pooled.to(low)], dim=2).transpose(1, 2)
        g_mem = left.transpose(1, 2) @ right.flatten(1, 2)  # (N, M, D)
        g_bias = d_raw.sum(dim=-1, keepdim=True)
        return g_q.to(q_mem.dtype), g_bias.to(ctx.bias_dtype), g_mem, None, None


class AttentionBlock(nn.Module):
    """BERT-style post-LN attention: ``LN(x + Dropout(O(Attn(Q x, K m, V m))))``.

    Only two queries attend to up to hundreds of memory tokens, so instead of projecting every
    memory token into keys and values (``M * D^2`` work, 94 % of the IQM), the queries are
    projected into the memory's space and the attention-weighted memory is projected once:

        q_h . (W_k,h m + b_k,h) = (q_h W_k,h) . m + q_h . b_k,h   (the last term is per query)
        sum_m a_m (W_v,h m + b_v,h) = W_v,h (sum_m a_m m) + (sum_m a_m) b_v,h

    which is the same function at ``Q * M * D * heads`` cost (tested against the direct form).

    Args:
        dim: query width and memory width.
        heads: number of heads (``dim`` must be divisible by it).
        dropout: attention-probability and output dropout (training only).
    """

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"IQM width {dim} is not divisible by {heads} heads")
        self.heads = heads
        self.dropout = dropout
        self.query = nn.Linear(dim, dim)
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.out = nn.Linear(dim, dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)

    def forward(self, x: torch.Tensor, memory: torch.Tensor) -> torch.Tensor:
        """Args: x ``(N, Q, D)``, memory ``(N, M, D)``. Returns ``(N, Q, D)``."""
        n, q, d = x.shape
        h, dh = self.heads, d // self.heads
        p = self.dropout if self.training else 0.0
        query = self.query(x).view(n, q, h, dh)
        # queries in the memory's space: (N, Q, h, D)
        q_mem = torch.einsum("nqhe,hec->nqhc", query, self.key.weight.view(h, dh, d))
        # q . b_k is the same for every memory token, so it cannot change the softmax; it is kept
        # so that the key bias stays in the graph as in the direct form (DDP needs every grad).
        key_bias = torch.einsum("nqhe,he->nhq", query, self.key.bias.view(h, dh)).unsqueeze(-1)
        if torch.is_grad_enabled() and any(t.requires_grad for t in (q_mem, key_bias, memory)):
            att, pooled = MemoryAttention.apply(q_mem, key_bias, memory, dh, p)
        else:  # no backward to run (inference, export): the same forward
            _, _, att, pooled = attend(q_mem, key_bias, memory, dh, p)
        ctx = torch.einsum("nqhc,hec->nqhe", pooled, self.value.weight.view(h, dh, d))
        ctx = ctx + att.sum(dim=-1).transpose(1, 2).unsqueeze(-1) * self.value.bias.view(h, dh)
        out = self.out(ctx.reshape(n, q, d))
        return self.norm(x + F.dropout(out, p, self.training))


class FeedForward(nn.Module):
    """Post-LN feed-forward ``LN(x + Dropout(W2 GELU(W1 x)))`` with hidden width ``4 D``."""

    def __init__(self, dim: int, dropout: float, ratio: int = 4) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, ratio * dim)
        self.fc2 = nn.Linear(ratio * dim, dim)
        self.norm = nn.LayerNorm(dim, eps=LN_EPS)
        self.dropout = dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.fc2(F.gelu(self.fc1(x)))
        return self.norm(x + F.dropout(y, self.dropout, self.training))


class IQMLayer(nn.Module):
    """Self-attention, image cross-attention, text cross-attention, feed-forward."""

    def __init__(self, dim: int, heads: int, dropout: float) -> None:
        super().__init__()
        self.self_attn = AttentionBlock(dim, heads, dropout)
        self.image_attn = AttentionBlock(dim, heads, dropout)
        self.text_attn = AttentionBlock(dim, heads, dropout)
        self.ffn = FeedForward(dim, dropout)

    def forward(self, h: torch.Tensor, image: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        h = self.self_attn(h, h)
        h = self.image_attn(h, image)
        h = self.text_attn(h, text)
        return self.ffn(h)


class IQM(nn.Module):
    """Instance-aware query module.

    Args:
        dim: hidden width ``D`` (the backbone's embed_dim).
        layers: depth (paper: 4).
        heads: attention heads (paper: 8).
        dropout: dropout probability during training (paper computation: 0.0).
    """

    def __init__(self, dim: int, layers: int = 4, heads: int = 8, dropout: float = 0.0) -> None:
        super().__init__()
        self.norm_in = nn.LayerNorm(dim, eps=LN_EPS)
        self.dropout = dropout
        self.layers = nn.ModuleList(IQMLayer(dim, heads, dropout) for _ in range(layers))

    def forward(
        self, queries: torch.Tensor, image: torch.Tensor, text: torch.Tensor
    ) -> torch.Tensor:
        """Refine the queries against one level's patch tokens and the text embeddings.

        Args:
            queries: ``(N, Q, D)`` (``N`` = levels x batch when levels are stacked).
            image: ``(N, L, D)`` projected patch tokens (not normalised).
            text: ``(N, 2, D)`` text embeddings.

        Returns:
            ``(N, Q, D)`` query features.
        """
        h = F.dropout(self.norm_in(queries), self.dropout, self.training)
        for layer in self.layers:
            h = layer(h, image, text)
        return h
