"""Text side of IQE-CLIP: class-based prompting tokens, deep text prompts, prompted text encoder.

The two prompts are tokenised literally (``<|class|>`` is *not* a special token: it stays as five
BPE pieces). Their EOT token is replaced by the ``r`` class tokens, a learnable prompt slot is
inserted after SOT and replaced before every later block (VPT-deep, one shared projection), and
the text is pooled at the last class token, which sees the whole prompt under the causal mask.

Because of that causal mask nothing after the last class token can change the pooled output, so
the sequence ends there (15 tokens instead of 77 for the paper configuration; the position
embeddings are those of the full-length layout), and nothing before the class tokens depends on
the image, so that prefix is computed once per batch (:func:`encode_prompts`).
"""

from __future__ import annotations

import math

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from iqeclip.model.backbone import TextTower
from iqeclip.model.invariance import per_image

NORMAL_PROMPT = "a photo of a normal <|class|>."
ABNORMAL_PROMPT = "a photo of a abnormal <|class|>."


def prompt_token_ids(model_name: str) -> torch.Tensor:
    """Token ids of the normal and abnormal prompt up to and including EOT.

    Returns:
        ``(2, E + 1)`` int64, row 0 normal, row 1 abnormal, EOT at index ``E``.
    """
    ids = open_clip.get_tokenizer(model_name)([NORMAL_PROMPT, ABNORMAL_PROMPT])
    eot = int(ids[0].argmax())
    if int(ids[1].argmax()) != eot:
        raise ValueError("the two prompts must tokenise to the same length")
    return ids[:, : eot + 1].long()


class InstanceTokens(nn.Module):
    """Learnable tokens, optionally shifted by a Conv1d of the global image embedding.

    ``tokens + Conv1d(1 -> n, k=3, same)(g)``: the ``D``-dim global embedding is read as a
    one-channel 1-D signal and the convolution gives ``n`` channels, one per token. Used twice: as
    the class-based prompting tokens of the text side and as the IQM queries.

    Args:
        num_tokens: ``n``.
        dim: ``D``.
        use_global: add the image-conditioned term (else the tokens are image-independent).
    """

    def __init__(self, num_tokens: int, dim: int, use_global: bool) -> None:
        super().__init__()
        self.tokens = nn.Parameter(torch.empty(1, num_tokens, dim))
        nn.init.trunc_normal_(self.tokens, std=1.0, a=-2.0, b=2.0)
        self.conv = nn.Conv1d(1, num_tokens, kernel_size=3, padding="same") if use_global else None

    def forward(self, global_emb: torch.Tensor) -> torch.Tensor:
        """Args: global_emb ``(B, D)``. Returns ``(B, n, D)``, or ``(1, n, D)`` without use_global."""
        if self.conv is None:
            return self.tokens
        return self.tokens + per_image(self.conv, global_emb.unsqueeze(1).to(self.tokens.dtype))


class ClassTokens(InstanceTokens):
    """Class-based prompting tokens plus the learnable temperature of the text branch.

    The temperature ``prompt_temp`` starts at ln(1/0.07) and scales the patch-text cosine
    similarities by ``exp(prompt_temp)``; it is trained with its own learning rate.
    """

    def __init__(self, num_tokens: int, dim: int, use_global: bool) -> None:
        super().__init__(num_tokens, dim, use_global)
        self.prompt_temp = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


class TextPrompts(nn.Module):
    """Learnable deep text prompts (VPT-deep): one shallow and ``depth`` deep prompt sets.

    Args:
        dim: text width ``D``.
        prompt_len: slots per layer ``n``.
        depth: number of deep prompt sets (text layers - 1).
    """

    def __init__(self, dim: int, prompt_len: int, depth: int) -> None:
        super().__init__()
        self.prompt_embeddings = nn.Parameter(torch.empty(1, prompt_len, dim).uniform_(-1, 1))
        self.deep_prompt_embeddings = nn.Parameter(
            torch.empty(depth, prompt_len, dim).uniform_(-1, 1)
        )
        self.prompt_proj = nn.Linear(dim, dim)
        nn.init.kaiming_normal_(self.prompt_proj.weight, a=0, mode="fan_out")
        self.prompt_norm = nn.LayerNorm(dim, eps=1e-6)

    @property
    def prompt_len(self) -> int:
        return self.prompt_embeddings.shape[1]

    def shallow(self) -> torch.Tensor:
        """``(1, n, D)`` prompt inserted after SOT before the first block."""
        return self.prompt_proj(self.prompt_embeddings)

    def deep(self, layer: int) -> torch.Tensor:
        """``(1, n, D)`` prompt that replaces the slot before block ``layer + 1`` (0-based)."""
        return self.prompt_proj(self.deep_prompt_embeddings[layer - 1 : layer])


