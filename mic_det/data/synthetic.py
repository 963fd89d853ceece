"""The embedded synthetic domain shift as detectron2 datasets: ``synthetic_{clear,foggy}_
{train,val}`` (clear street scenes labelled, foggy ones as the target) and the harder
target ``synthetic_dusk_{train,val}`` (dense fog at dusk under orange street light), with
metadata ``thing_classes``, ``json_file``, ``image_root``, ``evaluator_type="coco"``,
``domain``.

``make demo`` and the tests use it to train and adapt a detector on CPU without any
download. The images are rendered on the first ``DatasetCatalog.get`` and cached under
``$DETECTRON2_DATASETS/synthetic_shift`` (mic_det/datagen/synthetic_shift.py says how).
"""
from __future__ import annotations

import functools
import os
from typing import Dict, List, Tuple

from . import catalog
from ..datagen.synthetic_shift import (
    DATASET_DIRNAME,
    DEFAULT_IMAGE_SIZE,
    DEFAULT_NUM_TRAIN,
    DEFAULT_NUM_VAL,
    DEFAULT_SEED,
    DOMAINS,
    DUSK_DIRNAME,
    DUSK_DOMAINS,
    SPLITS,
    SYNTHETIC_CLASSES,
    generate_synthetic_shift,
    shift_params,
    synthetic_shift_dir,
)

__all__ = ["SYNTHETIC_CLASSES", "register_synthetic_shift"]


def _load_split(root: str, dirname: str, domain: str, split: str, params: dict, dataset_name: str) -> List[Dict]:
    from detectron2.data.datasets import load_coco_json

    domains = tuple(params.get("domains", DOMAINS))
    path = generate_synthetic_shift(root, params["image_size"], params["num_train"], params["num_val"],
                                    params["seed"], dirname=dirname, domains=domains)
    dicts = load_coco_json(
        os.path.join(path, "annotations", f"{domain}_{split}.json"),
        os.path.join(path, domain, split),
        dataset_name=dataset_name,
    )
    for d in dicts:
        d["domain"] = domain
    return dicts


def register_synthetic_shift(
    root: str,
    image_size: Tuple[int, int] = DEFAULT_IMAGE_SIZE,
    num_train: int = DEFAULT_NUM_TRAIN,
    num_val: int = DEFAULT_NUM_VAL,
    seed: int = DEFAULT_SEED,
) -> None:
    """Register ``synthetic_{clear,foggy}_{train,val}`` with their data under
    ``<root>/synthetic_shift``, and the harder target ``synthetic_dusk_{train,val}`` under
    ``<root>/synthetic_dusk`` (each set generated on the first ``DatasetCatalog.get`` of
    one of its datasets). Existing registrations of these names are replaced."""
    for dirname, domains in ((DATASET_DIRNAME, DOMAINS), (DUSK_DIRNAME, DUSK_DOMAINS)):
        params = shift_params(image_size, num_train, num_val, seed, domains)
        path = synthetic_shift_dir(root, dirname)
        for domain in domains:
            for split in SPLITS:
                name = f"synthetic_{domain}_{split}"
                catalog.register(
                    name,
                    functools.partial(_load_split, root, dirname, domain, split, params, name),
                    thing_classes=list(SYNTHETIC_CLASSES),
                    thing_dataset_id_to_contiguous_id={i + 1: i for i in range(len(SYNTHETIC_CLASSES))},
                    json_file=os.path.join(path, "annotations", f"{domain}_{split}.json"),
                    image_root=os.path.join(path, domain, split),
                    evaluator_type="coco",
                    domain=domain,
                    split=split,
                )


register_synthetic_shift(os.getenv("DETECTRON2_DATASETS", "datasets"))
