"""FORMAT "images": a folder of unlabelled images (every image below ``IMAGE_DIR``, default
``ROOT``), the usual form of a target domain: camera frames nobody has labelled."""
from typing import List, Tuple

from ...utils.io import list_images
from .records import image_size
from .spec import CustomDatasetError, DatasetSpec


def folder(spec: DatasetSpec) -> str:
    if not spec.has("IMAGE_DIR") and spec.root is None:
        raise CustomDatasetError(f"{spec.key('IMAGE_DIR')} (or {spec.key('ROOT')}) is required for FORMAT 'images'.")
    return spec.path("IMAGE_DIR", must="dir", default=spec.root)


def class_names(spec: DatasetSpec) -> Tuple[List[str], str, None]:
    """No labels, so no class names; the folder is checked now, at registration."""
    folder(spec)
    return [], "no labels", None


def read(spec: DatasetSpec) -> List[dict]:
    image_dir = folder(spec)
    dicts = []
    for index, file_name in enumerate(list_images(image_dir)):
        h, w = image_size(file_name, spec.name)
        dicts.append({"file_name": file_name, "image_id": index + 1, "height": h, "width": w, "annotations": []})
    return dicts
