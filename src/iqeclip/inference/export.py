"""``iqeclip export``: the whole scoring path as one ONNX graph, and the onnxruntime detector that
``predict --backend onnx`` and ``benchmark --backend onnx`` run it with.

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

import numpy as np
import torch
from torch import nn

from iqeclip import __version__
from iqeclip.errors import UserError, first_line
from iqeclip.inference.thresholds import check_thresholds
from iqeclip.model.backbone import plain_attention
from iqeclip.model.checkpoint import read_checkpoint, stored_config, stored_json, stored_meta
from iqeclip.model.detector import IQEClip
from iqeclip.model.scoring import score
from iqeclip.runtime.device import resolve_device
from iqeclip.runtime.files import atomic_write, check_writable

INPUT_NAME = "images"
OUTPUT_NAMES = ("maps", "score_zero", "score_few")
META_KEYS = {"config": "iqeclip.config", "meta": "iqeclip.meta", "version": "iqeclip.version"}
OPSET = 18
PROTOBUF_LIMIT = 2**31  # bytes: an ONNX file larger than this needs external data


def _require(module: str) -> Any:
    try:
        return __import__(module)
    except ImportError:
        raise UserError(
            f"{module} is not installed: pip install 'iqeclip[export]' (onnx and onnxruntime)"
        ) from None


class ScoringGraph(nn.Module):
    """What ``predict`` computes of a batch, as one module: maps and both image scores."""

    def __init__(self, model: IQEClip) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits = self.model(images)
        size = self.model.config.img_size
        maps, zero = score(logits.query, logits.text, size, "zero")
        _, few = score(logits.query, logits.text, size, "few")
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
        raise UserError(f"--format {fmt}: the export format is onnx")
    _require("onnx")
    out = Path(out)
    check_writable("--out", out)
    if out.exists() and not overwrite:
        raise UserError(f"--out {out} exists; pass --overwrite to replace it")
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
    onnx = _require("onnx")
    out = Path(out)
    size = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    if size >= PROTOBUF_LIMIT:
        raise UserError(
            f"--out {out}: {model.config.model_name} holds {size / 2**30:.1f} GiB of weights, "
            "more than one ONNX file can hold (2 GiB)"
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


class OnnxDetector:
    """An exported model run by onnxruntime, with the face of
    :class:`~iqeclip.model.detector.IQEClip` that inference uses: ``config``, ``meta``,
    ``device`` and :meth:`predict`.

    Args:
        path: a file written by :func:`export_onnx`.
        device: ``cpu``; ``cuda`` or ``cuda:N`` (needs onnxruntime's CUDA provider,
            ``onnxruntime-gpu``); ``auto``: CUDA where that provider is installed, else the CPU.
        threads: intra-op threads (None: as many as torch uses, so both backends compare fairly).

    Raises:
        UserError: naming the file if it is missing, not ONNX, not exported by iqeclip, its
            metadata is not what :func:`export_onnx` writes (a configuration out of the
            command line's bounds, a corrupt calibration) or its graph's input and outputs do
            not have the shapes its configuration says.
    """

    def __init__(self, path: str | Path, device: str = "cpu", threads: int | None = None) -> None:
        ort = _require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise UserError(f"--model {path}: no such file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        providers: list[Any] = ["CPUExecutionProvider"]
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if device.startswith("cuda") and not cuda:
            raise UserError(
                f"--device {device}: this onnxruntime has no CUDA provider "
                "(pip install onnxruntime-gpu), use --device cpu"
            )
        if device.startswith("cuda") or (device == "auto" and cuda):
            index = int(device.partition(":")[2] or 0)
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(
                f"--model {path}: not a readable ONNX model ({first_line(exc)})"
            ) from None
        props = self.session.get_modelmeta().custom_metadata_map
        if META_KEYS["config"] not in props:
            raise UserError(f"--model {path}: not exported by iqeclip export (no iqeclip.config)")
        where = f"--model {path}"
        self.path = path
        self.config = stored_config(stored_json(props, META_KEYS["config"], where), where)
        self.meta = stored_meta(props, META_KEYS["meta"], where)
        check_thresholds(self.meta.get("thresholds"), where)
        self._check_graph(where)
        _check_weights(path, where)
        self.version = props.get(META_KEYS["version"], "")
        self.device = torch.device("cpu")  # inputs are handed over as numpy arrays

    def _check_graph(self, where: str) -> None:
        """The graph takes ``images`` and gives :data:`OUTPUT_NAMES`, float32, with a dynamic
        batch and the image size of ``iqeclip.config`` (else predict would fail on every batch).
        """
        size = self.config.img_size
        wanted = {
            INPUT_NAME: [3, size, size],
            "maps": [size, size],
            "score_zero": [],
            "score_few": [],
        }
        inputs = self.session.get_inputs()
        if [arg.name for arg in inputs] != [INPUT_NAME]:
            names = ", ".join(arg.name for arg in inputs)
            raise UserError(f"{where}: the graph's inputs are ({names}), not ({INPUT_NAME})")
        outputs = {arg.name: arg for arg in self.session.get_outputs()}
        missing = [name for name in OUTPUT_NAMES if name not in outputs]
        if missing:
            raise UserError(
                f"{where}: the graph has no output {missing[0]} (iqeclip export writes "
                f"{', '.join(OUTPUT_NAMES)})"
            )
        for arg in [inputs[0], *(outputs[name] for name in OUTPUT_NAMES)]:
            shape = list(arg.shape)
            if (
                arg.type != "tensor(float)"
                or not shape
                or isinstance(shape[0], int)
                or shape[1:] != wanted[arg.name]
            ):
                given = ", ".join("?" if d is None else str(d) for d in shape)
                expected = ", ".join(map(str, ["batch", *wanted[arg.name]]))
                raise UserError(
                    f"{where}: the graph's {arg.name} is {arg.type} ({given}), not float32 "
                    f"({expected}) as its iqeclip.config (img_size {size}) says"
                )

    def predict(self, images: torch.Tensor, setting: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Maps ``(B, S, S)`` and the ``setting``'s image scores ``(B,)``, as ``IQEClip.predict``."""
        if setting not in ("zero", "few"):
            raise ValueError(f"unknown setting {setting!r}")
        feed = {INPUT_NAME: images.detach().to("cpu", torch.float32).contiguous().numpy()}
        maps, zero, few = self.session.run(list(OUTPUT_NAMES), feed)
        return torch.from_numpy(maps), torch.from_numpy(zero if setting == "zero" else few)


def _check_weights(path: Path, where: str) -> None:
    """Refuse an ONNX model with a NaN or infinite weight, as a checkpoint is refused: it would
    give no decision for any input.

    Raises:
        UserError: ``<where>: initializer <name> holds N non-finite values ...``.
    """
    onnx = _require("onnx")
    from onnx import numpy_helper

    try:
        model = onnx.load(str(path))
    except Exception as exc:  # onnx raises its own exception types
        raise UserError(f"{where}: not a readable ONNX model ({first_line(exc)})") from None
    for tensor in model.graph.initializer:
        values = numpy_helper.to_array(tensor)
        if values.dtype.kind == "f":
            bad = int(values.size - np.count_nonzero(np.isfinite(values)))
            if bad:
                raise UserError(
                    f"{where}: initializer {tensor.name} holds {bad} non-finite values "
                    "(NaN/inf): the model is corrupt"
                )


def load_detector(
    backend: str,
    ckpt_path: str | Path | None,
    model_path: str | Path | None,
    device: str,
    model_overrides: dict[str, Any] | None = None,
) -> IQEClip | OnnxDetector:
    """The detector a scoring command runs: a checkpoint (``torch``, on ``resolve_device(device)``)
    or an exported model (``onnx``); each refuses the other's flags and a corrupt calibration
    (:func:`~iqeclip.inference.thresholds.check_thresholds`) before a model is built."""
    if backend == "onnx":
        if model_path is None:
            raise UserError("--backend onnx needs --model FILE.onnx (made by iqeclip export)")
        if ckpt_path is not None or model_overrides:
            given = ["--ckpt_path"] * (ckpt_path is not None) + [
                f"--{k}" for k in model_overrides or {}
            ]
            raise UserError(
                f"--backend onnx: {', '.join(given)} has no effect (the weights are in --model)"
            )
        return OnnxDetector(model_path, device)
    if model_path is not None:
        raise UserError("--model is an exported ONNX model: use it with --backend onnx")
    if ckpt_path is None:
        raise UserError("--ckpt_path is required (or --backend onnx --model FILE.onnx)")
    stored = read_checkpoint(ckpt_path)
    check_thresholds(stored[2].get("thresholds"), f"--ckpt_path {ckpt_path}")
    return IQEClip.from_checkpoint(
        ckpt_path, resolve_device(device), stored, **(model_overrides or {})
    )
