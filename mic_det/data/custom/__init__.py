"""Custom detection datasets declared in the config alone: COCO json, Pascal VOC xml and
YOLO txt and plain image folders, with their class names mapped onto one class list.
One reader per format (coco.py, voc.py, yolo.py, images.py), the node checks in spec.py,
the class list in classes.py, registration and the one mapping pass in register.py.

A practitioner names files in the YAML config and never writes Python::

    DATASETS:
      CLASSES: ["fire", "smoke"]        # the model's classes, in this order
      CLASS_MAP: ["flame:fire"]         # renames, "dataset name:class in CLASSES"
      IGNORE_CLASSES: ["default"]       # boxes dropped, images kept as background
      CUSTOM:
        my_source:                      # one child node per dataset name
          FORMAT: "yolo"
          ROOT: "/data/cctv-fire-smoke"
          SPLIT: "train"
        my_target: {FORMAT: "images", IMAGE_DIR: "/data/night_cameras"}
        my_test: {FORMAT: "coco", JSON_FILE: "/data/test/_annotations.coco.json"}
      TRAIN: ("my_source",)
      TRAIN_TARGET: ("my_target",)
      TEST: ("my_test",)

:func:`register_custom_datasets` (called by :func:`mic_det.config.load_config`, so by
every tool in every process; call it yourself if you build a config in Python) checks
each node, reads what is cheap (the class names: a COCO json's categories, a YOLO
``data.yaml``, VOC xml names), maps the classes and registers each dataset with
``thing_classes`` = the mapped class list and ``evaluator_type="coco"``. Images and labels are read when the dataset is first used
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
from .register import load, register_custom_datasets
from .spec import FORMATS, CustomDatasetError, CustomDatasetFileError

__all__ = ["CustomDatasetError", "CustomDatasetFileError", "FORMATS", "load", "register_custom_datasets"]
