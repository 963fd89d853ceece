"""Colour jitter and Gaussian blur of the target image the MIC student sees, drawn per
image, applied before the blocks are masked (as the reference does, so that a masked
block stays exactly the pixel mean).

Colour jitter follows torchvision's ``ColorJitter(s, s, s, s)``: brightness, contrast,
saturation and hue, each with its own factor per image, in an order drawn per batch;
pixel values stay in [0, 255]. Hue is rotated in YIQ space, a linear stand-in for a
rotation of the HSV hue. The reference code drew the on/off of each augmentation once per
run; here every image has its own draw. Vectorised over the batch; the padding stays zero.
"""
import math
from typing import List, Tuple

import torch
from torch.nn import functional as F

# luma weights of R, G, B (ITU-R 601), as torchvision's grayscale
_LUMA = (0.299, 0.587, 0.114)
# RGB -> YIQ; its first row is the luma
_TO_YIQ = ((0.299, 0.587, 0.114), (0.596, -0.274, -0.322), (0.211, -0.523, 0.312))


def padding_mask(shape, image_sizes: List[Tuple[int, int]], device) -> torch.Tensor:
    """(N, 1, H, W) with 1 inside each image's real area, 0 on its padding."""
    n, _, h, w = shape
    sizes = torch.tensor(image_sizes, device=device)
    rows = torch.arange(h, device=device).view(1, h, 1) < sizes[:, 0].view(n, 1, 1)
    cols = torch.arange(w, device=device).view(1, 1, w) < sizes[:, 1].view(n, 1, 1)
    return (rows & cols).unsqueeze(1)


def gaussian_blur(images: torch.Tensor, sigmas: torch.Tensor, max_sigma: float) -> torch.Tensor:
    """Blur each image of (N, C, H, W) with its own sigma (N,), separable, reflect-padded.
    The kernel reaches 4 sigma (the weight left out is below 1e-4)."""
    n, c, h, w = images.shape
    radius = max(1, math.ceil(4 * max_sigma))
    x = torch.arange(-radius, radius + 1, device=images.device, dtype=images.dtype)
    kernels = torch.exp(-0.5 * (x.view(1, -1) / sigmas.view(-1, 1).to(images.dtype)) ** 2)
    kernels = (kernels / kernels.sum(dim=1, keepdim=True)).repeat_interleave(c, dim=0)  # (N*C, K)
    out = images.reshape(1, n * c, h, w)
    out = F.conv2d(F.pad(out, (radius, radius, 0, 0), mode="reflect"), kernels.view(n * c, 1, 1, -1), groups=n * c)
    out = F.conv2d(F.pad(out, (0, 0, radius, radius), mode="reflect"), kernels.view(n * c, 1, -1, 1), groups=n * c)
    return out.view(n, c, h, w)


def jitter_factors(n: int, strength: float, on: torch.Tensor) -> torch.Tensor:
    """(N, 1, 1, 1): uniform in [1 - strength, 1 + strength] where ``on``, 1 elsewhere."""
    return (1 + (torch.rand(n, device=on.device) * 2 - 1) * strength * on).view(n, 1, 1, 1)


def grey(x: torch.Tensor, channel_of: List[int]) -> torch.Tensor:
    """(N, 1, H, W) luma of images whose channel i holds colour ``channel_of[i]``
    (0 = R, 1 = G, 2 = B)."""
    luma = x.new_tensor(_LUMA)[channel_of].view(1, 3, 1, 1)
    return (x * luma).sum(dim=1, keepdim=True)


def adjust_brightness(x, factors):
    return x * factors


def adjust_contrast(x, factors, channel_of, inside):
    """Away from (factor > 1) or towards each image's mean grey over its real area."""
    area = inside.sum(dim=(2, 3), keepdim=True).clamp(min=1)
    mean = (grey(x, channel_of) * inside).sum(dim=(2, 3), keepdim=True) / area
    return (x - mean) * factors + mean


def adjust_saturation(x, factors, channel_of):
    """Away from (factor > 1) or towards each pixel's own grey."""
    g = grey(x, channel_of)
    return (x - g) * factors + g


