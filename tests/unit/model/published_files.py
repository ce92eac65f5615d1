"""Checkpoints in the published IQE-CLIP layout, built from its description alone (REFERENCE's
checkpoint section, restated here): random tensors under the published names and shapes, as
``torch.save`` of the published training scripts writes them. Nothing here asks iqeclip's own
mapping which name goes where."""

from __future__ import annotations

from pathlib import Path

import torch

TEXT_BLOCK = "crossattention_text"  # the text cross-attention's name in the files built here
ATTENTION_BLOCKS = ("attention", "crossattention", TEXT_BLOCK)


def published_state(
    width: int = 128,
    vision_width: int = 64,
    levels: int = 4,
    prompt_len: int = 2,
    deep_prompt_len: int = 1,
    deep_layers: int = 11,
    iqm_layers: int = 4,
    text_block: str = TEXT_BLOCK,
    seed: int = 0,
) -> dict:
    """The dict the published scripts save (iqe-tiny widths by default; ViT-L-14-336: 768,
    1024)."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int) -> torch.Tensor:
        return torch.randn(*shape, generator=g)

    iqm = {"layernorm.weight": rand(width), "layernorm.bias": rand(width)}
    for i in range(iqm_layers):
        for block in ("attention", "crossattention", text_block):
            base = f"encoder.layer.{i}.{block}"
            for part in ("query", "key", "value"):
                iqm[f"{base}.attention.{part}.weight"] = rand(width, width)
                iqm[f"{base}.attention.{part}.bias"] = rand(width)
            iqm[f"{base}.output.dense.weight"] = rand(width, width)
            iqm[f"{base}.output.dense.bias"] = rand(width)
            iqm[f"{base}.output.LayerNorm.weight"] = rand(width)
            iqm[f"{base}.output.LayerNorm.bias"] = rand(width)
        iqm[f"encoder.layer.{i}.intermediate_query.dense.weight"] = rand(4 * width, width)
        iqm[f"encoder.layer.{i}.intermediate_query.dense.bias"] = rand(4 * width)
        iqm[f"encoder.layer.{i}.output_query.dense.weight"] = rand(width, 4 * width)
        iqm[f"encoder.layer.{i}.output_query.dense.bias"] = rand(width)
        iqm[f"encoder.layer.{i}.output_query.LayerNorm.weight"] = rand(width)
        iqm[f"encoder.layer.{i}.output_query.LayerNorm.bias"] = rand(width)
    state = {
        "trainable_linearlayer": {
            **{f"fc.{level}.weight": rand(width, vision_width) for level in range(levels)},
            **{f"fc.{level}.bias": rand(width) for level in range(levels)},
        },
        "New_Lan_Embed": {
            "prompt_query": rand(1, prompt_len, width),
            "prompt_temp": torch.tensor(2.6592600369),
            "prompt_linear1.fc.weight": rand(prompt_len, 1, 3),
            "prompt_linear1.fc.bias": rand(prompt_len),
        },
        "iqm": iqm,
        "query_tokens": torch.nn.Parameter(rand(1, 2, width)),
        "query_linear": {"fc.weight": rand(2, 1, 3), "fc.bias": rand(2)},
        "prompt_embeddings": rand(1, deep_prompt_len, width),
        "deep_prompt_embeddings": rand(deep_layers, deep_prompt_len, width),
        "prompt_proj.weight": rand(width, width),
        "prompt_proj.bias": rand(width),
        "prompt_norm.weight": rand(width),
        "prompt_norm.bias": rand(width),
        "prompt_text_projection": rand(width, width),
    }
    if not deep_layers:
        for name in ("prompt_embeddings", "deep_prompt_embeddings", "prompt_proj.weight"):
            del state[name]
        for name in ("prompt_proj.bias", "prompt_norm.weight", "prompt_norm.bias"):
            del state[name]
    return state


def write_published(path: Path, **sizes) -> Path:
    torch.save(published_state(**sizes), str(path))
    return path


def flat(state: dict, prefix: str = "") -> dict[str, torch.Tensor]:
    """``{'iqm': {'layernorm.weight': t}}`` -> ``{'iqm.layernorm.weight': t}``."""
    out: dict[str, torch.Tensor] = {}
    for key, value in state.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out
