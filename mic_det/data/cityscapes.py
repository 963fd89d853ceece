"""Cityscapes and Foggy Cityscapes as detectron2 detection datasets (8 classes).

Layout under the datasets root (``$DETECTRON2_DATASETS``, default ``./datasets``)::

    cityscapes/leftImg8bit/{split}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    cityscapes/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png
    cityscapes/gtFine/{split}/{city}/{city}_{seq}_{frame}_gtFine_polygons.json
    foggy_cityscapes/leftImg8bit_foggy/{split}/{city}/
        {city}_{seq}_{frame}_leftImg8bit_foggy_beta_{0.005,0.01,0.02}.png

One rule for annotations: they always come from ``cityscapes/gtFine``, for Cityscapes
and Foggy Cityscapes alike (the fog is rendered on the same frames).

Boxes are the pixel extent of each gtFine instance of the 8 classes: from
``*_gtFine_instanceIds.png`` (pixel value ``label_id * 1000 + k`` for an instance), or,
when that PNG is missing, from ``*_gtFine_polygons.json`` rasterised in file order the
way cityscapesscripts' ``json2instanceImg`` does (so occlusion by later polygons is
taken into account and both sources give the same boxes). Group regions (``cargroup``)
and classes outside the 8 are ignored. Images without a box are kept.

Parsing every gtFine file takes a while on the real data; ``datasets/prepare_cityscapes.py``
does it once and writes a COCO-style json cache per dataset (see :func:`cache_path`),
which the registered loaders use when present.
"""
from __future__ import annotations

import functools
import glob
import json
import logging
import os
from dataclasses import dataclass
from multiprocessing import Pool
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from detectron2.structures import BoxMode

from ..utils.io import atomic_write
from . import catalog
from .cityscapes_gtfine import (  # noqa: F401  (the class ids are part of this module's interface)
    CITYSCAPES_DA_CLASSES,
    CITYSCAPES_LABEL_IDS,
    INSTANCE_IDS_SUFFIX,
    LABEL_ID_TO_CONTIGUOUS,
    POLYGONS_SUFFIX,
    parse_gtfine,
)

logger = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------
# Folder and file names (relative to the datasets root).
# ---------------------------------------------------------------------------------------
CITYSCAPES_DIR = "cityscapes"  # <root>/cityscapes
FOGGY_DIR = "foggy_cityscapes"  # <root>/foggy_cityscapes
IMAGE_DIR = "leftImg8bit"  # <root>/cityscapes/leftImg8bit/{split}/{city}/
FOGGY_IMAGE_DIR = "leftImg8bit_foggy"  # <root>/foggy_cityscapes/leftImg8bit_foggy/{split}/{city}/
GT_DIR = "gtFine"  # <root>/cityscapes/gtFine/{split}/{city}/  (used by both domains)
CACHE_DIR = "annotations"  # <root>/{cityscapes,foggy_cityscapes}/annotations/mic_det_<name>.json

IMAGE_SUFFIX = "_leftImg8bit.png"
FOGGY_IMAGE_SUFFIX = "_leftImg8bit_foggy_beta_{beta}.png"
CACHE_PREFIX = "mic_det_"

FOGGY_BETAS = ("0.005", "0.01", "0.02")
EVAL_BETA = "0.02"  # the standard benchmark: beta = 0.02 only
SPLITS = ("train", "val")
CACHE_FORMAT_VERSION = 1

README_HINT = "datasets/README.md"

# ---------------------------------------------------------------------------------------
# Dataset definitions.
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class CityscapesDASplit:
    """One registered dataset: a domain ("cityscapes" or "foggy"), a split, and for
    foggy data the fog densities (betas) it includes."""

    name: str
    domain: str
    split: str
    betas: Tuple[str, ...] = ()

    @property
    def dataset_dir(self) -> str:
        return CITYSCAPES_DIR if self.domain == "cityscapes" else FOGGY_DIR

    def image_dir(self, root: str) -> str:
        sub = IMAGE_DIR if self.domain == "cityscapes" else FOGGY_IMAGE_DIR
        return os.path.join(root, self.dataset_dir, sub, self.split)

    def gt_dir(self, root: str) -> str:
        return os.path.join(root, CITYSCAPES_DIR, GT_DIR, self.split)

    def image_suffixes(self) -> Tuple[str, ...]:
        if self.domain == "cityscapes":
            return (IMAGE_SUFFIX,)
        return tuple(FOGGY_IMAGE_SUFFIX.format(beta=b) for b in self.betas)


