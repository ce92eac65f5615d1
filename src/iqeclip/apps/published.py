"""``iqeclip import-checkpoint`` and ``iqeclip export-checkpoint --format published``: a
checkpoint of the published IQE-CLIP code in, an iqeclip checkpoint out, and back.

An imported checkpoint is an iqeclip checkpoint like any other: ``predict``, ``test-*``,
``calibrate``, ``serve`` and ``export`` take it unchanged. Its metadata records the source
file's name and sha256, what the tensors told, what was assumed and the tensors left out
(:mod:`iqeclip.model.published` says which and why).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from iqeclip.errors import UserError, param
from iqeclip.model import published
from iqeclip.model.architecture import Architecture
from iqeclip.model.checkpoint import read_checkpoint, save_checkpoint
from iqeclip.model.detector import IQEClip
from iqeclip.runtime.files import atomic_write, check_free, sha256_of

__all__ = ["export_published", "import_checkpoint", "summary"]


def _run(setting: str | None, shot: int | None, obj: str) -> dict[str, Any]:
    """The run record test and predict read: the setting (zero unless few or ``shot``), K."""
    setting = setting or ("few" if shot is not None else "zero")
    if setting == "few" and shot is None:
        raise UserError(f"{param('setting')} few needs {param('shot')} K, the support size")
    if setting == "zero" and shot is not None:
        raise UserError(f"{param('shot')} {shot} is for {param('setting')} few")
    # the published scripts selected the weights on the target's test split
    return {"setting": setting, "shot": shot, "obj": obj, "select": "target-test"}


def import_checkpoint(
    source: str | Path,
    out: str | Path,
    model_flags: dict[str, Any],
    *,
    obj: str = "custom",
    setting: str | None = None,
    shot: int | None = None,
    overwrite: bool = False,
) -> tuple[Path, dict[str, Any]]:
    """Convert a published checkpoint into an iqeclip checkpoint at ``out``.

    Args:
        source: the published ``.pth``.
        out: the iqeclip checkpoint to write (``ckpt/Brain_4.pth``).
        model_flags: model fields given (the rest: :data:`~iqeclip.model.published.ASSUMED`).
        obj, setting, shot: what it was trained for (zero-shot unless few or ``shot``).
        overwrite: replace an existing ``out``.

    Returns:
        The path written and the ``imported`` record of its metadata.

    Raises:
        UserError: one line naming the file or flag at fault; nothing is written then.
    """
    source, out = Path(source), Path(out)
    run = _run(setting, shot, obj)
    check_free(param("out"), out, overwrite)
    model = IQEClip.from_published(source, "meta", **model_flags)  # no backbone weights read
    imported = {**model.meta["imported"], "sha256": sha256_of(source)}
    save_checkpoint(out, model, {"run": run, "imported": imported})
    return out, imported


def summary(source: str | Path, out: Path, imported: dict[str, Any]) -> list[str]:
    """What an import read, assumed and left out, for a person."""

    def listed(values: dict[str, Any]) -> str:
        return ", ".join(f"{k} {v}" for k, v in values.items()) or "nothing"

    return [
        f"read off the tensors: {listed(imported['read'])}",
        f"assumed (give the flag if it differs): {listed(imported['assumed'])}",
        f"left out: {', '.join(imported['dropped']) or 'nothing'} (no forward pass uses them)",
        f"{source} (sha256 {imported['sha256'][:16]}...) imported to {out}",
    ]


def export_published(
    ckpt_path: str | Path, out: str | Path, overwrite: bool = False, text_block: str | None = None
) -> tuple[Path, str]:
    """Write an iqeclip checkpoint in the published layout (``torch.save`` of plain dicts of
    tensors), for the published test scripts.

    The IQM's text cross-attention takes ``text_block``, else the name the imported file had,
    else :data:`~iqeclip.model.published.DEFAULT_TEXT_BLOCK`. The unused matrix and, without
    ``use_global``, the conditioning convs are written as zeros.

    Returns:
        The path written and the text cross-attention's name used.
    """
    ckpt_path, out = Path(ckpt_path), Path(out)
    check_free(param("out"), out, overwrite)
    config, state, meta = read_checkpoint(ckpt_path)
    block = text_block or meta.get("imported", {}).get("text_block") or published.DEFAULT_TEXT_BLOCK
    width = Architecture.from_name(config.model_name).embed_dim
    nested = published.to_published(state, block, width, config.prompt_len)
    atomic_write(out, lambda tmp: torch.save(nested, str(tmp)), durable=True)
    return out, block
