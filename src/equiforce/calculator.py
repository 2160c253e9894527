"""ASE calculator for any equiforce model: a thin adapter over :class:`Potential`.

The neighbour list with its skin, the device and dtype and the switch to the
compiled backend belong to :class:`equiforce.potential.Potential`; this class
turns ``ase.Atoms`` into its arguments and its outputs into ASE's results.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from equiforce import keys
from equiforce.models.base import PotentialModel
from equiforce.potential import Potential


class EquiforceCalculator(Calculator):
    """ASE calculator: energy, free_energy, forces, stress, per-atom energies.

    The total charge and spin of a structure, for models that take them
    (SO3LR), come from ``atoms.info['charge']`` and ``atoms.info['spin']``.

    Args:
        model_or_path: a :class:`PotentialModel`, a model file or a
            :class:`Potential` (then the other arguments are ignored).
        device: torch device for the model.
        dtype: compute dtype; default: the model's parameter dtype.
        skin: neighbour-list skin, Å (0 rebuilds the list at every call).
        compile: use the compiled energy+forces path
            (:mod:`equiforce.accel.compiled`). ``None`` (default) compiles lazily
            once ``compile_after`` calls have been made, so single-point work stays
            eager and MD loops get the fast path.
        compile_after: number of eager calls before compiling when ``compile=None``.

    Attributes:
        potential: the :class:`Potential` doing the work.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]
    # an ensemble model (equiforce.uncertainty) adds its spread: ``energy_std``
    # (eV), ``forces_std`` (n_atoms,) eV/Å and ``forces_std_max`` (eV/Å)
    implemented_properties += list(keys.UNCERTAINTY_KEYS)

    def __init__(
        self,
        model_or_path: PotentialModel | Potential | str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        skin: float = 0.5,
        compile: bool | None = None,
        compile_after: int = 20,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        self.potential = Potential.wrap(
            model_or_path,
            device=device,
            dtype=dtype,
            skin=skin,
            compile=compile,
            compile_after=compile_after,
        )

    @property
    def model(self) -> PotentialModel:
        """The model the potential evaluates."""
        return self.potential.model

    @property
    def n_rebuilds(self) -> int:
        """Neighbour-list builds so far."""
        return self.potential.n_builds

    @property
    def n_calls(self) -> int:
        """Model evaluations so far."""
        return self.potential.n_calls

    def check_state(self, atoms, tol: float = 1e-15) -> list[str]:
        """What changed since the last calculation, by exact comparison.

        ASE's own check compares every array with ``np.allclose`` at ``tol``
        (1e-15), which cost 0.17 ms per call, 60 % of a compiled ethanol call
        (``benchmarks/potential_overhead.py``); exact equality tells the same
        apart (a change below 1e-15 recomputes, which is harmless).
        """
        if self.atoms is None:
            return list(all_changes)
        old, changes = self.atoms, []
        for name in ("positions", "numbers"):
            if not _same(old.arrays[name], atoms.arrays[name]):
                changes.append(name)
        if not _same(old.cell.array, atoms.cell.array):
            changes.append("cell")
        if not _same(old.pbc, atoms.pbc):
            changes.append("pbc")
        for name in ("charge", "spin"):  # total charge and spin (SO3LR)
            if old.info.get(name) != atoms.info.get(name):
                changes.append(name)
        for name in ("initial_charges", "initial_magmoms"):
            a, b = old.arrays.get(name), atoms.arrays.get(name)
            if (a is None) != (b is None) or (a is not None and not _same(a, b)):
                changes.append(name)
        return changes

    def calculate(
        self, atoms=None, properties=("energy",), system_changes=all_changes
    ) -> None:
        """Compute the requested properties for ``atoms``."""
        super().calculate(atoms, properties, system_changes)
        atoms = self.atoms
        want_stress = "stress" in properties and bool(atoms.pbc.any())
        out = self.potential.compute(
            atoms.positions,
            atoms.numbers,
            np.asarray(atoms.cell),
            atoms.pbc,
            stress=want_stress,
            charge=atoms.info.get("charge"),
            spin=atoms.info.get("spin"),
        )
        energy = float(out[keys.ENERGY][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out[keys.FORCES].detach().cpu().double().numpy(),
            "energies": out[keys.ATOMIC_ENERGIES].detach().cpu().numpy(),
        }
        for key in keys.UNCERTAINTY_KEYS:  # ensembles only
            if key in out:
                value = out[key].detach().cpu().double().numpy()
                self.results[key] = value if key == keys.FORCES_STD else float(value[0])
        if want_stress:
            s = out[keys.STRESS][0].detach().cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(s)


def _same(a: np.ndarray, b: np.ndarray) -> bool:
    """Same shape and exactly the same values."""
    return a.shape == b.shape and bool((a == b).all())
