"""Total charge / spin embedding (SpookyNet-style, as in SO3LR; spec §2.5).

For a per-structure quantity Ψ (total charge Q, or the number of unpaired
electrons 2S): q_i = W_q(Z_i) (F,), k and v are one of two learned rows chosen by
the sign of Ψ, a_i = Ψ · softplus(q_i·k/√F) / (Σ_{j∈mol} softplus(q_j·k/√F) + ε),
and the embedding is e_i = a_i v + MLP(a_i v), MLP = SiLU → Dense → SiLU → Dense
(no bias). Σ_i a_i = Ψ up to ε: the embedding distributes Ψ over the atoms.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from equiforce.models.base import NUM_ELEMENTS
from equiforce.nn.layers import Dense
from equiforce.nn.scatter import scatter_sum

#: ε of the attention denominator (so3krates-torch / mlff).
EPS: float = 1e-6


class ChargeSpinEmbedding(nn.Module):
    """Embedding (n_atoms, F) of a per-structure charge or spin.

    Args:
        num_features: F.
    """

    def __init__(self, num_features: int) -> None:
        super().__init__()
        F = num_features
        self.query = nn.Embedding(NUM_ELEMENTS, F)  # W_q(Z), row Z
        nn.init.normal_(self.query.weight, 0.0, 1.0 / math.sqrt(F))
        # row 0: Ψ ≥ 0, row 1: Ψ < 0
        self.key = nn.Parameter(torch.randn(2, F) / math.sqrt(F))
        self.value = nn.Parameter(torch.randn(2, F) / math.sqrt(F))
        self.dense1 = Dense(F, F, bias=False)
        self.dense2 = Dense(F, F, bias=False)
        self.act = nn.SiLU()

    def forward(
        self,
        z: torch.Tensor,  # (n_atoms,)
        psi: torch.Tensor,  # (n_graphs,)
        graph_index: torch.Tensor,  # (n_atoms,)
    ) -> torch.Tensor:
        """(n_atoms, F) embedding of ``psi`` distributed over each structure's atoms."""
        q = self.query(z)  # (n_atoms, F)
        sign = (psi < 0).long()[graph_index]  # (n_atoms,)
        k, v = self.key[sign], self.value[sign]  # (n_atoms, F)
        y = nn.functional.softplus((q * k).sum(-1) / math.sqrt(q.shape[1]))
        norm = scatter_sum(y, graph_index, psi.shape[0]) + EPS  # (n_graphs,)
        a = psi.to(y.dtype)[graph_index] * y / norm[graph_index]  # (n_atoms,)
        av = a[:, None] * v
        return av + self.dense2(self.act(self.dense1(self.act(av))))
