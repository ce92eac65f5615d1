"""Checkpoints of the published IQE-CLIP code: read one into the head's state, write the head's
state back in its layout.

The published training scripts ``torch.save`` a dict of the trainable modules (no
configuration)::

    trainable_linearlayer   fc.{0..L-1}.{weight,bias}          per-level projections
    New_Lan_Embed           prompt_query, prompt_temp,
                            prompt_linear1.fc.{weight,bias}     class-based prompting tokens
    iqm                     layernorm.*, encoder.layer.{i}.*    the IQM (Hugging Face names)
    query_tokens            (1, 2, D)                           the IQM queries
    query_linear            fc.{weight,bias}                    their conditioning conv
    prompt_embeddings, deep_prompt_embeddings, prompt_proj.*, prompt_norm.*   text prompts
    prompt_text_projection  (D, D), never used by any forward pass

Every tensor the head holds has exactly one counterpart (:func:`published_name`); the IQM's
image cross-attention is Hugging Face's ``crossattention`` and its text cross-attention the one
other attention block of each layer, whose name is read from the file (:func:`text_block_of`)
and kept for the way back. What the tensors cannot tell (the backbone, the image size, the
tapped blocks, ``use_global``, the setting) the caller gives (:mod:`iqeclip.apps.published`).

A file is read with ``torch.load(weights_only=True)``: it cannot run code, and anything but
tensors and dicts in it is refused in one line.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from iqeclip.config import ModelConfig
from iqeclip.config.apps import IMPORT_MODEL, IMPORT_READ
from iqeclip.errors import UserError, first_line, param
from iqeclip.model.architecture import Architecture

__all__ = [
    "ASSUMED",
    "DEFAULT_TEXT_BLOCK",
    "UNUSED",
    "Inferred",
    "infer",
    "published_config",
    "published_name",
    "read_published",
    "text_block_of",
    "to_head_state",
    "to_published",
]

UNUSED = ("prompt_text_projection",)
"""Tensors of the published file that no forward pass uses: dropped on import (exported as
zeros, so the published scripts find them)."""
CONDITIONING = ("New_Lan_Embed.prompt_linear1.fc.", "query_linear.fc.")
"""The two conditioning convs: used only with ``use_global`` (without it, the published code
never reads them and iqeclip's head has none: they are dropped, and exported as zeros)."""
DEFAULT_TEXT_BLOCK = "crossattention_text"
"""The name written for the IQM's text cross-attention when no imported file told its name."""
_KNOWN_BLOCKS = {"attention", "crossattention", "intermediate_query", "output_query"}
_ATTENTION_PARTS = {
    "query": "attention.query",
    "key": "attention.key",
    "value": "attention.value",
    "out": "output.dense",
    "norm": "output.LayerNorm",
}
_FFN_PARTS = {"fc1": "intermediate_query.dense", "fc2": "output_query.dense"}
_FFN_PARTS["norm"] = "output_query.LayerNorm"
_LAYER = re.compile(r"^iqm\.encoder\.layer\.(\d+)\.([^.]+)\.")
ASSUMED: dict[str, Any] = IMPORT_MODEL
"""What a published file cannot tell (:data:`~iqeclip.config.apps.IMPORT_MODEL`); the rest of
the model flags keep iqeclip's defaults, which are the paper's (quartile blocks, exact GELU, no
normalisation, 8 IQM heads)."""


def read_published(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a published checkpoint, by their dotted names (``iqm.layernorm.weight``).

    Raises:
        UserError: One line naming the file: missing, not a torch file, holding anything but
            tensors and dicts (a class, a function: refused unrun), or no dict of tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{path}: no such file")
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # weights_only refuses what is not plain data, without running it
        raise UserError(
            f"{path}: not a published IQE-CLIP checkpoint: it cannot be read as tensors and "
            f"dicts alone, so it was not loaded ({first_line(exc)[:200]})"
        ) from None
    if not isinstance(data, Mapping):
        raise UserError(f"{path}: not a published IQE-CLIP checkpoint (a {type(data).__name__})")
    flat: dict[str, torch.Tensor] = {}
    _flatten(data, "", flat, path)
    return flat


def _flatten(data: Mapping, prefix: str, flat: dict[str, torch.Tensor], path: Path) -> None:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            _flatten(value, f"{name}.", flat, path)
        elif isinstance(value, torch.Tensor):
            flat[name] = value.detach()
        else:
            raise UserError(
                f"{path}: {name} is a {type(value).__name__}, not a tensor: not a published "
                "IQE-CLIP checkpoint"
            )


def text_block_of(flat: Mapping[str, torch.Tensor], path: Path) -> str:
    """The name of the IQM's text cross-attention in a published file: the one attention block
    of its layers besides ``attention`` and ``crossattention`` (one name in every layer)."""
    names = {m.group(2) for key in flat if (m := _LAYER.match(key))} - _KNOWN_BLOCKS
    if len(names) != 1:
        found = ", ".join(sorted(names)) or "none"
        raise UserError(
            f"{path}: the IQM's layers should hold one text cross-attention block besides "
            f"attention, crossattention, intermediate_query and output_query; found {found}"
        )
    return names.pop()


@dataclass(frozen=True)
class Inferred:
    """What a published file's shapes tell about the model that wrote it."""

    levels: int  # tapped levels (projections)
    prompt_len: int
    deep_prompt_len: int
    total_d_layer_len: int
    iqm_layers: int
    width: int  # the text / IQM width
    vision_width: int


def infer(flat: Mapping[str, torch.Tensor], path: Path) -> Inferred:
    """Read the architecture off the shapes (see :class:`Inferred`).

    Raises:
        UserError: A tensor the inference needs is missing or of the wrong rank, naming it.
    """

    def shape(name: str, rank: int) -> tuple[int, ...]:
        if name not in flat:
            raise UserError(f"{path}: holds no tensor {name}: not a published IQE-CLIP checkpoint")
        found = tuple(flat[name].shape)
        if len(found) != rank:
            raise UserError(f"{path}: {name} has shape {found}, expected {rank} dimensions")
        return found

    levels = sum(1 for k in flat if re.fullmatch(r"trainable_linearlayer\.fc\.\d+\.weight", k))
    width, vision_width = shape("trainable_linearlayer.fc.0.weight", 2)
    deep = flat.get("deep_prompt_embeddings")
    layers = {int(m.group(1)) for key in flat if (m := _LAYER.match(key))}
    return Inferred(
        levels=levels,
        prompt_len=shape("New_Lan_Embed.prompt_query", 3)[1],
        deep_prompt_len=shape("prompt_embeddings", 3)[1] if "prompt_embeddings" in flat else 1,
        total_d_layer_len=0 if deep is None else int(deep.shape[0]),
        iqm_layers=max(layers) + 1 if layers else 0,
        width=width,
        vision_width=vision_width,
    )


def published_config(
    inferred: Inferred, given: Mapping[str, Any], path: Path
) -> tuple[ModelConfig, dict[str, Any], dict[str, Any]]:
    """The model of a published file: what its shapes tell (:func:`infer`), the flags ``given``
    and :data:`ASSUMED` for the rest, checked against the backbone.

    Returns:
        The resolved configuration, what was read off the tensors and what was assumed.

    Raises:
        UserError: A flag that contradicts the tensors, or a backbone whose widths or tapped
            blocks do not fit them, naming the flag.
    """
    read = {name: getattr(inferred, name) for name in IMPORT_READ}
    for name, value in read.items():
        if given.get(name) is not None and given[name] != value:
            raise UserError(f"{param(name)} {given[name]}: the tensors of {path} say {value}")
    assumed = {k: v for k, v in ASSUMED.items() if k not in given}
    config = ModelConfig(**{**ASSUMED, **dict(given), **read})
    arch = Architecture.from_name(config.model_name)
    if (inferred.width, inferred.vision_width) != (arch.embed_dim, arch.vision_width):
        raise UserError(
            f"{param('model_name')} {config.model_name}: its tokens are {arch.vision_width} wide "
            f"and its text {arch.embed_dim}, the projections of {path} map "
            f"{inferred.vision_width} to {inferred.width}"
        )
    config = config.resolved(arch.vision_layers, arch.text_layers)
    if len(config.features_list or ()) != inferred.levels:
        raise UserError(
            f"{param('features_list')} {config.features_list}: {path} holds {inferred.levels} "
            f"tapped levels; pass {inferred.levels} blocks"
        )
    return config, read, assumed


def published_name(key: str, text_block: str) -> str:
    """The published name of one of the head's tensors (``iqm.layers.0.text_attn.out.weight``
    -> ``iqm.encoder.layer.0.<text_block>.output.dense.weight``)."""
    simple = {
        "class_tokens.tokens": "New_Lan_Embed.prompt_query",
        "class_tokens.prompt_temp": "New_Lan_Embed.prompt_temp",
        "queries.tokens": "query_tokens",
    }
    if key in simple:
        return simple[key]
    module, _, rest = key.partition(".")
    if module == "projections":
        return f"trainable_linearlayer.fc.{rest}"
    if module == "text_prompts":
        return rest
    if module in ("class_tokens", "queries"):  # the conditioning convs: conv.{weight,bias}
        owner = "New_Lan_Embed.prompt_linear1" if module == "class_tokens" else "query_linear"
        return f"{owner}.fc.{rest.removeprefix('conv.')}"
    if rest.startswith("norm_in."):
        return f"iqm.layernorm.{rest.removeprefix('norm_in.')}"
    _, layer, block, part, tensor = rest.split(".")  # layers.{i}.{block}.{part}.{weight,bias}
    if block == "ffn":
        where = _FFN_PARTS[part]
    else:
        owner = {"self_attn": "attention", "image_attn": "crossattention"}.get(block, text_block)
        where = f"{owner}.{_ATTENTION_PARTS[part]}"
    return f"iqm.encoder.layer.{layer}.{where}.{tensor}"


def to_head_state(
    flat: Mapping[str, torch.Tensor],
    expected: Mapping[str, torch.Size],
    text_block: str,
    path: Path,
) -> tuple[dict[str, torch.Tensor], list[str]]:
    """The head's state from a published file: every tensor of ``expected`` (the head's names
    and shapes) from its one counterpart, in fp32.

    Returns:
        The state, and the published tensors left out (the unused matrix; the conditioning convs
        when the head has none).

    Raises:
        UserError: One line naming the first tensor missing, left over or of another shape.
    """
    state: dict[str, torch.Tensor] = {}
    for key, size in expected.items():
        name = published_name(key, text_block)
        if name not in flat:
            raise UserError(f"{path}: holds no tensor {name} (this model's {key})")
        tensor = flat[name]
        if key == "class_tokens.prompt_temp" and tensor.numel() == 1:
            tensor = tensor.reshape(size)  # a scalar, saved as () or (1,)
        if tuple(tensor.shape) != tuple(size):
            raise UserError(
                f"{path}: {name} has shape {tuple(tensor.shape)}, this model needs "
                f"{tuple(size)} (check {param('model_name')} and the model flags)"
            )
        state[key] = tensor.to(torch.float32).contiguous()
    used = {published_name(key, text_block) for key in expected}
    dropped = sorted(set(flat) - used)
    extra = [n for n in dropped if not n.startswith((*UNUSED, *CONDITIONING))]
    if extra:
        raise UserError(
            f"{path}: holds {len(extra)} tensor(s) this model has no place for, e.g. {extra[0]} "
            "(check the model flags)"
        )
    return state, dropped


def to_published(
    state: Mapping[str, torch.Tensor], text_block: str, width: int, prompt_len: int
) -> dict[str, Any]:
    """The head's state in the published layout (nested as ``torch.save`` wrote it): every
    tensor under its published name, and zeros for the unused matrix and, for a head without
    ``use_global``, for the conditioning convs (Conv1d 1 -> ``prompt_len`` / 2, kernel 3)."""
    flat = {published_name(key, text_block): t.detach().clone() for key, t in state.items()}
    flat.setdefault("prompt_text_projection", torch.zeros(width, width))
    for owner, channels in (("New_Lan_Embed.prompt_linear1", prompt_len), ("query_linear", 2)):
        flat.setdefault(f"{owner}.fc.weight", torch.zeros(channels, 1, 3))
        flat.setdefault(f"{owner}.fc.bias", torch.zeros(channels))
    nested: dict[str, Any] = {}
    for name, tensor in flat.items():
        group = next((g for g in _GROUPS if name.startswith(f"{g}.")), None)
        if group is None:
            nested[name] = tensor
        else:
            nested.setdefault(group, {})[name.removeprefix(f"{group}.")] = tensor
    return nested


_GROUPS = ("trainable_linearlayer", "New_Lan_Embed", "iqm", "query_linear")
"""The entries of the published file that are state dicts (the rest are tensors by name)."""
