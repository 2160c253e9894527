"""equiforce: equivariant machine-learned interatomic potentials and fast MD.

Public API (stable)::

    equiforce.read(path, **keys_and_units) -> list[ase.Atoms]
    equiforce.build_model(name, preset=None, dtype=torch.float32, **overrides)
    model.save(path); equiforce.load_model(path)
    equiforce.EquiforceCalculator(model_or_path, device="cpu", dtype=None)
"""

from __future__ import annotations

__version__ = "0.1.0"

from equiforce.calculator import EquiforceCalculator  # noqa: E402
from equiforce.data.graph import AtomicGraph  # noqa: E402
from equiforce.data.io import DataError, read  # noqa: E402
from equiforce.models.checkpoint import (  # noqa: E402
    CheckpointError,
    load_checkpoint,
    load_model,
)
from equiforce.models.registry import MODELS, build_model  # noqa: E402

__all__ = [
    "MODELS",
    "AtomicGraph",
    "CheckpointError",
    "DataError",
    "EquiforceCalculator",
    "__version__",
    "build_model",
    "load_checkpoint",
    "load_model",
    "read",
]
