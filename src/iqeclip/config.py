"""Configuration dataclasses.

:class:`ModelConfig` holds everything that decides the shape and computation of a detector. It is
*resolved* against the backbone architecture (defaults that depend on the depth are filled in),
saved inside every checkpoint and beside it as YAML, and compared on load so that a checkpoint is
never silently loaded into a different model.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from iqeclip.errors import UserError

# Fields that change the trainable state or the computation; a checkpoint must agree on all of
# them. ``pretrain`` is left out on purpose: the same weights can be named by a tag or a file.
ARCHITECTURE_FIELDS = (
    "model_name",
    "img_size",
    "features_list",
    "prompt_len",
    "deep_prompt_len",
    "total_d_layer_len",
    "use_global",
    "quick_gelu",
    "normalize",
    "iqm_layers",
    "iqm_heads",
)


@dataclass
class ModelConfig:
    """What a detector is made of.

    Attributes:
        model_name: open_clip architecture name (``ViT-L-14-336`` in the paper, ``iqe-tiny`` for tests).
        pretrain: ``none`` (random init), an open_clip tag (``openai``) or a weights file.
        img_size: square input side in pixels; position embeddings are resized to it.
        features_list: 1-based backbone blocks whose outputs are tapped; ``None`` = quartiles.
        prompt_len: number of class-based prompting tokens spliced in place of EOT (r).
        deep_prompt_len: number of learnable text prompt slots (n).
        total_d_layer_len: deep text prompts (0 = none, else text layers - 1); ``None`` = default.
        use_global: condition class tokens and IQM queries on the global image embedding.
        quick_gelu: build the backbone with QuickGELU (matches OpenAI weights; the paper used GELU).
        normalize: ``none`` (the paper: pixels in [0, 1]) or ``clip`` (CLIP mean/std).
        iqm_layers: IQM depth.
        iqm_heads: IQM attention heads.
        dropout: IQM dropout during training (the published runs effectively used 0.0).
        precision: dtype of the frozen vision tower: ``fp32``, ``bf16`` or ``fp16`` (CUDA only).
            Not an architecture field: a checkpoint trained in one precision tests in another.
    """

    model_name: str = "ViT-L-14-336"
    pretrain: str = "openai"
    img_size: int = 240
    features_list: list[int] | None = None
    prompt_len: int = 2
    deep_prompt_len: int = 1
    total_d_layer_len: int | None = None
    use_global: bool = True
    quick_gelu: bool = False
    normalize: str = "none"
    iqm_layers: int = 4
    iqm_heads: int = 8
    dropout: float = 0.0
    precision: str = "fp32"

    def resolved(self, vision_layers: int, text_layers: int) -> ModelConfig:
        """Fill the architecture-dependent defaults and validate every field.

        Args:
            vision_layers: depth of the backbone's vision transformer.
            text_layers: depth of its text transformer.

        Returns:
            A new, fully specified configuration.

        Raises:
            UserError: naming the flag whose value cannot work with this backbone.
        """
        cfg = dataclasses.replace(self)
        if cfg.features_list is None:
            cfg.features_list = [vision_layers * (i + 1) // 4 for i in range(4)]
            cfg.features_list = sorted(set(max(1, f) for f in cfg.features_list))
        cfg.features_list = sorted(int(f) for f in cfg.features_list)
        bad = [f for f in cfg.features_list if not 1 <= f <= vision_layers]
        if bad:
            raise UserError(
                f"--features_list {bad} is outside 1..{vision_layers}, the blocks of {cfg.model_name}"
            )
        if len(set(cfg.features_list)) != len(cfg.features_list):
            raise UserError(f"--features_list {cfg.features_list} names a block twice")
        if cfg.total_d_layer_len is None:
            cfg.total_d_layer_len = text_layers - 1
        if cfg.total_d_layer_len not in (0, text_layers - 1):
            raise UserError(
                f"--total_d_layer_len must be 0 or {text_layers - 1} (text layers - 1) for "
                f"{cfg.model_name}, got {cfg.total_d_layer_len}"
            )
        for name in ("prompt_len", "deep_prompt_len", "iqm_layers", "iqm_heads"):
            if getattr(cfg, name) < 1:
                raise UserError(f"--{name} must be at least 1, got {getattr(cfg, name)}")
        if cfg.img_size < 8:
            raise UserError(f"--img_size must be at least 8, got {cfg.img_size}")
        if cfg.normalize not in ("none", "clip"):
            raise UserError(f"--normalize must be 'none' or 'clip', got {cfg.normalize!r}")
        if cfg.precision not in ("fp32", "bf16", "fp16"):
            raise UserError(f"--precision must be fp32, bf16 or fp16, got {cfg.precision!r}")
        if not 0.0 <= cfg.dropout < 1.0:
            raise UserError(f"--dropout must be in [0, 1), got {cfg.dropout}")
        return cfg

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (JSON/YAML safe)."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`; unknown keys are an error naming them."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise UserError(f"unknown model configuration keys: {', '.join(unknown)}")
        return cls(**data)

    def mismatches(self, other: ModelConfig) -> list[str]:
        """Architecture fields on which ``self`` and ``other`` disagree, as ``name=a vs b``."""
        return [
            f"{name}={getattr(self, name)!r} vs {getattr(other, name)!r}"
            for name in ARCHITECTURE_FIELDS
            if getattr(self, name) != getattr(other, name)
        ]


def save_yaml(data: dict[str, Any], path: str | Path) -> None:
    """Write ``data`` as YAML atomically (temporary file, then rename)."""
    from iqeclip.runtime.files import atomic_write_text

    atomic_write_text(Path(path), yaml.safe_dump(data, sort_keys=False))


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; a missing or malformed file is a :class:`UserError` naming it."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UserError(f"cannot read {path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise UserError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise UserError(f"{path} does not hold a YAML mapping")
    return data
