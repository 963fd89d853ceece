"""Masked feature reconstruction (MRT's masked-autoencoder branch, on FPN features).

On the masked target image the student's FPN features are passed through a light
decoder (two convolutions, shared by the levels) that must predict, at the masked
positions, the teacher's features of the same image unmasked. It gives the backbone a
training signal on every target image, also when few pseudo-boxes survive the
threshold, which is when the student would otherwise overfit the few it has; its weight
therefore decays over adaptation.

The teacher's features are detached (the teacher never takes gradients). A feature cell
counts as masked when at least half of the input pixels it covers were masked; padding
never counts. The decoder is a training-only module (``mrt_decoder.`` in the state
dict): exported weights and inference leave it out.
"""
from typing import Dict, List, Sequence, Tuple

import torch
from detectron2.config import configurable
from torch import nn
from torch.nn import functional as F


class MaskedFeatureReconstruction(nn.Module):
    @configurable
    def __init__(
        self,
        *,
        in_features: Sequence[str],
        channels: int,
        hidden_dim: int,
        loss_weight: float,
        decay: str,
        start_iter: int,
        max_iter: int,
    ):
        super().__init__()
        if decay not in ("linear", "none"):
            raise ValueError(f"MRT.MASKED_RECONSTRUCTION.DECAY must be 'linear' or 'none', got {decay!r}")
        self.in_features = list(in_features)
        self.loss_weight = loss_weight
        self.decay = decay
        self.start_iter = start_iter
        self.max_iter = max_iter
        self.decoder = nn.Sequential(
            nn.Conv2d(channels, hidden_dim, 3, padding=1), nn.ReLU(inplace=True), nn.Conv2d(hidden_dim, channels, 1)
        )

    @classmethod
    def from_config(cls, cfg, channels: int):
        mr = cfg.MRT.MASKED_RECONSTRUCTION
        return {
            "in_features": mr.IN_FEATURES,
            "channels": channels,
            "hidden_dim": mr.HIDDEN_DIM,
            "loss_weight": mr.LOSS_WEIGHT,
            "decay": mr.DECAY,
            "start_iter": cfg.TEACHER.BURN_IN_ITERS,
            "max_iter": cfg.SOLVER.MAX_ITER,
        }

    def weight(self, iteration: int) -> float:
        """LOSS_WEIGHT when adaptation begins; with "linear", falling to 0 at max_iter."""
        if self.decay == "none":
            return self.loss_weight
        span = max(self.max_iter - self.start_iter, 1)
        return self.loss_weight * min(max(1.0 - (iteration - self.start_iter) / span, 0.0), 1.0)

    @staticmethod
    def masked_cells(keep: torch.Tensor, image_sizes: List[Tuple[int, int]], size: Tuple[int, int]) -> torch.Tensor:
        """(N, 1, h, w) bool: feature cells of a level of size ``size`` where at least
        half of the covered input pixels were masked. ``keep``: (N, 1, H, W) input mask,
        1 kept, 0 masked; padding (outside ``image_sizes``) counts as kept."""
        masked = 1.0 - keep.float()
        for i, (h, w) in enumerate(image_sizes):
            masked[i, :, h:, :] = 0
            masked[i, :, :, w:] = 0
        return F.adaptive_avg_pool2d(masked, size) >= 0.5

    def zero_loss(self) -> Dict[str, torch.Tensor]:
        """The loss of a step without reconstruction (burn-in): zero, but touching every
        decoder parameter, so that DistributedDataParallel finds them all used."""
        return {"loss_mrt_recon": sum(p.sum() for p in self.decoder.parameters()) * 0.0}

    def forward(
        self,
        student_features: Dict[str, torch.Tensor],
        teacher_features: Dict[str, torch.Tensor],
        keep: torch.Tensor,
        image_sizes: List[Tuple[int, int]],
        iteration: int,
    ) -> Dict[str, torch.Tensor]:
        """``loss_mrt_recon``: mean squared error between the decoded student features
        and the detached teacher features over the masked cells of every level in
        IN_FEATURES (cells and channels averaged), times the weight at ``iteration``."""
        total = 0.0
        for name in self.in_features:
            pred = self.decoder(student_features[name]).float()
            target = teacher_features[name].detach().float()
            cells = self.masked_cells(keep, image_sizes, pred.shape[-2:])
            squared = ((pred - target) ** 2).mean(dim=1, keepdim=True)
            # no masked cell: zero, still through the decoder (every parameter used)
            total = total + (squared * cells).sum() / cells.sum().clamp(min=1)
        return {"loss_mrt_recon": total * self.weight(iteration)}
