"""A committee of independently trained models (query by committee).

K models of the same data, differing in their initialisation seed and data
order (``equiforce train config.yaml --committee K``), agree where the data
constrained them and disagree away from it. :class:`Committee` evaluates all of
them on one neighbour graph and returns their mean and spread
(:mod:`equiforce.uncertainty.ensemble`).

Members of one architecture (So3krates or SO3LR, as ``--committee`` trains them) run as
one vectorised call on small structures (:mod:`equiforce.uncertainty.batched`),
one after another otherwise. On :class:`~equiforce.potential.Potential`'s compiled
path (MD, the calculator) each member runs its own compiled backend
(:mod:`equiforce.uncertainty.compiled`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

import torch
from torch import nn

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.models.base import PotentialModel
from equiforce.uncertainty.batched import CannotBatchError, StackedMembers
from equiforce.uncertainty.ensemble import (
    EnsembleError,
    EnsembleModel,
    stack_members,
)

logger = logging.getLogger(__name__)

#: Most edges of a graph evaluated as one vectorised call under ``batched="auto"``
#: (K = 4 and 8: batched / one by one 0.35-0.9 up to 1,000 edges, 1.0-1.1 from
#: 2,000; ``benchmarks/uncertainty_cost.py --sizes``, docs/uncertainty.md "Cost").
BATCH_MAX_EDGES = 1000


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
        #: "auto": one vectorised call for the members when they share one
        #: architecture and the graph has at most ``batch_max_edges`` edges;
        #: "on": whenever they can; "off": one call per member. Runtime settings.
        self.batched: Literal["auto", "on", "off"] = "auto"
        #: the measured crossover: above it the K-fold tensors of the batched
        #: call outgrow the CPU cache and the members one by one are as fast
        self.batch_max_edges: int = BATCH_MAX_EDGES
        self._stacked: tuple[tuple, StackedMembers] | None = None
        self._batch_off: str | None = None  # why the members never batch

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

    @property
    def compilable(self) -> bool:  # type: ignore[override]
        """Whether :class:`~equiforce.potential.Potential` may use :meth:`compiled_backend`.

        True when some member compiles; with none, the eager committee (vectorised
        where it can be) is the faster path.
        """
        return any(getattr(m, "compilable", True) for m in self.members)

    def compiled_backend(self):
        """The committee for :class:`~equiforce.potential.Potential`'s compiled path.

        Returns:
            a :class:`~equiforce.uncertainty.compiled.CompiledCommittee`: each member
            through its own compiled backend, mean and spread outside.
        """
        from equiforce.uncertainty.compiled import CompiledCommittee

        return CompiledCommittee(self)

    def member_outputs(
        self, graph: AtomicGraph, forces: bool, stress: bool
    ) -> dict[str, torch.Tensor]:
        """Each member's outputs stacked (K, ...).

        One vectorised call for all members when :meth:`batches` says so,
        else one eager call per member; both give the same numbers to
        round-off.
        """
        if self.batches(graph):
            stacked = self._stacked_members()
            if stacked is not None:
                try:
                    return _in_order(stacked, graph, forces, stress, self.members[0])
                except Exception as err:  # noqa: BLE001 - vmap failure -> one by one
                    self._no_batch(f"the vectorised call failed ({err!r})", True)
        outs = [
            m(graph, compute_forces=forces, compute_stress=stress, create_graph=False)
            for m in self.members
        ]
        return stack_members(outs)

    def batches(self, graph: AtomicGraph) -> bool:
        """Whether ``graph`` is evaluated as one vectorised call of the members."""
        n_edges = graph.edge_index.shape[1]
        if self.batched == "off" or self._batch_off is not None:
            return False
        chunks = getattr(self.members[0], "chunks_edges", None)
        # the members' chunks are autograd functions (no vmap rules); K members
        # at once hold K times the edges' intermediates (the GPU limit is memory)
        if chunks is not None and chunks(n_edges * len(self.members), False):
            return False
        if self.batched == "on":
            return True
        if self.batched != "auto":
            raise EnsembleError(
                f"batched must be 'auto', 'on' or 'off', got {self.batched!r}"
            )
        return n_edges <= self.batch_max_edges

    def _stacked_members(self) -> StackedMembers | None:
        """The members' stacked weights (None: they cannot be, logged once)."""
        first = next(self.members[0].parameters())
        key = (first.device, first.dtype)
        if self._stacked is None or self._stacked[0] != key:
            try:
                self._stacked = (key, StackedMembers(list(self.members)))
            except CannotBatchError as err:
                self._no_batch(str(err))
                return None
        return self._stacked[1]

    def _no_batch(self, reason: str, failed: bool = False) -> None:
        """Turn batching off for good and say why (a failure as a warning)."""
        self._batch_off = reason
        self._stacked = None
        level = logging.WARNING if failed else logging.INFO
        logger.log(level, "committee members run one after another: %s", reason)


def _in_order(
    stacked: StackedMembers,
    graph: AtomicGraph,
    forces: bool,
    stress: bool,
    member: PotentialModel,
) -> dict[str, torch.Tensor]:
    """``stacked.member_outputs`` in the atom order a member's own call uses."""
    order = member.atom_order(graph)
    if order is None:
        return stacked.member_outputs(graph, forces, stress)
    out = stacked.member_outputs(graph.permuted(*order), forces, stress)
    per_atom = (keys.ATOMIC_ENERGIES, keys.FORCES)
    return {
        k: v.index_select(1, order[1]) if k in per_atom else v for k, v in out.items()
    }
