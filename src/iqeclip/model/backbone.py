"""The frozen CLIP backbone, built by open_clip (never vendored).

One image in, the paper's visual inputs out: the raw residual stream after each tapped block
(patch tokens only, CLS dropped) and the global embedding ``ln_post(CLS) @ proj``. The text tower
is exposed as :class:`TextTower` for the prompted text encoder in :mod:`iqeclip.model.prompts`.

Three traps of loading OpenAI weights are handled on purpose:

* torch >= 2.6 refuses TorchScript archives (OpenAI's ``ViT-L-14-336px.pt``) under
  ``weights_only=True``, so archives are recognised and read with ``torch.jit.load``;
* the archive holds fp16 tensors, and the position embedding is resized bicubic with antialias,
  which PyTorch does not implement for fp16 on the CPU: files are converted to fp32 first
  (:mod:`iqeclip.model.weights`);
* open_clip builds whatever activation the config says for a file path, silently; here the
  activation is always the explicit ``quick_gelu`` choice (default GELU, as the published runs).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlparse

import open_clip
import torch
from open_clip.constants import OPENAI_DATASET_MEAN, OPENAI_DATASET_STD
from torch import nn

from iqeclip.errors import UserError, first_line, param
from iqeclip.model import weights
from iqeclip.model.architecture import (
    CONFIG_DIR,
    RANDOM_INIT_SEED,
    Architecture,
    pretrain_source,
)
from iqeclip.model.invariance import per_image

PRECISIONS = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def register_configs() -> None:
    """Make the package's open_clip configs (``iqe-tiny``) known to open_clip."""
    if "iqe-tiny" not in open_clip.list_models():
        open_clip.add_model_config(CONFIG_DIR)


register_configs()  # on import: iqe-tiny is known wherever the model is used


def create_clip(
    model_name: str,
    pretrain: str,
    img_size: int,
    quick_gelu: bool,
    device: torch.device | str = "cpu",
) -> nn.Module:
    """Build an open_clip CLIP at ``img_size`` with the requested weights and activation.

    Args:
        model_name: open_clip architecture name.
        pretrain: ``none``, an open_clip pretrained tag, or a local weights file in any format and
            dtype that :func:`iqeclip.model.weights.read_state_dict` reads; the file is checked against
            the architecture before the model is built.
        img_size: input side; the visual position embeddings are resized to its grid (bicubic,
            antialias, class-token row kept) by open_clip's ``resize_pos_embed``, in fp32.
        quick_gelu: activation of both towers (False = exact GELU).
        device: where to build the model (``meta`` for shape-only work such as ``iqeclip info``:
            no weights are read; :func:`check_weights_file` checks a file without reading its data).

    Returns:
        The open_clip model, fp32, frozen and in eval mode.
    """
    Architecture.from_name(model_name)
    kwargs = dict(force_image_size=img_size, force_quick_gelu=quick_gelu)
    source = pretrain_source(model_name, pretrain)
    meta = str(device) == "meta"
    if meta or source == "none":
        model = _random_clip(model_name, "meta" if meta else "cpu", kwargs)
    elif source == "file":
        state = weights.as_fp32(_checked_state(model_name, pretrain, kwargs, shapes_only=False))
        model = _random_clip(model_name, "cpu", kwargs)
        open_clip.model.resize_pos_embed(state, model)
        keys = set(model.state_dict())  # without the derived buffers a traced archive also holds
        model.load_state_dict({k: v for k, v in state.items() if k in keys}, strict=False)
    else:
        unreachable = weights_unreachable(model_name, pretrain)
        if unreachable is not None:  # say so now, not after the hub client's retries
            raise UserError(_cannot_obtain(pretrain, unreachable))
        with warnings.catch_warnings():
            # The QuickGELU mismatch warning is expected: the activation is our explicit choice.
            warnings.filterwarnings("ignore", message="QuickGELU mismatch")
            try:
                model = open_clip.create_model(model_name, pretrained=pretrain, **kwargs)
            except RuntimeError as exc:
                raise UserError(_cannot_obtain(pretrain, first_line(exc))) from None
    if not meta:
        model = model.to(device)
    model.requires_grad_(False)
    return model.eval()


