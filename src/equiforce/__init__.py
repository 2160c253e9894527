"""equiforce: equivariant machine-learned interatomic potentials and fast MD.

Public API (stable)::

    equiforce.read(path, **keys_and_units) -> list[ase.Atoms]
    equiforce.build_model(name, preset=None, dtype=torch.float32, **overrides)
    model.save(path); equiforce.load_model(path)
    equiforce.Potential(model_or_path, device="cpu", dtype=None, skin=0.5)
    equiforce.EquiforceCalculator(model_or_path, device="cpu", dtype=None)

The names are imported on first use, so that importing a submodule
(``equiforce.data.graph``) does not load the models, the calculator and ASE.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from equiforce.version import __version__

#: public name -> module that defines it
_EXPORTS = {
    "AtomicGraph": "equiforce.data.graph",
    "CheckpointError": "equiforce.models.checkpoint",
    "DataError": "equiforce.data.io",
    "EquiforceCalculator": "equiforce.calculator",
    "MODELS": "equiforce.models.registry",
    "Potential": "equiforce.potential",
    "build_model": "equiforce.models.registry",
    "load_checkpoint": "equiforce.models.checkpoint",
    "load_model": "equiforce.models.registry",
    "read": "equiforce.data.io",
}

__all__ = [
    "MODELS",
    "AtomicGraph",
    "CheckpointError",
    "DataError",
    "EquiforceCalculator",
    "Potential",
    "__version__",
    "build_model",
    "load_checkpoint",
    "load_model",
    "read",
]

if TYPE_CHECKING:
    from equiforce.calculator import EquiforceCalculator
    from equiforce.data.graph import AtomicGraph
    from equiforce.data.io import DataError, read
    from equiforce.models.checkpoint import CheckpointError, load_checkpoint
    from equiforce.models.registry import MODELS, build_model, load_model
    from equiforce.potential import Potential


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'equiforce' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
