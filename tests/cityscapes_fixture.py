"""A tiny Cityscapes / Foggy Cityscapes tree in the official layout, for tests.

``write_cityscapes_tree(root)`` writes, under ``root``::

    cityscapes/leftImg8bit/{train,val}/{city}/{city}_{seq}_{frame}_leftImg8bit.png
    cityscapes/gtFine/{train,val}/{city}/{city}_{seq}_{frame}_gtFine_instanceIds.png
    cityscapes/gtFine/{train,val}/{city}/{city}_{seq}_{frame}_gtFine_polygons.json
    foggy_cityscapes/leftImg8bit_foggy/{train,val}/{city}/
        {city}_{seq}_{frame}_leftImg8bit_foggy_beta_{beta}.png

Objects are axis-aligned rectangles (given with exclusive x1/y1), drawn in order so that
later objects cover earlier ones, exactly as in the real annotations. The instanceIds
PNG is written directly with numpy (16-bit, like the real files), the polygons JSON
lists the rectangles' corner pixels. ``EXPECTED_BOXES`` holds the boxes a correct
loader must produce, written out by hand (not computed), including the effect of
occlusion, image-border boxes, a one-pixel instance, and objects that must be ignored
(classes outside the 8, group regions, empty polygons, deleted objects).
"""
from __future__ import annotations

import json
import os
from typing import Dict, List, Sequence, Tuple

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import name2label

HEIGHT, WIDTH = 64, 128
BETAS = ("0.005", "0.01", "0.02")

# (split, city, "{city}_{seq}_{frame}") -> objects drawn in order after sky and road:
# (label, (x0, y0, x1, y1) exclusive) ; label None-polygon / deleted flags via extra keys.
SCENES: Dict[Tuple[str, str, str], List[dict]] = {
    ("train", "aachen", "aachen_000000_000019"): [
        {"label": "person", "rect": (10, 20, 20, 50)},
        {"label": "car", "rect": (15, 15, 40, 60)},  # covers the right half of the person
        {"label": "traffic sign", "rect": (50, 5, 55, 15)},  # not one of the 8 classes
        {"label": "motorcycle", "rect": (80, 35, 100, 45)},
        {"label": "cargroup", "rect": (60, 30, 90, 50)},  # group region: no box; covers x<90
        {"label": "rider", "rect": (100, 10, 110, 40)},
    ],
    ("train", "aachen", "aachen_000001_000019"): [
        {"label": "truck", "rect": (0, 0, 30, 20)},  # touches the top-left corner
        {"label": "bus", "rect": (100, 40, 128, 64)},  # touches the bottom-right corner
        {"label": "caravan", "rect": (40, 30, 60, 50)},  # an instance class, not in the 8
        {"label": "person", "rect": None},  # empty polygon: ignored
        {"label": "car", "rect": (70, 20, 80, 30)},
        {"label": "car", "rect": (82, 20, 90, 28)},
        {"label": "truck", "rect": (5, 40, 25, 60), "deleted": 1},  # deleted: ignored
    ],
    ("train", "bochum", "bochum_000000_000313"): [
        {"label": "train", "rect": (5, 5, 60, 40)},
        {"label": "motorcycle", "rect": (70, 40, 80, 55)},
        {"label": "bicycle", "rect": (90, 40, 100, 60)},
        {"label": "person", "rect": (120, 10, 121, 11)},  # a single pixel
    ],
    ("val", "frankfurt", "frankfurt_000000_000294"): [
        {"label": "person", "rect": (30, 10, 40, 40)},
        {"label": "bicycle", "rect": (28, 25, 45, 50)},  # covers the person's lower part
        {"label": "persongroup", "rect": (60, 10, 80, 30)},
        {"label": "bicyclegroup", "rect": (85, 10, 95, 30)},
    ],
    ("val", "lindau", "lindau_000000_000019"): [  # no box at all: kept, empty
        {"label": "traffic sign", "rect": (10, 5, 20, 15)},
        {"label": "trailer", "rect": (40, 30, 70, 60)},
    ],
    ("val", "lindau", "lindau_000001_000019"): [
        {"label": "car", "rect": (10, 10, 20, 20)},
    ],
}

