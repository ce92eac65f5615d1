"""CLIP weight files: read any supported format and dtype, check it against an architecture.

OpenAI publishes ``ViT-L-14-336px.pt`` as a TorchScript archive holding fp16 tensors; open_clip
users keep state dicts or safetensors in fp32, fp16 or bf16. Every file goes through here:

* :func:`read_state_dict` reads it (shapes and dtypes only, where the format allows);
* :func:`check_fits` compares its keys and shapes with the architecture asked for, before any
  backbone is built, and says what the file holds when they differ;
* :func:`as_fp32` converts its floating tensors to fp32 before the position embedding is resized:
  PyTorch has no fp16/bf16 kernel for bicubic-antialias interpolation on the CPU, and the
  published code converts the same way. fp16 and bf16 values are exact in fp32, so a low-precision
  file gives the features of the fp32 file holding the same values, bit for bit.
"""

from __future__ import annotations

import math
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import open_clip
import torch

from iqeclip.errors import UserError, first_line, param

DTYPE_NAMES = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.float64: "fp64",
}
# safetensors' dtype codes, for reading a header without reading the tensors.
_SAFETENSORS_DTYPES = {
    "F64": torch.float64,
    "F32": torch.float32,
    "F16": torch.float16,
    "BF16": torch.bfloat16,
    "I64": torch.int64,
    "I32": torch.int32,
    "I16": torch.int16,
    "I8": torch.int8,
    "U8": torch.uint8,
    "BOOL": torch.bool,
}
# Entries of OpenAI's archives that are hyper-parameters, not weights.
_OPENAI_EXTRA_KEYS = ("input_resolution", "context_length", "vocab_size")
# Model entries a CLIP file may lack: open_clip builds them only for SigLIP-style models.
_OPTIONAL_KEYS = ("logit_bias",)
_POS_EMBED = "visual.positional_embedding"

State = dict[str, torch.Tensor]


def is_torchscript_archive(path: Path) -> bool:
    """True for a TorchScript zip (OpenAI's format): it holds code, a ``torch.save`` zip does not."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(
            n.endswith("/constants.pkl") or n.startswith("code/") or "/code/" in n
            for n in zf.namelist()
        )


def read_state_dict(path: str | Path, shapes_only: bool = False) -> State:
    """Read CLIP weights from a local file, in whatever dtype the file holds.

    Accepts an OpenAI TorchScript archive (``ViT-L-14-336px.pt``), a safetensors file, or a
    ``torch.save``-d state dict (optionally under ``state_dict``, optionally with ``module.``
    prefixes). Plain state dicts are read with ``weights_only=True``; torch >= 2.6 refuses
    TorchScript archives there, so those are read with ``torch.jit.load``.

    Args:
        path: the weights file.
        shapes_only: return ``meta`` tensors (shape and dtype, no data) where the format allows
            it: safetensors and ``torch.save`` files. A TorchScript archive is always read whole.

    Raises:
        UserError: naming the file if it is missing or not a weights file.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"{param('pretrain')} {path}: no such file")
    try:
        if path.suffix == ".safetensors":
            state = _read_safetensors(path, shapes_only)
        elif is_torchscript_archive(path):
            with warnings.catch_warnings():
                # Reading OpenAI's published archive is deliberate; torch's deprecation note is not
                # for the user.
                warnings.filterwarnings("ignore", category=FutureWarning)
                state = torch.jit.load(str(path), map_location="cpu").state_dict()
        else:
            where = "meta" if shapes_only else "cpu"
            state = torch.load(str(path), map_location=where, weights_only=True)
    except Exception as exc:  # any reader failure is the file's fault, reported in one line
        raise UserError(
            f"{param('pretrain')} {path}: cannot read weights ({first_line(exc)})"
        ) from None
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    if not isinstance(state, dict) or not state:
        raise UserError(f"{param('pretrain')} {path}: the file holds no state dict")
    if not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise UserError(f"{param('pretrain')} {path}: the file holds entries that are not tensors")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    for key in _OPENAI_EXTRA_KEYS:
        state.pop(key, None)
    return state


def _read_safetensors(path: Path, shapes_only: bool) -> State:
    from safetensors import safe_open
    from safetensors.torch import load_file

    if not shapes_only:
        return load_file(str(path))
    with safe_open(str(path), framework="pt") as f:
        slices = {k: f.get_slice(k) for k in f.keys()}  # noqa: SIM118 (safe_open is no dict)
        return {
            k: torch.empty(s.get_shape(), dtype=_SAFETENSORS_DTYPES[s.get_dtype()], device="meta")
            for k, s in slices.items()
        }


