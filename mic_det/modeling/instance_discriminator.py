"""Instance-level domain discriminator: one MLP per ROI pooling level.

Every proposal is routed to the MLP of the FPN level the ROI pooler reads it from. All
levels are predicted (the reference code returned inside its level loop, so only the
first level ever learned).
"""
import torch
from torch import nn


class InstanceDomainDiscriminator(nn.Module):
    def __init__(self, num_levels: int, in_dim: int, hidden_dim: int, dropout: float, init_std: float):
        """Every linear layer starts from N(0, ``init_std``), biases at 0 (the reference's
        0.01 for all three)."""
        super().__init__()
        self.levels = nn.ModuleList()
        for _ in range(num_levels):
            mlp = nn.Sequential(
                nn.Linear(in_dim, hidden_dim),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, hidden_dim),
                nn.ReLU(inplace=True),
                nn.Dropout(dropout),
                nn.Linear(hidden_dim, 1),
            )
            for layer in mlp:
                if isinstance(layer, nn.Linear):
                    nn.init.normal_(layer.weight, std=init_std)
                    nn.init.constant_(layer.bias, 0.0)
            self.levels.append(mlp)

    def forward(self, features: torch.Tensor, levels: torch.Tensor) -> torch.Tensor:
        """Return one logit per row of ``features`` (R, D), using the MLP of ``levels`` (R,)."""
        logits = features.new_zeros(features.shape[0])
        for level, mlp in enumerate(self.levels):
            # Run every MLP, even on zero rows, so that every parameter is part of the
            # graph (DistributedDataParallel expects gradients for all of them).
            idx = torch.nonzero(levels == level, as_tuple=True)[0]
            logits = logits.index_put((idx,), mlp(features[idx]).squeeze(1))
        return logits
