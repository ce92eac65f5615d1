"""CLIP architectures, read from open_clip's own config files without importing open_clip or torch.

What ``iqeclip info`` prints comes from here alone, so it answers in a fraction of a second: the
dimensions the trainable head depends on, the activation open_clip will build, what ``--pretrain``
names, and parameter counts derived from the configs (a test checks them against built models).
Only a weights file needs torch, to compare its shapes with the architecture.
"""

from __future__ import annotations

import functools
import importlib.metadata
import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from iqeclip.errors import UserError, param

if TYPE_CHECKING:
    from iqeclip.config import ModelConfig

CONFIG_DIR = Path(__file__).parent / "model_configs"
RANDOM_INIT_SEED = 0
NUM_QUERIES = 2  # IQM queries, one per state: normal, abnormal

# The config keys of a plain CLIP ViT with the CLIP tokenizer (those of 32 of open_clip's own
# configs); the parameter counts below know each of them. Any other key (a Hugging Face
# tokenizer, an attentional pooler, custom blocks, ...) is not a model IQE-CLIP can prompt or tap.
_TOP_KEYS = {"embed_dim", "vision_cfg", "text_cfg", "quick_gelu"}
_VISION_KEYS = {
    "image_size",
    "layers",
    "width",
    "head_width",
    "patch_size",
    "mlp_ratio",
    "ls_init_value",
}
_TEXT_KEYS = {"context_length", "vocab_size", "width", "heads", "layers"}


@functools.cache
def model_configs() -> dict[str, dict[str, Any]]:
    """Every open_clip architecture config by name: open_clip's files, then the package's own
    (``iqe-tiny``), read as open_clip reads them (a JSON file with embed_dim, vision_cfg, text_cfg)."""
    spec = importlib.util.find_spec("open_clip")  # locates the package without importing it
    folders = [Path(p) / "model_configs" for p in spec.submodule_search_locations] if spec else []
    configs = {}
    for folder in [*folders, CONFIG_DIR]:
        for path in sorted(folder.glob("*.json")):
            cfg = json.loads(path.read_text(encoding="utf-8"))
            if {"embed_dim", "vision_cfg", "text_cfg"} <= cfg.keys():
                configs[path.stem] = cfg
    return configs


@dataclass(frozen=True)
class Architecture:
    """The dimensions of an open_clip architecture that the trainable head depends on."""

    name: str
    embed_dim: int
    vision_width: int
    vision_layers: int
    patch_size: int
    text_width: int
    text_layers: int

    @classmethod
    def from_name(cls, name: str) -> Architecture:
        """Read the dimensions from open_clip's config files.

        Raises:
            UserError: if open_clip does not know ``name`` or its towers do not fit IQE-CLIP.
        """
        cfg = model_configs().get(name)
        if cfg is None:
            raise UserError(
                f"{param('model_name')} {name!r} is not an open_clip architecture (e.g. "
                "ViT-L-14-336, ViT-B-16, iqe-tiny; all: python -c 'import open_clip; "
                "print(open_clip.list_models())')"
            )
        vision, text = cfg["vision_cfg"], cfg["text_cfg"]
        if isinstance(vision.get("layers"), (list, tuple)):
            raise UserError(
                f"{param('model_name')} {name!r} is not a ViT (IQE-CLIP taps ViT blocks)"
            )
        unknown = (
            (vision.keys() - _VISION_KEYS) | (text.keys() - _TEXT_KEYS) | (cfg.keys() - _TOP_KEYS)
        )
        if unknown:
            raise UserError(
                f"{param('model_name')} {name!r}: IQE-CLIP needs a plain CLIP ViT with the CLIP "
                "text tower"
            )
        arch = cls(
            name=name,
            embed_dim=cfg["embed_dim"],
            vision_width=vision["width"],
            vision_layers=vision["layers"],
            patch_size=vision["patch_size"],
            text_width=text.get("width", 512),
            text_layers=text.get("layers", 12),
        )
        if arch.text_width != arch.embed_dim:
            raise UserError(
                f"{param('model_name')} {name!r}: text width {arch.text_width} differs from "
                f"embed_dim {arch.embed_dim}; IQE-CLIP feeds the image embedding back as text "
                "tokens"
            )
        return arch


def activation(model_name: str, quick_gelu: bool) -> str:
    """The activation open_clip builds: ``QuickGELU`` if asked for or if the config says so."""
    return "QuickGELU" if quick_gelu or model_configs()[model_name].get("quick_gelu") else "GELU"


