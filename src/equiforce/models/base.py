"""``PotentialModel``: the base of every family; its energy is a sum of terms.

Subclasses implement :meth:`PotentialModel.atomic_energies` (the learned local
term); further terms live in ``PotentialModel.terms``. The model hands its terms
and the reference energies E0 to :mod:`equiforce.energy`, the one function that
turns them into energies, forces and stress for every backend.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from equiforce.data.graph import AtomicGraph
from equiforce.data.ordering import (
    SPATIAL_ORDER_MIN_ATOMS,
    inverse_permutation,
    restore_atom_order,
    spatial_order,
)
from equiforce.energy import LOCAL, evaluate

#: Rows of per-element tables (index = atomic number, 0 unused).
NUM_ELEMENTS = 119


class PotentialModel(nn.Module):
    """Base class of every equiforce potential.

    Args:
        cutoff: interaction cutoff radius, Å (the neighbour list uses it).
        e0: (119,) per-element reference energies in eV, indexed by Z. They are
            added to the network output; the network predicts the remainder.

    Attributes set by :func:`equiforce.models.registry.build_model`:
        ``model_name`` (registry key) and ``config`` (the pydantic config).

    Attribute ``terms``: energy terms beside the learned local one (modules
    ``(graph, edge_vectors) -> (n_atoms,)`` eV, by name; empty by default). Their
    sum with the local term and E0 is the energy (:mod:`equiforce.energy`).

    Attribute ``spatial_order_min_atoms``: calls with at least this many atoms run
    with the atoms sorted along a Morton curve (memory locality, see
    :mod:`equiforce.data.ordering`); outputs come back in the caller's order.
    None disables it.
    """

    model_name: str = ""
    spatial_order_min_atoms: int | None = SPATIAL_ORDER_MIN_ATOMS

    def __init__(self, cutoff: float, e0: torch.Tensor | None = None) -> None:
        super().__init__()
        self.cutoff = float(cutoff)
        e0 = torch.zeros(NUM_ELEMENTS, dtype=torch.float64) if e0 is None else e0
        self.register_buffer("e0", torch.as_tensor(e0, dtype=torch.float64).clone())
        self.config = None
        self.terms = nn.ModuleDict()
        #: bumped by :meth:`clear_inference_caches`; compiled wrappers that keep
        #: weights as constants (:mod:`equiforce.accel.aoti`) rebuild on a change
        self.inference_generation = 0

    def known_elements(self) -> frozenset[int] | None:
        """Atomic numbers the model was trained on: those with a nonzero E0.

        Training sets E0 for every element of its data (least squares or isolated
        atoms). A model whose E0 are all zero (untrained, or trained with
        ``e0: zero``) cannot tell: None, and every element is accepted.
        """
        known = self.e0.detach().cpu().nonzero().flatten().tolist()
        return frozenset(int(z) for z in known) or None

    # ----------------------------------------------------------- to override
    def atomic_energies(
        self, graph: AtomicGraph, edge_vectors: torch.Tensor, differentiable: bool
    ) -> torch.Tensor:
        """Network part of the atomic energies (without E0).

        Args:
            graph: the batch (topology, species).
            edge_vectors: (n_edges, 3) r_ij = r_j − r_i (+ image), Å; differentiable.
            differentiable: whether the outputs must keep an autograd graph
                (training on forces). When False nothing asks for weight gradients
                or a second derivative, so a model may use cheaper
                once-differentiable code (So3krates' in-place edge chunks).

        Returns:
            (n_atoms,) energies in eV, in the model's float dtype.
        """
        raise NotImplementedError

    def check_graph(self, graph: AtomicGraph) -> None:
        """Raise a clear error if the model cannot take ``graph``; default: any.

        Eager calls check inside; compiled callers, whose traced graphs cannot
        raise on data, call this before each call (So3krates with global
        attention: open structures within r_max).
        """

    def energy_terms(
        self, graph: AtomicGraph, differentiable: bool
    ) -> dict[str, torch.Tensor]:
        """Per-atom energies (n_atoms,) of every differentiable term, by name.

        The learned local model (``"local"``, :meth:`atomic_energies`) and each
        module of ``terms``; E0 is added by :mod:`equiforce.energy`. This is the
        :data:`equiforce.energy.TermsFn` of every backend.

        Args:
            graph: the batch, with the positions and cell to differentiate.
            differentiable: whether the outputs must keep an autograd graph.
        """
        vectors = graph.edge_vectors()  # (n_edges, 3)
        out = {LOCAL: self.atomic_energies(graph, vectors, differentiable)}
        for name, term in self.terms.items():
            out[name] = term(graph, vectors)
        return out

    # --------------------------------------------------------------- forward
    def forward(
        self,
        graph: AtomicGraph,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Energies (float64), forces and optionally stress of every structure.

        Eager calls of :func:`equiforce.energy.evaluate` on the autograd engine.

        Args:
            graph: batch of structures.
            compute_forces: return ``forces`` (n_atoms, 3) eV/Å.
            compute_stress: return ``stress`` (n_graphs, 3, 3) eV/Å³ (periodic only;
                zero for open structures).
            create_graph: keep the autograd graph of the forces (needed to train on
                forces); defaults to ``self.training``.

        Returns:
            dict with ``energy`` (n_graphs,) float64, ``atomic_energies``
            (n_atoms,) float64 and the requested derivatives (and the per-term
            outputs of :func:`equiforce.energy.finish` when there are extra terms).
        """
        if create_graph is None:
            create_graph = self.training
        order = self.atom_order(graph)
        # without create_graph the outputs are detached (energies alone are
        # computed under no_grad): nothing differentiates them w.r.t. the weights
        tables = contextlib.nullcontext() if create_graph else self.inference_tables()
        with tables:
            if order is not None:
                graph = graph.permuted(*order)
            out = evaluate(
                self.energy_terms,
                self.e0,
                graph,
                forces=compute_forces,
                stress=compute_stress,
                differentiable=create_graph,
            )
        return out if order is None else restore_atom_order(out, order[1])

    @contextlib.contextmanager
    def inference_tables(self) -> Iterator[None]:
        """Context of forces-only calls (no weight gradients, no second derivatives).

        A model may replace exact sub-networks by tables inside it (So3krates'
        radial filters); the base does nothing.
        """
        yield

    def clear_inference_caches(self) -> None:
        """Drop what forces-only calls keep between calls.

        Subclasses drop their :meth:`inference_tables` caches and call this, which
        bumps ``inference_generation`` (compiled libraries with the weights inside
        rebuild at their next call).
        """
        self.inference_generation += 1

    def atom_order(
        self, graph: AtomicGraph
    ) -> tuple[torch.Tensor, torch.Tensor] | None:
        """``(perm, inv)`` to run ``graph`` in Morton order; None below the size limit.

        See :meth:`AtomicGraph.permuted` for the meaning of both.
        """
        limit = self.spatial_order_min_atoms
        if limit is None or graph.num_nodes < limit:
            return None
        perm = spatial_order(graph.positions, graph.graph_index)  # (n_atoms,)
        return perm, inverse_permutation(perm)

    def _apply(self, fn, recurse=True):  # noqa: D102 - keeps E0 in float64 under .to()
        e0 = self._buffers["e0"]
        out = super()._apply(fn, recurse)
        probe = fn(torch.zeros(1, dtype=torch.float64, device=e0.device))
        self._buffers["e0"] = e0.to(
            device=probe.device
        )  # float64 whatever the model dtype
        return out

    def chunks_edges(self, n_edges: int, differentiable: bool) -> bool:
        """Whether a graph of ``n_edges`` is processed in edge chunks.

        Such graphs cannot go through ``torch.func`` transforms (they use saved-tensor
        hooks), so the compiled path hands them to :meth:`forward`.

        Args:
            n_edges: directed edges of the graph.
            differentiable: for a call whose outputs stay differentiable (True) or
                not (False).
        """
        return False

    # ------------------------------------------------------------- utilities
    def num_parameters(self) -> int:
        """Number of trainable parameters."""
        return sum(p.numel() for p in self.parameters() if p.requires_grad)

    def save(
        self, path, statistics: dict | None = None, train_config: dict | None = None
    ) -> None:
        """Write a checkpoint (config + state_dict), atomically."""
        from equiforce.models.checkpoint import save_model

        save_model(self, path, statistics=statistics, train_config=train_config)