REACH_TIMEOUT_S = 3.0
"""How long the weights' host may take to accept a connection before it counts as unreachable."""


def _cannot_obtain(pretrain: str, reason: str) -> str:
    return (
        f"{param('pretrain')} {pretrain}: cannot obtain the weights ({reason}); pass a weights "
        f"file instead, e.g. {param('pretrain')} ViT-L-14-336px.pt (OpenAI's file, or open_clip's "
        "open_clip_pytorch_model.bin, fetched on a machine online; see the README, 'Real weights')"
    )


def weights_unreachable(model_name: str, tag: str) -> str | None:
    """Why open_clip cannot obtain the weights of ``tag`` now (None: they are in the local cache,
    or their host accepts a connection within :data:`REACH_TIMEOUT_S`). Offline, open_clip's
    hub client spends about a minute retrying before it fails; this asks once."""
    from open_clip.constants import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    cfg = open_clip.get_pretrained_cfg(model_name, tag)
    hub, url = cfg.get("hf_hub", ""), cfg.get("url", "")
    if hub:
        from huggingface_hub import constants, try_to_load_from_cache

        repo, filename = os.path.split(hub)
        names = {filename or HF_WEIGHTS_NAME, HF_SAFE_WEIGHTS_NAME}
        if any(isinstance(try_to_load_from_cache(repo, name), str) for name in names):
            return None
        if constants.HF_HUB_OFFLINE:
            return "HF_HUB_OFFLINE is set and they are not in the local Hugging Face cache"
        host = urlparse(constants.ENDPOINT).hostname or "huggingface.co"
    elif url:
        if (Path("~/.cache/clip").expanduser() / os.path.basename(url)).is_file():
            return None
        host = urlparse(url).hostname or url
    else:
        return None
    try:
        socket.create_connection((host, 443), timeout=REACH_TIMEOUT_S).close()
    except OSError as exc:
        return f"not in the local cache, and {host} cannot be reached: {first_line(exc)}"
    return None


def check_weights_file(model_name: str, pretrain: str, img_size: int) -> str:
    """Check a weights file's keys and shapes against the architecture; return its dtype label.

    The data of the tensors is not read where the format allows (safetensors, ``torch.save``); a
    TorchScript archive is read whole.

    Raises:
        UserError: if the file cannot be read or does not fit ``model_name``.
    """
    kwargs = dict(force_image_size=img_size, force_quick_gelu=False)
    state = _checked_state(model_name, pretrain, kwargs, shapes_only=True)
    return weights.dtype_label(state)


def _checked_state(
    model_name: str, pretrain: str, kwargs: dict, shapes_only: bool
) -> weights.State:
    """Read a weights file and check its keys and shapes against a ``meta`` build of the model."""
    state = weights.read_state_dict(Path(pretrain).expanduser(), shapes_only=shapes_only)
    weights.check_fits(state, _random_clip(model_name, "meta", kwargs), model_name, pretrain)
    return state


def _random_clip(model_name: str, device: str, kwargs: dict) -> nn.Module:
    """A random-init CLIP, always the same one (seed RANDOM_INIT_SEED, drawn on the CPU).

    A checkpoint trained on ``--pretrain none`` can then be tested later; the caller's random
    state is left untouched. open_clip's "no pretrained weights" warning is expected here.
    """
    with torch.random.fork_rng(devices=[]), _quiet_root_logger():
        torch.manual_seed(RANDOM_INIT_SEED)
        with torch.device(device):
            return open_clip.create_model(model_name, pretrained=None, device=device, **kwargs)


@contextlib.contextmanager
def _quiet_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        yield
    finally:
        root.setLevel(level)


