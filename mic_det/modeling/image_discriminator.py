"""Image-level domain discriminator: one small conv head per feature map."""
from typing import Dict, List

import torch
from torch import nn


class ImageDomainDiscriminator(nn.Module):
    """Per-pixel domain logits for each named feature map (1x1 conv, ReLU, 1x1 conv).

    Both convolutions start from N(0, ``init_std``) (the reference's 0.001: a head that
    learns slowly, which 60k iterations afford and a few hundred do not)."""

    def __init__(self, in_features: List[str], in_channels: int, hidden_dim: int, init_std: float):
        super().__init__()
        self.in_features = list(in_features)
        self.heads = nn.ModuleDict()
        for name in self.in_features:
            head = nn.Sequential(
                nn.Conv2d(in_channels, hidden_dim, kernel_size=1),
                nn.ReLU(inplace=True),
                nn.Conv2d(hidden_dim, 1, kernel_size=1),
            )
            for layer in head:
                if isinstance(layer, nn.Conv2d):
                    nn.init.normal_(layer.weight, std=init_std)
                    nn.init.constant_(layer.bias, 0.0)
            self.heads[name] = head

    def forward(self, features: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        """Return {name: (N, 1, H, W) logits} for each feature map given (a subset is fine)."""
        return {name: self.heads[name](x) for name, x in features.items()}

