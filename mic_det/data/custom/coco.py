"""FORMAT "coco": a COCO json (``JSON_FILE``) and its images (``IMAGE_ROOT``, default the
json's folder), as exported by CVAT, Roboflow, Label Studio or pycocotools. Checked
more closely than detectron2's ``load_coco_json`` does (duplicate image ids, boxes of
unknown images or categories, missing files: each an error naming the json and the
annotation id), and image sizes missing from the json are read from the image headers."""
import json
import os
from typing import Dict, List, Optional, Tuple

from .classes import ClassMapping
from .records import box_record, check_files_exist, image_size
from .spec import CustomDatasetError, DatasetSpec


def read_json(spec: DatasetSpec) -> Tuple[str, dict]:
    path = spec.path("JSON_FILE", must="file")
    try:
        with open(path) as f:
            data = json.load(f)
    except ValueError as e:
        raise CustomDatasetError(f"{spec.key('JSON_FILE')}: {path!r} is not valid json ({e}).") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise CustomDatasetError(f"{spec.key('JSON_FILE')}: {path!r} has no 'images' list; is it COCO json?")
    if data.get("annotations") and not isinstance(data.get("categories"), list):
        raise CustomDatasetError(f"{spec.key('JSON_FILE')}: {path!r} has annotations but no 'categories' list.")
    return path, data


def categories(data: dict, used_only: bool = False) -> List[Tuple[int, str]]:
    """(id, name) of the json's categories by id; with ``used_only``, only those that
    have a box (exporters such as Roboflow add an unused "supercategory" category)."""
    cats = sorted((int(c["id"]), str(c["name"])) for c in data.get("categories") or [])
    if used_only:
        used = {a.get("category_id") for a in data.get("annotations") or []}
        cats = [(i, n) for i, n in cats if i in used]
    return cats


def class_names(spec: DatasetSpec) -> Tuple[List[str], str, dict]:
    """The names of the categories that have boxes, where they come from, and the parsed
    json (registration keeps it to decide whether the json can be the evaluation ground
    truth). Checks IMAGE_ROOT too."""
    path, data = read_json(spec)
    spec.path("IMAGE_ROOT", must="dir", default=os.path.dirname(path))
    return [n for _, n in categories(data, used_only=True)], f"categories with boxes in {path}", data


def identity_mapping(data: dict, mapping: ClassMapping) -> Optional[Dict[int, int]]:
    """{category id: contiguous id} when the json's categories are exactly the class list
    (one category per class, none ignored, every annotation with an area): then the
    json itself can be the evaluation ground truth. None otherwise."""
    cats = categories(data)
    if len(cats) != len(mapping.classes):
        return None
    ids = {}
    for cid, name in cats:
        try:
            j = mapping.lookup(name)
        except KeyError:
            return None
        if j is None:
            return None
        ids[cid] = j
    if sorted(ids.values()) != list(range(len(mapping.classes))):
        return None
    if any("area" not in a or "bbox" not in a for a in data.get("annotations") or []):
        return None
    return ids


def read(spec: DatasetSpec) -> List[dict]:
    path, data = read_json(spec)
    image_root = spec.path("IMAGE_ROOT", must="dir", default=os.path.dirname(path))
    names = dict(categories(data))
    dicts, by_id = [], {}
    for img in data["images"]:
        file_name = os.path.join(image_root, str(img["file_name"]))
        d = {"file_name": file_name, "image_id": img["id"], "annotations": []}
        if img.get("height") and img.get("width"):
            d["height"], d["width"] = int(img["height"]), int(img["width"])
        if img["id"] in by_id:
            raise CustomDatasetError(f"{spec.key('JSON_FILE')}: {path!r} has image id {img['id']!r} twice.")
        by_id[img["id"]] = d
        dicts.append(d)
    check_files_exist([d["file_name"] for d in dicts], spec, "IMAGE_ROOT")
    for d in dicts:
        if "height" not in d:
            d["height"], d["width"] = image_size(d["file_name"], spec.name)
    for a in data.get("annotations") or []:
        where = f"{spec.key('JSON_FILE')}: {path!r}, annotation id {a.get('id')!r}"
        if a.get("image_id") not in by_id:
            raise CustomDatasetError(f"{where} refers to image id {a.get('image_id')!r}, which is not in 'images'.")
        if a.get("category_id") not in names:
            raise CustomDatasetError(
                f"{where} has category_id {a.get('category_id')!r}, which is not in 'categories' {sorted(names)}."
            )
        bbox = a.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise CustomDatasetError(f"{where} has no [x, y, w, h] 'bbox' (got {bbox!r}).")
        x, y, w, h = (float(v) for v in bbox)
        by_id[a["image_id"]]["annotations"].append(box_record((x, y, x + w, y + h), names[a["category_id"]], a.get("iscrowd", 0)))
    return dicts