def dtype_label(state: Mapping[str, torch.Tensor]) -> str:
    """The floating dtypes of a file, largest share of values first: ``fp16`` or ``fp16, fp32``.

    OpenAI's own conversion keeps LayerNorms in fp32 beside fp16 matrices, hence the list.
    """
    share: dict[str, int] = {}
    for v in state.values():
        if v.is_floating_point():
            name = DTYPE_NAMES.get(v.dtype, str(v.dtype).removeprefix("torch."))
            share[name] = share.get(name, 0) + v.numel()
    return ", ".join(sorted(share, key=lambda n: -share[n])) or "no floating tensors"


def as_fp32(state: Mapping[str, torch.Tensor]) -> State:
    """Floating tensors converted to fp32 (exact for fp16 and bf16 values), others unchanged."""
    return {k: v.float() if v.is_floating_point() else v for k, v in state.items()}


def check_fits(state: Mapping[str, torch.Tensor], model: torch.nn.Module, name: str, path) -> None:
    """Raise unless ``state`` holds exactly the weights of ``model`` (architecture ``name``).

    The visual position embedding may hold any square grid of the right width (it is resized to
    the model's); every other tensor must have the model's shape. Works on ``meta`` tensors.

    Raises:
        UserError: naming the file, the requested architecture, what the file holds and the
            first key or shape that differs.
    """
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    # Traced archives also store buffers that open_clip rebuilds itself (attn_mask).
    derived = set(dict(model.named_buffers())) - set(expected)
    held = {k: tuple(v.shape) for k, v in state.items() if k not in derived}
    missing = [k for k in expected if k not in held and k not in _OPTIONAL_KEYS]
    unexpected = [k for k in held if k not in expected]
    wrong = [k for k in expected if k in held and not _shape_fits(k, held[k], expected[k])]
    if not (missing or unexpected or wrong):
        return
    if wrong:
        k = wrong[0]
        detail = f"{k} is {list(held[k])} there, {name} needs {list(expected[k])}"
    else:
        parts = [f"missing keys such as {', '.join(missing[:3])}"] if missing else []
        parts += [f"unexpected keys such as {', '.join(unexpected[:3])}"] if unexpected else []
        detail = "; ".join(parts)
    raise UserError(
        f"{param('pretrain')} {path}: weights do not fit {name}: the file holds "
        f"{describe(state)}; {detail}"
    )


def _shape_fits(key: str, held: tuple[int, ...], expected: tuple[int, ...]) -> bool:
    if key != _POS_EMBED:
        return held == expected
    grid = math.isqrt(held[0] - 1) if len(held) == 2 and held[0] > 1 else 0
    return grid > 0 and grid * grid == held[0] - 1 and held[1] == expected[1]


def describe(state: Mapping[str, torch.Tensor]) -> str:
    """What a CLIP state dict holds, by its shapes: e.g. ``ViT-B-32 (patch 32, width 768, ...)``."""
    conv, pos = state.get("visual.conv1.weight"), state.get(_POS_EMBED)
    if conv is None or pos is None or conv.dim() != 4 or pos.dim() != 2:
        return f"no CLIP ViT (keys such as {', '.join(list(state)[:3])})"
    proj, tokens = state.get("visual.proj"), state.get("token_embedding.weight")
    dims = {
        "patch_size": conv.shape[-1],
        "width": conv.shape[0],
        "layers": _count_blocks(state, "visual.transformer.resblocks."),
        "image_size": math.isqrt(max(pos.shape[0] - 1, 0)) * conv.shape[-1],
        "embed_dim": proj.shape[1] if proj is not None and proj.dim() == 2 else None,
        "text_width": tokens.shape[1] if tokens is not None and tokens.dim() == 2 else None,
        "text_layers": _count_blocks(state, "transformer.resblocks."),
    }
    names = _architectures_with(dims)
    shown = names[0] if names else "a CLIP ViT that open_clip has no config for"
    return (
        f"{shown} (patch {dims['patch_size']}, width {dims['width']}, {dims['layers']} vision "
        f"blocks, {dims['image_size']} px, embed_dim {dims['embed_dim']})"
    )


def _count_blocks(state: Mapping[str, torch.Tensor], prefix: str) -> int:
    return len({k[len(prefix) :].split(".")[0] for k in state if k.startswith(prefix)})


def _architectures_with(dims: dict[str, int | None]) -> list[str]:
    """CLIP architectures (open_clip names) with these dimensions, plainest name first."""
    found = []
    for name in open_clip.list_models():
        cfg = open_clip.get_model_config(name) or {}
        vision, text = cfg.get("vision_cfg", {}), cfg.get("text_cfg", {})
        if "timm_model_name" in vision or "hf_model_name" in text or "multimodal_cfg" in cfg:
            continue
        have = {
            "patch_size": vision.get("patch_size"),
            "width": vision.get("width"),
            "layers": vision.get("layers"),
            "image_size": vision.get("image_size"),
            "embed_dim": cfg.get("embed_dim"),
            "text_width": text.get("width", 512),
            "text_layers": text.get("layers", 12),
        }
        if have == dims:
            found.append(name)
    return sorted(found, key=lambda n: ("quickgelu" in n, len(n), n))
