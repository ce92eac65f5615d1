"""IQE-CLIP: instance-aware query embedding for zero/few-shot anomaly detection in medical images.

The public API::

    import iqeclip
    result = iqeclip.predict("ckpt/Brain_4.pth", ["scan.nii.gz", "photos/"])  # nothing written
    for p in result.slices:
        print(p.path, p.slice, p.score, p.decision, p.map.shape)
    iqeclip.predict("ckpt/Brain_4.pth", ["scans/"], out="predictions")  # the files predict writes

    detector = iqeclip.load_detector("torch", "ckpt/Brain_4.pth", None, "cpu")  # once, then
    iqeclip.predict(None, ["a.png"], detector=detector)                           # many calls

    from iqeclip import IQEClip, ModelConfig
    model = IQEClip.build(ModelConfig(model_name="iqe-tiny", pretrain="none", img_size=64))
    published = IQEClip.from_published("Brain_4.pth")  # a checkpoint of the published code

    iqeclip.build_bank("ckpt/Brain.pth", "ckpt/Brain_bank.pth", normal="my/normal")  # a memory

:func:`predict` returns :class:`~iqeclip.inference.results.Predictions`; a new file format is
one reader class and :func:`register_reader`, a new per-slice output one function and
:func:`register_writer`. The package's open_clip model configs (``iqe-tiny``) are registered
with open_clip when :mod:`iqeclip.model.backbone` is first imported (``iqeclip.IQEClip``
imports it).
"""

import importlib
from typing import Any

from iqeclip.config import ModelConfig

__version__ = "0.1.0"

_LAZY = {
    "IQEClip": "iqeclip.model.detector",
    "Detector": "iqeclip.inference.detectors",
    "load_detector": "iqeclip.inference.detectors",
    "predict": "iqeclip.inference.predict",
    "Predictions": "iqeclip.inference.results",
    "SlicePrediction": "iqeclip.inference.results",
    "VolumePrediction": "iqeclip.inference.results",
    "register_writer": "iqeclip.inference.writers",
    "register_reader": "iqeclip.data.readers",
    "build_bank": "iqeclip.inference.bank",
}

__all__ = ["ModelConfig", "__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    """The API beyond :class:`ModelConfig` is imported on first use: ``import iqeclip`` (and
    every ``iqeclip --help``, ``--version`` or argument error) does not import torch or
    open_clip."""
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        return getattr(module, "register" if name == "register_reader" else name)
    raise AttributeError(f"module 'iqeclip' has no attribute {name!r}")
