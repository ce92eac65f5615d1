"""Checkpoints: the trainable state with its resolved configuration.

A checkpoint is a safetensors file (whatever its extension, ``Brain.pth`` included): the head's
tensors plus, in the metadata, the resolved :class:`~iqeclip.config.ModelConfig` and anything the
trainer adds (epoch, metrics, thresholds). Loading never unpickles anything, so a checkpoint
cannot run code, and refuses, in one line naming the file, metadata that is not what
:func:`save_checkpoint` writes (its configuration is checked as the command line's) and weights
that are not finite. The configuration is also written beside it as ``<name>.yaml`` for people.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NoReturn

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from iqeclip.config import ModelConfig
from iqeclip.errors import UserError, param
from iqeclip.model.architecture import Architecture
from iqeclip.runtime.files import atomic_write, locked, save_yaml

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
    bank = getattr(model, "bank", None)
    if bank is not None:  # the normal patches of iqeclip bank, with their record in meta
        state.update(bank.state())
    return _write(Path(path), state, model.config, meta or {})


def update_checkpoint_meta(
    path: str | Path, update: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """Merge ``update(meta)`` into a checkpoint's metadata (rewritten atomically).

    The read, ``update`` and the write hold the lock ``<path>.lock``
    (:func:`~iqeclip.runtime.files.locked`): a second update of the same checkpoint waits, then
    reads and builds on the first's result.

    Args:
        path: the checkpoint.
        update: given the stored metadata, returns the keys to change.

    Returns:
        The metadata written.
    """
    path = Path(path)
    with locked(path, param("ckpt_path")):
        config, state, meta = read_checkpoint(path)
        meta = {**meta, **update(meta)}
        _write(path, state, config, meta)
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
        raise UserError(f"{param('ckpt_path')} {path}: no such file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
        state = load_file(str(path))
    except (SafetensorError, OSError, ValueError) as exc:
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise UserError(
            f"{param('ckpt_path')} {path}: not a readable iqeclip checkpoint ({reason})"
        ) from None
    if metadata.get("format") != FORMAT:
        raise UserError(
            f"{param('ckpt_path')} {path}: not an iqeclip checkpoint "
            f"(format {metadata.get('format')!r})"
        )
    where = f"{param('ckpt_path')} {path}"
    config = stored_config(stored_json(metadata, "config", where), where, resolve=True)
    meta = stored_meta(metadata, "meta", where)
    for name, tensor in state.items():
        bad = int((~torch.isfinite(tensor)).sum())
        if bad:
            raise UserError(
                f"{where}: tensor {name} holds {bad} non-finite values (NaN/inf): "
                "the checkpoint is corrupt"
            )
    return config, state, meta


def stored_json(
    metadata: Mapping[str, str], key: str, where: str, required: bool = True
) -> dict[str, Any]:
    """The JSON object stored under ``key`` in a file's metadata (a checkpoint's, an ONNX
    model's); ``{}`` when it is absent and not ``required``.

    Raises:
        UserError: ``<where>: ...`` naming ``key`` when it is missing, not JSON or not an object.
    """
    if key not in metadata:
        if required:
            raise UserError(f"{where}: its metadata holds no {key}")
        return {}
    try:
        value = json.loads(metadata[key])
    except json.JSONDecodeError as exc:
        raise UserError(f"{where}: its {key} metadata is not JSON ({exc.msg})") from None
    if not isinstance(value, dict):
        raise UserError(
            f"{where}: its {key} metadata is not a JSON object (got {type(value).__name__})"
        )
    return value


def stored_meta(metadata: Mapping[str, str], key: str, where: str) -> dict[str, Any]:
    """The extra metadata stored under ``key`` (``{}`` when absent), its ``run`` record checked.

    Raises:
        UserError: ``<where>: ...`` when it is not a JSON object or its ``run`` is not one.
    """
    meta = stored_json(metadata, key, where, required=False)
    if not isinstance(meta.get("run", {}), dict):
        raise UserError(f"{where}: its {key}.run is {meta['run']!r}, not a JSON object")
    _check_run(meta.get("run", {}), f"{where}: its {key}.run")
    return meta


def _check_run(run: dict[str, Any], where: str) -> None:
    """The run settings that test, calibrate and predict apply (the scoring rule and the
    reading) must be ones a command line could have given.

    Raises:
        UserError: ``<where>.<field> is <value>: <why>``.
    """
    from iqeclip.data.readers.intensity import parse_percentile, parse_window
    from iqeclip.data.readers.orientation import ORIENTATIONS

    def refuse(field: str, why: str) -> NoReturn:
        raise UserError(f"{where}.{field} is {run[field]!r}: {why} (the checkpoint is corrupt)")

    for field, choices in (("setting", ("zero", "few")), ("orientation", ORIENTATIONS)):
        if run.get(field) is not None and run[field] not in choices:
            refuse(field, f"not one of {', '.join(choices)}")
    axis = run.get("axis")
    if axis is not None and (isinstance(axis, bool) or axis not in (0, 1, 2)):
        refuse("axis", "not 0, 1 or 2")
    for field, parse in (("window", parse_window), ("percentile", parse_percentile)):
        if run.get(field) is not None:
            try:
                if not isinstance(run[field], str):
                    raise UserError("not text")
                parse(run[field])
            except UserError as exc:
                refuse(field, exc.message)


def stored_config(data: dict[str, Any], where: str, resolve: bool = False) -> ModelConfig:
    """A stored model configuration, checked as a command line's (types, each option's bounds,
    and with ``resolve`` that it fits its backbone, as building the model would check it).

    Raises:
        UserError: ``<where>: its stored model configuration is invalid: <why>``.
    """
    try:
        config = ModelConfig.from_dict(data)
        if resolve:
            arch = Architecture.from_name(config.model_name)
            config.resolved(arch.vision_layers, arch.text_layers)
    except UserError as exc:
        raise UserError(
            f"{where}: its stored model configuration is invalid: {exc.message}"
        ) from None
    return config


def _load_bank(
    model: torch.nn.Module, state: dict[str, torch.Tensor], meta: dict[str, Any], where: str
) -> dict[str, torch.Tensor]:
    """Put a checkpoint's memory bank (``bank.*`` tensors and ``meta["bank"]``) on ``model``,
    checked; the head's state without it."""
    from iqeclip.model.bank import BANK_PREFIX, MemoryBank

    tensors = {k: v for k, v in state.items() if k.startswith(BANK_PREFIX)}
    record = meta.get("bank")
    if not tensors and record is None:
        return state
    if not isinstance(record, dict) or not tensors:
        raise UserError(f"{where}: its bank tensors and bank record do not go together: corrupt")
    levels, dim = len(model.config.features_list or ()), model.arch.embed_dim
    model.bank = MemoryBank.from_state(tensors, record, levels, dim, where).to(model.device)
    return {k: v for k, v in state.items() if k not in tensors}


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
            f"{param('ckpt_path')} {path} was built for another model: {'; '.join(diff[:3])} "
            "(this run vs checkpoint)"
        )
    if config.pretrain != model.config.pretrain:
        warnings.warn(
            f"{path} was trained on backbone weights {config.pretrain!r}, this run uses "
            f"{model.config.pretrain!r}",
            stacklevel=2,
        )
    state = _load_bank(model, state, meta, f"{param('ckpt_path')} {path}")
    own = model.head.state_dict()
    bad = [k for k in own if k not in state or state[k].shape != own[k].shape]
    extra = [k for k in state if k not in own]
    if bad or extra:
        raise UserError(
            f"{param('ckpt_path')} {path}: tensors do not fit this model (e.g. {(bad or extra)[0]})"
        )
    model.head.load_state_dict(state)
    return meta
