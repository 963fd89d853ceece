"""A per-class pseudo-label threshold that follows the teacher's own scores (MRT).

As self-training goes on, the teacher grows over-confident: its scores drift toward 1,
and a fixed threshold lets ever more wrong boxes through. Here each class's threshold
rises with the scores the teacher gives that class:

    threshold_c = clip(mean_c + k * std_c, floor, ceiling)

where mean_c and std_c are exponential moving averages (``momentum``) of the first and
second moment of the scores of the teacher's class-c detections at or above ``floor``
(the candidates; ``floor`` is MIC.PSEUDO_LABEL_THRESHOLD, so the threshold is never
below the fixed one). Candidates, not the boxes kept: a threshold computed from the boxes
it keeps would only ever ratchet upward. A class with no candidate yet uses ``floor``.

The statistics are summed over all processes before the update, so every rank holds the
same thresholds; they are buffers, saved in checkpoints, so a resumed run continues with
the thresholds it had.
"""
from typing import List, Optional

import torch
from detectron2.structures import Instances
from detectron2.utils import comm
from torch import nn


class DynamicThreshold(nn.Module):
    def __init__(self, num_classes: int, floor: float, ceiling: float, k: float, momentum: float):
        super().__init__()
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"MRT.DYNAMIC_THRESHOLD.MOMENTUM must be in [0, 1), got {momentum}")
        if not floor <= ceiling:
            raise ValueError(f"MRT.DYNAMIC_THRESHOLD.CEILING ({ceiling}) is below the floor ({floor})")
        self.floor, self.ceiling, self.k, self.momentum = float(floor), float(ceiling), float(k), float(momentum)
        # running first and second moment of the candidates' scores, and whether any was seen
        self.register_buffer("mean", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("mean_sq", torch.zeros(num_classes, dtype=torch.float64))
        self.register_buffer("seen", torch.zeros(num_classes, dtype=torch.bool))

    @classmethod
    def from_config(cls, cfg) -> "DynamicThreshold":
        dt = cfg.MRT.DYNAMIC_THRESHOLD
        return cls(cfg.MODEL.ROI_HEADS.NUM_CLASSES, cfg.MIC.PSEUDO_LABEL_THRESHOLD, dt.CEILING, dt.K, dt.MOMENTUM)

    @property
    def thresholds(self) -> torch.Tensor:
        """(num_classes,) float32: the threshold of each class now."""
        std = (self.mean_sq - self.mean**2).clamp(min=0).sqrt()
        value = (self.mean + self.k * std).clamp(self.floor, self.ceiling)
        return torch.where(self.seen, value, torch.full_like(value, self.floor)).float()

    @torch.no_grad()
    def update(self, predictions: List[Instances]) -> None:
        """Fold this step's teacher detections (of every process) into the statistics."""
        num_classes = self.mean.numel()
        sums = torch.zeros(3, num_classes, dtype=torch.float64, device=self.mean.device)
        for pred in predictions:
            keep = pred.scores >= self.floor
            classes = pred.pred_classes[keep].to(sums.device)
            scores = pred.scores[keep].to(sums)
            sums[0].index_add_(0, classes, torch.ones_like(scores))
            sums[1].index_add_(0, classes, scores)
            sums[2].index_add_(0, classes, scores**2)
        if comm.get_world_size() > 1:
            torch.distributed.all_reduce(sums)
        count, total, total_sq = sums
        present = count > 0
        batch_mean = total / count.clamp(min=1)
        batch_mean_sq = total_sq / count.clamp(min=1)
        # the first batch of a class sets its statistics; later ones are averaged in
        m = torch.where(self.seen, torch.full_like(batch_mean, self.momentum), torch.zeros_like(batch_mean))
        self.mean.copy_(torch.where(present, m * self.mean + (1 - m) * batch_mean, self.mean))
        self.mean_sq.copy_(torch.where(present, m * self.mean_sq + (1 - m) * batch_mean_sq, self.mean_sq))
        self.seen |= present

    def log_values(self, thresholds: Optional[torch.Tensor] = None) -> dict:
        """``mrt/threshold/<c>`` of ``thresholds`` (default: the current ones)."""
        values = (self.thresholds if thresholds is None else thresholds).tolist()
        return {f"mrt/threshold/{c}": v for c, v in enumerate(values)}
