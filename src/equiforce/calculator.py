"""ASE calculator for any equiforce model.

The neighbour list is built with ``cutoff + skin`` and reused while no atom has
moved more than ``skin/2`` and the cell, pbc and species are unchanged; pairs
beyond the cutoff contribute exactly zero (every model's cutoff function
vanishes there), so reuse changes nothing but the cost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from ase.calculators.calculator import Calculator, all_changes
from ase.stress import full_3x3_to_voigt_6_stress

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.models.base import PotentialModel
from equiforce.models.checkpoint import load_model
from equiforce.models.compiled import LazyCompile
from equiforce.runtime import tune_allocator


class EquiforceCalculator(Calculator):
    """ASE calculator: energy, free_energy, forces, stress, per-atom energies.

    Args:
        model_or_path: a :class:`PotentialModel` or a checkpoint path.
        device: torch device for the model.
        dtype: compute dtype; default: the model's parameter dtype.
        skin: neighbour-list skin, Å (0 rebuilds the list at every call).
        compile: use the compiled energy+forces path (:mod:`equiforce.models.compiled`).
            ``None`` (default) compiles lazily once ``compile_after`` calls have been
            made, so single-point work stays eager and MD loops get the fast path;
            stress requests always use the eager path.
        compile_after: number of eager calls before compiling when ``compile=None``.
    """

    implemented_properties = ["energy", "free_energy", "forces", "stress", "energies"]

    def __init__(
        self,
        model_or_path: PotentialModel | str | Path,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        skin: float = 0.5,
        compile: bool | None = None,
        compile_after: int = 20,
        **kwargs,
    ) -> None:
        super().__init__(**kwargs)
        tune_allocator()
        if isinstance(model_or_path, (str, Path)):
            model = load_model(model_or_path, device=device, dtype=dtype)
        else:
            model = model_or_path
        self.dtype = dtype or next(iter(model.parameters())).dtype
        self.device = torch.device(device)
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.skin = float(skin)
        self._graph: AtomicGraph | None = None
        self._ref_positions: np.ndarray | None = None
        self._ref_key: tuple | None = None
        self.n_rebuilds = 0
        self.n_calls = 0
        self._compiled = LazyCompile(self.model, compile, compile_after)

    def _get_graph(self, atoms) -> AtomicGraph:
        key = (
            atoms.numbers.tobytes(),
            np.asarray(atoms.cell).tobytes(),
            atoms.pbc.tobytes(),
        )
        pos = atoms.get_positions()
        if (
            self._graph is not None
            and key == self._ref_key
            and np.max(np.linalg.norm(pos - self._ref_positions, axis=1))
            < 0.5 * self.skin
        ):
            return self._graph.with_positions(
                torch.as_tensor(pos, dtype=self.dtype, device=self.device)
            )
        graph = AtomicGraph.from_arrays(
            pos,
            atoms.numbers,
            self.model.cutoff + self.skin,
            cell=np.asarray(atoms.cell),
            pbc=atoms.pbc,
            dtype=self.dtype,
        ).to(self.device)
        self._graph, self._ref_positions, self._ref_key = graph, pos.copy(), key
        self.n_rebuilds += 1
        return graph

    def calculate(
        self, atoms=None, properties=("energy",), system_changes=all_changes
    ) -> None:
        """Compute the requested properties for ``atoms``."""
        super().calculate(atoms, properties, system_changes)
        graph = self._get_graph(self.atoms)
        want_stress = "stress" in properties and bool(self.atoms.pbc.any())
        self.n_calls += 1
        compiled = None if want_stress else self._compiled(self.n_calls)
        if compiled is not None:
            out = compiled(graph)
        else:
            out = self.model(graph, compute_forces=True, compute_stress=want_stress)
        energy = float(out[keys.ENERGY][0])
        self.results = {
            "energy": energy,
            "free_energy": energy,
            "forces": out[keys.FORCES].detach().cpu().double().numpy(),
            "energies": out[keys.ATOMIC_ENERGIES].detach().cpu().numpy(),
        }
        if want_stress:
            s = out[keys.STRESS][0].detach().cpu().double().numpy()
            self.results["stress"] = full_3x3_to_voigt_6_stress(s)
