"""FORMAT "yolo": YOLO txt labels (Ultralytics / Darknet: one ``class cx cy w h`` line per
box, normalised to [0, 1]; a longer line is a polygon, boxed by its extent) beside their
images, class names from ``NAMES`` or the data.yaml. detectron2 has no reader for it."""
import os
from typing import List, Sequence, Tuple

from ...utils.io import list_images
from .records import box_record, image_size
from .spec import CustomDatasetError, CustomDatasetFileError, DatasetSpec

# YOLO coordinates are normalised; beyond this slack they were written in pixels.
_TOLERANCE = 0.01


def image_folder(spec: DatasetSpec) -> str:
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


def label_folder(spec: DatasetSpec, image_dir: str) -> str:
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


def _names(spec: DatasetSpec) -> Tuple[List[str], str]:
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


def _parse_line(line: str, label_file: str, lineno: int, names: Sequence[str], spec: DatasetSpec):
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
    if any(v < -_TOLERANCE or v > 1 + _TOLERANCE for v in coords):
        raise CustomDatasetError(f"{where}: coordinates must be normalised to [0, 1], got {line.strip()!r}.")
    if len(values) == 5:
        cx, cy, w, h = coords
        return int(cls), (cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2)
    xs, ys = coords[0::2], coords[1::2]
    return int(cls), (min(xs), min(ys), max(xs), max(ys))


def class_names(spec: DatasetSpec) -> Tuple[List[str], str, None]:
    """``NAMES``, else the ``names`` of the data.yaml; the folders are checked now, at
    registration."""
    label_folder(spec, image_folder(spec))
    return (*_names(spec), None)


def read(spec: DatasetSpec) -> List[dict]:
    names, _ = _names(spec)
    image_dir = image_folder(spec)
    label_dir = label_folder(spec, image_dir)
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
                    cls, (x0, y0, x1, y1) = _parse_line(line, label_file, lineno, names, spec)
                    d["annotations"].append(box_record((x0 * w, y0 * h, x1 * w, y1 * h), names[cls], annotation_file=label_file))
        dicts.append(d)
    return dicts
