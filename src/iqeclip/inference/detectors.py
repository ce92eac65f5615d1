"""The detectors that score images: the PyTorch model of a checkpoint or an exported ONNX model,
behind one face (:class:`Detector`), and :func:`load_detector`, which loads either.

Inference (test, calibrate, predict, serve, the benchmark) uses only that face: ``config`` (the
:class:`~iqeclip.config.ModelConfig`), ``meta`` (the training run and calibrated thresholds),
``device`` and ``predict(images, setting)``. onnx and onnxruntime come with the
``iqeclip[export]`` extra and are imported only when an ONNX model is loaded; the ONNX file's
names and metadata keys are :data:`INPUT_NAME`, :data:`OUTPUT_NAMES` and :data:`META_KEYS`
(:mod:`~iqeclip.inference.export` writes them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch

from iqeclip.config import ModelConfig
from iqeclip.errors import UserError, first_line, param
from iqeclip.inference.thresholds import check_thresholds
from iqeclip.model.checkpoint import read_checkpoint, stored_config, stored_json, stored_meta
from iqeclip.model.detector import IQEClip
from iqeclip.runtime.device import resolve_device

__all__ = ["INPUT_NAME", "META_KEYS", "OUTPUT_NAMES", "Detector", "OnnxDetector", "load_detector"]


@runtime_checkable
class Detector(Protocol):
    """What scores a batch: :class:`~iqeclip.model.detector.IQEClip` and :class:`OnnxDetector`.

    Attributes:
        config: the model's configuration (``img_size`` is the side of its inputs).
        meta: the checkpoint's metadata: ``run`` (the training options), ``thresholds``.
        device: where ``predict`` wants its inputs.
    """

    config: ModelConfig
    meta: dict[str, Any]
    device: torch.device

    def predict(self, images: torch.Tensor, setting: str) -> tuple[torch.Tensor, torch.Tensor]:
        """Anomaly maps ``(B, S, S)`` and image scores ``(B,)`` of ``(B, 3, S, S)`` images in
        [0, 1]."""
        ...


INPUT_NAME = "images"
OUTPUT_NAMES = ("maps", "score_zero", "score_few")
META_KEYS = {"config": "iqeclip.config", "meta": "iqeclip.meta", "version": "iqeclip.version"}


def require(module: str) -> Any:
    """Import an optional package of the ``export`` extra, or say how to install it."""
    try:
        return __import__(module)
    except ImportError:
        raise UserError(
            f"{module} is not installed: pip install 'iqeclip[export]' (onnx and onnxruntime)"
        ) from None


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
        ort = require("onnxruntime")
        path = Path(path)
        if not path.is_file():
            raise UserError(f"{param('model')} {path}: no such file")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads or torch.get_num_threads()
        options.inter_op_num_threads = 1
        providers: list[Any] = ["CPUExecutionProvider"]
        cuda = "CUDAExecutionProvider" in ort.get_available_providers()
        if device.startswith("cuda") and not cuda:
            raise UserError(
                f"{param('device')} {device}: this onnxruntime has no CUDA provider "
                f"(pip install onnxruntime-gpu), use {param('device')} cpu"
            )
        if device.startswith("cuda") or (device == "auto" and cuda):
            index = int(device.partition(":")[2] or 0)
            providers.insert(0, ("CUDAExecutionProvider", {"device_id": index}))
        try:
            self.session = ort.InferenceSession(str(path), options, providers=providers)
        except Exception as exc:  # onnxruntime raises its own exception types
            raise UserError(
                f"{param('model')} {path}: not a readable ONNX model ({first_line(exc)})"
            ) from None
        props = self.session.get_modelmeta().custom_metadata_map
        if META_KEYS["config"] not in props:
            raise UserError(
                f"{param('model')} {path}: not exported by iqeclip export (no iqeclip.config)"
            )
        where = f"{param('model')} {path}"
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
    onnx = require("onnx")
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
            raise UserError(
                f"{param('backend')} onnx needs {param('model')} FILE.onnx (made by iqeclip export)"
            )
        if ckpt_path is not None or model_overrides:
            given = [param("ckpt_path")] * (ckpt_path is not None) + [
                param(k) for k in model_overrides or {}
            ]
            raise UserError(
                f"{param('backend')} onnx: {', '.join(given)} has no effect (the weights are in "
                f"{param('model')})"
            )
        return OnnxDetector(model_path, device)
    if model_path is not None:
        raise UserError(
            f"{param('model')} is an exported ONNX model: use it with {param('backend')} onnx"
        )
    if ckpt_path is None:
        raise UserError(
            f"{param('ckpt_path')} is required (or {param('backend')} onnx {param('model')} "
            "FILE.onnx)"
        )
    stored = read_checkpoint(ckpt_path)
    check_thresholds(stored[2].get("thresholds"), f"{param('ckpt_path')} {ckpt_path}")
    return IQEClip.from_checkpoint(
        ckpt_path, resolve_device(device), stored, **(model_overrides or {})
    )
