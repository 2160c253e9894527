"""Periodic Lennard-Jones with forces, stress and long-range corrections.

An analytic force provider for the NPT tests and measurements (the fluid's
equation of state is known: Johnson, Zollweg and Gubbins, Mol. Phys. 78, 591
(1993)). All pairs by the minimum-image convention, so the cutoff must be at
most half the smallest width of the cell; meant for a few hundred atoms.

    E = Σ_{i<j, r<r_c} [u(r) − u(r_c)] + C/V,   u = 4ε[(σ/r)¹² − (σ/r)⁶]

The truncated and shifted sum keeps the energy continuous; C/V is the
mean-field (g = 1 beyond r_c) correction that turns it back into the full
potential: the tail ∫_{r_c}^∞ and the shift of the pairs inside r_c,
C = 2π N² [4εσ³((σ/r_c)⁹/9 − (σ/r_c)³/3) + r_c³ u(r_c)/3]. Its pressure
C/V² is the usual virial tail correction.
"""

from __future__ import annotations

import math

import torch

from equiforce.md.state import MDState
from equiforce.nn.scatter import scatter_sum


class PeriodicLennardJones:
    """``force_fn(state, stress=False)`` for Lennard-Jones atoms in periodic boxes.

    Args:
        epsilon: well depth ε, eV (argon: 0.0104).
        sigma: σ, Å (argon: 3.405).
        cutoff: r_c, Å (at most half the smallest cell width).
        tail: add the mean-field long-range correction C/V.
    """

    def __init__(
        self,
        epsilon: float = 0.0104,
        sigma: float = 3.405,
        cutoff: float = 2.5 * 3.405,
        tail: bool = True,
    ) -> None:
        self.epsilon, self.sigma = float(epsilon), float(sigma)
        self.cutoff, self.tail = float(cutoff), bool(tail)

    def _u(self, r: torch.Tensor | float):
        sr6 = (self.sigma / r) ** 6
        return 4.0 * self.epsilon * (sr6 * sr6 - sr6)

    def correction_per_n2(self) -> float:
        """C / N², eV·Å³ (the energy correction is C/V)."""
        x3 = (self.sigma / self.cutoff) ** 3
        tail = 4.0 * self.epsilon * self.sigma**3 * (x3**3 / 9.0 - x3 / 3.0)
        return 2.0 * math.pi * (tail + self.cutoff**3 * self._u(self.cutoff) / 3.0)

    def _system(self, pos: torch.Tensor, cell: torch.Tensor):
        """Energy (), forces (n, 3) and virial sum W_ab = Σ u'(r) r_a r_b / r."""
        widths = torch.linalg.det(cell).abs() / torch.linalg.cross(
            cell[[1, 2, 0]], cell[[2, 0, 1]]
        ).norm(dim=-1)
        if float(widths.min()) < 2.0 * self.cutoff:
            raise ValueError(
                f"cutoff {self.cutoff:.3f} Å exceeds half the cell width "
                f"{float(widths.min()) / 2:.3f} Å (minimum image only)"
            )
        n = pos.shape[0]
        i, j = torch.triu_indices(n, n, offset=1, device=pos.device)
        frac = (pos[j] - pos[i]) @ torch.linalg.inv(cell)
        vec = (frac - torch.round(frac)) @ cell  # (n_pairs, 3) minimum image
        r = vec.norm(dim=-1)
        inside = r < self.cutoff
        vec, r, i, j = vec[inside], r[inside], i[inside], j[inside]
        sr6 = (self.sigma / r) ** 6
        energy = (4.0 * self.epsilon * (sr6 * sr6 - sr6) - self._u(self.cutoff)).sum()
        du_dr = 4.0 * self.epsilon * (-12.0 * sr6 * sr6 + 6.0 * sr6) / r
        f_j = -(du_dr / r)[:, None] * vec  # force on j
        forces = torch.zeros_like(pos).index_add_(0, j, f_j).index_add_(0, i, -f_j)
        virial = torch.einsum("p,pa,pb->ab", du_dr / r, vec, vec)
        return energy, forces, virial

    def __call__(
        self, state: MDState, stress: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """Energy (S,) eV, forces (N, 3) eV/Å[, stress (S, 3, 3) eV/Å³]."""
        n_sys = state.n_systems
        energy = state.positions.new_zeros(n_sys)
        forces = torch.zeros_like(state.positions)
        sigma = state.positions.new_zeros(n_sys, 3, 3)
        counts = scatter_sum(
            torch.ones_like(state.masses), state.system_idx, n_sys
        )  # (S,)
        eye = torch.eye(3, dtype=state.dtype, device=state.device)
        for s in range(n_sys):
            sel = state.system_idx == s
            e, f, w = self._system(state.positions[sel], state.cell[s])
            vol = torch.linalg.det(state.cell[s]).abs()
            corr = self.correction_per_n2() * counts[s] ** 2 / vol if self.tail else 0.0
            energy[s] = e + corr
            forces[sel] = f
            sigma[s] = (w - corr * eye) / vol  # C/V: ∂E/∂ε_ab = −(C/V) δ_ab
        return (energy, forces, sigma) if stress else (energy, forces)
