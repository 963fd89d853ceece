"""Colour jitter and Gaussian blur of the masked target view, drawn per image.

Vectorised over the batch: each image gets its own on/off draw, strengths and blur
sigma (the reference code drew the on/off once per run). Works on normalised tensors
and leaves the padding at zero.
"""
import math
from typing import List, Tuple

import torch
from torch.nn import functional as F


def padding_mask(shape, image_sizes: List[Tuple[int, int]], device) -> torch.Tensor:
    """(N, 1, H, W) with 1 inside each image's real area, 0 on its padding."""
    n, _, h, w = shape
    sizes = torch.tensor(image_sizes, device=device)
    rows = torch.arange(h, device=device).view(1, h, 1) < sizes[:, 0].view(n, 1, 1)
    cols = torch.arange(w, device=device).view(1, 1, w) < sizes[:, 1].view(n, 1, 1)
    return (rows & cols).unsqueeze(1)


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Blur each image of (N, C, H, W) with its own sigma (N,), separable, reflect-padded."""
    n, c, h, w = images.shape
    radius = max(1, math.ceil(3 * max_sigma))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernels = torch.exp(-0.5 * (x.view(1, -1) / sigmas.view(-1, 1).to(images.dtype)) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, K)
    out = images.reshape(1, n * c, h, w)
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="reflect"), kernels.view(n * c, 1, 1, -1), groups=n * c)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), kernels.view(n * c, 1, -1, 1), groups=n * c)
    return out.view(n, c, h, w)


class PhotometricAugmentation:
    def __init__(self, jitter_prob, jitter_strength, blur_prob, blur_sigma):
        self.jitter_prob = jitter_prob
        self.jitter_strength = jitter_strength
        self.blur_prob = blur_prob
        self.blur_sigma = tuple(blur_sigma)

    @property
    def enabled(self) -> bool:
        return self.jitter_prob > 0 or self.blur_prob > 0

    def __call__(self, images: torch.Tensor, image_sizes, pixel_mean, pixel_std) -> torch.Tensor:
        """Augment normalised ``images``; ``pixel_mean``/``pixel_std`` undo the normalisation."""
        n, device = images.shape[0], images.device
        pixel_mean, pixel_std = pixel_mean.view(1, -1, 1, 1), pixel_std.view(1, -1, 1, 1)
        inside = padding_mask(images.shape, image_sizes, device).to(images.dtype)
        x = images * pixel_std + pixel_mean  # back to pixel values
        if self.jitter_prob > 0:
            on = (torch.rand(n, 1, 1, 1, device=device) < self.jitter_prob).to(x.dtype)
            s = self.jitter_strength
            brightness = 1 + (torch.rand(n, 1, 1, 1, device=device) * 2 - 1) * s * on
            contrast = 1 + (torch.rand(n, 1, 1, 1, device=device) * 2 - 1) * s * on
            area = inside.sum(dim=(2, 3), keepdim=True).clamp(min=1)
            mean = (x * inside).sum(dim=(2, 3), keepdim=True) / area
            x = ((x - mean) * contrast + mean) * brightness
        if self.blur_prob > 0:
            lo, hi = self.blur_sigma
            on = torch.rand(n, device=device) < self.blur_prob
            sigmas = lo + torch.rand(n, device=device) * (hi - lo)
            x = torch.where(on.view(n, 1, 1, 1), gaussian_blur(x, sigmas, hi), x)
        return (x - pixel_mean) / pixel_std * inside
