"""FORMAT "voc": Pascal VOC xml files (``ANN_DIR``) and their images (``IMAGE_DIR``), in
the devkit layout (Annotations/, JPEGImages/, ImageSets/Main/<SPLIT>.txt) or in any two
folders, as labelImg and CVAT write them. detectron2's ``load_voc_instances`` takes only
the devkit layout with .jpg images and a fixed class list; this reader also finds the
class names in the xml files, takes image sizes from the headers when the xml lacks
them, and says which file is wrong."""
import os
import xml.etree.ElementTree as ET
from typing import List, Optional, Tuple

from ...utils.io import IMAGE_EXTENSIONS, is_image_file
from .classes import norm
from .records import box_record, image_size, invalid_record
from .spec import CustomDatasetError, CustomDatasetFileError, DatasetSpec


def folders(spec: DatasetSpec):
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


def _entries(spec: DatasetSpec) -> List[Tuple[str, Optional[str], str]]:
    """(id, xml path or None, image dir) per image, in order."""
    ann_dir, image_dir, imageset = folders(spec)
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


def _parse(xml: str, spec: DatasetSpec) -> ET.Element:
    try:
        return ET.parse(xml).getroot()
    except ET.ParseError as e:
        raise CustomDatasetError(f"DATASETS.CUSTOM.{spec.name}: cannot parse {xml!r} ({e}).") from None


def class_names(spec: DatasetSpec) -> Tuple[List[str], str, None]:
    """``NAMES``, else every object name in the xml files (sorted); the folders are
    checked now, at registration."""
    folders(spec)
    if spec.has("NAMES"):
        return [str(n) for n in spec.node["NAMES"]], spec.key("NAMES"), None
    names = {}
    for _, xml, _ in _entries(spec):
        if xml is None:
            continue
        for obj in _parse(xml, spec).findall("object"):
            n = (obj.findtext("name") or "").strip()
            names.setdefault(norm(n), n)
    return sorted(names.values(), key=norm), f"object names in the xml files of {spec.key('ANN_DIR')}", None


def read(spec: DatasetSpec) -> List[dict]:
    one_based = bool(spec.node.get("ONE_BASED", True))
    offset = 1.0 if one_based else 0.0
    known = {norm(n) for n in spec.node["NAMES"]} if spec.has("NAMES") else None
    dicts = []
    for index, (stem, xml, image_dir) in enumerate(_entries(spec)):
        root = _parse(xml, spec) if xml is not None else None
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
            if known is not None and norm(name) not in known:
                raise CustomDatasetError(
                    f"DATASETS.CUSTOM.{spec.name}: {xml!r} has an object named {name!r}, which is not in "
                    f"{spec.key('NAMES')} {list(spec.node['NAMES'])}."
                )
            bb = obj.find("bndbox")
            try:
                x0, y0, x1, y1 = (float(bb.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
            except (AttributeError, TypeError, ValueError):
                # an error only if the object's class is used: the mapping pass decides
                d["annotations"].append(invalid_record(
                    name, xml, f"DATASETS.CUSTOM.{spec.name}: {xml!r}: object {name!r} has no valid <bndbox> "
                    "with xmin, ymin, xmax, ymax."))
                continue
            d["annotations"].append(box_record((x0 - offset, y0 - offset, x1, y1), name, annotation_file=xml))
        dicts.append(d)
    return dicts