CITYSCAPES_DA_DATASETS: Dict[str, CityscapesDASplit] = {}
for _split in SPLITS:
    for _spec in (
        CityscapesDASplit(f"cityscapes_fine_{_split}", "cityscapes", _split),
        CityscapesDASplit(f"foggy_cityscapes_{_split}", "foggy", _split, (EVAL_BETA,)),
        CityscapesDASplit(f"foggy_cityscapes_all_betas_{_split}", "foggy", _split, FOGGY_BETAS),
    ):
        CITYSCAPES_DA_DATASETS[_spec.name] = _spec
del _split, _spec


def _spec(name: str) -> CityscapesDASplit:
    if name not in CITYSCAPES_DA_DATASETS:
        raise KeyError(
            f"Unknown Cityscapes DA dataset {name!r}; known: {sorted(CITYSCAPES_DA_DATASETS)}"
        )
    return CITYSCAPES_DA_DATASETS[name]


def cache_path(root: str, name: str) -> str:
    """Where ``datasets/prepare_cityscapes.py`` writes the cache of dataset ``name``:
    ``<root>/cityscapes/annotations/mic_det_<name>.json`` for Cityscapes and
    ``<root>/foggy_cityscapes/annotations/mic_det_<name>.json`` for Foggy Cityscapes."""
    spec = _spec(name)
    return os.path.join(root, spec.dataset_dir, CACHE_DIR, f"{CACHE_PREFIX}{name}.json")


# ---------------------------------------------------------------------------------------
# Listing images and building dataset dicts.
# ---------------------------------------------------------------------------------------
def _missing_path_error(name: str, path: str, what: str) -> FileNotFoundError:
    env = os.environ.get("DETECTRON2_DATASETS")
    env_txt = f"DETECTRON2_DATASETS={env!r}" if env is not None else "DETECTRON2_DATASETS is not set"
    return FileNotFoundError(
        f"Dataset {name!r}: {what} not found: {os.path.abspath(path)} . "
        f"Set DETECTRON2_DATASETS to the folder holding {CITYSCAPES_DIR}/ and {FOGGY_DIR}/ "
        f"({env_txt}); the expected layout is described in {README_HINT}."
    )


def _check_dirs(root: str, spec: CityscapesDASplit, need_gt: bool = True) -> None:
    checks = [
        (root, "datasets root"),
        (os.path.join(root, spec.dataset_dir), "dataset folder"),
        (spec.image_dir(root), "image folder"),
    ]
    if need_gt:
        checks += [
            (os.path.join(root, CITYSCAPES_DIR), "Cityscapes folder (annotations)"),
            (spec.gt_dir(root), "gtFine annotation folder"),
        ]
    for path, what in checks:
        if not os.path.isdir(path):
            raise _missing_path_error(spec.name, path, what)


def _rel(*parts: str) -> str:
    return "/".join(parts)


def _abs(root: str, rel: str) -> str:
    return os.path.join(root, *rel.split("/"))


def _list_images(root: str, spec: CityscapesDASplit) -> List[Tuple[str, str]]:
    """Sorted ``(image path relative to root, gtFine prefix relative to root)`` pairs."""
    _check_dirs(root, spec)
    image_dir = spec.image_dir(root)
    img_sub = os.path.relpath(image_dir, root).replace(os.sep, "/")
    gt_sub = _rel(CITYSCAPES_DIR, GT_DIR, spec.split)
    out = []
    for suffix in spec.image_suffixes():
        pattern = os.path.join(image_dir, "*", "*" + suffix)
        files = glob.glob(pattern)
        if not files:
            raise FileNotFoundError(
                f"Dataset {spec.name!r}: no images found in {os.path.abspath(image_dir)} ; expected "
                f"files named {spec.split}/{{city}}/{{city}}_{{seq}}_{{frame}}{suffix} "
                f"(pattern {pattern}). See {README_HINT}."
            )
        for path in files:
            city, fname = os.path.basename(os.path.dirname(path)), os.path.basename(path)
            base = fname[: -len(suffix)]
            out.append((_rel(img_sub, city, fname), _rel(gt_sub, city, base)))
    out.sort()
    return out


