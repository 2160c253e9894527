"""Helpers of the uncertainty tests: tiny So3krates ensembles fitted in seconds.

Kept out of conftest.py so that test modules import them by a unique module name
(every tests/ folder has a conftest.py).
"""

import numpy as np
import torch
from ase.build import molecule
from ase.calculators.emt import EMT

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model
from equiforce.testing import TINY_SO3KRATES
from equiforce.train.loss import WeightedLoss

CUTOFF = 4.0
TINY = {**TINY_SO3KRATES, "num_layers": 1, "cutoff": CUTOFF, "zero_init_readout": True}


def labelled_frames(n: int, rattle: float, seed: int) -> list:
    """Ethanol rattled by ``rattle`` Å, labelled with EMT energies and forces."""
    rng = np.random.default_rng(seed)
    base = molecule("CH3CH2OH")
    frames = []
    for _ in range(n):
        a = base.copy()
        a.positions += rng.normal(scale=rattle, size=a.positions.shape)
        a.calc = EMT()
        a.info["energy"] = a.get_potential_energy()
        a.arrays["forces_ref"] = a.get_forces()
        a.calc = None
        frames.append(a)
    return frames


def batch_of(frames: list) -> AtomicGraph:
    """One float64 batch of ``frames`` with energy and force targets."""
    graphs = []
    for a in frames:
        g = AtomicGraph.from_arrays(a.positions, a.numbers, CUTOFF, dtype=torch.float64)
        g.targets = {
            keys.ENERGY: torch.tensor([a.info["energy"]], dtype=torch.float64),
            keys.FORCES: torch.as_tensor(a.arrays["forces_ref"]),
        }
        graphs.append(g)
    return AtomicGraph.collate(graphs)


def fit(model, frames: list, steps: int = 120, lr: float = 1e-2):
    """Full-batch Adam on energy and forces through the training loss."""
    batch = batch_of(frames)
    e_mean = float(batch.targets[keys.ENERGY].mean()) / batch.n_atoms[0].item()
    model.e0[[1, 6, 8]] = e_mean  # a per-atom shift: the net fits the remainder
    torch.set_num_threads(1)  # session fixtures run before the autouse one
    loss_fn = WeightedLoss(energy_weight=1.0, forces_weight=1.0)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(steps):
        opt.zero_grad()
        out = model(batch, compute_forces=True, create_graph=True)
        loss, _ = loss_fn(out, batch)
        loss.backward()
        opt.step()
    return model.eval()


def tiny(seed: int, **overrides):
    return build_model(
        "so3krates", dtype=torch.float64, seed=seed, **{**TINY, **overrides}
    )


def distorted(frame, factor: float = 0.75):
    """``frame`` compressed about its centre: bonds far shorter than in the data."""
    a = frame.copy()
    centre = a.positions.mean(0)
    a.positions = centre + factor * (a.positions - centre)
    return a
