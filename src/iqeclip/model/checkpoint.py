"""Checkpoints: the trainable state with its resolved configuration.

A checkpoint is a safetensors file (whatever its extension, ``Brain.pth`` included): the head's
tensors plus, in the metadata, the resolved :class:`~iqeclip.config.ModelConfig` and anything the
trainer adds (epoch, metrics, thresholds). Loading never unpickles anything, so a checkpoint
cannot run code. The configuration is also written beside it as ``<name>.yaml`` for people.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from iqeclip.config import ModelConfig
from iqeclip.errors import UserError
from iqeclip.runtime.files import atomic_write, save_yaml

FORMAT = "iqeclip-checkpoint/1"


def save_checkpoint(
    path: str | Path, model: torch.nn.Module, meta: dict[str, Any] | None = None
) -> Path:
    """Write the head's state and configuration to ``path`` (and ``path.with_suffix('.yaml')``).

    Args:
        path: destination file; written atomically, parents created.
        model: an :class:`~iqeclip.model.detector.IQEClip`.
        meta: extra JSON-serialisable information stored in the metadata.

    Returns:
        The path written.
    """
    state = {
        k: v.detach().to("cpu", torch.float32).contiguous()
        for k, v in model.head.state_dict().items()
    }
    return _write(Path(path), state, model.config, meta or {})


def update_checkpoint_meta(path: str | Path, **updates: Any) -> dict[str, Any]:
    """Merge ``updates`` into a checkpoint's metadata (rewritten atomically); returns the result."""
    config, state, meta = read_checkpoint(path)
    meta = {**meta, **updates}
    _write(Path(path), state, config, meta)
    return meta


def _write(
    path: Path, state: dict[str, torch.Tensor], config: ModelConfig, meta: dict[str, Any]
) -> Path:
    metadata = {"format": FORMAT, "config": json.dumps(config.to_dict()), "meta": json.dumps(meta)}
    atomic_write(path, lambda tmp: save_file(state, str(tmp), metadata=metadata), durable=True)
    save_yaml({"model": config.to_dict(), **meta}, path.with_suffix(".yaml"))
    return path


def read_checkpoint(
    path: str | Path,
) -> tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint without building a model.

    Returns:
        The stored configuration, the head's state dict and the extra metadata.

    Raises:
        UserError: naming the file if it is missing, truncated or not an iqeclip checkpoint.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--ckpt_path {path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"--ckpt_path {path}: not a readable iqeclip checkpoint ({reason})"
        ) from None
    if metadata.get("format") != FORMAT:
        raise UserError(
            f"--ckpt_path {path}: not an iqeclip checkpoint (format {metadata.get('format')!r})"
        )
    config = ModelConfig.from_dict(json.loads(metadata["config"]))
    return config, state, json.loads(metadata.get("meta", "{}"))


def load_checkpoint(
    model: torch.nn.Module,
    path: str | Path,
    stored: tuple[ModelConfig, dict[str, torch.Tensor], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Load a checkpoint into ``model`` after checking that it was built for the same model.

    ``stored`` is what :func:`read_checkpoint` returned for ``path``, when the caller already
    read it (the file is then not read again).

    Returns:
        The checkpoint's extra metadata.

    Raises:
        UserError: one line naming the file and the first differences when the checkpoint was
            built for another backbone or configuration.
    """
    config, state, meta = stored or read_checkpoint(path)
    diff = model.config.mismatches(config)
    if diff:
        raise UserError(
            f"--ckpt_path {path} was built for another model: {'; '.join(diff[:3])} "
            "(this run vs checkpoint)"
        )
    if config.pretrain != model.config.pretrain:
        warnings.warn(
            f"{path} was trained on backbone weights {config.pretrain!r}, this run uses "
            f"{model.config.pretrain!r}",
            stacklevel=2,
        )
    own = model.head.state_dict()
    bad = [k for k in own if k not in state or state[k].shape != own[k].shape]
    extra = [k for k in state if k not in own]
    if bad or extra:
        raise UserError(
            f"--ckpt_path {path}: tensors do not fit this model (e.g. {(bad or extra)[0]})"
        )
    model.head.load_state_dict(state)
    return meta
