"""Coulomb energy of charges in 3D-periodic cells: Ewald or PME through torch-pme.

The pair kernel is SO3LR's g(d) = erf(d/σ)/d (σ > 0: the interaction of two
Gaussian charges, finite at d = 0) or bare point charges g(d) = 1/d (σ = 0). The
periodic energy sums g over every pair and every image, i = j only between
distinct images, with a uniform neutralising background for charged cells:

    E = ½ k_e Σ'_{i,j,n} q_i q_j g(|r_j − r_i + n·cell|)  (background included).

It is split at a Gaussian smearing s (torch-pme's convention: long-range part
erf(d/(√2 s))/d) into

- a reciprocal-space part, torch-pme's :class:`~torchpme.PMECalculator` or
  :class:`~torchpme.EwaldCalculator` with ``CoulombPotential(smearing=s)``
  (self term and point-charge background −π s² Q²/V already subtracted);
- a real-space part k_s(d) = [erf(d/σ) − erf(d/(√2 s))]/d (erf(d/σ) → 1 for
  σ = 0) on the long-range pairs, evaluated here;
- the background term of the erf kernel, +π σ²/2 · Q²/V, which the split's
  −π s² Q²/V does not know about (the direct sum of g with a neutralising
  background differs from the point-charge one by ∫ erfc(d/σ)/d d³r = π σ²).

For σ > 0 the default s = σ/√2 makes k_s ≡ 0: the energy is the reciprocal sum
alone and needs no pairs. SO3LR's JAX development version (mlff
``coulomb_erf_shifted_force_smooth_pme`` + jax-pme) splits the same kernel the
same way; so3krates-torch's ``PMEElectrostaticInteraction`` instead sums bare
point charges (σ = 0, see ``docs/so3lr.md``).

Per-atom energies are e_i = ½ k_e q_i φ_i with φ_i the potential at atom i, so
they sum to E. torch-pme's mesh calculators take one structure at a time; a batch
is looped over structure by structure. Equations: ``global-interactions.md`` §3.2.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from equiforce.errors import EquiforceError
from equiforce.models.longrange.switch import KE

Method = Literal["pme", "ewald"]


def _torchpme():
    """The torchpme module, or a clear error naming the package to install."""
    try:
        import torchpme
    except ImportError as err:  # pragma: no cover - torch-pme is in the test venv
        raise EquiforceError(
            "periodic electrostatics needs torch-pme: pip install torch-pme "
            "(or set periodic_electrostatics='direct')"
        ) from err
    return torchpme


class PeriodicCoulomb(nn.Module):
    """Ewald/PME energy of charges in one or more 3D-periodic cells.

    Args:
        sigma: erf damping length σ of the kernel, Å; 0 for bare point charges.
        method: ``"pme"`` (O(N log N), mesh) or ``"ewald"`` (O(N·N_k), exact k-sum).
        smearing: Gaussian splitting width s, Å. None: σ/√2 (no real-space part)
            for σ > 0; ``real_cutoff``/6 for point charges (erfc(6/√2) = 2e-9
            at the cutoff).
        real_cutoff: cutoff of the real-space part, Å (the long-range pairs must
            reach it); needed only when s > σ/√2.
        mesh_spacing: PME mesh spacing h, Å (torch-pme rounds the grid up to a
            power of two of at least 2L/h + 1 points, so the grid step is h/4
            to h/2). None: s/(2√2) (σ/4 = 1 Å for SO3LR), ~1e-6 relative
            error in the energy with 6 nodes.
        interpolation_nodes: PME interpolation order (3-7).
        lr_wavelength: Ewald shortest wavelength, Å. None: s/2.
    """

    def __init__(
        self,
        sigma: float = 0.0,
        method: Method = "pme",
        smearing: float | None = None,
        real_cutoff: float | None = None,
        mesh_spacing: float | None = None,
        interpolation_nodes: int = 6,
        lr_wavelength: float | None = None,
    ) -> None:
        super().__init__()
        if method not in ("pme", "ewald"):
            raise ValueError(f"method must be 'pme' or 'ewald', got {method!r}")
        if sigma < 0:
            raise ValueError(f"sigma must be ≥ 0, got {sigma}")
        if smearing is None:
            if sigma > 0:
                smearing = sigma / math.sqrt(2.0)
            elif real_cutoff is not None:
                smearing = real_cutoff / 6.0
            else:
                raise ValueError("point charges need a smearing or a real_cutoff")
        self.sigma, self.method, self.smearing = float(sigma), method, float(smearing)
        #: the real-space kernel k_s vanishes (to rounding) when s = σ/√2
        self.needs_pairs = not math.isclose(self.smearing * math.sqrt(2.0), sigma)
        if self.needs_pairs and real_cutoff is None:
            raise ValueError("a smearing s ≠ σ/√2 needs a real_cutoff for the pairs")
        self.real_cutoff = None if real_cutoff is None else float(real_cutoff)
        self.mesh_spacing = mesh_spacing or self.smearing / (2.0 * math.sqrt(2.0))
        self.interpolation_nodes = interpolation_nodes
        self.lr_wavelength = lr_wavelength or self.smearing / 2.0
        # torch-pme modules per (dtype, device), kept out of the state dict
        self._calculators: dict[tuple[torch.dtype, torch.device], nn.Module] = {}

    def extra_repr(self) -> str:  # noqa: D102
        return (
            f"sigma={self.sigma}, method={self.method!r}, smearing={self.smearing:.4g}"
        )

    def _calculator(self, dtype: torch.dtype, device: torch.device) -> nn.Module:
        key = (dtype, device)
        if key not in self._calculators:
            tp = _torchpme()
            potential = tp.CoulombPotential(smearing=self.smearing)
            if self.method == "pme":
                calc = tp.PMECalculator(
                    potential,
                    mesh_spacing=self.mesh_spacing,
                    interpolation_nodes=self.interpolation_nodes,
                )
            else:
                calc = tp.EwaldCalculator(potential, lr_wavelength=self.lr_wavelength)
            self._calculators[key] = calc.to(device=device, dtype=dtype)
        return self._calculators[key]

    def real_kernel(self, d: torch.Tensor) -> torch.Tensor:
        """k_s(d) (n_pairs,) Å⁻¹ at distances ``d`` (n_pairs,), zero beyond the cutoff."""
        d_safe = d.clamp_min(1e-12)
        near = torch.erf(d_safe / self.sigma) if self.sigma > 0 else torch.ones_like(d)
        k = (near - torch.erf(d_safe / (math.sqrt(2.0) * self.smearing))) / d_safe
        return torch.where(d < self.real_cutoff, k, torch.zeros_like(k))

    def reciprocal(
        self,
        positions: torch.Tensor,  # (n, 3)
        charges: torch.Tensor,  # (n,)
        cell: torch.Tensor,  # (3, 3)
    ) -> torch.Tensor:
        """Per-atom reciprocal + self + background energies (n,) eV of one cell."""
        if (
            not torch.compiler.is_compiling()
            and float(torch.linalg.det(cell.detach()).abs()) < 1e-9
        ):
            raise EquiforceError(
                "periodic electrostatics: a structure has 3D pbc but a cell of zero "
                "volume; give its lattice vectors (or pbc=False)"
            )
        calc = self._calculator(positions.dtype, positions.device)
        empty = positions.new_zeros((0, 2), dtype=torch.long)
        phi = calc(  # (n, 1): ½ Σ_j q_j v_LR(r_ij) − self − point background
            charges[:, None], cell, positions, empty, positions.new_zeros(0)
        )[:, 0]
        q_total = charges.sum()
        volume = torch.linalg.det(cell).abs()
        background = (math.pi * self.sigma**2 / 2.0) * q_total / volume
        return KE * charges * (phi + background)

    def real_space(
        self,
        charges: torch.Tensor,  # (n_atoms,)
        pairs: torch.Tensor,  # (2, n_pairs), both directions
        distances: torch.Tensor,  # (n_pairs,)
    ) -> torch.Tensor:
        """Per-atom real-space energies (n_atoms,) eV, half of each pair to i."""
        i, j = pairs[0], pairs[1]
        e = 0.5 * KE * charges[i] * charges[j] * self.real_kernel(distances)
        return torch.zeros_like(charges).index_add(0, i, e)

    def forward(
        self,
        positions: torch.Tensor,  # (n_atoms, 3)
        charges: torch.Tensor,  # (n_atoms,)
        cell: torch.Tensor,  # (n_graphs, 3, 3)
        n_atoms: list[int],
        periodic: list[bool],
        pairs: torch.Tensor | None = None,  # (2, n_pairs)
        vectors: torch.Tensor | None = None,  # (n_pairs, 3)
    ) -> torch.Tensor:
        """Per-atom energies (n_atoms,) eV of the periodic structures (0 elsewhere).

        Args:
            positions: atoms of all structures, each structure's atoms contiguous.
            charges: partial charges, e.
            cell: lattice vectors as rows, Å.
            n_atoms: atoms per structure.
            periodic: which structures to sum periodically.
            pairs: full pair list (both directions) of the periodic structures
                within ``real_cutoff`` (needed when :attr:`needs_pairs`); pairs of
                other structures must be masked out by the caller.
            vectors: their pair vectors r_j − r_i + n·cell, Å.
        """
        parts = []
        for g, start in enumerate(_offsets(n_atoms)):
            n = n_atoms[g]
            if periodic[g] and n:
                parts.append(
                    self.reciprocal(
                        positions[start : start + n],
                        charges[start : start + n],
                        cell[g],
                    )
                )
            else:
                parts.append(charges.new_zeros(n))
        energies = torch.cat(parts) if parts else charges.new_zeros(0)
        if self.needs_pairs:
            if pairs is None or vectors is None:
                raise ValueError("this smearing needs the real-space pairs")
            distances = torch.linalg.vector_norm(vectors, dim=-1)  # (n_pairs,)
            energies = energies + self.real_space(charges, pairs, distances)
        return energies


def periodic_coulomb(config) -> PeriodicCoulomb | None:
    """The periodic sum an SO3LR config asks for (None: ``"direct"``).

    Args:
        config: an :class:`~equiforce.models.so3lr.config.SO3LRConfig` (its
            ``periodic_electrostatics``, ``periodic_point_charges``,
            ``pme_mesh_spacing``, ``electrostatics_sigma``, ``lr_cutoff``).
    """
    if config.periodic_electrostatics == "direct":
        return None
    point = config.periodic_point_charges
    return PeriodicCoulomb(
        sigma=0.0 if point else config.electrostatics_sigma,
        method=config.periodic_electrostatics,
        real_cutoff=config.lr_cutoff if point else None,
        mesh_spacing=config.pme_mesh_spacing,
    )


def _offsets(n_atoms: list[int]) -> list[int]:
    """First atom of each structure."""
    out, start = [], 0
    for n in n_atoms:
        out.append(start)
        start += n
    return out
