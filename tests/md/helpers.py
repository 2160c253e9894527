"""Small systems and force providers shared by the MD tests."""

import numpy as np
import torch
from ase import Atoms

from equiforce.md.forcefield import HarmonicTether
from equiforce.md.state import MDState, state_from_atoms
from equiforce.testing import tiny_so3krates  # noqa: F401 - shared by the md tests


def lj_cluster(n: int = 7, seed: int = 0) -> Atoms:
    """A compact argon cluster near the LJ minimum spacing (2^(1/6) σ)."""
    rng = np.random.default_rng(seed)
    grid = np.array(
        [[i, j, k] for i in range(2) for j in range(2) for k in range(2)], float
    )
    pos = grid[:n] * 3.82 + rng.normal(0, 0.05, (n, 3))
    return Atoms(f"Ar{n}", positions=pos)


def tethered_gas(n: int = 64, n_systems: int = 1, seed: int = 0):
    """n atoms per system on independent harmonic springs with varied stiffness."""
    rng = np.random.default_rng(seed)
    atoms = [
        Atoms(f"H{n}", positions=rng.normal(0, 1.0, (n, 3))) for _ in range(n_systems)
    ]
    state = state_from_atoms(atoms)
    k = torch.as_tensor(rng.uniform(0.5, 2.0, (state.n_atoms, 1)))
    return atoms, state, VariedTether(k, state.positions.clone())


class VariedTether(HarmonicTether):
    """Harmonic tethers with a per-atom spring constant (n_atoms, 1) eV/Å²."""

    def __init__(self, k: torch.Tensor, reference: torch.Tensor) -> None:
        super().__init__(1.0, reference)
        self.k = k

    def __call__(self, state: MDState):
        d = state.positions - self.reference
        e_atom = 0.5 * (self.k * d * d).sum(-1)
        e = torch.zeros(state.n_systems, dtype=d.dtype).index_add_(
            0, state.system_idx, e_atom
        )
        return e, -self.k * d


class IdealGas:
    """No interactions: zero energy, forces and stress (stress-capable provider)."""

    def __call__(self, state: MDState, stress: bool = False):
        energy = state.positions.new_zeros(state.n_systems)
        forces = torch.zeros_like(state.positions)
        if stress:
            return energy, forces, state.positions.new_zeros(state.n_systems, 3, 3)
        return energy, forces


class MorseTerm(torch.nn.Module):
    """An energy term with a minimum: Morse pairs with a cosine cutoff.

    e_i = ½ Σ_j D [(1 − e^{−a(r_ij − r0)})² − 1] f_c(r_ij), added to a model's
    ``terms`` so that an equiforce model has well-defined minima (tests of
    relaxations).
    """

    def __init__(self, depth: float, width: float, r0: float, cutoff: float) -> None:
        super().__init__()
        self.depth, self.width, self.r0, self.cutoff = depth, width, r0, cutoff

    def forward(self, graph, edge_vectors):
        from equiforce.nn.radial import cosine_cutoff

        r = edge_vectors.norm(dim=-1)
        x = 1.0 - torch.exp(-self.width * (r - self.r0))
        e_edge = 0.5 * self.depth * (x * x - 1.0) * cosine_cutoff(r, self.cutoff)
        out = torch.zeros_like(graph.positions[:, 0])
        return out.index_add(0, graph.edge_index[0], e_edge)


def morse_model(r0: float, depth: float = 0.5, width: float = 1.5):
    """A float64 model whose energy is only a Morse term (zero learned part)."""
    from equiforce.models.registry import build_model

    model = build_model(
        "so3krates", num_features=16, num_layers=1, degrees=(1, 2), dtype=torch.float64
    )  # zero_init_readout: the learned part is exactly 0
    model.terms["morse"] = MorseTerm(depth, width, r0, model.cutoff)
    return model.eval()
