"""Custom detection datasets declared in the config alone: COCO json, Pascal VOC xml and
YOLO txt, with their class names mapped onto one class list.

A practitioner names files in the YAML config and never writes Python::

    DATASETS:
      CLASSES: ["fire", "smoke"]        # the model's classes, in this order
      CLASS_MAP: ["flame:fire"]         # renames, "dataset name:class in CLASSES"
      IGNORE_CLASSES: ["default"]       # boxes dropped, images kept as background
      CUSTOM:
        my_source:                      # one child node per dataset name
          FORMAT: "yolo"
          ROOT: "../shared/data/cctv-fire-smoke"
          SPLIT: "train"
        my_target: {FORMAT: "images", IMAGE_DIR: "/data/night_cameras"}
        my_test: {FORMAT: "coco", JSON_FILE: "/data/test/_annotations.coco.json"}
      TRAIN: ("my_source",)
      TRAIN_TARGET: ("my_target",)
      TEST: ("my_test",)

:func:`register_custom_datasets` (called by ``tools/train_net.py`` in every process, and
by anyone who builds a trainer in Python) checks each node, reads what is cheap (the
class names: a COCO json's categories, a YOLO ``data.yaml``, VOC xml names), maps the
classes and registers each dataset with ``thing_classes`` = the mapped class list and
``evaluator_type="coco"``. Images and labels are read when the dataset is first used
(``DatasetCatalog.get``); nothing is written anywhere.

Per-dataset keys. Paths are absolute, or relative to ``ROOT``; ``ROOT`` itself, when
relative, to the working directory (like every path in a detectron2 config).

- ``FORMAT``: ``coco`` | ``voc`` | ``yolo`` | ``images`` (a folder of unlabelled images).
- ``ROOT``: the dataset folder.
- coco: ``JSON_FILE`` (required); ``IMAGE_ROOT`` (default: the json's folder).
- voc: ``ANN_DIR`` (default ``ROOT/Annotations`` if it exists, else ``ROOT``);
  ``IMAGE_DIR`` (default ``ROOT/JPEGImages`` if it exists, else ``ANN_DIR``); ``SPLIT``
  (reads ``ROOT/ImageSets/Main/<SPLIT>.txt``) or ``IMAGESET`` (a txt of ids), without
  either every image / xml of the folders; ``NAMES`` (the class list; default: the
  names found in the xml files, sorted); ``ONE_BASED`` (default True: VOC devkit pixel
  indices, x0 = xmin - 1, y0 = ymin - 1, as detectron2's VOC loader; False for tools
  that write 0-based coordinates).
- yolo: ``SPLIT`` (images in ``ROOT/<SPLIT>/images`` or ``ROOT/images/<SPLIT>``) or
  ``IMAGE_DIR``; ``LABEL_DIR`` (default: IMAGE_DIR with its last ``images`` folder
  replaced by ``labels``, the Ultralytics rule); ``DATA_YAML`` (default
  ``ROOT/data.yaml``, its ``names``) or ``NAMES`` (the class names by index).
- images: ``IMAGE_DIR`` (default ``ROOT``): every image below it, no annotations.

Boxes become ``XYXY_ABS`` in detectron2's dataset dicts: COCO ``[x, y, w, h]`` ->
``[x, y, x + w, y + h]``; YOLO normalised ``cx cy w h`` times the image size (a line of
more than 5 values is a polygon, boxed by its extent); VOC as above. Image height and
width come from the annotation file when it has them, else from the image header
(PIL, with the EXIF orientation that detectron2's ``read_image`` applies). Images with
no label file or no box are kept (background for the source, plain images for the
target).
"""
from __future__ import annotations

import functools
import json
import logging
import os
import xml.etree.ElementTree as ET
from collections import Counter
from typing import Dict, List, Optional, Sequence, Tuple

from detectron2.data import DatasetCatalog, MetadataCatalog
from detectron2.structures import BoxMode

from ..utils.io import IMAGE_EXTENSIONS, is_image_file, list_images

__all__ = [
    "CustomDatasetError",
    "CustomDatasetFileError",
    "FORMATS",
    "register_custom_datasets",
]

logger = logging.getLogger(__name__)

