"""``iqeclip export``: the whole scoring path as one ONNX graph (the onnxruntime detector that
``predict --backend onnx`` and ``benchmark --backend onnx`` run it with is
:class:`~iqeclip.inference.detectors.OnnxDetector`).

The graph is :class:`ScoringGraph`: images ``(B, 3, S, S)`` float in [0, 1] (what
:func:`~iqeclip.data.readers.as_input` gives the PyTorch path) to the blurred anomaly maps
``(B, S, S)`` and both image scores (``score_zero``, ``score_few``), so one file serves both
scoring rules. The batch dimension is dynamic; the image size is the checkpoint's. The model's
configuration, the checkpoint's metadata (training run, calibrated thresholds) and the iqeclip
version are stored in the ONNX metadata (:data:`META_KEYS`), so the file alone is enough to
predict with. onnx and onnxruntime come with the ``iqeclip[export]`` extra and are imported only
here.
"""

from __future__ import annotations

import contextlib
import json
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from iqeclip import __version__
from iqeclip.errors import UserError, param
from iqeclip.inference.detectors import INPUT_NAME, META_KEYS, OUTPUT_NAMES, require
from iqeclip.model.backbone import plain_attention
from iqeclip.model.detector import IQEClip
from iqeclip.model.scoring import score
from iqeclip.runtime.files import atomic_write, check_free

OPSET = 18
PROTOBUF_LIMIT = 2**31  # bytes: an ONNX file larger than this needs external data


class ScoringGraph(nn.Module):
    """What ``predict`` computes of a batch, as one module: maps and both image scores (fused
    with a memory bank's when the checkpoint has one: its entries become constants)."""

    def __init__(self, model: IQEClip) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        patch_tokens, global_emb = self.model.features(images)
        logits = self.model.logits(patch_tokens, global_emb)
        size = self.model.config.img_size
        maps, zero = score(logits.query, logits.text, size, "zero")
        _, few = score(logits.query, logits.text, size, "few")
        if self.model.bank is not None:
            _, few = self.model.with_bank(patch_tokens, maps, few)
            maps, zero = self.model.with_bank(patch_tokens, maps, zero)
            maps = maps.reshape(-1, size, size)  # the sides stay static in the graph
        return maps, zero, few


@contextlib.contextmanager
def _exportable() -> Iterator[None]:
    """The fused attention kernel has no ONNX form: the exporter traces the plain computation
    (:func:`~iqeclip.model.backbone.plain_attention`), and its tracer warnings are hushed."""
    with plain_attention(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # shapes taken as constants: the image size is fixed
        yield


def export_checkpoint(
    ckpt_path: str | Path,
    out: str | Path,
    overwrite: bool = False,
    model_overrides: dict[str, Any] | None = None,
    fmt: str = "onnx",
) -> tuple[IQEClip, Path]:
    """``iqeclip export``: the checkpoint's model, built on the CPU in fp32, to ``out`` in
    format ``fmt`` (``onnx``, the one format so far).

    ``out`` is checked before the model is built: it must be writable, and an existing file is
    replaced only with ``overwrite``.
    """
    if fmt != "onnx":
        raise UserError(f"{param('format')} {fmt}: the export format is onnx")
    require("onnx")
    out = Path(out)
    check_free(param("out"), out, overwrite)
    overrides = {**(model_overrides or {}), "precision": "fp32"}
    model = IQEClip.from_checkpoint(ckpt_path, "cpu", **overrides)
    return model, export_onnx(model, out)


def export_onnx(model: IQEClip, out: str | Path) -> Path:
    """Write ``model``'s scoring path (:class:`ScoringGraph`) as an ONNX file at ``out``.

    The graph is traced on the CPU in fp32 by PyTorch's TorchScript-based exporter (opset
    :data:`OPSET`), then the metadata is added and the file renamed into place.

    Raises:
        UserError: onnx is missing, ``out`` cannot be written, or the weights exceed the 2 GB
            a single ONNX file can hold.
    """
    onnx = require("onnx")
    out = Path(out)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if size >= PROTOBUF_LIMIT:
        raise UserError(
            f"{param('out')} {out}: {model.config.model_name} holds {size / 2**30:.1f} GiB of "
            "weights, more than one ONNX file can hold (2 GiB)"
        )
    if model.device.type != "cpu" or model.backbone.dtype != torch.float32:
        raise ValueError("export_onnx traces an fp32 model on the CPU")
    img = model.config.img_size
    example = torch.rand(2, 3, img, img)
    metadata = {
        META_KEYS["config"]: json.dumps(model.config.to_dict()),
        META_KEYS["meta"]: json.dumps(model.meta),
        META_KEYS["version"]: __version__,
    }

    def write(tmp: Path) -> None:
        with _exportable(), torch.no_grad():
            torch.onnx.export(
                ScoringGraph(model),
                (example,),
                str(tmp),
                dynamo=False,
                opset_version=OPSET,
                input_names=[INPUT_NAME],
                output_names=list(OUTPUT_NAMES),
                dynamic_axes={name: {0: "batch"} for name in (INPUT_NAME, *OUTPUT_NAMES)},
            )
        proto = onnx.load(str(tmp))
        for key, value in metadata.items():
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
        proto.producer_name, proto.producer_version = "iqeclip", __version__
        onnx.save(proto, str(tmp))

    atomic_write(out, write)
    return out