# base name -> sorted [(class name, [x0, y0, x1, y1])], written out by hand.
EXPECTED_BOXES: Dict[str, List[Tuple[str, List[int]]]] = {
    "aachen_000000_000019": [
        ("car", [15, 15, 40, 60]),
        ("motorcycle", [90, 35, 100, 45]),
        ("person", [10, 20, 15, 50]),
        ("rider", [100, 10, 110, 40]),
    ],
    "aachen_000001_000019": [
        ("bus", [100, 40, 128, 64]),
        ("car", [70, 20, 80, 30]),
        ("car", [82, 20, 90, 28]),
        ("truck", [0, 0, 30, 20]),
    ],
    "bochum_000000_000313": [
        ("bicycle", [90, 40, 100, 60]),
        ("motorcycle", [70, 40, 80, 55]),
        ("person", [120, 10, 121, 11]),
        ("train", [5, 5, 60, 40]),
    ],
    "frankfurt_000000_000294": [
        ("bicycle", [28, 25, 45, 50]),
        ("person", [30, 10, 40, 25]),
    ],
    "lindau_000000_000019": [],
    "lindau_000001_000019": [
        ("car", [10, 10, 20, 20]),
    ],
}


def _rect_polygon(rect):
    x0, y0, x1, y1 = rect
    return [[x0, y0], [x1 - 1, y0], [x1 - 1, y1 - 1], [x0, y1 - 1]]


def _scene_arrays(objects: List[dict]) -> Tuple[np.ndarray, dict]:
    ids = np.zeros((HEIGHT, WIDTH), np.uint16)
    ids[: HEIGHT // 2] = name2label["sky"].id
    ids[HEIGHT // 2 :] = name2label["road"].id
    poly_objects = [
        {"label": "sky", "polygon": _rect_polygon((0, 0, WIDTH, HEIGHT // 2))},
        {"label": "road", "polygon": _rect_polygon((0, HEIGHT // 2, WIDTH, HEIGHT))},
    ]
    counts: Dict[str, int] = {}
    for obj in objects:
        label, rect = obj["label"], obj["rect"]
        entry = {"label": label, "polygon": _rect_polygon(rect) if rect else []}
        if "deleted" in obj:
            entry["deleted"] = obj["deleted"]
        poly_objects.append(entry)
        if rect is None or obj.get("deleted"):
            continue
        if label.endswith("group"):
            value = name2label[label[: -len("group")]].id
        elif name2label[label].hasInstances:
            value = name2label[label].id * 1000 + counts.get(label, 0)
            counts[label] = counts.get(label, 0) + 1
        else:
            value = name2label[label].id
        x0, y0, x1, y1 = rect
        ids[y0:y1, x0:x1] = value
    polygons = {"imgHeight": HEIGHT, "imgWidth": WIDTH, "objects": poly_objects}
    return ids, polygons


def _image(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (HEIGHT, WIDTH, 3), dtype=np.uint8)


def write_cityscapes_tree(
    root,
    splits: Sequence[str] = ("train", "val"),
    instance_ids: bool = True,
    polygons: bool = True,
    betas: Sequence[str] = BETAS,
    foggy: bool = True,
) -> Dict[str, List[str]]:
    """Write the tiny tree under ``root``; return ``{split: [base names, sorted]}``.

    ``instance_ids`` / ``polygons``: write the gtFine ``*_instanceIds.png`` / ``*_polygons.json``;
    ``betas``: fog densities written for Foggy Cityscapes; ``foggy``: write foggy images at all.
    """
    root = str(root)
    out: Dict[str, List[str]] = {}
    for i, ((split, city, base), objects) in enumerate(sorted(SCENES.items())):
        if split not in splits:
            continue
        out.setdefault(split, []).append(base)
        img_dir = os.path.join(root, "cityscapes", "leftImg8bit", split, city)
        gt_dir = os.path.join(root, "cityscapes", "gtFine", split, city)
        os.makedirs(img_dir, exist_ok=True)
        os.makedirs(gt_dir, exist_ok=True)
        cv2.imwrite(os.path.join(img_dir, f"{base}_leftImg8bit.png"), _image(i))
        ids, poly = _scene_arrays(objects)
        if instance_ids:
            cv2.imwrite(os.path.join(gt_dir, f"{base}_gtFine_instanceIds.png"), ids)
        if polygons:
            with open(os.path.join(gt_dir, f"{base}_gtFine_polygons.json"), "w") as f:
                json.dump(poly, f, indent=2)
        if foggy:
            fog_dir = os.path.join(root, "foggy_cityscapes", "leftImg8bit_foggy", split, city)
            os.makedirs(fog_dir, exist_ok=True)
            for beta in betas:
                img = (_image(i) // 2 + 100).astype(np.uint8)
                cv2.imwrite(os.path.join(fog_dir, f"{base}_leftImg8bit_foggy_beta_{beta}.png"), img)
    return {k: sorted(v) for k, v in out.items()}
