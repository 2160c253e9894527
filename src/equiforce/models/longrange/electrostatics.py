"""Electrostatics of learned partial charges (SO3LR; global-interactions.md §3.1-3.2).

Charges: raw per-atom charges q̃_i are shifted equally within each structure so
that they sum exactly to its total charge Q: q_i = q̃_i + (Q − Σ_j q̃_j)/N
(:func:`conserve_charge`).

Energy: E = ½ Σ_{i≠j} k_e q_i q_j g(d_ij) over the long-range pairs, with the
erf-damped kernel g(d) = erf(d/σ)/d (finite at d = 0, where the local model is in
charge). With a long-range cutoff r_lr the kernel is shifted so that it vanishes
at r_lr: below 0.45 r_lr it is g(d) − g(r_lr); towards r_lr it blends smoothly
(:func:`~equiforce.models.longrange.switch.smooth_step`) into the shifted-force
form g(d) − g(r_lr) − (d − r_lr) g′(r_lr), whose value and slope vanish at r_lr;
zero beyond. This is so3krates-torch's ``CoulombErfShiftedForceSmooth`` (and
mlff's ``coulomb_erf_shifted_force_smooth``), the form the released SO3LR uses
for molecules.

Periodic cells: structures periodic in all three directions take the Ewald/PME
sum of the same charges instead (``periodic``, a
:class:`~equiforce.models.longrange.ewald.PeriodicCoulomb`); open structures and
slabs in the same batch keep the shifted kernel above.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from equiforce.data.graph import AtomicGraph
from equiforce.models.longrange.ewald import PeriodicCoulomb
from equiforce.models.longrange.pair_chunks import (
    DEFAULT_CHUNK_BYTES,
    PairEnergy,
    pair_energy_sum,
    pair_vectors,
)
from equiforce.models.longrange.switch import KE, smooth_step
from equiforce.nn.efa import is_tracing
from equiforce.nn.scatter import scatter_sum

#: The smooth blend of the two kernels starts at this fraction of r_lr.
CUTON_FRACTION: float = 0.45


def conserve_charge(
    raw: torch.Tensor,  # (n_atoms,)
    graph_index: torch.Tensor,  # (n_atoms,)
    n_atoms: torch.Tensor,  # (n_graphs,)
    total_charge: torch.Tensor | None,  # (n_graphs,)
) -> torch.Tensor:
    """Charges (n_atoms,) e summing exactly to each structure's total charge.

    ``total_charge`` None means neutral structures.
    """
    n_graphs = n_atoms.shape[0]
    excess = -scatter_sum(raw, graph_index, n_graphs)  # (n_graphs,)
    if total_charge is not None:
        excess = excess + total_charge.to(raw.dtype)
    return raw + (excess / n_atoms.to(raw.dtype))[graph_index]


def _erf_kernel(d: torch.Tensor | float, sigma: float) -> torch.Tensor | float:
    """g(d) = erf(d/σ)/d."""
    if isinstance(d, float):
        return math.erf(d / sigma) / d
    return torch.erf(d / sigma) / d


def _erf_kernel_slope(d: float, sigma: float) -> float:
    """g′(d) of :func:`_erf_kernel`."""
    x = d / sigma
    return (2.0 * d * math.exp(-x * x) / (math.sqrt(math.pi) * sigma) - math.erf(x)) / (
        d * d
    )


class Electrostatics(nn.Module):
    """Damped, shifted Coulomb energy of given charges on the long-range pairs.

    Args:
        sigma: erf damping length σ, Å (4.0 in SO3LR).
        lr_cutoff: long-range cutoff r_lr, Å.
        periodic: Ewald/PME sum for structures periodic in 3D; None: the
            shifted kernel above sums images within r_lr there too.
    """

    def __init__(
        self,
        sigma: float = 4.0,
        lr_cutoff: float = 12.0,
        periodic: PeriodicCoulomb | None = None,
        chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    ) -> None:
        super().__init__()
        self.sigma, self.lr_cutoff = float(sigma), float(lr_cutoff)
        self.periodic = periodic
        #: memory budget of one chunk of pairs (:mod:`.pair_chunks`), bytes
        self.chunk_bytes = int(chunk_bytes)
        self.shift = _erf_kernel(self.lr_cutoff, self.sigma)
        self.slope = _erf_kernel_slope(self.lr_cutoff, self.sigma)

    def pair_kernel(self, d: torch.Tensor) -> torch.Tensor:
        """The cut-off kernel (n_pairs,) in Å⁻¹ at distances ``d`` (n_pairs,)."""
        r_c = self.lr_cutoff
        g = _erf_kernel(d.clamp_min(1e-12), self.sigma) - self.shift
        blend = smooth_step(d, CUTON_FRACTION * r_c, r_c)
        kernel = g - (1.0 - blend) * self.slope * (d - r_c)
        return torch.where(d < r_c, kernel, torch.zeros_like(kernel))

    def forward(
        self,
        graph: AtomicGraph,
        lr_vectors: torch.Tensor | None,  # (n_lr, 3)
        charges: torch.Tensor,  # (n_atoms,)
    ) -> torch.Tensor:
        """Per-atom electrostatic energies (n_atoms,) eV, half of each pair to i.

        ``lr_vectors`` None: the pair vectors are computed from the graph where
        needed, chunk by chunk for the shifted kernel.
        """
        periodic = self.periodic_graphs(graph)
        if periodic is None:
            return self._shifted(
                graph, graph.lr_edge_index, graph.lr_edge_shifts, lr_vectors, charges
            )
        every = bool(periodic.all())
        pair_periodic = None  # (n_lr,) bool, only when some pairs are read
        if self.periodic.needs_pairs or not every:
            pair_periodic = periodic[graph.graph_index[graph.lr_edge_index[0]]]
        pairs = (None, None)
        if self.periodic.needs_pairs:
            index, shifts, vectors = self._select(graph, lr_vectors, pair_periodic)
            if vectors is None:
                vectors = pair_vectors(
                    index, shifts, graph.graph_index, graph.positions, graph.cell
                )
            pairs = (index, vectors)
        energies = self.periodic(
            graph.positions,
            charges,
            graph.cell.to(graph.positions.dtype),
            graph.n_atoms.tolist(),
            periodic.tolist(),
            *pairs,
        )
        if not every:  # open structures and slabs in the batch
            index, shifts, vectors = self._select(graph, lr_vectors, ~pair_periodic)
            energies = energies + self._shifted(graph, index, shifts, vectors, charges)
        return energies

    def _shifted(
        self,
        graph: AtomicGraph,
        index: torch.Tensor,  # (2, n)
        shifts: torch.Tensor,  # (n, 3)
        vectors: torch.Tensor | None,  # (n, 3)
        charges: torch.Tensor,  # (n_atoms,)
    ) -> torch.Tensor:
        """Per-atom energies (n_atoms,) eV of the shifted kernel on these pairs."""
        return pair_energy_sum(
            self.pair_energy(charges), graph, index, shifts, vectors, self.chunk_bytes
        )

    def pair_energy(self, charges: torch.Tensor) -> PairEnergy:
        """The shifted kernel's directed pair energies (i, j, d) -> (n,) eV.

        Half of each pair's energy (the share of centre i); for
        :func:`~.pair_chunks.pair_energy_sums`, which SO3LR shares with
        dispersion (one distance per pair for both terms).

        Args:
            charges: (n_atoms,) partial charge of every atom, e.
        """

        def pair_energy(i, j, d):
            return 0.5 * KE * charges[i] * charges[j] * self.pair_kernel(d)

        return pair_energy

    @staticmethod
    def _select(
        graph: AtomicGraph,
        lr_vectors: torch.Tensor | None,  # (n_lr, 3)
        mask: torch.Tensor,  # (n_lr,) bool
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The long-range pairs (2, n), shifts (n, 3), vectors (n, 3) where ``mask``."""
        keep = mask.nonzero()[:, 0]
        vectors = None if lr_vectors is None else lr_vectors[keep]
        return graph.lr_edge_index[:, keep], graph.lr_edge_shifts[keep], vectors

    def periodic_graphs(self, graph: AtomicGraph) -> torch.Tensor | None:
        """(n_graphs,) bool: which structures get the Ewald/PME sum; None: none.

        With None, :meth:`forward` is the shifted kernel (:meth:`pair_energy`) on
        all pairs.
        """
        if self.periodic is None or is_tracing():
            # traced (compiled) calls get no 3D-periodic structure:
            # SO3LR.compiled_accepts sends those to the eager model
            return None
        periodic = graph.pbc.all(dim=1)  # (n_graphs,)
        return periodic if bool(periodic.any()) else None
