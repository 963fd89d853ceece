"""Datasets: registration of Cityscapes / Foggy Cityscapes and the synthetic shift, and
the paired source/target loading used by the trainer."""
from . import cityscapes, synthetic  # noqa: F401  (register datasets on import)
