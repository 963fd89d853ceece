"""Cityscapes gtFine annotations as detection boxes: the 8 instance classes of the
domain-adaptation benchmarks and their label ids (from cityscapesscripts), and the
parsing of one frame's ``*_gtFine_instanceIds.png`` (or, without it, its polygons json)
into one box per instance. Shared by Cityscapes and Foggy Cityscapes, which have the
same annotations. Why not detectron2's ``load_cityscapes_instances``: docs/datasets.md
("Why mic_det reads gtFine itself")."""
from __future__ import annotations

import json
import logging
import os
from typing import Dict, List, Tuple

import numpy as np
from detectron2.structures import BoxMode

logger = logging.getLogger(__name__)

INSTANCE_IDS_SUFFIX = "_gtFine_instanceIds.png"
POLYGONS_SUFFIX = "_gtFine_polygons.json"

# ---------------------------------------------------------------------------------------
# Classes: contiguous ids 0..7 in this order; Cityscapes label ids from cityscapesscripts.
# ---------------------------------------------------------------------------------------
CITYSCAPES_DA_CLASSES = ("person", "rider", "car", "truck", "bus", "train", "motorcycle", "bicycle")


def _label_ids() -> Tuple[int, ...]:
    from cityscapesscripts.helpers.labels import name2label

    ids = []
    for name in CITYSCAPES_DA_CLASSES:
        label = name2label[name]
        assert label.hasInstances, f"Cityscapes label {name!r} has no instances"
        ids.append(label.id)
    return tuple(ids)


# Cityscapes label id of each class, in CITYSCAPES_DA_CLASSES order.
CITYSCAPES_LABEL_IDS: Tuple[int, ...] = _label_ids()
# Cityscapes label id -> contiguous category id (0..7).
LABEL_ID_TO_CONTIGUOUS: Dict[int, int] = {lid: i for i, lid in enumerate(CITYSCAPES_LABEL_IDS)}


# ---------------------------------------------------------------------------------------
# Parsing gtFine annotations.
# ---------------------------------------------------------------------------------------
def boxes_from_instance_map(id_map: np.ndarray) -> List[dict]:
    """Boxes of the 8-class instances in a Cityscapes instance-id map.

    Pixel values >= 1000 are instances (Cityscapes label id = value // 1000); smaller
    values are classes without instances or group regions and are ignored. Each box is
    the pixel extent of one instance, ``[x0, y0, x1, y1]`` with x1/y1 exclusive
    (max + 1). Annotations are sorted by instance id.
    """
    if id_map.ndim != 2:
        raise ValueError(f"expected a single-channel instance-id map, got shape {id_map.shape}")
    ys, xs = np.nonzero(id_map >= 1000)
    vals = id_map[ys, xs].astype(np.int64)
    keep = np.isin(vals // 1000, CITYSCAPES_LABEL_IDS)
    if not keep.any():
        return []
    ys, xs, vals = ys[keep], xs[keep], vals[keep]
    order = np.argsort(vals, kind="stable")
    ys, xs, vals = ys[order], xs[order], vals[order]
    inst_ids, starts = np.unique(vals, return_index=True)
    x0 = np.minimum.reduceat(xs, starts)
    x1 = np.maximum.reduceat(xs, starts) + 1
    y0 = np.minimum.reduceat(ys, starts)
    y1 = np.maximum.reduceat(ys, starts) + 1
    annos = []
    for i, inst in enumerate(inst_ids.tolist()):
        annos.append(
            {
                "bbox": [int(x0[i]), int(y0[i]), int(x1[i]), int(y1[i])],
                "bbox_mode": BoxMode.XYXY_ABS,
                "category_id": LABEL_ID_TO_CONTIGUOUS[inst // 1000],
                "iscrowd": 0,
            }
        )
    return annos


def read_instance_ids_png(path: str) -> np.ndarray:
    """Read a ``*_gtFine_instanceIds.png`` (16-bit single-channel PNG) as int32."""
    import cv2

    arr = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if arr is None:  # unusual encodings: let PIL try
        from PIL import Image

        with Image.open(path) as im:
            arr = np.asarray(im)
    if arr.ndim != 2:
        raise ValueError(f"{path}: expected a single-channel instance-id PNG, got shape {arr.shape}")
    return arr.astype(np.int32)


def rasterize_polygons(polygons_json: dict) -> np.ndarray:
    """Instance-id map drawn from a gtFine polygons json, objects in file order, like
    cityscapesscripts' json2instanceImg ("ids" encoding). Deleted objects, objects with
    empty polygons and unknown labels are skipped."""
    from PIL import Image, ImageDraw
    from cityscapesscripts.helpers.labels import labels, name2label

    height, width = int(polygons_json["imgHeight"]), int(polygons_json["imgWidth"])
    img = Image.new("I", (width, height), name2label["unlabeled"].id)
    draw = ImageDraw.Draw(img)
    counts = {lab.name: 0 for lab in labels if lab.hasInstances}
    for obj in polygons_json.get("objects", []):
        if obj.get("deleted", 0):
            continue
        label, polygon = obj.get("label", ""), obj.get("polygon") or []
        is_group = False
        if label not in name2label and label.endswith("group"):
            label, is_group = label[: -len("group")], True
        if label not in name2label:
            logger.debug("Skipping unknown Cityscapes label %r", obj.get("label"))
            continue
        lab = name2label[label]
        value = lab.id
        if lab.hasInstances and not is_group:
            value = lab.id * 1000 + counts[label]
            counts[label] += 1
        if value < 0 or len(polygon) == 0:
            continue
        points = [(float(p[0]), float(p[1])) for p in polygon]
        if len(points) == 1:  # PIL wants >= 2 points; a single vertex is one pixel
            points = points * 2
        draw.polygon(points, fill=int(value))
    return np.asarray(img, dtype=np.int32)


def parse_gtfine(gt_prefix: str) -> Tuple[int, int, List[dict]]:
    """Parse one gtFine annotation: ``gt_prefix`` is the path without the suffix, e.g.
    ``.../gtFine/val/lindau/lindau_000000_000019``. Uses ``<prefix>_gtFine_instanceIds.png``,
    or ``<prefix>_gtFine_polygons.json`` when the PNG is missing.
    Returns ``(height, width, annotations)``."""
    png = gt_prefix + INSTANCE_IDS_SUFFIX
    if os.path.isfile(png):
        id_map = read_instance_ids_png(png)
    else:
        js = gt_prefix + POLYGONS_SUFFIX
        if not os.path.isfile(js):
            raise FileNotFoundError(f"Neither {png} nor {js} exists")
        with open(js) as f:
            id_map = rasterize_polygons(json.load(f))
    height, width = id_map.shape
    return int(height), int(width), boxes_from_instance_map(id_map)
