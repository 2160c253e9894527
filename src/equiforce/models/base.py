"""``PotentialModel``: the one place where energies become forces and stress.

Subclasses implement :meth:`PotentialModel.atomic_energies`; this base adds the
per-element reference energies E0, sums per structure (in float64), and obtains
forces F = −∂E/∂r and stress σ = (1/V) ∂E/∂ε from one autograd call on positions
and a symmetric strain ε (as in nequip's ForceStressOutput and MACE's
``get_symmetric_displacement``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.data.ordering import (
    SPATIAL_ORDER_MIN_ATOMS,
    inverse_permutation,
    spatial_order,
)
from equiforce.nn.scatter import scatter_sum


def restore_atom_order(
    out: dict[str, torch.Tensor], inv: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-atom outputs of a reordered call, back in the caller's atom order.

    Args:
        out: model outputs computed on ``graph.permuted(perm, inv)``.
        inv: (n_atoms,) inverse permutation.
    """
    return {
        k: v.index_select(0, inv) if k in (keys.FORCES, keys.ATOMIC_ENERGIES) else v
        for k, v in out.items()
    }


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

    Attribute set by :meth:`forward` for :meth:`atomic_energies`:
        ``outputs_differentiable``: whether the outputs keep an autograd graph
        (``create_graph``). When False nothing can ask for weight gradients or a
        second derivative, so a model may use cheaper once-differentiable code
        (So3krates' in-place edge chunks). True outside :meth:`forward`.

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
        self.outputs_differentiable = True
        #: bumped by :meth:`clear_inference_caches`; compiled wrappers that keep
        #: weights as constants (:mod:`equiforce.models.aoti`) rebuild on a change
        self.inference_generation = 0

    # ----------------------------------------------------------- to override
    def atomic_energies(
        self, graph: AtomicGraph, edge_vectors: torch.Tensor
    ) -> torch.Tensor:
        """Network part of the atomic energies (without E0).

        Args:
            graph: the batch (topology, species).
            edge_vectors: (n_edges, 3) r_ij = r_j − r_i (+ image), Å; differentiable.

        Returns:
            (n_atoms,) energies in eV, in the model's float dtype.
        """
        raise NotImplementedError

    # --------------------------------------------------------------- forward
    def forward(
        self,
        graph: AtomicGraph,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Energies (float64), forces and optionally stress of every structure.

        Args:
            graph: batch of structures.
            compute_forces: return ``forces`` (n_atoms, 3) eV/Å.
            compute_stress: return ``stress`` (n_graphs, 3, 3) eV/Å³ (periodic only;
                zero for open structures).
            create_graph: keep the autograd graph of the forces (needed to train on
                forces); defaults to ``self.training``.

        Returns:
            dict with ``energy`` (n_graphs,) float64, ``atomic_energies``
            (n_atoms,) float64 and the requested derivatives.
        """
        if create_graph is None:
            create_graph = self.training
        self.outputs_differentiable = create_graph
        order = self.atom_order(graph)
        # without create_graph the outputs are detached (energies alone are
        # computed under no_grad): nothing differentiates them w.r.t. the weights
        tables = contextlib.nullcontext() if create_graph else self.inference_tables()
        try:
            with tables:
                if order is None:
                    return self._forward(
                        graph, compute_forces, compute_stress, create_graph
                    )
                out = self._forward(
                    graph.permuted(*order), compute_forces, compute_stress, create_graph
                )
                return restore_atom_order(out, order[1])
        finally:
            self.outputs_differentiable = True

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

    def _forward(
        self,
        graph: AtomicGraph,
        compute_forces: bool,
        compute_stress: bool,
        create_graph: bool,
    ) -> dict[str, torch.Tensor]:
        need_grad = compute_forces or compute_stress
        pos_leaf = graph.positions.detach().requires_grad_(need_grad)
        positions, cell = pos_leaf, graph.cell
        strain = None
        if compute_stress:
            strain = torch.zeros_like(cell).requires_grad_(True)  # (n_graphs, 3, 3)
            sym = 0.5 * (strain + strain.transpose(1, 2))
            positions = positions + torch.einsum(
                "ni,nij->nj", positions, sym[graph.graph_index]
            )
            cell = cell + torch.bmm(cell, sym)
        with torch.enable_grad() if need_grad else torch.no_grad():
            vectors = graph.edge_vectors(positions, cell)  # (n_edges, 3)
            e_net = self.atomic_energies(graph, vectors)  # (n_atoms,)
        e_atom = e_net.to(torch.float64) + self.e0[graph.atomic_numbers]
        energy = scatter_sum(e_atom, graph.graph_index, graph.n_graphs)  # (n_graphs,)
        out = {keys.ENERGY: energy, keys.ATOMIC_ENERGIES: e_atom}
        if not need_grad:
            return out
        inputs = [pos_leaf] if strain is None else [pos_leaf, strain]
        grads = torch.autograd.grad(
            [e_net.sum()], inputs, create_graph=create_graph, allow_unused=True
        )
        if compute_forces:
            g = grads[0]
            out[keys.FORCES] = (
                -g if g is not None else torch.zeros_like(graph.positions)
            )
        if strain is not None:
            volume = torch.linalg.det(graph.cell).abs()  # (n_graphs,)
            virial = grads[1] if grads[1] is not None else torch.zeros_like(strain)
            safe_v = torch.where(volume > 0, volume, torch.ones_like(volume))
            stress = virial / safe_v[:, None, None]
            periodic = (volume > 0)[:, None, None]
            out[keys.STRESS] = torch.where(periodic, stress, torch.zeros_like(stress))
        if not create_graph:
            out = {k: v.detach() for k, v in out.items()}
        return out

    def _apply(self, fn, recurse=True):  # noqa: D102 - keeps E0 in float64 under .to()
        e0 = self._buffers["e0"]
        out = super()._apply(fn, recurse)
        probe = fn(torch.zeros(1, dtype=torch.float64, device=e0.device))
        self._buffers["e0"] = e0.to(
            device=probe.device
        )  # float64 whatever the model dtype
        return out

    def chunks_edges(self, n_edges: int, differentiable: bool | None = None) -> bool:
        """Whether a graph of ``n_edges`` is processed in edge chunks.

        Such graphs cannot go through ``torch.func`` transforms (they use saved-tensor
        hooks), so the compiled path hands them to :meth:`forward`.

        Args:
            n_edges: directed edges of the graph.
            differentiable: for a call whose outputs stay differentiable (True) or
                not (False); None: as the current call (``outputs_differentiable``).
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


def weight_state_key(tensors: list[torch.Tensor]) -> tuple:
    """Changes when any of ``tensors`` is updated in place or moved (cache keys).

    Writes through ``.data`` are not seen (see ``clear_inference_caches``).
    """
    return (*[t._version for t in tensors], *[t.data_ptr() for t in tensors])