def pretrained_tags(model_name: str) -> list[str]:
    """open_clip's pretrained tags of ``model_name``.

    Read from open_clip when it is already imported, else from a small cache of its tag list
    (``$XDG_CACHE_HOME/iqeclip``, one file per open_clip version, written the first time), so
    that checking ``--pretrain openai`` costs no torch import. An unwritable cache is skipped.
    """
    version = importlib.metadata.version("open_clip_torch")
    cache = Path(os.environ.get("XDG_CACHE_HOME", "~/.cache")).expanduser() / "iqeclip"
    path = cache / f"open_clip-{version}-pretrained-tags.json"
    if "open_clip" not in sys.modules and path.is_file():
        return json.loads(path.read_text(encoding="utf-8")).get(model_name, [])
    import open_clip

    from iqeclip.runtime.files import atomic_write_text

    tags = {name: open_clip.list_pretrained_tags_by_model(name) for name in model_configs()}
    try:
        cache.mkdir(parents=True, exist_ok=True)
        atomic_write_text(path, json.dumps(tags))
    except (OSError, UserError):  # mkdir's error, or atomic_write_text's one-line one
        pass  # a cache only: the next call reads open_clip again
    return tags.get(model_name, [])


def pretrain_source(model_name: str, pretrain: str) -> str:
    """What ``--pretrain`` names: ``none``, an existing ``file``, or an open_clip ``tag``.

    Raises:
        UserError: if it is none of these.
    """
    if pretrain.lower() == "none":
        return "none"
    if Path(pretrain).expanduser().exists():
        return "file"
    tags = pretrained_tags(model_name)
    if pretrain not in tags:
        raise UserError(
            f"{param('pretrain')} {pretrain!r} is neither 'none', an existing file, nor an "
            f"open_clip tag of {model_name} ({', '.join(tags) or 'none known'})"
        )
    return "tag"


def _block(width: int, mlp_ratio: float, layer_scale: bool) -> int:
    """One open_clip residual attention block: two LayerNorms, attention with a fused in-projection
    and biases, an MLP, and two LayerScale vectors if ``ls_init_value`` is set."""
    hidden = int(width * mlp_ratio)
    attention = 3 * width * width + 3 * width + width * width + width
    mlp = width * hidden + hidden + hidden * width + width
    return 4 * width + attention + mlp + (2 * width if layer_scale else 0)


def backbone_parameters(model_name: str, img_size: int) -> int:
    """Parameters of the frozen backbone: the vision tower at ``img_size`` and the text tower."""
    cfg = model_configs()[model_name]
    embed, vision, text = cfg["embed_dim"], cfg["vision_cfg"], cfg["text_cfg"]
    width, patch = vision["width"], vision["patch_size"]
    grid = img_size // patch
    visual = (
        3 * patch * patch * width  # patch embedding, no bias
        + width  # class embedding
        + (grid * grid + 1) * width  # position embedding, resized to img_size
        + 2 * width  # ln_pre
        + vision["layers"]
        * _block(width, vision.get("mlp_ratio", 4.0), vision.get("ls_init_value") is not None)
        + 2 * width  # ln_post
        + width * embed  # proj
    )
    text_width = text.get("width", 512)
    textual = (
        (text.get("vocab_size", 49408) + text.get("context_length", 77)) * text_width
        + text.get("layers", 12) * _block(text_width, 4.0, layer_scale=False)
        + 2 * text_width  # ln_final
        + text_width * embed  # text projection
    )
    return visual + textual


def head_parameters(arch: Architecture, cfg: ModelConfig) -> dict[str, int]:
    """Trainable parameters of each head module of :class:`iqeclip.model.detector.IQEHead`, in
    its construction order, for a resolved ``cfg``."""
    dim = arch.embed_dim

    def tokens(
        n: int,
    ) -> int:  # InstanceTokens: n tokens, plus a Conv1d(1 -> n, k=3) with use_global
        return n * dim + (4 * n if cfg.use_global else 0)

    linear = dim * dim + dim
    iqm_layer = 3 * (4 * linear + 2 * dim) + (2 * 4 * dim * dim + 5 * dim + 2 * dim)
    counts = {
        "projections": len(cfg.features_list) * (arch.vision_width * dim + dim),
        "class_tokens": tokens(cfg.prompt_len) + 1,  # + the text branch temperature
    }
    if cfg.total_d_layer_len:
        slots = (1 + cfg.total_d_layer_len) * cfg.deep_prompt_len * dim
        counts["text_prompts"] = slots + linear + 2 * dim
    counts["queries"] = tokens(NUM_QUERIES)
    counts["iqm"] = 2 * dim + cfg.iqm_layers * iqm_layer
    return counts