FORMATS = ("coco", "voc", "yolo", "images")
_KEYS = {
    "coco": ("FORMAT", "ROOT", "JSON_FILE", "IMAGE_ROOT"),
    "voc": ("FORMAT", "ROOT", "ANN_DIR", "IMAGE_DIR", "SPLIT", "IMAGESET", "NAMES", "ONE_BASED"),
    "yolo": ("FORMAT", "ROOT", "SPLIT", "IMAGE_DIR", "LABEL_DIR", "DATA_YAML", "NAMES"),
    "images": ("FORMAT", "ROOT", "IMAGE_DIR"),
}
_EXIF_ORIENTATION = 0x0112
# YOLO coordinates are normalised; beyond this slack they were written in pixels.
_YOLO_TOLERANCE = 0.01

# Names registered by register_custom_datasets (replaced on the next call).
_REGISTERED: List[str] = []


class CustomDatasetError(ValueError):
    """A custom dataset's config, class names or files are wrong. The message names the
    dataset, the config key to fix and, where a file is at fault, the file."""


class CustomDatasetFileError(CustomDatasetError, FileNotFoundError):
    """A folder or file a custom dataset needs does not exist."""


# ---------------------------------------------------------------------------------------
# Class names
# ---------------------------------------------------------------------------------------
def _norm(name) -> str:
    return str(name).strip().lower()


class ClassMapping:
    """``DATASETS.CLASSES`` / ``CLASS_MAP`` / ``IGNORE_CLASSES``: maps a dataset's class
    names (case-insensitively) to contiguous ids of the class list, or to None (ignored)."""

    def __init__(self, classes: Sequence[str], class_map: Sequence[str], ignore: Sequence[str]):
        self.renames: Dict[str, str] = {}
        for entry in class_map:
            src, sep, dst = str(entry).partition(":")
            if not sep or not src.strip() or not dst.strip():
                raise CustomDatasetError(
                    f"DATASETS.CLASS_MAP entry {entry!r} is not of the form 'from:to' "
                    f"(e.g. 'flame:fire'); the whole list is {list(class_map)}."
                )
            key = _norm(src)
            if key in self.renames and _norm(self.renames[key]) != _norm(dst):
                raise CustomDatasetError(
                    f"DATASETS.CLASS_MAP maps {src.strip()!r} twice, to {self.renames[key]!r} and "
                    f"{dst.strip()!r}; the whole list is {list(class_map)}."
                )
            self.renames[key] = dst.strip()
        self.ignore = [str(n).strip() for n in ignore]
        self._ignore = {_norm(n) for n in ignore}
        self.classes: List[str] = []
        if classes:
            self.set_classes(classes)

    def set_classes(self, classes: Sequence[str]) -> None:
        classes = [str(c).strip() for c in classes]
        seen = Counter(_norm(c) for c in classes)
        dup = [c for c in classes if seen[_norm(c)] > 1]
        if dup:
            raise CustomDatasetError(
                f"DATASETS.CLASSES {classes} names {sorted(set(dup))} more than once "
                "(names are compared case-insensitively)."
            )
        clash = [c for c in classes if _norm(c) in self._ignore]
        if clash:
            raise CustomDatasetError(
                f"{clash} are both in DATASETS.CLASSES {classes} and in DATASETS.IGNORE_CLASSES "
                f"{self.ignore}: remove them from one of the two."
            )
        bad = sorted(
            {f"{s}:{d}" for s, d in self.renames.items() if _norm(d) not in {_norm(c) for c in classes} and _norm(d) not in self._ignore}
        )
        if bad:
            raise CustomDatasetError(
                f"DATASETS.CLASS_MAP entries {bad} map to names that are neither in DATASETS.CLASSES "
                f"{classes} nor in DATASETS.IGNORE_CLASSES {self.ignore}."
            )
        self.classes = classes
        self._index = {_norm(c): i for i, c in enumerate(classes)}

    def target_name(self, name: str) -> str:
        return self.renames.get(_norm(name), str(name).strip())

    def is_ignored(self, name: str) -> bool:
        return _norm(name) in self._ignore or _norm(self.target_name(name)) in self._ignore

    def classes_from(self, names: Sequence[str]) -> List[str]:
        """The class list a dataset with these class names implies: renamed, ignored ones
        left out, duplicates (after renaming) merged."""
        out, seen = [], set()
        for n in names:
            if self.is_ignored(n):
                continue
            t = self.target_name(n)
            if _norm(t) not in seen:
                seen.add(_norm(t))
                out.append(t)
        return out

    def lookup(self, name: str) -> Optional[int]:
        """Contiguous id of a dataset class name; None if ignored; KeyError if unknown."""
        if self.is_ignored(name):
            return None
        return self._index[_norm(self.target_name(name))]

    def map_names(self, names: Sequence[str], dataset: str, source: str) -> List[Optional[int]]:
        """Ids for a dataset's class list, or an error listing both sides."""
        unknown = []
        for n in names:
            try:
                self.lookup(n)
            except KeyError:
                unknown.append(n)
        if unknown:
            raise self.unknown_error(unknown, names, dataset, source)
        return [self.lookup(n) for n in names]

    def unknown_error(self, unknown, names, dataset, source) -> CustomDatasetError:
        return CustomDatasetError(
            f"DATASETS.CUSTOM.{dataset}: class name(s) {list(unknown)} match no class of DATASETS.CLASSES.\n"
            f"  dataset classes ({source}): {list(names)}\n"
            f"  expected (DATASETS.CLASSES): {self.classes}\n"
            f"  renamed (DATASETS.CLASS_MAP): {[f'{s}:{d}' for s, d in self.renames.items()]}\n"
            f"  ignored (DATASETS.IGNORE_CLASSES): {self.ignore}\n"
            "Names are matched case-insensitively. Fix it with DATASETS.CLASS_MAP (a rename, "
            f"'{unknown[0]}:<a class of DATASETS.CLASSES>'), DATASETS.IGNORE_CLASSES (drops those "
            "boxes, keeps the images) or DATASETS.CLASSES."
        )


