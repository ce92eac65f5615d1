"""The IQE-CLIP detector: frozen backbone + trainable head.

:class:`IQEHead` holds every trainable piece (per-level projections, class tokens and text
prompts, IQM queries, IQM) and turns frozen features into per-level logits of the two branches.
:class:`IQEClip` puts it together with the :class:`~iqeclip.model.backbone.Backbone`.
"""

from __future__ import annotations

import contextlib
import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from iqeclip.config import ModelConfig
from iqeclip.errors import UserError, param
from iqeclip.model.architecture import NUM_QUERIES, Architecture
from iqeclip.model.backbone import Backbone, TextTower, activation_name, create_clip
from iqeclip.model.bank import MemoryBank, fuse
from iqeclip.model.iqm import IQM
from iqeclip.model.prompts import (
    ClassTokens,
    InstanceTokens,
    TextPrompts,
    encode_prompts,
    prompt_token_ids,
)
from iqeclip.model.scoring import Setting, score


@dataclass
class LevelLogits:
    """Patch logits (normal, abnormal) per tapped level.

    Attributes:
        query: ``(T, B, L, 2)`` cosine of patches with the IQM query features.
        text: ``(T, B, L, 2)`` ``exp(prompt_temp)`` x cosine of patches with the text embeddings.
    """

    query: torch.Tensor
    text: torch.Tensor

    def float(self) -> LevelLogits:
        """Both in fp32 (from an autocast region: losses and maps are computed in fp32)."""
        return LevelLogits(self.query.float(), self.text.float())


class IQEHead(nn.Module):
    """Everything trainable in IQE-CLIP.

    Args:
        arch: backbone dimensions.
        cfg: resolved model configuration.
        token_ids: ``(2, E + 1)`` prompt token ids (see :func:`~iqeclip.model.prompts.prompt_token_ids`).
    """

    def __init__(self, arch: Architecture, cfg: ModelConfig, token_ids: torch.Tensor) -> None:
        super().__init__()
        dim = arch.embed_dim
        self.projections = nn.ModuleList(
            nn.Linear(arch.vision_width, dim) for _ in cfg.features_list
        )
        self.class_tokens = ClassTokens(cfg.prompt_len, dim, cfg.use_global)
        self.text_prompts = (
            TextPrompts(dim, cfg.deep_prompt_len, cfg.total_d_layer_len)
            if cfg.total_d_layer_len
            else None
        )
        self.queries = InstanceTokens(NUM_QUERIES, dim, cfg.use_global)
        self.iqm = IQM(dim, cfg.iqm_layers, cfg.iqm_heads, cfg.dropout)
        self.register_buffer("token_ids", token_ids, persistent=False)

    def dense(self, patch_tokens: torch.Tensor) -> torch.Tensor:
        """The projected patch features ``(T, B, L, D)`` of the frozen taps ``(T, B, L, Dv)``:
        what both branches compare, and what a memory bank stores (unit length)."""
        return torch.stack(
            [proj(p) for proj, p in zip(self.projections, patch_tokens, strict=True)]
        )

    def text_embeddings(self, global_emb: torch.Tensor, tower: TextTower) -> torch.Tensor:
        """Prompted text embeddings ``(B, 2, D)`` (computed once and broadcast without use_global)."""
        text = encode_prompts(
            tower, self.token_ids, self.class_tokens(global_emb), self.text_prompts
        )
        return text.expand(global_emb.shape[0], -1, -1)

    def forward(
        self, patch_tokens: torch.Tensor, global_emb: torch.Tensor, tower: TextTower
    ) -> LevelLogits:
        """Logits of both branches at every level.

        Args:
            patch_tokens: ``(T, B, L, Dv)`` frozen taps.
            global_emb: ``(B, D)`` global image embedding.
            tower: frozen text tower.

        Returns:
            :class:`LevelLogits` with two ``(T, B, L, 2)`` tensors.
        """
        dtype = self.class_tokens.tokens.dtype
        patch_tokens, global_emb = patch_tokens.to(dtype), global_emb.to(dtype)
        levels, batch = patch_tokens.shape[:2]
        dense = self.dense(patch_tokens)
        text = self.text_embeddings(global_emb, tower)  # (B, 2, D)
        queries = self.queries(global_emb).expand(batch, -1, -1)

        def per_level(t: torch.Tensor) -> torch.Tensor:
            return t.unsqueeze(0).expand(levels, -1, -1, -1).flatten(0, 1)

        refined = self.iqm(per_level(queries), dense.flatten(0, 1), per_level(text))
        refined = refined.view(levels, batch, NUM_QUERIES, -1)
        unit = F.normalize(dense, dim=-1)
        query_logits = unit @ F.normalize(refined, dim=-1).transpose(-1, -2)
        # one (levels x patches, D) @ (D, 2) product per image: a batch of one is not folded
        # into another kernel than a larger batch takes (docs/model.md, one image, one answer)
        text_cos = torch.einsum("tbld,bcd->tblc", unit, text)
        text_logits = self.class_tokens.prompt_temp.exp() * text_cos
        return LevelLogits(query=query_logits, text=text_logits)