def _check_gt(root: str, name: str, image_rel: str, gt_rel: str) -> None:
    prefix = _abs(root, gt_rel)
    png, js = prefix + INSTANCE_IDS_SUFFIX, prefix + POLYGONS_SUFFIX
    if not (os.path.isfile(png) or os.path.isfile(js)):
        raise FileNotFoundError(
            f"Dataset {name!r}: image {_abs(root, image_rel)} has no gtFine annotation: neither "
            f"{png} nor {js} exists (annotations always come from {CITYSCAPES_DIR}/{GT_DIR}; "
            f"see {README_HINT})."
        )


def _parse_many(prefixes: Sequence[str], num_workers: int) -> List[Tuple[int, int, List[dict]]]:
    if num_workers > 1 and len(prefixes) > 1:
        with Pool(num_workers) as pool:
            return pool.map(parse_gtfine, prefixes, chunksize=max(1, len(prefixes) // (8 * num_workers)))
    return [parse_gtfine(p) for p in prefixes]


def parse_datasets(root: str, names: Iterable[str], num_workers: int = 0) -> Dict[str, List[dict]]:
    """Build the dataset dicts of several datasets by parsing gtFine, each gtFine file
    once even when several datasets (Cityscapes, each fog density) share it."""
    listings = {}
    for name in names:
        spec = _spec(name)
        listings[name] = _list_images(root, spec)
        for image_rel, gt_rel in listings[name]:
            _check_gt(root, name, image_rel, gt_rel)
    prefixes = sorted({gt for listing in listings.values() for _, gt in listing})
    parsed = dict(zip(prefixes, _parse_many([_abs(root, p) for p in prefixes], num_workers)))
    out = {}
    for name, listing in listings.items():
        dicts = []
        for image_id, (image_rel, gt_rel) in enumerate(listing):
            height, width, annos = parsed[gt_rel]
            dicts.append(
                {
                    "file_name": _abs(root, image_rel),
                    "image_id": image_id,
                    "height": height,
                    "width": width,
                    "annotations": [dict(a, bbox=list(a["bbox"])) for a in annos],
                }
            )
        out[name] = dicts
    return out


def parse_cityscapes_da(root: str, name: str, num_workers: int = 0) -> List[dict]:
    """Dataset dicts of ``name`` parsed from gtFine (no cache)."""
    return parse_datasets(root, [name], num_workers)[name]


# ---------------------------------------------------------------------------------------
# Cache (COCO-style json, file names relative to the root).
# ---------------------------------------------------------------------------------------
def dicts_to_coco(root: str, name: str, dicts: List[dict]) -> dict:
    """COCO-style json of dataset dicts: file names relative to ``root`` ("/"-separated),
    boxes XYWH, category ids 1..8 (``CITYSCAPES_DA_CLASSES`` order)."""
    images, annotations = [], []
    root_abs = os.path.abspath(root)
    for d in dicts:
        rel = os.path.relpath(os.path.abspath(d["file_name"]), root_abs).replace(os.sep, "/")
        images.append({"id": d["image_id"], "file_name": rel, "height": d["height"], "width": d["width"]})
        for a in d["annotations"]:
            x0, y0, x1, y1 = BoxMode.convert(a["bbox"], a["bbox_mode"], BoxMode.XYXY_ABS)
            w, h = x1 - x0, y1 - y0
            annotations.append(
                {
                    "id": len(annotations) + 1,
                    "image_id": d["image_id"],
                    "bbox": [x0, y0, w, h],
                    "area": w * h,
                    "category_id": a["category_id"] + 1,
                    "iscrowd": a.get("iscrowd", 0),
                }
            )
    return {
        "info": {
            "description": f"mic_det annotation cache of {name} (datasets/prepare_cityscapes.py)",
            "mic_det_cache_version": CACHE_FORMAT_VERSION,
            "dataset_name": name,
            "file_names": "relative to the datasets root ($DETECTRON2_DATASETS)",
        },
        "images": images,
        "annotations": annotations,
        "categories": [{"id": i + 1, "name": c} for i, c in enumerate(CITYSCAPES_DA_CLASSES)],
    }


def coco_to_dicts(root: str, coco: dict) -> List[dict]:
    """Inverse of :func:`dicts_to_coco`."""
    per_image: Dict[int, List[dict]] = {}
    for a in coco["annotations"]:
        x, y, w, h = a["bbox"]
        per_image.setdefault(a["image_id"], []).append(
            {
                "bbox": [x, y, x + w, y + h],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": a["category_id"] - 1,
                "iscrowd": a.get("iscrowd", 0),
            }
        )
    return [
        {
            "file_name": _abs(root, img["file_name"]),
            "image_id": img["id"],
            "height": img["height"],
            "width": img["width"],
            "annotations": per_image.get(img["id"], []),
        }
        for img in coco["images"]
    ]


def write_cache(root: str, name: str, dicts: List[dict]) -> str:
    """Write the cache of ``name`` (atomically) and return its path."""
    path = cache_path(root, name)
    with atomic_write(path) as f:
        json.dump(dicts_to_coco(root, name, dicts), f)
    return path


def read_cache(root: str, name: str) -> Optional[List[dict]]:
    """Dataset dicts from the cache of ``name``, or None when there is no usable cache."""
    path = cache_path(root, name)
    if not os.path.isfile(path):
        return None
    with open(path) as f:
        coco = json.load(f)
    info = coco.get("info", {})
    cats = [c["name"] for c in sorted(coco.get("categories", []), key=lambda c: c["id"])]
    if (
        info.get("mic_det_cache_version") != CACHE_FORMAT_VERSION
        or info.get("dataset_name") != name
        or tuple(cats) != CITYSCAPES_DA_CLASSES
    ):
        logger.warning(
            "Ignoring %s: written for another dataset or cache version; re-run "
            "datasets/prepare_cityscapes.py", path,
        )
        return None
    return coco_to_dicts(root, coco)


def prepare_caches(
    root: str,
    splits: Sequence[str] = SPLITS,
    names: Optional[Sequence[str]] = None,
    num_workers: int = 0,
) -> Dict[str, str]:
    """Parse gtFine once per split and write the caches of the datasets of ``splits``
    (all of them, or only ``names``). Returns ``{dataset_name: cache path}``."""
    selected = [
        n for n, s in CITYSCAPES_DA_DATASETS.items()
        if s.split in splits and (names is None or n in names)
    ]
    written = {}
    for split in splits:
        group = [n for n in selected if CITYSCAPES_DA_DATASETS[n].split == split]
        if not group:
            continue
        for name, dicts in parse_datasets(root, group, num_workers).items():
            written[name] = write_cache(root, name, dicts)
            logger.info("Wrote %s (%d images)", written[name], len(dicts))
    return written


# ---------------------------------------------------------------------------------------
# Loader and registration.
# ---------------------------------------------------------------------------------------
def load_cityscapes_da(root: str, name: str, use_cache: bool = True) -> List[dict]:
    """The dataset dicts of ``name`` under ``root``: from the cache written by
    ``datasets/prepare_cityscapes.py`` when present, otherwise parsed from gtFine."""
    spec = _spec(name)
    if use_cache:
        dicts = read_cache(root, name)
        if dicts is not None:
            _check_dirs(root, spec, need_gt=False)  # a clear error now rather than a missing file later
            logger.info("Loaded %d images of %s from cache %s", len(dicts), name, cache_path(root, name))
            return dicts
    dicts = parse_cityscapes_da(root, name)
    logger.info(
        "Parsed %d images of %s from gtFine. To load faster, run once: "
        "python datasets/prepare_cityscapes.py --root %s", len(dicts), name, root,
    )
    return dicts


def register_all_cityscapes_da(root: str) -> None:
    """Register every Cityscapes / Foggy Cityscapes detection dataset under ``root``.

    Never touches the disk (loading is lazy). Safe to call again, e.g. with another root
    (see catalog.py for the policy)."""
    for name, spec in CITYSCAPES_DA_DATASETS.items():
        catalog.register(
            name,
            functools.partial(load_cityscapes_da, root, name),
            thing_classes=list(CITYSCAPES_DA_CLASSES),
            evaluator_type="coco",
            image_root=spec.image_dir(root),
            gt_dir=spec.gt_dir(root),
            domain=spec.domain,
            split=spec.split,
            foggy_betas=list(spec.betas),
        )


register_all_cityscapes_da(os.getenv("DETECTRON2_DATASETS", "datasets"))
