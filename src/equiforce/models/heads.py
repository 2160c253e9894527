"""Several readout heads over one shared representation (a shallow ensemble).

A model with ``readout_heads: K`` (So3krates) keeps one message-passing
representation and K independently initialised readout MLPs ``F -> R -> 1``.
Its energy, the quantity every backend and the force loss see, is the mean of
the K heads; the spread of the heads is its uncertainty
(:mod:`equiforce.uncertainty`). The heads run as one batched product: one
``F -> K·R`` dense layer (each head's R columns are its own first layer, with
the same LeCun-normal initialisation as K separate layers) and one
``(K, R)`` contraction for the last layers.

Training: :class:`HeadsMixin` reports each head's per-structure energies as
``energy_heads`` (K, n_graphs) in training mode, and the loss charges each head
its own energy error (``equiforce.train.loss``): mean over heads of
(E_k − E_ref)² = (Ē − E_ref)² + (1/K) Σ_k (E_k − Ē)², i.e. the usual loss on
the mean plus a term that pulls the heads together *on the training data*,
where they have information, and leaves them free elsewhere. Forces are
trained on the mean only, so a training step costs what a one-head step
costs (per-head forces would need K backward passes).
"""

from __future__ import annotations

import torch
from torch import nn

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.nn.layers import ACTIVATIONS, Dense, lecun_normal_
from equiforce.nn.scatter import scatter_sum


class ReadoutHeads(nn.Module):
    """K readout MLPs ``F -> R -> 1`` evaluated together.

    Args:
        num_features: input width F.
        hidden: hidden width R of each head.
        n_heads: number of heads K (≥ 2).
        activation: hidden activation (``"silu"`` or ``"identity"``).
        zero_init_last: zero the last layers (every head predicts 0 at first;
            they still differ through their first layers and so train apart).
    """

    def __init__(
        self,
        num_features: int,
        hidden: int,
        n_heads: int,
        activation: str = "identity",
        zero_init_last: bool = False,
    ) -> None:
        super().__init__()
        if n_heads < 2:
            raise ValueError(f"ReadoutHeads needs at least 2 heads, got {n_heads}")
        self.n_heads, self.hidden = int(n_heads), int(hidden)
        self.first = Dense(num_features, n_heads * hidden)
        self.act = ACTIVATIONS[activation]()
        self.last_weight = nn.Parameter(torch.empty(n_heads, hidden))  # (K, R)
        self.last_bias = nn.Parameter(torch.zeros(n_heads))  # (K,)
        if zero_init_last:
            nn.init.zeros_(self.last_weight)
        else:
            for k in range(n_heads):  # each head as a Dense(R, 1) of its own
                lecun_normal_(self.last_weight.data[k : k + 1], hidden)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Each head's output (n_atoms, K) of features (n_atoms, F)."""
        h = self.act(self.first(features))  # (n_atoms, K·R)
        h = h.unflatten(-1, (self.n_heads, self.hidden))  # (n_atoms, K, R)
        return (h * self.last_weight).sum(-1) + self.last_bias  # (n_atoms, K)

    def mean(self, features: torch.Tensor) -> torch.Tensor:
        """Mean of the heads (n_atoms,), at the cost of one head when linear.

        With the identity activation every head is affine in the features, so
        their mean is one affine map: (1/K) Σ_k w_k·(W_k f + b_k) = w̄·f + b̄
        with w̄ = (1/K) Σ_k W_kᵀ w_k (F,) and b̄ = (1/K) Σ_k (w_k·b_k + c_k).
        """
        if not isinstance(self.act, nn.Identity):
            return self(features).mean(-1)
        k, r = self.n_heads, self.hidden
        w1 = self.first.weight.view(k, r, -1)  # (K, R, F)
        w = torch.einsum("kr,krf->f", self.last_weight, w1) / k  # (F,)
        b1 = self.first.bias.view(k, r)  # (K, R)
        b = ((self.last_weight * b1).sum(-1) + self.last_bias).mean()
        return features @ w + b  # (n_atoms,)


class HeadsMixin:
    """What a model with :class:`ReadoutHeads` adds to :class:`PotentialModel`.

    The model implements :meth:`head_atomic_energies` (n_atoms, K); its
    ``atomic_energies`` return their mean. In training mode the per-structure
    energies of each head computed during the last call are kept and
    :meth:`forward` returns them as ``energy_heads`` (K, n_graphs), with E0.
    """

    n_heads: int = 1

    def head_atomic_energies(
        self, graph: AtomicGraph, edge_vectors: torch.Tensor, differentiable: bool
    ) -> torch.Tensor:
        """Network atomic energies of every head (n_atoms, K), eV, without E0."""
        raise NotImplementedError

    @property
    def wants_heads(self) -> bool:
        """Whether the running call keeps each head's energies (a training forward)."""
        return self.__dict__.get("_want_heads", False)

    def _keep_heads(self, graph: AtomicGraph, heads: torch.Tensor) -> None:
        """Keep each head's per-structure sums (n_graphs, K) inside a training forward.

        Only :meth:`forward_with_heads` asks for them (not the compiled training
        step's transforms, whose tensors must not outlive the transform).
        """
        if self.wants_heads:
            sums = scatter_sum(
                heads.to(torch.float64), graph.graph_index, graph.n_graphs
            )
            self.__dict__["_head_sums"] = sums

    def forward_with_heads(self, forward, graph: AtomicGraph, *args, **kwargs):
        """``forward(graph, ...)`` plus ``energy_heads`` (K, n_graphs) in training."""
        self.__dict__["_want_heads"] = self.training
        try:
            out = forward(graph, *args, **kwargs)
        finally:
            self.__dict__["_want_heads"] = False
        sums = self.__dict__.pop("_head_sums", None)
        if sums is not None:
            e0 = scatter_sum(
                self.e0[graph.atomic_numbers], graph.graph_index, graph.n_graphs
            )
            out[keys.ENERGY_HEADS] = (sums + e0[:, None]).T  # (K, n_graphs)
        return out


def head_spread(
    heads: torch.Tensor, ref: torch.Tensor, n_atoms: torch.Tensor, per_atom: bool
) -> torch.Tensor:
    """(1/K) Σ_k (E_k − Ē)² averaged over the graphs with an energy label, eV².

    Added to the energy loss of the mean it gives the mean over heads of each
    head's own squared error: (1/K) Σ_k (E_k − E_ref)² = (Ē − E_ref)² + this.

    Args:
        heads: (K, n_graphs) each head's energies, eV.
        ref: (n_graphs,) reference energies (NaN: no label).
        n_atoms: (n_graphs,) atoms per graph.
        per_atom: the energy loss is on E / n_atoms.
    """
    heads = heads.to(torch.float64)
    spread = (heads - heads.mean(0)).square().mean(0)  # (n_graphs,)
    if per_atom:
        spread = spread / n_atoms.to(torch.float64).square()
    valid = torch.isfinite(ref)
    return torch.where(
        valid, spread, torch.zeros_like(spread)
    ).sum() / valid.sum().clamp(min=1)