# ---------------------------------------------------------------------------------------
# Paths and images
# ---------------------------------------------------------------------------------------
class _Spec:
    """One DATASETS.CUSTOM.<name> node, checked."""

    def __init__(self, name: str, node):
        self.name = name
        if not hasattr(node, "items"):
            raise CustomDatasetError(
                f"DATASETS.CUSTOM.{name} must be a mapping of keys (FORMAT, ROOT, ...), got {node!r}."
            )
        if "." in name:
            raise CustomDatasetError(f"DATASETS.CUSTOM.{name}: a dataset name cannot contain '.'.")
        self.node = {str(k): v for k, v in node.items()}
        fmt = str(self.node.get("FORMAT", "")).strip().lower()
        if fmt not in FORMATS:
            raise CustomDatasetError(
                f"DATASETS.CUSTOM.{name}.FORMAT must be one of {list(FORMATS)}, got {self.node.get('FORMAT')!r}."
            )
        self.format = fmt
        unknown = sorted(set(self.node) - set(_KEYS[fmt]))
        if unknown:
            raise CustomDatasetError(
                f"DATASETS.CUSTOM.{name}: unknown key(s) {unknown} for FORMAT {fmt!r}; "
                f"the keys of this format are {list(_KEYS[fmt])}."
            )
        if "ONE_BASED" in self.node and not isinstance(self.node["ONE_BASED"], bool):
            raise CustomDatasetError(f"{self.key('ONE_BASED')} must be True or False, got {self.node['ONE_BASED']!r}.")
        if self.has("NAMES") and not isinstance(self.node["NAMES"], (list, tuple)):
            raise CustomDatasetError(f"{self.key('NAMES')} must be a list of class names, got {self.node['NAMES']!r}.")
        self.root = self.path("ROOT", must="dir") if self.node.get("ROOT") else None

    def key(self, key: str) -> str:
        return f"DATASETS.CUSTOM.{self.name}.{key}"

    def has(self, key: str) -> bool:
        v = self.node.get(key)
        return v is not None and v != "" and v != [] and v != ()

    def resolve(self, value: str, relative_to_root: bool = True) -> str:
        value = os.path.expanduser(str(value))
        if not os.path.isabs(value) and relative_to_root and self.root is not None:
            value = os.path.join(self.root, value)
        return os.path.abspath(value)

    def path(self, key: str, must: Optional[str] = None, default: Optional[str] = None) -> str:
        """The absolute path of a key (or of ``default`` when unset); checked when
        ``must`` is "dir" or "file"."""
        raw = self.node.get(key) if self.has(key) else default
        if raw is None:
            raise CustomDatasetError(f"{self.key(key)} is required for FORMAT {self.format!r}.")
        path = self.resolve(raw, relative_to_root=(key != "ROOT"))
        check = {"dir": os.path.isdir, "file": os.path.isfile}.get(must)
        if check is not None and not check(path):
            how = "" if os.path.isabs(os.path.expanduser(str(raw))) else (
                f" (resolved from {raw!r} against "
                + ("the working directory " + os.getcwd() if key == "ROOT" or self.root is None else f"ROOT {self.root}")
                + ")"
            )
            what = "folder" if must == "dir" else "file"
            if not self.has(key):
                key = f"{key} (unset, default {default!r})"
            raise CustomDatasetFileError(f"{self.key(key)}: {what} {path!r} does not exist{how}.")
        return path


