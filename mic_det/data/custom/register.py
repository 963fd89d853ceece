"""Registration of DATASETS.CUSTOM: each node read by the reader of its format, then one
pass that maps the dataset's class names onto DATASETS.CLASSES."""
import functools
import logging
from collections import Counter
from typing import List

from detectron2.data import DatasetCatalog, MetadataCatalog

from .. import catalog
from . import coco, images, voc, yolo
from .classes import ClassMapping
from .spec import CustomDatasetError, DatasetSpec

logger = logging.getLogger(__name__)

# Each reader has class_names(spec) -> (names, where they come from, parsed file or None),
# cheap, called at registration; and read(spec) -> dataset dicts with class names, called
# when the dataset is first used.
READERS = {"coco": coco, "voc": voc, "yolo": yolo, "images": images}

# Names registered by register_custom_datasets (replaced on the next call).
_REGISTERED: List[str] = []


def map_classes(dicts: List[dict], spec: DatasetSpec, mapping: ClassMapping) -> List[dict]:
    """Replace each box's dataset class name by its id in the class list; drop the boxes
    of ignored classes (their images stay, as background)."""
    for d in dicts:
        kept = []
        for a in d["annotations"]:
            name = a.pop("category_name")
            source = a.pop("annotation_file", None)
            try:
                category_id = mapping.lookup(name)
            except KeyError:
                raise mapping.unknown_error([name], [name], spec.name, source or spec.format) from None
            if category_id is None:
                continue
            if "invalid" in a:
                raise CustomDatasetError(a["invalid"])
            kept.append({**a, "category_id": category_id})
        d["annotations"] = kept
    return dicts


def load(spec: DatasetSpec, mapping: ClassMapping) -> List[dict]:
    """The dataset dicts of one custom dataset, classes mapped (what DatasetCatalog.get returns)."""
    dicts = map_classes(READERS[spec.format].read(spec), spec, mapping)
    counts = Counter(a["category_id"] for d in dicts for a in d["annotations"])
    empty = sum(1 for d in dicts if not d["annotations"])
    logger.info(
        f"Custom dataset {spec.name!r} ({spec.format}): {len(dicts)} images, "
        f"{sum(counts.values())} boxes ({', '.join(f'{c}={counts[i]}' for i, c in enumerate(mapping.classes))}), "
        f"{empty} images without a box"
    )
    return dicts


def register_custom_datasets(cfg) -> List[str]:
    """Register every dataset of ``cfg.DATASETS.CUSTOM`` with detectron2 (replacing the
    custom datasets a previous call registered) and return their names.

    Checks the nodes, the folders and the class names now; images and labels are read
    when a dataset is first used. Call it in every process, before building a trainer."""
    for name in _REGISTERED:
        catalog.unregister(name)
    _REGISTERED.clear()

    nodes = cfg.DATASETS.get("CUSTOM", None) or {}
    if not nodes:
        return []
    mapping = ClassMapping(
        list(cfg.DATASETS.get("CLASSES", ())), list(cfg.DATASETS.get("CLASS_MAP", ())), list(cfg.DATASETS.get("IGNORE_CLASSES", ()))
    )
    specs = {str(name): DatasetSpec(str(name), node) for name, node in nodes.items()}
    for name in specs:
        if name in DatasetCatalog.list():
            raise CustomDatasetError(
                f"DATASETS.CUSTOM.{name}: a dataset named {name!r} is already registered (a built-in one); "
                "choose another name."
            )
    names = {name: READERS[spec.format].class_names(spec) for name, spec in specs.items()}

    if not mapping.classes:
        first = cfg.DATASETS.TRAIN[0] if cfg.DATASETS.TRAIN else None
        if first in specs:
            classes = mapping.classes_from(names[first][0])
        elif first is not None and first in MetadataCatalog.list() and MetadataCatalog.get(first).get("thing_classes"):
            classes = [c for c in MetadataCatalog.get(first).thing_classes]
        else:
            raise CustomDatasetError(
                "DATASETS.CLASSES is empty and the first DATASETS.TRAIN dataset "
                f"({first!r}) gives no class list: set DATASETS.CLASSES."
            )
        if not classes:
            raise CustomDatasetError(
                f"DATASETS.CLASSES is empty and {first!r} has no class left after DATASETS.IGNORE_CLASSES "
                f"{mapping.ignore} (its classes: {names[first][0]}): set DATASETS.CLASSES."
            )
        mapping.set_classes(classes)
        logger.info(f"DATASETS.CLASSES is empty: using the classes of {first!r}: {classes}")

    for name, spec in specs.items():
        dataset_names, source, data = names.pop(name)
        mapping.map_names(dataset_names, name, source)  # raises, listing both sides
        meta = dict(
            thing_classes=list(mapping.classes),
            evaluator_type="coco",
            custom_format=spec.format,
            dataset_classes=list(dataset_names),
        )
        if spec.format == "coco":
            # The json can be the evaluation ground truth only if its categories are
            # exactly the class list; otherwise detectron2's COCOEvaluator converts the
            # (mapped) dataset dicts to COCO json itself.
            identity = coco.identity_mapping(data, mapping)
            if identity is not None:
                meta.update(json_file=spec.path("JSON_FILE"), thing_dataset_id_to_contiguous_id=identity)
        catalog.register(name, functools.partial(load, spec, mapping), **meta)
        _REGISTERED.append(name)
    logger.info(f"Registered custom datasets {list(specs)} with classes {mapping.classes}")
    return list(specs)
