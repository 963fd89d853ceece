"""Inference for the tools (predict, visualise, export): class names and ids of a config,
and a predictor that is detectron2's ``DefaultPredictor`` around an already loaded
network, so that mic_det's predictions and those of an exported model in stock
detectron2 are the same."""
from typing import List, Optional

import numpy as np
import torch
from detectron2.data import MetadataCatalog
from detectron2.data import transforms as T
from detectron2.engine import DefaultPredictor
from detectron2.structures import Instances


def dataset_metadata(cfg):
    """Metadata of the first of DATASETS.TEST, then DATASETS.TRAIN, that names its
    classes; None if none does (e.g. the datasets are not registered here)."""
    for name in list(cfg.DATASETS.TEST) + list(cfg.DATASETS.TRAIN):
        if name in MetadataCatalog.list() and MetadataCatalog.get(name).get("thing_classes"):
            return MetadataCatalog.get(name)
    return None


def class_names(cfg) -> List[str]:
    """One name per contiguous class id: the datasets' ``thing_classes`` when they fit
    MODEL.ROI_HEADS.NUM_CLASSES, else ``class_0``, ``class_1``, ..."""
    n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    meta = dataset_metadata(cfg)
    if meta is not None and len(meta.thing_classes) == n:
        return list(meta.thing_classes)
    return [f"class_{i}" for i in range(n)]


def category_ids(cfg) -> List[int]:
    """The dataset's category id of each contiguous class id (as detectron2's
    COCOEvaluator writes them); the contiguous id itself when the dataset has no
    mapping."""
    n = cfg.MODEL.ROI_HEADS.NUM_CLASSES
    meta = dataset_metadata(cfg)
    mapping = meta.get("thing_dataset_id_to_contiguous_id") if meta is not None else None
    if mapping and len(mapping) == n:
        reverse = {v: k for k, v in mapping.items()}
        return [int(reverse[i]) for i in range(n)]
    return list(range(n))


class Predictor(DefaultPredictor):
    """``DefaultPredictor`` around a network already loaded (the teacher or the student of
    a checkpoint, which ``DefaultPredictor``'s own loading cannot pick): BGR image in,
    detections (on the CPU, in the image's own coordinates) out."""

    def __init__(self, cfg, model: torch.nn.Module):
        # DefaultPredictor.__init__ would build a second model and load MODEL.WEIGHTS into it;
        # the attributes its __call__ reads are set here instead.
        self.cfg = cfg.clone()
        self.model = model.eval()
        if len(cfg.DATASETS.TEST):
            self.metadata = MetadataCatalog.get(cfg.DATASETS.TEST[0])
        self.aug = T.ResizeShortestEdge([cfg.INPUT.MIN_SIZE_TEST, cfg.INPUT.MIN_SIZE_TEST], cfg.INPUT.MAX_SIZE_TEST)
        self.input_format = cfg.INPUT.FORMAT
        if self.input_format not in ("RGB", "BGR"):
            raise ValueError(f"INPUT.FORMAT must be RGB or BGR, got {self.input_format!r}")

    def __call__(self, image_bgr: np.ndarray) -> Instances:
        return super().__call__(image_bgr)["instances"].to("cpu")

    def network_input(self, image_bgr: np.ndarray) -> torch.Tensor:
        """The CHW float tensor ``__call__`` feeds the network for ``image_bgr`` (channel
        order and resize as ``DefaultPredictor``): what a traced model takes."""
        image = image_bgr[:, :, ::-1] if self.input_format == "RGB" else image_bgr
        image = self.aug.get_transform(image).apply_image(image)
        return torch.as_tensor(image.astype("float32").transpose(2, 0, 1))


def filter_instances(
    instances: Instances, score_threshold: float = 0.0, keep_classes: Optional[List[int]] = None, max_detections: int = -1
):
    """Detections with score >= ``score_threshold`` and, if given, a class in
    ``keep_classes``; the ``max_detections`` best of them (all if negative)."""
    keep = instances.scores >= score_threshold
    if keep_classes is not None:
        keep &= torch.isin(instances.pred_classes, torch.as_tensor(keep_classes, dtype=instances.pred_classes.dtype))
    instances = instances[keep]
    if 0 <= max_detections < len(instances):
        instances = instances[instances.scores.argsort(descending=True)[:max_detections]]
    return instances


def coco_detections(instances: Instances, names: List[str], ids: List[int], **image_fields) -> List[dict]:
    """COCO-style result entries (``bbox`` as x, y, w, h) for one image; ``image_fields``
    (e.g. ``image_id``, ``file_name``) are copied into every entry."""
    boxes = instances.pred_boxes.tensor.tolist()
    out = []
    for (x0, y0, x1, y1), c, s in zip(boxes, instances.pred_classes.tolist(), instances.scores.tolist()):
        out.append(
            dict(image_fields, category_id=ids[c], category_name=names[c], bbox=[x0, y0, x1 - x0, y1 - y0], score=s)
        )
    return out
