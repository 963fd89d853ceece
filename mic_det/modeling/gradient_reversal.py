"""Identity in the forward pass, scaled (and, with a negative scale, reversed) gradient
backwards: the gradient reversal layer of adversarial alignment.

The domain discriminators learn to tell source from target; through the reversed
gradient the detector learns to make them unable to.
"""
import torch


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
