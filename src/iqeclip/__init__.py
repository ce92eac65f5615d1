"""IQE-CLIP: instance-aware query embedding for zero/few-shot anomaly detection in medical images.

The public API::

    from iqeclip import IQEClip, ModelConfig
    model = IQEClip.build(ModelConfig(model_name="iqe-tiny", pretrain="none", img_size=64))
    trained = IQEClip.from_checkpoint("ckpt/Brain_4.pth", device="cpu")

Importing the package registers its open_clip model configs (``iqe-tiny``).
"""

from iqeclip.config import ModelConfig
from iqeclip.model.backbone import register_configs
from iqeclip.model.detector import IQEClip

__version__ = "0.1.0"

__all__ = ["IQEClip", "ModelConfig", "__version__"]

register_configs()
