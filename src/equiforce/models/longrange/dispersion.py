"""Many-body-free dispersion from Hirshfeld-scaled free atoms (SO3LR; §3.3).

Each atom's polarisability and C6 are its free-atom values
(:mod:`~equiforce.models.longrange.free_atoms`) scaled by the learned Hirshfeld
ratio h_i: α_i = α_i^free h_i, C6_i = C6_i^free h_i². Pairs mix them as
α_ij = (α_i + α_j)/2 and C6_ij = 2 C6_i C6_j α_i α_j / (α_i² C6_j + α_j² C6_i);
the quantum-Drude-oscillator (vdW-QDO) relations give C8 = 5 C6/γ and
C10 = 245 C6/(8 γ²), with γ = 1/(2 s²) and s a cubic fit in the QDO van der
Waals radius R = α_fs^{−4/21} α_ij^{1/7} (α_fs the fine-structure constant).
The damped pair energy, in atomic units, is

    E_ij = −Σ_{n=6,8,10} C_n,ij / (d^n + ρ^n),   ρ = 2·2.54·β·α_ij^{1/7},

with β = 1.2 in SO3LR; E = ½ Σ_{i≠j} E_ij · s(d_ij) over the long-range pairs,
s switching off over [r_lr − damping, r_lr]. References: Khabibrakhmanov,
Fedorov, Tkatchenko, JCTC 19, 7895 (2023) (DOI 10.1021/acs.jctc.3c00797);
so3krates-torch's ``DispersionInteraction``.
"""

from __future__ import annotations

import torch
from torch import nn

from equiforce.data.graph import AtomicGraph
from equiforce.models.base import NUM_ELEMENTS
from equiforce.models.longrange.free_atoms import FREE_ATOM_ALPHA_C6
from equiforce.models.longrange.pair_chunks import (
    DEFAULT_CHUNK_BYTES,
    PairEnergy,
    pair_energy_sum,
)
from equiforce.models.longrange.switch import BOHR, HARTREE, smooth_step

#: Fine-structure constant (CODATA 2018, as ASE).
FINE_STRUCTURE: float = 0.0072973525693
#: Cubic fit s(R) = b0 + b1 R + b2 R² + b3 R³ of the QDO length (atomic units).
QDO_FIT: tuple[float, float, float, float] = (
    -0.00433008,
    0.24428889,
    0.04125273,
    -0.00078893,
)


def free_atom_tables() -> tuple[torch.Tensor, torch.Tensor]:
    """α^free and C6^free (119,) float64 by atomic number (NaN where unknown)."""
    alpha = torch.full((NUM_ELEMENTS,), float("nan"), dtype=torch.float64)
    c6 = alpha.clone()
    data = torch.tensor(FREE_ATOM_ALPHA_C6, dtype=torch.float64)  # (102, 2)
    alpha[1 : len(data) + 1], c6[1 : len(data) + 1] = data[:, 0], data[:, 1]
    return alpha, c6


