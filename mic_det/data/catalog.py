"""One registration policy for every dataset mic_det registers (Cityscapes, the synthetic
shift, DATASETS.CUSTOM): registering a name again replaces mic_det's own earlier
registration (another datasets root, another config), and a name that another module
registered is an error, never silently replaced."""
from typing import Callable, Dict

from detectron2.data import DatasetCatalog, MetadataCatalog

_OURS: Dict[str, Callable] = {}  # name -> the loader mic_det registered under it


class DatasetNameTaken(ValueError):
    """The name is registered with detectron2 by another module."""


def register(name: str, loader: Callable, **metadata) -> None:
    """Register ``loader`` (and ``metadata``) under ``name`` with detectron2's catalogs."""
    if name in DatasetCatalog.list() and DatasetCatalog[name] is not _OURS.get(name):
        raise DatasetNameTaken(
            f"dataset {name!r} is already registered by another module; mic_det does not replace "
            "it. Rename one of the two."
        )
    unregister(name)
    DatasetCatalog.register(name, loader)
    _OURS[name] = loader
    MetadataCatalog.get(name).set(**metadata)


def unregister(name: str) -> None:
    """Remove mic_det's registration of ``name`` and its metadata; a dataset another module
    registered under that name meanwhile is left as it is."""
    if name not in _OURS:
        return
    ours = _OURS.pop(name)
    registered = name in DatasetCatalog.list()
    if registered and DatasetCatalog[name] is ours:
        DatasetCatalog.remove(name)
        registered = False
    if not registered and name in MetadataCatalog.list():
        MetadataCatalog.remove(name)
