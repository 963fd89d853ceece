"""Helpers of the user tools (export, prediction, visualisation): loading the teacher
or student of a checkpoint, inference as detectron2's DefaultPredictor does it, and
drawing boxes."""
from .checkpoint import build_detector, detector_state_dict, exportable_state_dict, load_detector_weights
from .drawing import draw_boxes, draw_instances
from .inference import Predictor, category_ids, class_names, coco_detections, dataset_metadata, filter_instances

__all__ = [
    "Predictor",
    "build_detector",
    "category_ids",
    "class_names",
    "coco_detections",
    "dataset_metadata",
    "detector_state_dict",
    "draw_boxes",
    "draw_instances",
    "exportable_state_dict",
    "filter_instances",
    "load_detector_weights",
]
