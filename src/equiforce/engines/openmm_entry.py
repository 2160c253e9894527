"""The ``openmmml.potentials`` entry point: ``MLPotential("equiforce", ...)``.

openmmml loads every entry point of that group at the end of its own
``openmmml.mlpotential`` module, while that module is still being imported. So
this module imports nothing from openmmml (or torch) at import time: the factory
is a plain class (openmmml only calls :meth:`createImpl`) that reaches the
implementation, :class:`equiforce.engines.openmm_ml.EquiforcePotentialImpl` (a
subclass of openmmml's ``MLPotentialImpl``), when a potential is created.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from equiforce.engines.openmm_ml import EquiforcePotentialImpl
    from equiforce.models.base import PotentialModel
    from equiforce.potential import Potential


class EquiforcePotentialImplFactory:
    """openmmml's ``MLPotentialImplFactory`` for the name ``"equiforce"``."""

    def createImpl(
        self,
        name: str,
        modelPath: str | Path | None = None,
        model: PotentialModel | Potential | None = None,
        **args: Any,
    ) -> EquiforcePotentialImpl:
        """An :class:`~equiforce.engines.openmm_ml.EquiforcePotentialImpl`.

        Args:
            name: the name given to ``MLPotential`` (``"equiforce"``).
            modelPath: an equiforce model file.
            model: a model or :class:`Potential` in memory, instead of a file.
            **args: other ``MLPotential`` arguments (unused).
        """
        from equiforce.engines.openmm_ml import EquiforcePotentialImpl

        return EquiforcePotentialImpl(name, modelPath, model)
