"""Text side of IQE-CLIP: class-based prompting tokens, deep text prompts, prompted text encoder.

The two prompts are tokenised literally (``<|class|>`` is *not* a special token: it stays as five
BPE pieces). Their EOT token is replaced by the ``r`` class tokens, a learnable prompt slot is
inserted after SOT and replaced before every later block (VPT-deep, one shared projection), and
the text is pooled at the last class token, which sees the whole prompt under the causal mask.

Because of that causal mask nothing after the last class token can change the pooled output, so
the sequence is cut right after it (15 tokens instead of 77 for the paper configuration); the
position embeddings are those of the full-length layout, so the result is the same.
"""

from __future__ import annotations

import math

import open_clip
import torch
import torch.nn.functional as F
from torch import nn

from iqeclip.model.backbone import TextTower

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
        return self.tokens + self.conv(global_emb.unsqueeze(1).to(self.tokens.dtype))


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
    length: int | None = None,
) -> torch.Tensor:
    """Run both prompts for every image through the frozen text transformer in one batched pass.

    Args:
        tower: frozen CLIP text pieces.
        token_ids: ``(2, E + 1)`` from :func:`prompt_token_ids` (EOT last).
        class_tokens: ``(Bc, r, D)`` class-based prompting tokens (``Bc`` = batch or 1).
        prompts: learnable deep prompts, or ``None`` for ``total_d_layer_len = 0``.
        length: pad the sequence with the tokenizer's padding to this length (77 reproduces the
            untruncated computation; ``None`` = cut after the last class token).

    Returns:
        ``(Bc, 2, D)`` L2-normalised text embeddings, channel 0 normal, 1 abnormal.
    """
    eot = token_ids.shape[1] - 1
    n_cls = class_tokens.shape[1]
    bc = class_tokens.shape[0]
    pos = tower.positional_embedding
    words = tower.token_embedding(token_ids[:, :eot]) + pos[:eot]  # (2, E, D)
    cls = class_tokens + pos[eot : eot + n_cls]  # (Bc, r, D)
    parts = [words.unsqueeze(1).expand(-1, bc, -1, -1), cls.unsqueeze(0).expand(2, -1, -1, -1)]
    n_prompt = prompts.prompt_len if prompts is not None else 0
    if length is not None:
        n_pad = length - n_prompt - eot - n_cls
        pad_ids = torch.zeros(n_pad, dtype=torch.long, device=token_ids.device)
        pad = tower.token_embedding(pad_ids) + pos[eot + n_cls : eot + n_cls + n_pad]
        parts.append(pad.expand(2, bc, -1, -1))
    x = torch.cat(parts, dim=2).flatten(0, 1)  # (2 Bc, T, D)

    def with_prompt(x: torch.Tensor, prompt: torch.Tensor, replace: bool) -> torch.Tensor:
        rest = x[:, 1 + n_prompt :] if replace else x[:, 1:]
        return torch.cat([x[:, :1], prompt.expand(x.shape[0], -1, -1).to(x.dtype), rest], dim=1)

    if prompts is not None:
        x = with_prompt(x, prompts.shallow(), replace=False)
    seq = x.shape[1]
    mask = tower.attn_mask[:seq, :seq].to(x.dtype)
    batch_first = getattr(tower.transformer, "batch_first", True)
    for i, block in enumerate(tower.transformer.resblocks):
        if prompts is not None and i > 0:
            x = with_prompt(x, prompts.deep(i), replace=True)
        if batch_first:
            x = block(x, attn_mask=mask)
        else:
            x = block(x.transpose(0, 1), attn_mask=mask).transpose(0, 1)
    # LayerNorms and the projection act per token: only the pooled one (last class token) is needed.
    pooled = x[:, n_prompt + eot + n_cls - 1]
    if prompts is not None:
        pooled = prompts.prompt_norm(pooled)
    pooled = tower.project(tower.ln_final(pooled))
    return F.normalize(pooled, dim=-1).view(2, bc, -1).transpose(0, 1)
