"""Learning test: EFA learns the Coulomb tail of a disconnected ion pair, a local model cannot.

NH₄⁺…NH₄⁺ frames of ``data/global/nh4_nh4_scan.extxyz`` (GFN2-xTB, total charge
+2) with N–N distance d > cutoff × layers: the radius graph of every such frame
falls apart into the two ions, so the local So3krates energy is E(ion A) + E(ion
B) whatever d is (only the 0.02 Å noise of each ion's geometry varies). Its test
energy error therefore stays at the standard deviation of the profile (the
14.4/d eV Coulomb tail, ≈ 0.35 eV here), while the same model with the EFA
branch (pair kernel j₀(ω r) over the whole structure) learns it.

Catches: an EFA branch that does not reach across structures' components, a
branch that does not train (zero gradients through the zero-initialised output
projection), cross-talk between the structures of a batch, or a local model
that somehow sees beyond its cutoff.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.data.io import read
from equiforce.models.registry import build_model
from equiforce.testing import TINY_SO3KRATES

DATA = Path(__file__).resolve().parents[2] / "data" / "global" / "nh4_nh4_scan.extxyz"
CUTOFF = 4.0  # Å; TINY_SO3KRATES has 2 layers: pairs beyond 8 Å
EFA = {
    "r_max": 30.0,  # largest pair distance ≤ 25 + 2·1.05 Å + noise
    # phases ≤ 3π (order 19, 146 points): at ω_max = π/30 the j₀ basis is nearly
    # collinear on 8-25 Å and training stalls at 0.41 std (docs/global_attention.md)
    "max_frequency": 3 * math.pi / 30.0,
    "lebedev_order": 19,
    "num_features_qk": 8,
    "num_features_v": 8,
    "layers": (1,),  # last layer only (random projection in both layers diverged)
    "zero_init": False,  # trains faster than the zero-initialised projection
}


def far_pairs(n_train: int, n_test: int):
    """(train batch, train energies, test batch, test energies), shifted by the train mean."""
    frames = read(DATA, require=("energy", "forces"))
    d = np.array([a.info["distance_A"] for a in frames])
    far = np.nonzero(d > CUTOFF * TINY_SO3KRATES["num_layers"])[0]
    perm = np.random.default_rng(0).permutation(far)
    train, test = perm[:n_train], perm[n_train : n_train + n_test]
    energy = np.array([a.get_potential_energy() for a in frames])
    shift = energy[train].mean()

    def batch(idx):
        return AtomicGraph.collate(
            [AtomicGraph.from_atoms(frames[i], CUTOFF) for i in idx]
        )

    return batch(train), energy[train] - shift, batch(test), energy[test] - shift


def fit(model, graph, energy, steps: int, lr: float = 1e-2) -> None:
    """Adam on energy MSE + 0.01 × force MSE (full batch, float64)."""
    target = torch.as_tensor(energy)
    forces = graph.targets[keys.FORCES]
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        out = model(graph, compute_forces=True, create_graph=True)
        loss = ((out[keys.ENERGY] - target) ** 2).mean()
        loss = loss + 0.01 * ((out[keys.FORCES] - forces) ** 2).mean()
        loss.backward()
        opt.step()
    model.eval()


def rmse(model, graph, energy) -> float:
    """Energy RMSE (eV) on ``graph``."""
    pred = model(graph, compute_forces=False)[keys.ENERGY].detach().numpy()
    return float(np.sqrt(np.mean((pred - energy) ** 2)))


def test_efa_learns_disconnected_ion_pair_local_cannot():
    """Local RMSE ≥ 0.8 std (it can only learn the intramolecular noise); EFA RMSE
    < std / 3 after the same 500 steps.

    Measured with this setup (2026-12-03): local 1.01 std (300 steps); EFA 0.35,
    0.29, 0.27, 0.26 std after 300, 400, 500, 600 steps. About a minute on two
    idle cores: in the default suite, the issue's CI-sized learning test.
    """
    steps = 500
    torch.set_num_threads(1)
    g_train, e_train, g_test, e_test = far_pairs(48, 60)
    std = float(e_test.std())
    errors = {}
    for name, extra in (("local", {}), ("efa", {"global_attention": EFA})):
        model = build_model(
            "so3krates",
            dtype=torch.float64,
            seed=0,
            **{**TINY_SO3KRATES, "cutoff": CUTOFF},
            **extra,
        )
        fit(model, g_train, e_train, steps)
        errors[name] = rmse(model, g_test, e_test)
    assert errors["local"] > 0.8 * std, (errors, std)
    assert errors["efa"] < std / 3, (errors, std)
