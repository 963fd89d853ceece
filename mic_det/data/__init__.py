"""Datasets: registration of Cityscapes / Foggy Cityscapes and the synthetic shift, and
the paired source/target loading used by the trainer."""
from . import cityscapes, synthetic  # noqa: F401  (register datasets on import)
from . import custom  # noqa: F401  (DATASETS.CUSTOM: registered from a config)
from .custom import register_custom_datasets  # noqa: F401
