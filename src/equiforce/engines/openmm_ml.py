"""An equiforce model as an openmmml potential (``MLPotential("equiforce", ...)``).

openmmml finds :class:`equiforce.engines.openmm_entry.EquiforcePotentialImplFactory`
through the ``openmmml.potentials`` entry point; the factory creates the
:class:`EquiforcePotentialImpl` here, which adds the Force of
:func:`equiforce.engines.openmm.create_force` to openmmml's systems. openmmml's
mechanical embedding (``createMixedSystem``) removes the classical terms inside
the ML atoms and keeps the ML–MM ones.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING

from openmmml.mlpotential import MLPotentialImpl

from equiforce.engines.openmm import PRECISIONS, create_force

if TYPE_CHECKING:
    import openmm
    import openmm.app

    from equiforce.models.base import PotentialModel
    from equiforce.potential import Potential


class EquiforcePotentialImpl(MLPotentialImpl):
    """An equiforce model as an openmmml potential.

    >>> potential = MLPotential("equiforce", modelPath="model.pt")
    >>> system = potential.createSystem(topology)
    >>> mixed = potential.createMixedSystem(topology, mm_system, ml_atoms)

    ``modelPath`` is an equiforce model file (as for openmmml's ``"mace"`` and
    ``"nequip"``); ``model=`` takes a model or :class:`Potential` in memory
    instead. ``createSystem`` and ``createMixedSystem`` accept ``precision``
    (``"double"``, the default, or ``"single"``), ``device`` (openmmml's rule:
    CUDA when available), ``skin`` (Å), ``compile``, ``compile_after`` and
    ``periodic`` (default: whether the MM system is periodic, or for
    ``createSystem`` whether the topology has a box). The energy includes the
    model's per-element reference energies E0 (a constant).

    Args:
        name: the name given to ``MLPotential``.
        modelPath: an equiforce model file; read now, so that a wrong file fails
            at ``MLPotential(...)``.
        model: a model or :class:`Potential`, instead of ``modelPath``.
    """

    def __init__(
        self,
        name: str,
        modelPath: str | Path | None,
        model: PotentialModel | Potential | None = None,
    ) -> None:
        from equiforce.models.registry import load_model

        if (modelPath is None) == (model is None):
            raise ValueError(
                f"MLPotential({name!r}) needs exactly one of modelPath= (an equiforce "
                "model file) or model= (a model or Potential)"
            )
        self.name = name
        self.modelPath = modelPath
        self.model = load_model(modelPath) if model is None else model

    def _potential_model(self) -> PotentialModel:
        from equiforce.potential import Potential

        m = self.model
        return m.model if isinstance(m, Potential) else m

    def addForces(
        self,
        topology: openmm.app.Topology,
        system: openmm.System,
        atoms: Iterable[int] | None,
        forceGroup: int,
        precision: str = "double",
        skin: float = 0.5,
        compile: bool | None = None,
        compile_after: int = 20,
        periodic: bool | None = None,
        **args,
    ) -> None:
        """Add the model's Force to ``system`` (openmmml's interface).

        Args:
            topology: the topology the system models.
            system: the system being built.
            atoms: the ML atoms (None: all).
            forceGroup: force group of the new Force.
            precision: ``"double"`` or ``"single"``.
            skin: neighbour-list skin, Å.
            compile: compiled backend policy of :class:`Potential`.
            compile_after: eager calls before compiling when ``compile`` is None.
            periodic: use the box vectors; default: see the class docstring.
            **args: ``device`` and openmmml's other arguments.
        """
        import torch

        if precision not in PRECISIONS:
            raise ValueError(
                f"precision={precision!r}; use one of {sorted(PRECISIONS)}"
            )
        if periodic is None:
            periodic = (
                system.usesPeriodicBoundaryConditions()
                if system.getNumForces()
                else topology.getPeriodicBoxVectors() is not None
            )
        force = create_force(
            self.model,
            topology,
            atoms,
            periodic=periodic,
            device=self._getTorchDevice(args),
            dtype=getattr(torch, PRECISIONS[precision]),
            skin=skin,
            compile=compile,
            compile_after=compile_after,
            force_group=forceGroup,
        )
        system.addForce(force)

    def getMLLongRange(self) -> bool | None:
        """False: the model is local (its cutoff) unless it has extra energy terms."""
        return None if len(self._potential_model().terms) else False
