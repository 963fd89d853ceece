"""Boxes and labels drawn with OpenCV: fast enough for every frame of a video, and
the same look in predictions, pseudo-labels and ground truth."""
from typing import Optional, Sequence

import cv2
import numpy as np
from detectron2.utils.colormap import colormap

_COLORS = colormap(rgb=False, maximum=255)  # BGR, a fixed colour per class id


def class_color(class_id: int):
    return tuple(int(c) for c in _COLORS[int(class_id) % len(_COLORS)])


def draw_boxes(
    image_bgr: np.ndarray,
    boxes,
    class_ids: Sequence[int],
    labels: Sequence[str],
    thickness: Optional[int] = None,
    font_scale: Optional[float] = None,
) -> np.ndarray:
    """A copy of ``image_bgr`` with ``boxes`` (N x 4, x0 y0 x1 y1 in its pixels) drawn in
    their class colour, each with its label on a filled tag. Line width and text size
    follow the image size so labels stay legible from 100 px to 2000 px images."""
    out = np.ascontiguousarray(image_bgr).copy()
    h, w = out.shape[:2]
    size = max(h, w)
    thickness = thickness or max(1, round(size / 500))
    font_scale = font_scale or max(0.35, size / 1600)
    font = cv2.FONT_HERSHEY_SIMPLEX
    for box, cls, label in zip(np.asarray(boxes, dtype=np.float64).reshape(-1, 4), class_ids, labels):
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        color = class_color(cls)
        cv2.rectangle(out, (x0, y0), (x1, y1), color, thickness, cv2.LINE_AA)
        if not label:
            continue
        (tw, th), base = cv2.getTextSize(label, font, font_scale, 1)
        ty = y0 - 2 if y0 - th - base - 2 >= 0 else y0 + th + base + 2  # above the box, else inside
        tx = min(max(x0, 0), max(w - tw - 2, 0))
        cv2.rectangle(out, (tx, ty - th - base), (tx + tw + 2, ty + 1), color, -1)
        text_color = (0, 0, 0) if sum(color) > 380 else (255, 255, 255)
        cv2.putText(out, label, (tx + 1, ty - base + 1), font, font_scale, text_color, 1, cv2.LINE_AA)
    return out


def draw_instances(image_bgr: np.ndarray, instances, names: Sequence[str], with_scores: bool = True) -> np.ndarray:
    """Draw detectron2 detections (``pred_boxes``/``pred_classes``/``scores``) or
    labels (``gt_boxes``/``gt_classes``, optional ``gt_scores``) on a copy of the image."""
    if instances.has("pred_boxes"):
        boxes, classes = instances.pred_boxes.tensor, instances.pred_classes
        scores = instances.scores if instances.has("scores") else None
    else:
        boxes, classes = instances.gt_boxes.tensor, instances.gt_classes
        scores = instances.gt_scores if instances.has("gt_scores") else None
    classes = classes.tolist()
    if with_scores and scores is not None:
        labels = [f"{names[c]} {s:.2f}" for c, s in zip(classes, scores.tolist())]
    else:
        labels = [names[c] for c in classes]
    return draw_boxes(image_bgr, boxes.detach().cpu().numpy(), classes, labels)
