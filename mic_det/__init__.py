"""mic_det: domain-adaptive object detection (SADA + MIC) for detectron2.

Importing the package registers the meta-architecture and the datasets.
"""
from . import data, modeling  # noqa: F401  (registration side effects)
from .config import add_mic_config

__all__ = ["add_mic_config"]
__version__ = "0.1.0"
