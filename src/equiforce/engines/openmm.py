"""Run equiforce models in OpenMM: an ``openmm.PythonForce`` and an openmmml plugin.

OpenMM asks a :class:`openmm.PythonForce` for energy and forces with a ``State``
(positions in nm, the periodic box vectors when the force is periodic);
:class:`EquiforceForceFunction` turns that into a :meth:`Potential.compute` call
and its eV/Å outputs into kJ/mol and kJ/mol/nm. For an ML/MM subset OpenMM
itself passes only the chosen particles and scatters the returned forces back
(``PythonForce.setParticles``).

- :func:`create_force`: the Force for a topology (or a subset of its atoms).
- :mod:`equiforce.engines.openmm_ml`: ``openmmml.MLPotential("equiforce",
  modelPath=...)`` for ``createSystem`` and ``createMixedSystem``, found through
  the ``openmmml.potentials`` entry point (:mod:`equiforce.engines.openmm_entry`).

Why not openmmtorch's ``TorchForce``: it needs a TorchScript model and a build
linked against the same libtorch; the wheel here links CUDA torch libraries and
cannot load on this CPU build, and equiforce's neighbour list (vesin, with a
skin) runs outside the model. The cost of the Python route is one
Python call per force evaluation (``benchmarks/engine_openmm.py`` measures it).

openmm is imported inside the functions only, so ``import equiforce`` never
needs it.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from equiforce.units import ENERGY_UNITS, LENGTH_UNITS

if TYPE_CHECKING:
    import openmm
    import openmm.app
    import torch

    from equiforce.models.base import PotentialModel
    from equiforce.potential import Potential

#: 1 eV in kJ/mol (ASE's CODATA factors, as everywhere in equiforce).
EV_TO_KJ_PER_MOL: float = 1.0 / ENERGY_UNITS["kJ/mol"]
#: 1 nm in Å.
NM_TO_ANGSTROM: float = LENGTH_UNITS["nm"]
#: eV/Å -> kJ/mol/nm.
EV_PER_A_TO_KJ_PER_MOL_NM: float = EV_TO_KJ_PER_MOL * NM_TO_ANGSTROM

#: ``precision`` argument (openmmml's spelling) -> torch dtype name.
PRECISIONS: dict[str, str] = {"double": "float64", "single": "float32"}


class EquiforceForceFunction:
    """The computation of a :class:`openmm.PythonForce`: State -> (kJ/mol, kJ/mol/nm).

    Args:
        potential: the :class:`Potential` evaluating the model.
        atomic_numbers: (n_atoms,) Z of the atoms the force sees (the subset, in
            ``setParticles`` order, for ML/MM).
        periodic: read the box vectors from the State and treat the atoms as
            periodic in all three directions.

    The function pickles (OpenMM pickles it for ``XmlSerializer`` and
    ``copy.deepcopy(system)``) as the model's checkpoint dict and the
    potential's settings; unpickling rebuilds the model.
    """

    def __init__(
        self, potential: Potential, atomic_numbers: Sequence[int], periodic: bool
    ) -> None:
        import torch

        self.potential = potential
        self.periodic = bool(periodic)
        self.numbers = torch.as_tensor(
            np.asarray(atomic_numbers, dtype=np.int64), device=potential.device
        )  # (n_atoms,)
        self.pbc = torch.full((1, 3), self.periodic, device=potential.device)

    def __call__(self, state: openmm.State) -> tuple[float, np.ndarray]:
        """Energy (kJ/mol) and forces (n_atoms, 3) kJ/mol/nm at ``state``."""
        from openmm.unit import nanometer

        from equiforce import keys

        pos = state.getPositions(asNumpy=True).value_in_unit(nanometer)  # (n, 3) nm
        cell = None
        if self.periodic:
            box = state.getPeriodicBoxVectors(asNumpy=True).value_in_unit(nanometer)
            cell = np.asarray(box) * NM_TO_ANGSTROM  # (3, 3) rows a, b, c, Å
        out = self.potential.compute(
            np.asarray(pos) * NM_TO_ANGSTROM, self.numbers, cell, self.pbc
        )
        energy = float(out[keys.ENERGY][0]) * EV_TO_KJ_PER_MOL
        forces = out[keys.FORCES].detach().cpu().double().numpy()  # (n, 3) eV/Å
        return energy, forces * EV_PER_A_TO_KJ_PER_MOL_NM

    def __reduce__(self):
        from equiforce.models.checkpoint import model_payload

        p = self.potential
        settings = {
            "device": str(p.device),
            "dtype": str(p.dtype).removeprefix("torch."),
            "skin": p.skin,
            "compile": p.compile,
            "compile_after": p.compile_after,
        }
        numbers = self.numbers.cpu().tolist()
        return (_rebuild, (model_payload(p.model), settings, numbers, self.periodic))


def _rebuild(
    payload: dict[str, Any], settings: dict[str, Any], numbers: list[int], periodic
) -> EquiforceForceFunction:
    """Unpickle an :class:`EquiforceForceFunction` (see its ``__reduce__``)."""
    import torch

    from equiforce.models.registry import model_from_payload
    from equiforce.potential import Potential

    settings = dict(settings, dtype=getattr(torch, settings["dtype"]))
    model = model_from_payload(payload, device=settings["device"])
    return EquiforceForceFunction(Potential(model, **settings), numbers, periodic)


# ------------------------------------------------------------------ elements
def topology_numbers(
    topology: openmm.app.Topology,
    atoms: Iterable[int] | None = None,
    known: frozenset[int] | None = None,
) -> np.ndarray:
    """Atomic numbers of ``atoms`` (default all) of ``topology``, checked.

    Raises:
        ValueError: an atom without an element (a virtual site, an extra
            particle), or an element outside ``known``, naming the atom.
    """
    all_atoms = list(topology.atoms())
    chosen = all_atoms if atoms is None else [all_atoms[int(i)] for i in atoms]
    numbers = []
    for atom in chosen:
        if atom.element is None:
            raise ValueError(
                f"atom {_describe(atom)} has no element; an equiforce model needs "
                "real atoms (leave virtual sites and extra particles out of the ML "
                "atoms)"
            )
        z = int(atom.element.atomic_number)
        if known is not None and z not in known:
            names = ", ".join(_symbol(k) for k in sorted(known))
            raise ValueError(
                f"atom {_describe(atom)} is {atom.element.symbol} (Z={z}), an element "
                f"the model was not trained on (it knows {names})"
            )
        numbers.append(z)
    return np.asarray(numbers, dtype=np.int64)


def _describe(atom: openmm.app.topology.Atom) -> str:
    res = atom.residue
    return f"{atom.index} ({atom.name} of residue {res.name} {res.id}, chain {res.chain.index})"


def _symbol(z: int) -> str:
    from ase.data import chemical_symbols

    return chemical_symbols[z]


# --------------------------------------------------------------------- force
def create_force(
    model_or_path: PotentialModel | Potential | str | Path,
    topology: openmm.app.Topology,
    atoms: Iterable[int] | None = None,
    *,
    periodic: bool | None = None,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    skin: float = 0.5,
    compile: bool | None = None,
    compile_after: int = 20,
    force_group: int = 0,
) -> openmm.PythonForce:
    """An OpenMM Force computing an equiforce model's energy and forces.

    Args:
        model_or_path: a model, a model file or a :class:`Potential` (then
            ``device``, ``dtype``, ``skin`` and the compile settings are its own).
        topology: the topology of the whole system (elements of the atoms).
        atoms: indices of the atoms the model sees (ML/MM); the others feel no
            force from it. None: every atom.
        periodic: use the State's box vectors (periodic in x, y, z); default:
            whether ``topology`` has box vectors.
        device: torch device of the model.
        dtype: compute dtype; default float64 (OpenMM works in double precision).
        skin: neighbour-list skin, Å.
        compile: compiled backend policy of :class:`Potential`.
        compile_after: eager calls before compiling when ``compile`` is None.
        force_group: OpenMM force group of the new Force.

    Raises:
        ValueError: an atom without an element or with one the model lacks.
        equiforce.models.checkpoint.CheckpointError: a file that is not an
            equiforce model.
    """
    import openmm
    import torch

    from equiforce.potential import Potential

    potential = Potential.wrap(
        model_or_path,
        device=device,
        dtype=dtype or torch.float64,
        skin=skin,
        compile=compile,
        compile_after=compile_after,
    )
    atoms = None if atoms is None else [int(i) for i in atoms]
    numbers = topology_numbers(topology, atoms, potential.model.known_elements())
    if periodic is None:
        periodic = topology.getPeriodicBoxVectors() is not None
    force = openmm.PythonForce(EquiforceForceFunction(potential, numbers, periodic))
    force.setName("EquiforceForce")
    force.setForceGroup(int(force_group))
    force.setUsesPeriodicBoundaryConditions(bool(periodic))
    if atoms is not None:
        force.setParticles(atoms)
    return force
