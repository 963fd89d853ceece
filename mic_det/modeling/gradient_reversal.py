"""Identity in the forward pass, scaled (and optionally reversed) gradient backwards.

Adversarial alignment trains the domain discriminators to tell source from target and,
through the reversed gradient, the detector to make them unable to.
"""
import torch
from torch import nn


class _ScaleGradient(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x, scale: float):
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad_output):
        return grad_output * ctx.scale, None


def scale_gradient(x: torch.Tensor, scale: float) -> torch.Tensor:
    """Return ``x`` unchanged; its gradient is multiplied by ``scale`` on the way back."""
    return _ScaleGradient.apply(x, scale)


class GradientReversal(nn.Module):
    """Gradient reversal layer: forward is the identity, backward multiplies by -weight."""

    def __init__(self, weight: float):
        super().__init__()
        if weight < 0:
            raise ValueError(f"GradientReversal weight must be >= 0, got {weight}")
        self.weight = float(weight)

    def forward(self, x):
        return scale_gradient(x, -self.weight)

    def extra_repr(self):
        return f"weight={self.weight}"