def image_size(path: str, dataset: str) -> Tuple[int, int]:
    """(height, width) from the image header, as detectron2's ``read_image`` will see the
    image (EXIF orientation applied). Errors name the file."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            w, h = im.size
            try:
                orientation = im.getexif().get(_EXIF_ORIENTATION, 1)
            except Exception:  # malformed EXIF: detectron2 ignores it too
                orientation = 1
    except FileNotFoundError:
        raise CustomDatasetFileError(f"DATASETS.CUSTOM.{dataset}: image {path!r} does not exist.") from None
    except Exception as e:  # PIL raises UnidentifiedImageError, OSError, SyntaxError, ...
        raise CustomDatasetError(
            f"DATASETS.CUSTOM.{dataset}: cannot read image {path!r} ({type(e).__name__}: {e}). "
            "Replace or delete the file."
        ) from None
    if orientation in (5, 6, 7, 8):
        w, h = h, w
    return int(h), int(w)


def _check_files_exist(paths: Sequence[str], spec: _Spec, key: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise CustomDatasetFileError(
            f"{spec.key(key)}: {len(missing)} of {len(paths)} image file(s) do not exist, e.g. "
            f"{missing[:5]}."
        )


def _annotation(box, category_id: int, iscrowd: int = 0) -> dict:
    return {"bbox": [float(v) for v in box], "bbox_mode": BoxMode.XYXY_ABS, "category_id": int(category_id), "iscrowd": int(iscrowd)}


# ---------------------------------------------------------------------------------------
# COCO json
# ---------------------------------------------------------------------------------------
def _read_json(spec: _Spec) -> Tuple[str, dict]:
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


def _coco_categories(data: dict, used_only: bool = False) -> List[Tuple[int, str]]:
    """(id, name) of the json's categories by id; with ``used_only``, only those that
    have a box (exporters such as Roboflow add an unused "supercategory" category)."""
    cats = sorted((int(c["id"]), str(c["name"])) for c in data.get("categories") or [])
    if used_only:
        used = {a.get("category_id") for a in data.get("annotations") or []}
        cats = [(i, n) for i, n in cats if i in used]
    return cats


def _coco_class_names(spec: _Spec) -> Tuple[List[str], str, dict]:
    path, data = _read_json(spec)
    return [n for _, n in _coco_categories(data, used_only=True)], f"categories with boxes in {path}", data


def _coco_identity(data: dict, mapping: ClassMapping) -> Optional[Dict[int, int]]:
    """{category id: contiguous id} when the json's categories are exactly the class list
    (one category per class, none ignored, every annotation with an area): then the
    json itself can be the evaluation ground truth. None otherwise."""
    cats = _coco_categories(data)
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


def _load_coco(spec: _Spec, mapping: ClassMapping) -> List[dict]:
    path, data = _read_json(spec)
    image_root = spec.path("IMAGE_ROOT", must="dir", default=os.path.dirname(path))
    used = dict(_coco_categories(data, used_only=True))
    ids = dict(zip(used, mapping.map_names(list(used.values()), spec.name, f"categories with boxes in {path}")))
    ids.update({i: None for i, _ in _coco_categories(data) if i not in ids})  # categories without boxes
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
    _check_files_exist([d["file_name"] for d in dicts], spec, "IMAGE_ROOT")
    for d in dicts:
        if "height" not in d:
            d["height"], d["width"] = image_size(d["file_name"], spec.name)
    for a in data.get("annotations") or []:
        where = f"{spec.key('JSON_FILE')}: {path!r}, annotation id {a.get('id')!r}"
        if a.get("image_id") not in by_id:
            raise CustomDatasetError(f"{where} refers to image id {a.get('image_id')!r}, which is not in 'images'.")
        if a.get("category_id") not in ids:
            raise CustomDatasetError(
                f"{where} has category_id {a.get('category_id')!r}, which is not in 'categories' {sorted(ids)}."
            )
        bbox = a.get("bbox")
        if not isinstance(bbox, (list, tuple)) or len(bbox) != 4:
            raise CustomDatasetError(f"{where} has no [x, y, w, h] 'bbox' (got {bbox!r}).")
        cat = ids[a["category_id"]]
        if cat is None:
            continue
        x, y, w, h = (float(v) for v in bbox)
        by_id[a["image_id"]]["annotations"].append(_annotation((x, y, x + w, y + h), cat, a.get("iscrowd", 0)))
    return dicts


# ---------------------------------------------------------------------------------------
# Pascal VOC
# ---------------------------------------------------------------------------------------
def _voc_dirs(spec: _Spec):
    if not spec.has("ROOT") and not spec.has("ANN_DIR"):
        raise CustomDatasetError(f"{spec.key('ROOT')} (or {spec.key('ANN_DIR')}) is required for FORMAT 'voc'.")
    default_ann = None
    if spec.root is not None:
        default_ann = "Annotations" if os.path.isdir(os.path.join(spec.root, "Annotations")) else spec.root
    ann_dir = spec.path("ANN_DIR", must="dir", default=default_ann)
    default_img = ann_dir
    if spec.root is not None and os.path.isdir(os.path.join(spec.root, "JPEGImages")):
        default_img = "JPEGImages"
    image_dir = spec.path("IMAGE_DIR", must="dir", default=default_img)
    imageset = None
    if spec.has("IMAGESET"):
        imageset = spec.path("IMAGESET", must="file")
    elif spec.has("SPLIT"):
        if spec.root is None:
            raise CustomDatasetError(f"{spec.key('SPLIT')} needs {spec.key('ROOT')} (or set {spec.key('IMAGESET')}).")
        imageset = spec.path("IMAGESET", must="file", default=os.path.join("ImageSets", "Main", f"{spec.node['SPLIT']}.txt"))
    return ann_dir, image_dir, imageset


def _voc_entries(spec: _Spec) -> List[Tuple[str, Optional[str], str]]:
    """(id, xml path or None, image dir) per image, in order."""
    ann_dir, image_dir, imageset = _voc_dirs(spec)
    if imageset is not None:
        with open(imageset) as f:
            ids = [line.split()[0] for line in f if line.strip()]
    else:
        stems = {os.path.splitext(f)[0] for f in os.listdir(ann_dir) if f.lower().endswith(".xml")}
        stems |= {os.path.splitext(f)[0] for f in os.listdir(image_dir) if is_image_file(f)}
        ids = sorted(stems)
    out = []
    for i in ids:
        xml = os.path.join(ann_dir, f"{i}.xml")
        out.append((i, xml if os.path.isfile(xml) else None, image_dir))
    return out


def _parse_voc(xml: str, spec: _Spec) -> ET.Element:
    try:
        return ET.parse(xml).getroot()
    except ET.ParseError as e:
        raise CustomDatasetError(f"DATASETS.CUSTOM.{spec.name}: cannot parse {xml!r} ({e}).") from None


def _voc_class_names(spec: _Spec) -> Tuple[List[str], str]:
    if spec.has("NAMES"):
        return [str(n) for n in spec.node["NAMES"]], spec.key("NAMES")
    names = {}
    for _, xml, _ in _voc_entries(spec):
        if xml is None:
            continue
        for obj in _parse_voc(xml, spec).findall("object"):
            n = (obj.findtext("name") or "").strip()
            names.setdefault(_norm(n), n)
    return sorted(names.values(), key=_norm), f"object names in the xml files of {spec.key('ANN_DIR')}"


def _load_voc(spec: _Spec, mapping: ClassMapping) -> List[dict]:
    one_based = bool(spec.node.get("ONE_BASED", True))
    offset = 1.0 if one_based else 0.0
    known = None
    if spec.has("NAMES"):
        known = {_norm(n) for n in spec.node["NAMES"]}
        mapping.map_names([str(n) for n in spec.node["NAMES"]], spec.name, spec.key("NAMES"))
    dicts = []
    for index, (stem, xml, image_dir) in enumerate(_voc_entries(spec)):
        root = _parse_voc(xml, spec) if xml is not None else None
        candidates = []
        if root is not None and (root.findtext("filename") or "").strip():
            candidates.append(os.path.join(image_dir, root.findtext("filename").strip()))
        candidates += [os.path.join(image_dir, stem + ext) for ext in IMAGE_EXTENSIONS + tuple(e.upper() for e in IMAGE_EXTENSIONS)]
        file_name = next((c for c in candidates if os.path.isfile(c)), None)
        if file_name is None:
            raise CustomDatasetFileError(
                f"{spec.key('IMAGE_DIR')}: no image for {xml or stem!r} in {image_dir!r} "
                f"(tried {os.path.basename(candidates[0])!r} and the usual extensions)."
            )
        d = {"file_name": file_name, "image_id": index + 1, "annotations": []}
        size = root.find("size") if root is not None else None
        try:
            h, w = int(float(size.findtext("height"))), int(float(size.findtext("width")))
        except (AttributeError, TypeError, ValueError):
            h = w = 0
        if h <= 0 or w <= 0:
            h, w = image_size(file_name, spec.name)
        d["height"], d["width"] = h, w
        for obj in root.findall("object") if root is not None else []:
            name = (obj.findtext("name") or "").strip()
            if known is not None and _norm(name) not in known:
                raise CustomDatasetError(
                    f"DATASETS.CUSTOM.{spec.name}: {xml!r} has an object named {name!r}, which is not in "
                    f"{spec.key('NAMES')} {list(spec.node['NAMES'])}."
                )
            try:
                cat = mapping.lookup(name)
            except KeyError:
                raise mapping.unknown_error([name], [name], spec.name, xml) from None
            if cat is None:
                continue
            bb = obj.find("bndbox")
            try:
                x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                raise CustomDatasetError(
                    f"DATASETS.CUSTOM.{spec.name}: {xml!r}: object {name!r} has no valid <bndbox> with "
                    "xmin, ymin, xmax, ymax."
                ) from None
            d["annotations"].append(_annotation((x0 - offset, y0 - offset, x1, y1), cat))
        dicts.append(d)
    return dicts


# ---------------------------------------------------------------------------------------
# YOLO txt
# ---------------------------------------------------------------------------------------
def _yolo_image_dir(spec: _Spec) -> str:
    if spec.has("IMAGE_DIR"):
        return spec.path("IMAGE_DIR", must="dir")
    if spec.root is None:
        raise CustomDatasetError(f"{spec.key('ROOT')} (or {spec.key('IMAGE_DIR')}) is required for FORMAT 'yolo'.")
    if not spec.has("SPLIT"):
        return spec.path("IMAGE_DIR", must="dir", default="images")
    split = str(spec.node["SPLIT"])
    candidates = [os.path.join(spec.root, split, "images"), os.path.join(spec.root, "images", split)]
    for c in candidates:
        if os.path.isdir(c):
            return c
    raise CustomDatasetFileError(
        f"{spec.key('SPLIT')}={split!r}: neither {candidates[0]!r} nor {candidates[1]!r} exists "
        f"(check {spec.key('ROOT')} and {spec.key('SPLIT')}, or set {spec.key('IMAGE_DIR')})."
    )


def _yolo_label_dir(spec: _Spec, image_dir: str) -> str:
    if spec.has("LABEL_DIR"):
        path = spec.path("LABEL_DIR", must="dir")
    else:
        parts = image_dir.split(os.sep)
        if "images" not in parts:
            raise CustomDatasetError(
                f"DATASETS.CUSTOM.{spec.name}: the image folder {image_dir!r} has no 'images' component to "
                f"replace by 'labels': set {spec.key('LABEL_DIR')}."
            )
        i = len(parts) - 1 - parts[::-1].index("images")
        path = os.sep.join(parts[:i] + ["labels"] + parts[i + 1 :])
        if not os.path.isdir(path):
            raise CustomDatasetFileError(
                f"{spec.key('LABEL_DIR')} (unset, derived from the image folder): folder {path!r} does not "
                f"exist. Set {spec.key('LABEL_DIR')}, or use FORMAT 'images' for a set without labels."
            )
    return path


def _yolo_class_names(spec: _Spec) -> Tuple[List[str], str]:
    if spec.has("NAMES"):
        return [str(n) for n in spec.node["NAMES"]], spec.key("NAMES")
    default = "data.yaml" if spec.root is not None else None
    if default is None and not spec.has("DATA_YAML"):
        raise CustomDatasetError(
            f"DATASETS.CUSTOM.{spec.name}: set {spec.key('DATA_YAML')} (a YOLO data.yaml with 'names') or "
            f"{spec.key('NAMES')} (the class names by index)."
        )
    path = spec.path("DATA_YAML", must="file", default=default)
    import yaml

    try:
        with open(path) as f:
            data = yaml.safe_load(f)
    except yaml.YAMLError as e:
        raise CustomDatasetError(f"{spec.key('DATA_YAML')}: cannot parse {path!r} ({e}).") from None
    names = data.get("names") if isinstance(data, dict) else None
    if isinstance(names, dict):  # Ultralytics also writes {0: name, 1: name}
        try:
            keys = sorted(int(k) for k in names)
        except (TypeError, ValueError):
            keys = None
        if keys != list(range(len(names))):
            raise CustomDatasetError(f"{spec.key('DATA_YAML')}: 'names' in {path!r} must be indexed 0..n-1, got {names}.")
        names = [names[k] if k in names else names[str(k)] for k in keys]
    if not isinstance(names, list) or not names:
        raise CustomDatasetError(
            f"{spec.key('DATA_YAML')}: {path!r} has no 'names' list (set it, or {spec.key('NAMES')})."
        )
    if isinstance(data.get("nc"), int) and data["nc"] != len(names):
        raise CustomDatasetError(f"{spec.key('DATA_YAML')}: {path!r} says nc={data['nc']} but lists {len(names)} names {names}.")
    return [str(n) for n in names], path


def _parse_yolo_line(line: str, label_file: str, lineno: int, names: Sequence[str], spec: _Spec):
    where = f"DATASETS.CUSTOM.{spec.name}: {label_file}, line {lineno}"
    fields = line.split()
    try:
        values = [float(v) for v in fields]
    except ValueError:
        raise CustomDatasetError(f"{where}: not numbers: {line.strip()!r}.") from None
    if len(values) != 5 and (len(values) < 7 or len(values) % 2 == 0):
        raise CustomDatasetError(
            f"{where}: expected 'class cx cy w h' (or 'class x1 y1 x2 y2 x3 y3 ...' for a polygon), "
            f"got {len(values)} values: {line.strip()!r}."
        )
    cls = values[0]
    if cls != int(cls) or not 0 <= int(cls) < len(names):
        raise CustomDatasetError(
            f"{where}: class index {fields[0]} is out of range: the dataset has {len(names)} classes "
            f"(0..{len(names) - 1}: {list(names)})."
        )
    coords = values[1:]
    if any(v < -_YOLO_TOLERANCE or v > 1 + _YOLO_TOLERANCE for v in coords):
        raise CustomDatasetError(f"{where}: coordinates must be normalised to [0, 1], got {line.strip()!r}.")
    if len(values) == 5:
        cx, cy, w, h = coords
        return int(cls), (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    xs, ys = coords[0::2], coords[1::2]
    return int(cls), (min(xs), min(ys), max(xs), max(ys))


def _load_yolo(spec: _Spec, mapping: ClassMapping) -> List[dict]:
    names, source = _yolo_class_names(spec)
    ids = mapping.map_names(names, spec.name, source)
    image_dir = _yolo_image_dir(spec)
    label_dir = _yolo_label_dir(spec, image_dir)
    dicts = []
    for index, file_name in enumerate(list_images(image_dir)):
        h, w = image_size(file_name, spec.name)
        d = {"file_name": file_name, "image_id": index + 1, "height": h, "width": w, "annotations": []}
        rel = os.path.relpath(file_name, image_dir)
        label_file = os.path.join(label_dir, os.path.splitext(rel)[0] + ".txt")
        if os.path.isfile(label_file):
            with open(label_file) as f:
                for lineno, line in enumerate(f, 1):
                    if not line.strip():
                        continue
                    cls, (x0, y0, x1, y1) = _parse_yolo_line(line, label_file, lineno, names, spec)
                    if ids[cls] is not None:
                        d["annotations"].append(_annotation((x0 * w, y0 * h, x1 * w, y1 * h), ids[cls]))
        dicts.append(d)
    return dicts


# ---------------------------------------------------------------------------------------
# A folder of images
# ---------------------------------------------------------------------------------------
def _load_images_dir(spec: _Spec) -> str:
    if not spec.has("IMAGE_DIR") and spec.root is None:
        raise CustomDatasetError(f"{spec.key('IMAGE_DIR')} (or {spec.key('ROOT')}) is required for FORMAT 'images'.")
    return spec.path("IMAGE_DIR", must="dir", default=spec.root)


def _load_images(spec: _Spec, mapping: ClassMapping) -> List[dict]:
    image_dir = _load_images_dir(spec)
    dicts = []
    for index, file_name in enumerate(list_images(image_dir)):
        h, w = image_size(file_name, spec.name)
        dicts.append({"file_name": file_name, "image_id": index + 1, "height": h, "width": w, "annotations": []})
    return dicts


_LOADERS = {"coco": _load_coco, "voc": _load_voc, "yolo": _load_yolo, "images": _load_images}


def _load(spec: _Spec, mapping: ClassMapping) -> List[dict]:
    dicts = _LOADERS[spec.format](spec, mapping)
    counts = Counter(a["category_id"] for d in dicts for a in d["annotations"])
    empty = sum(1 for d in dicts if not d["annotations"])
    logger.info(
        f"Custom dataset {spec.name!r} ({spec.format}): {len(dicts)} images, "
        f"{sum(counts.values())} boxes ({', '.join(f'{c}={counts[i]}' for i, c in enumerate(mapping.classes))}), "
        f"{empty} images without a box"
    )
    return dicts


# ---------------------------------------------------------------------------------------
# Registration
# ---------------------------------------------------------------------------------------
def _class_names(spec: _Spec) -> Tuple[List[str], str, Optional[dict]]:
    """A dataset's own class names (cheap to read), where they come from, and the parsed
    json for COCO."""
    if spec.format == "coco":
        names, source, data = _coco_class_names(spec)
        spec.path("IMAGE_ROOT", must="dir", default=os.path.dirname(spec.path("JSON_FILE")))
        return names, source, data
    if spec.format == "voc":
        _voc_dirs(spec)  # the folders are checked now, at registration
        return (*_voc_class_names(spec), None)
    if spec.format == "yolo":
        image_dir = _yolo_image_dir(spec)  # the folders are checked now, at registration
        _yolo_label_dir(spec, image_dir)
        return (*_yolo_class_names(spec), None)
    _load_images_dir(spec)
    return [], "no labels", None


def register_custom_datasets(cfg) -> List[str]:
    """Register every dataset of ``cfg.DATASETS.CUSTOM`` with detectron2 (replacing the
    custom datasets a previous call registered) and return their names.

    Checks the nodes, the folders and the class names now; images and labels are read
    when a dataset is first used. Call it in every process, before building a trainer."""
    for name in _REGISTERED:
        if name in DatasetCatalog.list():
            DatasetCatalog.remove(name)
        if name in MetadataCatalog.list():
            MetadataCatalog.remove(name)
    _REGISTERED.clear()

    nodes = cfg.DATASETS.get("CUSTOM", None) or {}
    if not nodes:
        return []
    mapping = ClassMapping(
        list(cfg.DATASETS.get("CLASSES", ())), list(cfg.DATASETS.get("CLASS_MAP", ())), list(cfg.DATASETS.get("IGNORE_CLASSES", ()))
    )
    specs = {str(name): _Spec(str(name), node) for name, node in nodes.items()}
    for name in specs:
        if name in DatasetCatalog.list():
            raise CustomDatasetError(
                f"DATASETS.CUSTOM.{name}: a dataset named {name!r} is already registered (a built-in one); "
                "choose another name."
            )
    names = {name: _class_names(spec) for name, spec in specs.items()}

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
            identity = _coco_identity(data, mapping)
            if identity is not None:
                meta.update(json_file=spec.path("JSON_FILE"), thing_dataset_id_to_contiguous_id=identity)
        DatasetCatalog.register(name, functools.partial(_load, spec, mapping))
        MetadataCatalog.get(name).set(**meta)
        _REGISTERED.append(name)
    logger.info(f"Registered custom datasets {list(specs)} with classes {mapping.classes}")
    return list(specs)
