"""A committee of independently trained models (query by committee).

K models of the same data, differing in their initialisation seed and data
order (``equiforce train config.yaml --committee K``), agree where the data
constrained them and disagree away from it. :class:`Committee` evaluates all of
them on one neighbour graph and returns their mean and spread
(:mod:`equiforce.uncertainty.ensemble`).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.models.base import PotentialModel
from equiforce.uncertainty.ensemble import EnsembleError, EnsembleModel

#: outputs stacked over members (per-term outputs are left out)
STACKED = (keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.STRESS)


def _lr_cutoff(model: PotentialModel) -> bool:
    """Whether ``model`` needs long-range pairs (SO3LR with long-range terms)."""
    return getattr(model, "lr_cutoff", None) is not None


class Committee(EnsembleModel):
    """Mean and spread of K models evaluated on the same structures.

    Args:
        models: the members (at least two), with the same cutoff. They may be
            different families; each keeps its own E0.

    Raises:
        EnsembleError: fewer than two members, or different cutoffs.
    """

    model_name = "committee"

    def __init__(self, models: Sequence[PotentialModel]) -> None:
        models = list(models)
        if len(models) < 2:
            raise EnsembleError(
                f"a committee needs at least 2 models, got {len(models)}"
            )
        cutoffs = sorted({m.cutoff for m in models})
        if len(cutoffs) > 1:
            raise EnsembleError(
                f"committee members must share one cutoff, got {cutoffs} Å"
            )
        lr_cutoffs = sorted({m.lr_cutoff for m in models if _lr_cutoff(m)})
        if len(lr_cutoffs) > 1:
            raise EnsembleError(
                f"committee members must share one long-range cutoff, got {lr_cutoffs} Å"
            )
        super().__init__(cutoff=cutoffs[0], e0=models[0].e0.detach().cpu())
        self.members = nn.ModuleList(models)
        #: long-range pairs and per-structure inputs (SO3LR members): what
        #: ``Potential``, the datasets and ``md --charge`` read from the model
        self.lr_cutoff: float | None = lr_cutoffs[0] if lr_cutoffs else None
        self.graph_inputs = tuple(
            sorted({k for m in models for k in getattr(m, "graph_inputs", ())})
        )

    @property
    def n_members(self) -> int:
        """Number of members K."""
        return len(self.members)

    def known_elements(self) -> frozenset[int] | None:
        """Elements every member knows (None: no member can tell)."""
        known = [m.known_elements() for m in self.members]
        told = [k for k in known if k is not None]
        return frozenset.intersection(*told) if told else None

    def check_graph(self, graph: AtomicGraph) -> None:
        """Every member's check."""
        for m in self.members:
            m.check_graph(graph)

    def clear_inference_caches(self) -> None:
        """Every member's caches, and this model's generation."""
        for m in self.members:
            m.clear_inference_caches()
        super().clear_inference_caches()

    def member_outputs(
        self, graph: AtomicGraph, forces: bool, stress: bool
    ) -> dict[str, torch.Tensor]:
        """Each member's outputs stacked (K, ...): one eager call per member.

        ``benchmarks/uncertainty_cost.py`` measured the alternatives (one
        backward pass for all members; ``torch.func`` vmap over stacked
        weights); see ``docs/uncertainty.md``.
        """
        outs = [
            m(graph, compute_forces=forces, compute_stress=stress, create_graph=False)
            for m in self.members
        ]
        return {
            key: torch.stack([o[key] for o in outs])
            for key in STACKED
            if key in outs[0]
        }
