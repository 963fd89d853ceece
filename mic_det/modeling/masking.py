"""Random block masking of (normalised) images, the "masked image" of MIC.

The image is split into ``block_size`` x ``block_size`` blocks anchored at its top-left
corner; each block is kept where ``v > ratio`` for ``v ~ U(0, 1)``, drawn per block and
per image. Masking multiplies the normalised tensor, so a masked pixel takes the pixel
mean. Padding is zero in the normalised tensor and stays zero. Everything runs on the
tensor's device: no host round trip, no per-pixel Python.
"""
import math

import torch


class BlockMasker:
    def __init__(self, block_size: int, ratio: float):
        if block_size < 1:
            raise ValueError(f"MIC.MASK_BLOCK_SIZE must be >= 1, got {block_size}")
        if not 0.0 <= ratio < 1.0:
            raise ValueError(f"MIC.MASK_RATIO must be in [0, 1), got {ratio}")
        self.block_size = int(block_size)
        self.ratio = float(ratio)

    def sample_masks(self, n: int, height: int, width: int, device, dtype=torch.float32) -> torch.Tensor:
        """Return (n, 1, height, width) masks of 0 (masked) and 1 (kept)."""
        b = self.block_size
        grid = torch.rand(n, 1, math.ceil(height / b), math.ceil(width / b), device=device)
        keep = (grid > self.ratio).to(dtype)
        return keep.repeat_interleave(b, dim=2).repeat_interleave(b, dim=3)[:, :, :height, :width]

    def __call__(self, images: torch.Tensor, return_mask: bool = False):
        """Mask a normalised (N, C, H, W) batch; a new mask for every image. With
        ``return_mask``, also the (N, 1, H, W) mask (1 kept, 0 masked)."""
        n, _, h, w = images.shape
        keep = self.sample_masks(n, h, w, images.device, images.dtype)
        return (images * keep, keep) if return_mask else images * keep
