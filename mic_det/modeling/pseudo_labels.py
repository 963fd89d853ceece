"""Turn teacher detections into pseudo-labels: confident boxes only, optionally not too
large, then NMS."""
from dataclasses import dataclass
from typing import Dict, List

import torch
from detectron2.layers import batched_nms
from detectron2.structures import Instances


def select_pseudo_labels(
    predictions: List[Instances], score_threshold: float, nms_thresh: float, max_area: float
) -> List[Instances]:
    """Keep boxes with score >= ``score_threshold`` and an area of at most ``max_area`` of
    their image (1.0: any size), then per-class NMS at ``nms_thresh``.

    Returns one ``Instances`` per image with ``gt_boxes``, ``gt_classes`` and
    ``gt_scores`` (the teacher's confidence, used to weight the MIC loss). Images may
    end up with no box.
    """
    labels = []
    for pred in predictions:
        pred = pred[pred.scores >= score_threshold]
        if max_area < 1.0:
            height, width = pred.image_size
            pred = pred[pred.pred_boxes.area() <= max_area * height * width]
        if nms_thresh < 1.0 and len(pred) > 1:
            keep = batched_nms(pred.pred_boxes.tensor, pred.scores, pred.pred_classes, nms_thresh)
            pred = pred[keep]
        target = Instances(pred.image_size)
        target.gt_boxes = pred.pred_boxes
        target.gt_classes = pred.pred_classes
        target.gt_scores = pred.scores
        labels.append(target)
    return labels


@dataclass(frozen=True)
class PseudoLabeler:
    """The teacher's detections -> pseudo-labels, as MIC.PSEUDO_LABEL_* say. The training
    step and tools/visualize.py both use it, so a picture shows what training uses."""

    score_threshold: float
    nms_thresh: float
    max_area: float

    @classmethod
    def from_config(cls, cfg) -> "PseudoLabeler":
        return cls(cfg.MIC.PSEUDO_LABEL_THRESHOLD, cfg.MIC.PSEUDO_LABEL_NMS_THRESH, cfg.MIC.PSEUDO_LABEL_MAX_AREA)

    def __call__(self, predictions: List[Instances]) -> List[Instances]:
        return select_pseudo_labels(predictions, self.score_threshold, self.nms_thresh, self.max_area)


def pseudo_label_stats(labels: List[Instances], num_classes: int) -> Dict[str, float]:
    """Figures logged every step, from which a user can read the teacher drifting (see
    docs/method.md, "Confirmation bias"): boxes per image, images used, mean confidence,
    mean box area relative to its image, the fraction of boxes larger than half their
    image, and the share of each class among the boxes."""
    counts = [len(x) for x in labels]
    scores = [x.gt_scores for x in labels if len(x)]
    areas = [x.gt_boxes.area() / float(x.image_size[0] * x.image_size[1]) for x in labels if len(x)]
    classes = [x.gt_classes for x in labels if len(x)]
    total = sum(counts)
    stats = {
        "mic/pseudo_boxes_per_image": total / max(len(counts), 1),
        "mic/images_used_fraction": sum(c > 0 for c in counts) / max(len(counts), 1),
        "mic/pseudo_box_confidence": torch.cat(scores).mean().item() if scores else 0.0,
        "mic/pseudo_box_area": torch.cat(areas).mean().item() if areas else 0.0,
        "mic/pseudo_large_box_fraction": (torch.cat(areas) > 0.5).float().mean().item() if areas else 0.0,
    }
    per_class = torch.bincount(torch.cat(classes), minlength=num_classes).tolist() if classes else [0] * num_classes
    for k in range(num_classes):
        stats[f"mic/pseudo_class_fraction/{k}"] = per_class[k] / total if total else 0.0
    return stats
