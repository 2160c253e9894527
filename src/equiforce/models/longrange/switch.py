"""Smooth switching functions of the long-range terms (SO3LR conventions).

``smooth_step(x, x_on, x_off)`` goes from 1 at ``x_on`` to 0 at ``x_off`` with
every derivative zero at both ends (built from σ(t) = exp(−1/t)); it is 1 below
``x_on`` and 0 above ``x_off``. The ZBL term switches off over [0, 1.5] Å,
dispersion over [r_lr − damping, r_lr] and the shifted-force Coulomb blends its
two forms over [0.45 r_lr, r_lr] with it. :func:`pair_sum` hands pair energies to
their atoms.
"""

from __future__ import annotations

import torch

from equiforce.nn.scatter import scatter_sum

#: Bohr radius in Å and Hartree in eV (the values so3krates-torch and ASE use).
BOHR: float = 0.5291772105638411
HARTREE: float = 27.211386245988
#: Coulomb constant e²/(4πε0) in eV·Å.
KE: float = 14.399645351950548


def _sigma(t: torch.Tensor) -> torch.Tensor:
    """exp(−1/t) for t > 0, else 0 (finite gradient everywhere)."""
    return torch.where(t > 0, torch.exp(-1.0 / t.clamp_min(1e-12)), torch.zeros_like(t))


def smooth_step(x: torch.Tensor, x_on: float, x_off: float) -> torch.Tensor:
    """1 for x ≤ x_on, 0 for x ≥ x_off, C^∞ in between: same shape as ``x``."""
    c = (x - x_on) / (x_off - x_on)
    s_off, s_on = _sigma(1.0 - c), _sigma(c)
    return s_off / (s_off + s_on + 1e-12)


def pair_sum(
    e: torch.Tensor, index: torch.Tensor, n_atoms: int, both_ways: bool
) -> torch.Tensor:
    """Per-atom sums (n_atoms,) of pair energies ``e`` (n,) on pairs ``index`` (2, n).

    Each pair's ``e`` goes to its centre i, and with ``both_ways`` (the pair
    stands for its reverse too, the first half of a paired list) also to j.
    """
    out = scatter_sum(e, index[0], n_atoms)
    return out + scatter_sum(e, index[1], n_atoms) if both_ways else out
