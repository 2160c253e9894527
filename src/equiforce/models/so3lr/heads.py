"""SO3LR's per-atom heads: raw partial charges and Hirshfeld volume ratios.

- Charges: q̃_i = Dense(SiLU(Dense(f_i))) + b_{Z_i}; the model shifts them to the
  total charge (:func:`equiforce.models.longrange.conserve_charge`).
- Hirshfeld ratios: h_i = |b_{Z_i} + ⟨E(Z_i), Dense(SiLU(Dense(f_i)))⟩ / √(F/2)|
  with a learned element embedding E (F/2 per element).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from equiforce.models.base import NUM_ELEMENTS
from equiforce.nn.layers import MLP


class ChargeHead(nn.Module):
    """Raw partial charges (n_atoms,) e from final features (n_atoms, F)."""

    def __init__(self, num_features: int, hidden: int) -> None:
        super().__init__()
        self.mlp = MLP([num_features, hidden, 1])
        self.bias = nn.Embedding(NUM_ELEMENTS, 1)  # b_Z
        nn.init.zeros_(self.bias.weight)

    def forward(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """(n_atoms,) raw charges q̃."""
        return self.mlp(features).squeeze(-1) + self.bias(z).squeeze(-1)


class HirshfeldHead(nn.Module):
    """Hirshfeld volume ratios (n_atoms,) ≥ 0 from final features (n_atoms, F)."""

    def __init__(self, num_features: int, hidden: int) -> None:
        super().__init__()
        half = num_features // 2
        self.mlp = MLP([num_features, hidden // 2, half])
        self.query = nn.Embedding(NUM_ELEMENTS, half)  # E(Z)
        self.shift = nn.Embedding(NUM_ELEMENTS, 1)  # b_Z
        nn.init.normal_(self.query.weight, 0.0, 1.0 / math.sqrt(half))
        nn.init.ones_(self.shift.weight)

    def forward(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """(n_atoms,) ratios h."""
        k = self.mlp(features)  # (n_atoms, F/2)
        qk = (self.query(z) * k).sum(-1) / math.sqrt(k.shape[1])
        return torch.abs(self.shift(z).squeeze(-1) + qk)
