"""Training state for ``--resume``: everything needed to continue a run bit for bit.

Saved (atomically, as safetensors + JSON metadata, so loading never unpickles) after every
``--save_every`` steps and at each epoch end, beside the checkpoint as ``<name>.resume``: the
head's weights, the optimiser's state, the selection state (best score and weights), the random
number generator states (torch, CUDA, numpy, python), and the epoch and the number of batches
done in it. Batch order is a pure function of ``(seed, epoch)``, so a resumed run replays exactly
the batches the interrupted one had not finished.
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, safe_open, save_file

from iqeclip.errors import UserError, param
from iqeclip.runtime.files import atomic_write

FORMAT = "iqeclip-resume/1"


def state_path(checkpoint: Path) -> Path:
    """``ckpt/Brain.pth`` -> ``ckpt/Brain.resume``."""
    return checkpoint.with_suffix(".resume")


def save_state(
    path: Path,
    head: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    epoch: int,
    step: int,
    best: float,
    best_state: dict[str, torch.Tensor] | None,
    settings: dict[str, Any],
) -> None:
    """Write the training state (see the module docstring)."""
    tensors = {f"head.{k}": v.detach().cpu().contiguous() for k, v in head.state_dict().items()}
    opt = optimizer.state_dict()
    for pid, values in opt["state"].items():
        for name, value in values.items():
            tensors[f"opt.{pid}.{name}"] = torch.as_tensor(value).detach().cpu().contiguous()
    for k, v in (best_state or {}).items():
        tensors[f"best.{k}"] = v.detach().cpu().contiguous()
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = state
    np_state = np.random.get_state()
    meta = {
        "format": FORMAT,
        "epoch": epoch,
        "step": step,
        "best": best,
        "has_best": best_state is not None,
        "param_groups": opt["param_groups"],
        "numpy_rng": [np_state[0], np_state[1].tolist(), *np_state[2:]],
        "python_rng": [random.getstate()[0], list(random.getstate()[1]), random.getstate()[2]],
        "settings": settings,
    }
    metadata = {"meta": json.dumps(meta)}
    atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=metadata), durable=True)


def load_state(
    path: Path, head: torch.nn.Module, optimizer: torch.optim.Optimizer, settings: dict[str, Any]
) -> dict[str, Any]:
    """Restore a training state into ``head``, ``optimizer`` and the global RNGs.

    Returns:
        ``epoch``, ``step``, ``best`` and ``best_state`` (``None`` if nothing was selected yet).

    Raises:
        UserError: if there is no state, it is unreadable, or it belongs to another run.
    """
    if not path.is_file():
        raise UserError(
            f"{param('resume')}: no training state at {path} (nothing to resume, or the run "
            "finished)"
        )
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {})["meta"])
        tensors = load_file(str(path))
    except (SafetensorError, OSError, KeyError, ValueError) as exc:
        raise UserError(
            f"{param('resume')}: {path} is not a readable training state ({exc})"
        ) from None
    if meta.get("format") != FORMAT:
        raise UserError(f"{param('resume')}: {path} is not an iqeclip training state")
    changed = [k for k in settings if meta["settings"].get(k) != settings[k]]
    if changed:
        was = ", ".join(f"{k}={meta['settings'].get(k)!r}" for k in changed[:3])
        raise UserError(
            f"{param('resume')}: {path} belongs to another run ({was}); start it again without "
            f"{param('resume')}"
        )
    head.load_state_dict({k[5:]: v for k, v in tensors.items() if k.startswith("head.")})
    opt_state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in tensors.items():
        if key.startswith("opt."):
            _, pid, name = key.split(".", 2)
            opt_state.setdefault(int(pid), {})[name] = value
    optimizer.load_state_dict({"state": opt_state, "param_groups": meta["param_groups"]})
    torch.set_rng_state(tensors["rng.torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng.cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    name, keys, *rest = meta["numpy_rng"]
    np.random.set_state((name, np.array(keys, dtype=np.uint32), *rest))
    version, internal, gauss = meta["python_rng"]
    random.setstate((version, tuple(internal), gauss))
    best_state = (
        {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        if meta["has_best"]
        else None
    )
    return {
        "epoch": meta["epoch"],
        "step": meta["step"],
        "best": meta["best"],
        "best_state": best_state,
    }
