"""Small systems and force providers shared by the MD tests."""

import numpy as np
import torch
from ase import Atoms

from equiforce.md.forcefield import HarmonicTether
from equiforce.md.state import MDState, state_from_atoms


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


def tiny_so3krates():
    from equiforce.models.registry import build_model

    return build_model(
        "so3krates",
        num_features=16,
        num_layers=1,
        degrees=(1, 2),
        zero_init_readout=False,
        dtype=torch.float64,
    )
