"""IQE-CLIP: instance-aware query embedding for zero/few-shot anomaly detection in medical images.

Importing the package registers its open_clip model configs (``iqe-tiny``).
"""

from iqeclip.model.backbone import register_configs

__version__ = "0.1.0"

register_configs()
