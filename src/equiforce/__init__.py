"""equiforce: equivariant machine-learned interatomic potentials and fast MD."""

from __future__ import annotations

__version__ = "0.1.0"

from equiforce.data.graph import AtomicGraph

__all__ = ["AtomicGraph", "__version__"]