def encode_prompts(
    tower: TextTower,
    token_ids: torch.Tensor,
    class_tokens: torch.Tensor,
    prompts: TextPrompts | None,
) -> torch.Tensor:
    """Run both prompts for every image through the frozen text transformer, the shared prefix once.

    The sequence of prompt ``s`` for image ``b`` is ``[SOT, prompt slot, words, class tokens of
    b]``. Under the causal mask the positions before the class tokens (the *prefix*) never see
    them, and the slot is replaced before every block by an image-independent projection, so the
    prefix's hidden states are the same for every image in every layer (docs/model.md, "The
    shared prefix of the text"). It is computed once per prompt, with its keys and values kept per
    layer; only the ``r`` class-token positions run per image, attending to the prefix and to
    themselves, as a decoder does with a key-value cache. The function is that of the full
    per-image pass (tested against it); autograd sums the prefix's gradients over the batch.

    Args:
        tower: frozen CLIP text pieces.
        token_ids: ``(2, E + 1)`` from :func:`prompt_token_ids` (EOT last).
        class_tokens: ``(Bc, r, D)`` class-based prompting tokens (``Bc`` = batch or 1).
        prompts: learnable deep prompts, or ``None`` for ``total_d_layer_len = 0``.

    Returns:
        ``(Bc, 2, D)`` L2-normalised text embeddings, channel 0 normal, 1 abnormal.
    """
    eot = token_ids.shape[1] - 1
    n_cls = class_tokens.shape[1]
    pos = tower.positional_embedding
    prefix = tower.token_embedding(token_ids[:, :eot]) + pos[:eot]  # (2, E, D)
    cls = (
        (class_tokens + pos[eot : eot + n_cls]).unsqueeze(0).expand(2, -1, -1, -1)
    )  # (2, Bc, r, D)
    if prompts is not None:
        prefix = _with_prompt(prefix, prompts.shallow(), replace=False)
    length = prefix.shape[1]  # P: SOT, the prompt slot, the E - 1 words
    mask = tower.attn_mask[: length + n_cls, : length + n_cls]
    for i, block in enumerate(tower.transformer.resblocks):
        if prompts is not None and i > 0:
            prefix = _with_prompt(prefix, prompts.deep(i), replace=True)
        prefix, cls = _cached_block(block, prefix, cls, mask)
    # LayerNorms and the projection act per token: only the pooled one (last class token) is needed.
    pooled = cls[:, :, -1]  # (2, Bc, D)
    if prompts is not None:
        pooled = prompts.prompt_norm(pooled)
    pooled = per_image(tower.project, tower.ln_final(pooled), dim=1)  # 2 rows per image
    return F.normalize(pooled, dim=-1).transpose(0, 1)


def _with_prompt(prefix: torch.Tensor, prompt: torch.Tensor, replace: bool) -> torch.Tensor:
    """``prefix`` ``(2, P, D)`` with ``prompt`` ``(1, n, D)`` right after SOT, inserted or
    replacing the slot."""
    rest = prefix[:, 1 + prompt.shape[1] :] if replace else prefix[:, 1:]
    slot = prompt.expand(prefix.shape[0], -1, -1).to(prefix.dtype)
    return torch.cat([prefix[:, :1], slot, rest], dim=1)


def _cached_block(
    block: nn.Module, prefix: torch.Tensor, cls: torch.Tensor, mask: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One pre-LN residual attention block of open_clip's text transformer, run on the prefix
    ``(2, P, D)`` (causal self-attention) and on the class tokens ``(2, Bc, r, D)``, whose queries
    attend to the prefix's keys and values and to their own (the rows ``P..P+r`` of the causal
    ``mask``). The block's own weights, in the order of its ``forward``: ``x + ls_1(attn(ln_1(x)))``,
    then ``x + ls_2(mlp(ln_2(x)))``; every per-token step runs on the prefix's and the class
    tokens' rows stacked, one matrix product each, and only the attention is computed apart.
    """
    attn = block.attn
    heads = attn.num_heads
    length, batch = prefix.shape[1], cls.shape[1]
    n_prefix = prefix.shape[0] * length
    rows = torch.cat([prefix.flatten(0, 1), cls.flatten(0, 2)])  # (2 P + 2 Bc r, D)
    qkv = F.linear(block.ln_1(rows), attn.in_proj_weight, attn.in_proj_bias)

    def split(t: torch.Tensor) -> list[torch.Tensor]:  # (..., T, 3D) -> 3 x (..., H, T, D/H)
        return [p.unflatten(-1, (heads, -1)).transpose(-3, -2) for p in t.chunk(3, dim=-1)]

    def merge(t: torch.Tensor) -> torch.Tensor:  # (..., H, T, D/H) -> (... T, D)
        return t.transpose(-3, -2).flatten(-2).flatten(0, -2)

    q_p, k_p, v_p = split(qkv[:n_prefix].view(*prefix.shape[:2], -1))
    q_c, k_c, v_c = split(qkv[n_prefix:].view(*cls.shape[:3], -1))
    mask = mask.to(q_p.dtype)
    out_p = F.scaled_dot_product_attention(q_p, k_p, v_p, attn_mask=mask[:length, :length])
    keys = torch.cat([k_p.unsqueeze(1).expand(-1, batch, -1, -1, -1), k_c], dim=-2)
    values = torch.cat([v_p.unsqueeze(1).expand(-1, batch, -1, -1, -1), v_c], dim=-2)
    out_c = F.scaled_dot_product_attention(q_c, keys, values, attn_mask=mask[length:])
    rows = rows + block.ls_1(attn.out_proj(torch.cat([merge(out_p), merge(out_c)])))
    rows = rows + block.ls_2(block.mlp(block.ln_2(rows)))
    return rows[:n_prefix].view(prefix.shape), rows[n_prefix:].view(cls.shape)