def rotate_hue(x: torch.Tensor, turns: torch.Tensor, channel_of: List[int]) -> torch.Tensor:
    """Rotate the chroma of each image of (N, 3, H, W) by ``turns`` (N,) of a full turn
    (a rotation of the I-Q plane of YIQ: luma and chroma magnitude are kept)."""
    to_yiq = x.new_tensor(_TO_YIQ)
    angle = 2 * math.pi * turns.to(x.dtype)
    rot = torch.zeros(len(turns), 3, 3, dtype=x.dtype, device=x.device)
    rot[:, 0, 0] = 1
    rot[:, 1, 1], rot[:, 1, 2], rot[:, 2, 1], rot[:, 2, 2] = angle.cos(), -angle.sin(), angle.sin(), angle.cos()
    m = torch.linalg.inv(to_yiq) @ rot @ to_yiq  # (N, 3, 3), acting on (R, G, B)
    m = m[:, channel_of][:, :, channel_of]  # acting on the images' channels
    return torch.einsum("nij,njhw->nihw", m, x)


class PhotometricAugmentation:
    """Args:
        jitter_prob, jitter_strength: per image, with probability ``jitter_prob``,
            brightness, contrast and saturation are scaled by factors in
            [1 - s, 1 + s] and the hue rotated by up to +-s of a turn.
        blur_prob, blur_sigma: per image, with probability ``blur_prob``, a Gaussian blur
            with sigma drawn uniformly from ``blur_sigma`` (pixels).
        channel_order: "BGR" or "RGB" (INPUT.FORMAT), for luma and hue.
    """

    def __init__(self, jitter_prob, jitter_strength, blur_prob, blur_sigma, channel_order):
        self.jitter_prob = jitter_prob
        self.jitter_strength = jitter_strength
        self.blur_prob = blur_prob
        self.blur_sigma = tuple(blur_sigma)
        if channel_order not in ("BGR", "RGB"):
            raise ValueError(f"INPUT.FORMAT must be 'BGR' or 'RGB' for MIC's colour jitter, got {channel_order!r}")
        # channel_of[i]: which of R, G, B channel i of the images holds
        self.channel_of = [2, 1, 0] if channel_order == "BGR" else [0, 1, 2]

    @property
    def enabled(self) -> bool:
        return self.jitter_prob > 0 or self.blur_prob > 0

    def jitter(self, x: torch.Tensor, inside: torch.Tensor) -> torch.Tensor:
        """Colour jitter of pixel-valued images, each image on with ``jitter_prob``."""
        n, s, c = x.shape[0], self.jitter_strength, self.channel_of
        on = (torch.rand(n, device=x.device) < self.jitter_prob).to(x.dtype)
        ops = [
            lambda x: adjust_brightness(x, jitter_factors(n, s, on)),
            lambda x: adjust_contrast(x, jitter_factors(n, s, on), c, inside),
            lambda x: adjust_saturation(x, jitter_factors(n, s, on), c),
            lambda x: rotate_hue(x, (jitter_factors(n, s, on).view(n) - 1), c),
        ]
        for i in torch.randperm(len(ops)).tolist():
            x = ops[i](x).clamp(0, 255)
        return x

    def blur(self, x: torch.Tensor) -> torch.Tensor:
        """Gaussian blur, each image on with ``blur_prob``, sigma uniform in ``blur_sigma``."""
        n, (lo, hi) = x.shape[0], self.blur_sigma
        on = torch.rand(n, device=x.device) < self.blur_prob
        sigmas = lo + torch.rand(n, device=x.device) * (hi - lo)
        return torch.where(on.view(n, 1, 1, 1), gaussian_blur(x, sigmas, hi), x)

    def __call__(self, images: torch.Tensor, image_sizes, pixel_mean, pixel_std) -> torch.Tensor:
        """Augment normalised ``images``; ``pixel_mean``/``pixel_std`` undo the normalisation."""
        pixel_mean, pixel_std = pixel_mean.view(1, -1, 1, 1), pixel_std.view(1, -1, 1, 1)
        inside = padding_mask(images.shape, image_sizes, images.device).to(images.dtype)
        x = images * pixel_std + pixel_mean  # back to pixel values
        if self.jitter_prob > 0:
            x = self.jitter(x, inside)
        if self.blur_prob > 0:
            x = self.blur(x)
        return (x - pixel_mean) / pixel_std * inside
