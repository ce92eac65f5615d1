"""IQE-CLIP: instance-aware query embedding for zero/few-shot anomaly detection in medical images.

The public API::

    from iqeclip import IQEClip, ModelConfig
    model = IQEClip.build(ModelConfig(model_name="iqe-tiny", pretrain="none", img_size=64))
    trained = IQEClip.from_checkpoint("ckpt/Brain_4.pth", device="cpu")

The package's open_clip model configs (``iqe-tiny``) are registered with open_clip when
:mod:`iqeclip.model.backbone` is first imported (``iqeclip.IQEClip`` imports it).
"""

from typing import Any

from iqeclip.config import ModelConfig

__version__ = "0.1.0"

__all__ = ["IQEClip", "ModelConfig", "__version__"]


def __getattr__(name: str) -> Any:
    """``IQEClip`` is imported on first use: ``import iqeclip`` (and every ``iqeclip --help``,
    ``--version`` or argument error) does not import torch or open_clip."""
    if name == "IQEClip":
        from iqeclip.model.detector import IQEClip

        return IQEClip
    raise AttributeError(f"module 'iqeclip' has no attribute {name!r}")
