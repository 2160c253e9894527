"""ZBL nuclear repulsion with trainable screening (SO3LR; global-interactions.md §3.4).

E_ZBL = ½ Σ_{i≠j} k_e Z_i Z_j / d · φ(d) · Φ(d (Z_i^p + Z_j^p) b) · s(d), with the
screening function Φ(x) = Σ_{k=1..4} c_k e^{−a_k x} (c normalised to sum 1), the
short-range cutoff φ of the local model, b = 1/(0.8854 a_0) at initialisation and
s a smooth switch from 1 at d = 0 to 0 at 1.5 Å (:func:`smooth_step`). All of a, c,
p and b are positive through a softplus, initialised at the universal ZBL values.
It runs on the short-range pairs (``graph.edge_index``).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from equiforce.data.graph import AtomicGraph
from equiforce.models.longrange.switch import BOHR, KE, pair_sum, smooth_step
from equiforce.nn.radial import Cutoff

#: Universal ZBL screening parameters (Ziegler, Biersack, Littmark 1985).
ZBL_A: tuple[float, ...] = (3.2, 0.9423, 0.4028, 0.2016)
ZBL_C: tuple[float, ...] = (0.1818, 0.5099, 0.2802, 0.02817)
ZBL_P: float = 0.23
#: ZBL switches off between 0 and this distance, Å.
ZBL_SWITCH_OFF: float = 1.5


def _softplus_inverse(x: float) -> float:
    return x + math.log(-math.expm1(-x))


class ZBLRepulsion(nn.Module):
    """Pairwise ZBL repulsion: ``(graph, edge_vectors) -> (n_atoms,)`` eV.

    Args:
        cutoff: short-range cutoff r_c of φ, Å.
        cutoff_fn: name of φ (:class:`equiforce.nn.radial.Cutoff`).
    """

    def __init__(self, cutoff: float, cutoff_fn: str = "phys") -> None:
        super().__init__()
        self.cutoff_fn = Cutoff(cutoff_fn, cutoff)
        inv = _softplus_inverse
        self.a_raw = nn.Parameter(torch.tensor([inv(a) for a in ZBL_A]))  # (4,)
        self.c_raw = nn.Parameter(torch.tensor([inv(c) for c in ZBL_C]))  # (4,)
        self.p_raw = nn.Parameter(torch.tensor(inv(ZBL_P)))
        self.b_raw = nn.Parameter(torch.tensor(inv(1.0 / (0.8854 * BOHR))))

    def forward(self, graph: AtomicGraph, edge_vectors: torch.Tensor) -> torch.Tensor:
        """Per-atom ZBL energies (n_atoms,), half of each pair to its centre i."""
        softplus = nn.functional.softplus
        a, c = softplus(self.a_raw), softplus(self.c_raw)  # (4,)
        c = c / c.sum()
        p, b = softplus(self.p_raw), softplus(self.b_raw)
        index = graph.edge_index  # (2, n_edges)
        if graph.edges_paired:  # symmetric in (i, j): each unordered pair once
            half = index.shape[1] // 2
            index, edge_vectors = index[:, :half], edge_vectors[:half]
        i, j = index[0], index[1]
        d = torch.linalg.vector_norm(edge_vectors, dim=-1)  # (n,)
        z = graph.atomic_numbers.to(d.dtype)
        z_i, z_j = z[i], z[j]
        coulomb = KE * self.cutoff_fn(d) * z_i * z_j / d.clamp_min(1e-6)
        x = d * (z_i.pow(p) + z_j.pow(p)) * b  # (n,)
        screening = (c * torch.exp(-a * x[:, None])).sum(-1)
        e = smooth_step(d, 0.0, ZBL_SWITCH_OFF) * coulomb * screening / 2.0
        return pair_sum(e, index, graph.num_nodes, graph.edges_paired)