@contextlib.contextmanager
def plain_attention() -> Iterator[None]:
    """Attention computed op by op: ``nn.MultiheadAttention``'s fused fast path off and
    ``scaled_dot_product_attention`` on its math kernel. The same function, made of the matrix
    products that an ONNX export can trace and a FLOP counter can count (restored afterwards)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        with sdpa_kernel(SDPBackend.MATH):
            yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def activation_name(clip: nn.Module) -> str:
    """The activation actually built into the vision tower's MLPs (``GELU`` or ``QuickGELU``)."""
    return type(clip.visual.transformer.resblocks[0].mlp.gelu).__name__


class TextTower(nn.Module):
    """The frozen pieces of the CLIP text transformer, for a custom prompted forward."""

    def __init__(self, clip: nn.Module) -> None:
        super().__init__()
        self.token_embedding = clip.token_embedding
        self.positional_embedding = clip.positional_embedding
        self.transformer = clip.transformer
        self.ln_final = clip.ln_final
        self.text_projection = clip.text_projection
        self.register_buffer("attn_mask", clip.attn_mask, persistent=False)

    def project(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the text projection to pooled features ``(N, Dt) -> (N, D)``."""
        if isinstance(self.text_projection, nn.Linear):
            return self.text_projection(x)
        return x @ self.text_projection


class Backbone(nn.Module):
    """Frozen CLIP: feature taps and global embedding of images, plus the text tower.

    Args:
        clip: an open_clip CLIP model (see :func:`create_clip`).
        features_list: 1-based indices of the tapped vision blocks.
        normalize: ``none`` (pixels in [0, 1], as the paper) or ``clip`` (CLIP mean/std).
        precision: dtype of the frozen vision tower (``fp32``, ``bf16``, ``fp16``); its outputs
            are returned in fp32. The text tower stays fp32: gradients of the text prompts flow
            through it.
    """

    def __init__(
        self,
        clip: nn.Module,
        features_list: list[int],
        normalize: str = "none",
        precision: str = "fp32",
    ) -> None:
        super().__init__()
        self.dtype = PRECISIONS[precision]
        self.visual = clip.visual.to(self.dtype)
        # The global projection is applied here, one image at a time (see :meth:`forward`).
        self.proj = self.visual.proj
        self.visual.proj = None
        self.text = TextTower(clip)
        self.taps = [f - 1 for f in features_list]
        self.normalize = normalize
        self.register_buffer(
            "mean", torch.tensor(OPENAI_DATASET_MEAN).view(1, 3, 1, 1), persistent=False
        )
        self.register_buffer(
            "std", torch.tensor(OPENAI_DATASET_STD).view(1, 3, 1, 1), persistent=False
        )
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> Backbone:
        """The backbone is frozen: it stays in eval mode whatever the caller asks."""
        return super().train(False)

    @torch.no_grad()
    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Tap the vision tower.

        Args:
            images: ``(B, 3, H, W)`` float pixels in [0, 1].

        Returns:
            patch tokens ``(T, B, L, Dv)`` (raw residual stream after each tapped block, CLS
            dropped) and the global embedding ``(B, D)`` = ``ln_post(CLS) @ proj``.

        Every output row depends on its own image only, bit for bit, whatever else is in the
        batch: the vision transformer's matrix products are batch-invariant here, but a
        ``(B, Dv) @ (Dv, D)`` product with few rows takes another kernel (other rounding) than
        one with many, so ``proj`` is applied image by image. Cached features computed in one
        batch therefore equal features computed in any other (docs/model.md). An ONNX export
        (:mod:`iqeclip.inference.export`) applies it to the batch at once, as a loop over the
        images would fix the graph's batch size.
        """
        if self.normalize == "clip":
            images = (images - self.mean) / self.std
        out = self.visual.forward_intermediates(
            images.to(self.dtype), indices=self.taps, output_fmt="NLC"
        )
        pooled = out["image_features"]  # ln_post(CLS): the tower has no projection of its own
        glob = per_image(lambda rows: rows @ self.proj, pooled)
        return torch.stack(out["image_intermediates"]).float(), glob.float()