class IQEClip(nn.Module):
    """IQE-CLIP: frozen CLIP backbone and trainable head.

    Build with :meth:`build`; use :meth:`features` + :meth:`logits` to separate the frozen and
    the trainable halves (the feature cache and training do), or :meth:`predict` for maps.
    """

    def __init__(
        self, backbone: Backbone, head: IQEHead, config: ModelConfig, arch: Architecture
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head
        self.config = config
        self.arch = arch
        self.activation = activation_name(backbone)  # what open_clip actually built
        self.meta: dict[str, Any] = {}  # a loaded checkpoint's metadata (run, thresholds)
        self.bank: MemoryBank | None = None  # normal patches of the site (iqeclip bank)

    @classmethod
    def build(cls, config: ModelConfig, device: torch.device | str = "cpu") -> IQEClip:
        """Resolve ``config`` against its architecture and build the detector on ``device``."""
        arch = Architecture.from_name(config.model_name)
        cfg = config.resolved(arch.vision_layers, arch.text_layers)
        clip = create_clip(cfg.model_name, cfg.pretrain, cfg.img_size, cfg.quick_gelu, device)
        if cfg.precision == "fp16" and torch.device(device).type == "cpu":
            raise UserError(
                f"{param('precision')} fp16 needs a CUDA device; use bf16 or fp32 on the CPU"
            )
        backbone = Backbone(clip, cfg.features_list, cfg.normalize, cfg.precision)
        token_ids = prompt_token_ids(cfg.model_name)
        with torch.device(device):
            head = IQEHead(arch, cfg, token_ids.to(device))
        return cls(backbone, head, cfg, arch)

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        device: torch.device | str = "cpu",
        stored: tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]] | None = None,
        **overrides: Any,
    ) -> IQEClip:
        """The one way to get a trained detector: build the checkpoint's model and load it.

        Args:
            path: an iqeclip checkpoint (``save_checkpoint``).
            device: where to build it.
            stored: what :func:`~iqeclip.model.checkpoint.read_checkpoint` returned for
                ``path``, when the caller already read (and checked) it.
            **overrides: model fields that differ from the stored configuration, e.g. a moved
                ``pretrain`` file or another ``precision``; architecture fields that do not fit
                the stored weights are refused.

        Returns:
            The detector, its head loaded; the checkpoint's metadata is ``model.meta``.

        Raises:
            UserError: one line naming the file, before the model is built, if it cannot be
                read, its metadata or configuration is not what iqeclip writes or its weights
                are not finite; after, if it was built for another model.
        """
        from iqeclip.model.checkpoint import load_checkpoint, read_checkpoint

        stored = stored or read_checkpoint(path)
        model = cls.build(dataclasses.replace(stored[0], **overrides), device)
        model.meta = load_checkpoint(model, path, stored)
        return model

    @classmethod
    def from_published(
        cls, path: str | Path, device: torch.device | str = "cpu", **config: Any
    ) -> IQEClip:
        """A detector holding a checkpoint of the published IQE-CLIP code
        (:mod:`~iqeclip.model.published`).

        Args:
            path: the published ``.pth`` file (read without unpickling code).
            device: where to build it (``meta``: the head holds the file's tensors, the
                backbone nothing; enough to write an iqeclip checkpoint).
            **config: model fields the tensors cannot tell (``model_name``, ``img_size``,
                ``features_list``, ``use_global``...; defaults:
                :data:`~iqeclip.model.published.ASSUMED`); the prompt lengths, the text-prompt
                depth and the IQM depth are read off the tensors.

        Returns:
            The detector; ``model.meta["imported"]`` says what was read, assumed and dropped.

        Raises:
            UserError: one line naming the file or the flag at fault: a file that is not plain
                tensors, a tensor missing, left over or of another shape, a contradicting flag.
        """
        from iqeclip.model import published

        path = Path(path)
        flat = published.read_published(path)
        inferred = published.infer(flat, path)
        cfg, read, assumed = published.published_config(inferred, config, path)
        model = cls.build(cfg, device)
        expected = {k: v.shape for k, v in model.head.state_dict().items()}
        block = published.text_block_of(flat, path)
        state, dropped = published.to_head_state(flat, expected, block, path)
        model.head.load_state_dict(state, assign=torch.device(device).type == "meta")
        model.meta = {
            "imported": {"file": path.name, "text_block": block, "read": read}
            | {"assumed": assumed, "dropped": dropped}
        }
        return model

    @property
    def device(self) -> torch.device:
        """Where the model runs."""
        return self.head.token_ids.device

    def features(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Frozen taps ``(T, B, L, Dv)`` and global embedding ``(B, D)`` of ``(B, 3, H, W)`` images."""
        return self.backbone(images)

    def autocast(self) -> contextlib.AbstractContextManager:
        """Mixed precision for the trainable half: ``torch.autocast`` in the backbone's dtype
        with ``--precision bf16`` or ``fp16`` (docs/model.md), nothing in fp32."""
        if self.config.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.backbone.dtype)

    def logits(self, patch_tokens: torch.Tensor, global_emb: torch.Tensor) -> LevelLogits:
        """Trainable half: frozen features to per-level logits (fp32, see :meth:`autocast`)."""
        with self.autocast():
            logits = self.head(patch_tokens, global_emb, self.backbone.text)
        return logits.float()

    def forward(self, images: torch.Tensor) -> LevelLogits:
        return self.logits(*self.features(images))

    @torch.no_grad()
    def predict(self, images: torch.Tensor, setting: Setting) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps ``(B, H, W)`` (blurred, not min-max normalised) and image scores ``(B,)``."""
        return self.predict_features(*self.features(images), setting)

    @torch.no_grad()
    def predict_features(
        self, patch_tokens: torch.Tensor, global_emb: torch.Tensor, setting: Setting
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """:meth:`predict` from frozen features (e.g. read from the feature cache); with a
        :attr:`bank`, fused with the distance of the patches to it (:mod:`~iqeclip.model.bank`)."""
        logits = self.logits(patch_tokens, global_emb)
        maps, scores = score(logits.query, logits.text, self.config.img_size, setting)
        if self.bank is None:
            return maps, scores
        return self.with_bank(patch_tokens, maps, scores)

    def with_bank(
        self, patch_tokens: torch.Tensor, maps: torch.Tensor, scores: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps and scores fused with the bank's (:func:`~iqeclip.model.bank.fuse`)."""
        assert self.bank is not None
        dtype = self.head.class_tokens.tokens.dtype
        units = F.normalize(self.head.dense(patch_tokens.to(dtype)).float(), dim=-1)
        bank_maps, bank_scores = self.bank.score(units, self.config.img_size)
        return fuse(maps, scores, bank_maps, bank_scores, self.bank.weight)

    def trainable_parameters(self) -> dict[str, int]:
        """Trainable parameter count of each head module, in construction order."""
        return {
            name: sum(p.numel() for p in module.parameters() if p.requires_grad)
            for name, module in self.head.named_children()
            if module is not None
        }
