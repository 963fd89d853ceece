"""Turn teacher detections into pseudo-labels: confident boxes only, optionally not too
large, then NMS."""
from dataclasses import dataclass
from typing import Dict, List, Optional, Union

import torch
from detectron2.layers import batched_nms
from detectron2.structures import Instances


def select_pseudo_labels(
    predictions: List[Instances],
    score_threshold: Union[float, torch.Tensor],
    nms_thresh: float,
    max_area: float,
) -> List[Instances]:
    """Keep boxes with score >= ``score_threshold`` (one value, or a tensor of one per
    class) and an area of at most ``max_area`` of their image (1.0: any size), then
    per-class NMS at ``nms_thresh``.

    Returns one ``Instances`` per image with ``gt_boxes``, ``gt_classes`` and
    ``gt_scores`` (the teacher's confidence, used to weight the MIC loss). Images may
    end up with no box.
    """
    labels = []
    for pred in predictions:
        if isinstance(score_threshold, torch.Tensor):
            pred = pred[pred.scores >= score_threshold.to(pred.scores.device)[pred.pred_classes]]
        else:
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

    def __call__(
        self, predictions: List[Instances], score_threshold: Optional[torch.Tensor] = None
    ) -> List[Instances]:
        """``score_threshold``: per-class thresholds replacing the fixed one (MRT's dynamic
        threshold)."""
        threshold = self.score_threshold if score_threshold is None else score_threshold
        return select_pseudo_labels(predictions, threshold, self.nms_thresh, self.max_area)


def pseudo_label_stats(labels: List[Instances], num_classes: int) -> Dict[str, float]:
    """Figures logged every step, from which a user can read the teacher drifting (see
    docs/method.md, "Confirmation bias"): boxes per image, images used, mean confidence,
    mean box area relative to its image, the fraction of boxes larger than half their
    image, and the share of each class among the boxes. One copy to the host per step."""
    counts = [len(x) for x in labels]
    used = [x for x in labels if len(x)]
    total = sum(counts)
    figures = [0.0] * (3 + num_classes)  # confidence, area, large fraction, class shares
    if used:
        scores = torch.cat([x.gt_scores for x in used])
        areas = torch.cat([x.gt_boxes.area() / float(x.image_size[0] * x.image_size[1]) for x in used])
        classes = torch.bincount(torch.cat([x.gt_classes for x in used]), minlength=num_classes)[:num_classes]
        figures = torch.cat([
            torch.stack([scores.float().mean(), areas.float().mean(), (areas > 0.5).float().mean()]),
            classes.float() / total,
        ]).tolist()
    stats = {
        "mic/pseudo_boxes_per_image": total / max(len(counts), 1),
        "mic/images_used_fraction": len(used) / max(len(counts), 1),
        "mic/pseudo_box_confidence": figures[0],
        "mic/pseudo_box_area": figures[1],
        "mic/pseudo_large_box_fraction": figures[2],
    }
    for k in range(num_classes):
        stats[f"mic/pseudo_class_fraction/{k}"] = figures[3 + k]
    return stats