def mix(
    alpha_i: torch.Tensor, c6_i: torch.Tensor, alpha_j: torch.Tensor, c6_j: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """α_ij and C6_ij of pairs from per-atom values (all (n_pairs,), atomic units)."""
    alpha_ij = 0.5 * (alpha_i + alpha_j)
    c6_ij = (
        2.0 * c6_i * c6_j * alpha_i * alpha_j
        / (alpha_i**2 * c6_j + alpha_j**2 * c6_i)
    )  # fmt: skip
    return alpha_ij, c6_ij


def qdo_pair_energy(
    d: torch.Tensor, alpha_ij: torch.Tensor, c6_ij: torch.Tensor, beta: float
) -> torch.Tensor:
    """Damped C6 + C8 + C10 energy (n_pairs,) in hartree at distances ``d`` in bohr."""
    a7 = alpha_ij ** (1.0 / 7.0)  # α^{1/7}, in R and ρ
    radius = FINE_STRUCTURE ** (-4.0 / 21.0) * a7
    b0, b1, b2, b3 = QDO_FIT
    s = ((b3 * radius + b2) * radius + b1) * radius + b0
    # C8 = 5 C6/γ and C10 = 245 C6/(8 γ²) with 1/γ = 2 s²
    inv_gamma = 2.0 * s * s
    c8 = 5.0 * inv_gamma * c6_ij
    c10 = 245.0 / 8.0 * inv_gamma * inv_gamma * c6_ij
    rho2 = (beta * 2.0 * 2.54 * a7).square()
    d2 = d * d
    d6, rho6 = d2 * d2 * d2, rho2 * rho2 * rho2
    d8, rho8 = d6 * d2, rho6 * rho2
    return -(c6_ij / (d6 + rho6) + c8 / (d8 + rho8) + c10 / (d8 * d2 + rho8 * rho2))


class Dispersion(nn.Module):
    """Dispersion energy of given Hirshfeld ratios on the long-range pairs.

    Args:
        beta: damping scale β of ρ (``dispersion_energy_scale``, 1.2 in SO3LR).
        lr_cutoff: long-range cutoff r_lr, Å.
        damping: width of the switch-off below r_lr, Å.
    """

    def __init__(
        self,
        beta: float = 1.2,
        lr_cutoff: float = 12.0,
        damping: float = 2.0,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        super().__init__()
        self.beta, self.lr_cutoff, self.damping = (
            float(beta),
            float(lr_cutoff),
            float(damping),
        )
        #: memory budget of one chunk of pairs (:mod:`.pair_chunks`), bytes
        self.chunk_bytes = int(chunk_bytes)
        alpha, c6 = free_atom_tables()
        self.register_buffer("alpha_free", alpha, persistent=False)  # (119,)
        self.register_buffer("c6_free", c6, persistent=False)  # (119,)

    def forward(
        self,
        graph: AtomicGraph,
        lr_vectors: torch.Tensor | None,  # (n_lr, 3)
        hirshfeld: torch.Tensor,  # (n_atoms,)
    ) -> torch.Tensor:
        """Per-atom dispersion energies (n_atoms,) eV, half of each pair to i.

        ``lr_vectors`` None: the pair vectors are computed chunk by chunk from
        the graph (:func:`~.pair_chunks.pair_energy_sum`).
        """
        return pair_energy_sum(
            self.pair_energy(graph.atomic_numbers, hirshfeld),
            graph,
            graph.lr_edge_index,
            graph.lr_edge_shifts,
            lr_vectors,
            self.chunk_bytes,
        )

    def pair_energy(
        self,
        atomic_numbers: torch.Tensor,  # (n_atoms,)
        hirshfeld: torch.Tensor,  # (n_atoms,)
    ) -> PairEnergy:
        """The directed pair energies (i, j, d) -> (n,) eV of these atoms.

        Half of each pair's energy (the share of centre i); for
        :func:`~.pair_chunks.pair_energy_sums`, which SO3LR shares with
        electrostatics (one distance per pair for both terms).

        Args:
            atomic_numbers: Z of every atom.
            hirshfeld: Hirshfeld ratio of every atom.
        """
        dtype = hirshfeld.dtype
        alpha = self.alpha_free.to(dtype)[atomic_numbers] * hirshfeld  # (n_atoms,)
        c6 = self.c6_free.to(dtype)[atomic_numbers] * hirshfeld**2

        def pair_energy(i, j, d):
            alpha_ij, c6_ij = mix(alpha[i], c6[i], alpha[j], c6[j])
            e = qdo_pair_energy(d / BOHR, alpha_ij, c6_ij, self.beta) * HARTREE
            switch = smooth_step(d, self.lr_cutoff - self.damping, self.lr_cutoff)
            return 0.5 * e * torch.where(d > 0, switch, torch.zeros_like(switch))

        return pair_energy
