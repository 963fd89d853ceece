"""What every reader produces: detectron2 dataset dicts whose boxes carry the dataset's
own class name (``category_name``); :func:`mic_det.data.custom.register.load` maps the
names onto the class list in one pass. Also the image size read from a file header."""
import os
from typing import Optional, Sequence, Tuple

from detectron2.structures import BoxMode

from .spec import CustomDatasetError, CustomDatasetFileError, DatasetSpec

_EXIF_ORIENTATION = 0x0112


def box_record(box, category_name: str, iscrowd: int = 0, annotation_file: Optional[str] = None) -> dict:
    """An annotation in XYXY_ABS pixels with the dataset's class name (and the file it
    came from, for error messages); the mapping pass replaces both by ``category_id``."""
    record = {"bbox": [float(v) for v in box], "bbox_mode": BoxMode.XYXY_ABS, "category_name": str(category_name), "iscrowd": int(iscrowd)}
    if annotation_file is not None:
        record["annotation_file"] = annotation_file
    return record


def invalid_record(category_name: str, annotation_file: str, error: str) -> dict:
    """An annotation whose box cannot be read: an error (``error``) if its class is used,
    nothing if the class is ignored (as an ignored box is never read)."""
    return {"category_name": str(category_name), "annotation_file": annotation_file, "invalid": error}


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


def check_files_exist(paths: Sequence[str], spec: DatasetSpec, key: str) -> None:
    missing = [p for p in paths if not os.path.isfile(p)]
    if missing:
        raise CustomDatasetFileError(
            f"{spec.key(key)}: {len(missing)} of {len(paths)} image file(s) do not exist, e.g. "
            f"{missing[:5]}."
        )
