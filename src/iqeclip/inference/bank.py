"""``iqeclip bank``: a memory of a site's normal images added to a zero-shot checkpoint
(:mod:`iqeclip.model.bank` says what it holds and how it scores).

The normal images are read as every command reads them (a folder walked as ``predict`` walks it,
or the normal rows of a manifest's ``train`` split), under the checkpoint's reading; constant
slices are left out. The frozen backbone and the head's projections give each image's patch
features per tapped level; the coreset keeps ``bank_size`` of them per level. The bank is
written with a copy of the checkpoint (its thresholds are dropped: they were chosen without the
bank, so ``calibrate`` must run again), with the name and sha256 of every image that went in.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from iqeclip.data.items import read_items
from iqeclip.data.manifest import read_manifest
from iqeclip.data.readers import as_input, model_input
from iqeclip.errors import UserError, param
from iqeclip.inference.inputs import checkpoint_reading
from iqeclip.inference.listing import expand_inputs
from iqeclip.model.bank import DEFAULT_BANK_SIZE, DEFAULT_WEIGHT, MemoryBank, coreset
from iqeclip.model.checkpoint import save_checkpoint
from iqeclip.model.detector import IQEClip
from iqeclip.runtime.device import resolve_device
from iqeclip.runtime.files import check_free, sha256_of

__all__ = ["build_bank"]

logger = logging.getLogger(__name__)


_digest = functools.lru_cache(maxsize=4096)(sha256_of)  # a volume's file once, not per slice


def _normal_images(
    normal: str | Path | None, manifest: str | Path | None, size: int, reading: Any
) -> Iterator[tuple[Path, int | None, torch.Tensor]]:
    """``(file, slice, uint8 model input)`` of every normal image, constant slices left out."""
    if normal is not None:
        for path in expand_inputs([normal]):
            for item in read_items(path, size, reading):
                if not item.blank:
                    yield Path(item.file or item.source), item.index, item.model_input
    if manifest is not None:
        rows = read_manifest(manifest, reading).split("train")
        for sample in (s for s in rows if s.label == 0):
            yield sample.image, sample.index, model_input(sample.image, sample.index, size, reading)


def _patch_features(
    model: IQEClip, images: list[torch.Tensor], batch_size: int
) -> list[torch.Tensor]:
    """Per tapped level, the unit patch features ``(N * L, D)`` of ``images``."""
    levels: list[list[torch.Tensor]] = []
    with torch.no_grad():
        for start in range(0, len(images), batch_size):
            batch = torch.stack(images[start : start + batch_size])
            patch_tokens, _ = model.features(as_input(batch, model.device))
            dense = model.head.dense(patch_tokens.to(model.head.class_tokens.tokens.dtype))
            units = F.normalize(dense.float(), dim=-1).cpu()  # (T, B, L, D)
            if not levels:
                levels = [[] for _ in range(units.shape[0])]
            for level, part in zip(levels, units, strict=True):
                level.append(part.reshape(-1, part.shape[-1]))
    return [torch.cat(parts) for parts in levels]


def build_bank(
    ckpt_path: str | Path,
    out: str | Path,
    *,
    normal: str | Path | None = None,
    manifest: str | Path | None = None,
    bank_size: int = DEFAULT_BANK_SIZE,
    weight: float = DEFAULT_WEIGHT,
    batch_size: int = 8,
    device: str = "auto",
    overwrite: bool = False,
    seed: int = 0,
) -> tuple[Path, dict[str, Any]]:
    """Write ``out``: the checkpoint with a bank of the normal images of ``normal`` (a folder)
    and/or ``manifest`` (its normal ``train`` rows).

    Returns:
        The path written and the bank's record.

    Raises:
        UserError: one line before any work: no images given, ``out`` taken, a few-shot
            checkpoint (the bank adds to a zero-shot one), or no normal image found.
    """
    out = Path(out)
    if normal is None and manifest is None:
        raise UserError(f"give the normal images: {param('normal')} and/or {param('manifest')}")
    check_free(param("out"), out, overwrite)
    model = IQEClip.from_checkpoint(ckpt_path, resolve_device(device))
    if model.meta.get("run", {}).get("setting") == "few":
        raise UserError(
            f"{param('ckpt_path')} {ckpt_path} is a few-shot checkpoint: a bank adds a site's "
            "normal images to a zero-shot one"
        )
    reading = checkpoint_reading(model.meta, None, None, None, None)
    found = list(_normal_images(normal, manifest, model.config.img_size, reading))
    if not found:
        raise UserError(f"no normal image (that is not constant) in {normal or manifest}")
    features = _patch_features(model, [image for _, _, image in found], batch_size)
    memory = [level[coreset(level, bank_size, seed)] for level in features]
    model.bank = MemoryBank(memory, weight)
    record = {
        "weight": weight,
        "bank_size": bank_size,
        "sizes": [int(m.shape[0]) for m in memory],
        "patches": int(features[0].shape[0]),
        "seed": seed,
        "images": [
            {"file": str(file), "slice": index, "sha256": _digest(file) if file.is_file() else None}
            for file, index, _ in found
        ],
    }
    meta = {k: v for k, v in model.meta.items() if k not in ("thresholds", "bank")}
    save_checkpoint(out, model, {**meta, "bank": record})
    logger.info(
        f"bank of {len(found)} normal images: {record['patches']} patches per level, "
        f"{record['sizes'][0]} kept per level, weight {weight}; written to {out}"
    )
    return out, record
