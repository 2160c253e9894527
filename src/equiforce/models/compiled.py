"""Compiled energy+forces for inference (MD, ASE calculator, evaluation).

At small sizes the cost of a PyTorch potential is per-call overhead: Python,
operator dispatch and the autograd engine running a separate backward. Here the
forces are computed inside one traced function with ``torch.func.grad_and_value``
and the whole forward+backward is compiled by ``torch.compile`` (Inductor), once,
with dynamic atom and edge counts (``dynamic=True``), so a new neighbour count
does not recompile (one specialisation happens at ``EXTERN_MIN_ROWS`` edges, see
:mod:`equiforce.nn.scatter`: two graphs in all). On the CPU Inductor's C++ wrapper
replaces the Python code that calls the kernels (ethanol 0.91 -> 0.81 ms,
``benchmarks/so3krates_ablations.py``; the
first compilation takes ~20 s instead of ~5 s; ``EQUIFORCE_CPP_WRAPPER=0`` turns
it off). If compilation fails the eager path is used, with a warning.
"""

from __future__ import annotations

import os
import time
import warnings

import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.models.base import PotentialModel, restore_atom_order
from equiforce.nn.scatter import scatter_sum


class CompiledPotential:
    """Callable ``graph -> {energy, atomic_energies, forces}`` with a compiled core.

    Args:
        model: the potential (put in eval mode). Calls run under ``no_grad``; only
            positions are differentiated, so no parameter gradients are built.
        compile: False gives the same functional path, eager (for tests/fallback).
        dynamic: mark atom/edge counts dynamic (one compilation for all sizes).
        mode: ``torch.compile`` mode; ``"reduce-overhead"`` adds CUDA graphs on a GPU
            (worth it for small molecules with a fixed neighbour count).
        cpp_wrapper: use Inductor's C++ wrapper (no Python between kernels).
            None: on for CPU models unless ``EQUIFORCE_CPP_WRAPPER=0``; ignored when
            ``mode`` is given.

    Attributes:
        compile_seconds: wall time of the first (compiling) call.
        n_compiles: how many graphs Dynamo compiled so far (1 expected).
    """

    def __init__(
        self,
        model: PotentialModel,
        compile: bool = True,
        dynamic: bool = True,
        mode: str | None = None,
        cpp_wrapper: bool | None = None,
    ) -> None:
        from equiforce.runtime import tune_allocator

        tune_allocator()
        self.model = model.eval()
        self.compile_seconds: float | None = None
        self._fn = self._energy_and_forces
        self.compiled = False
        if compile:
            if cpp_wrapper is None:
                on_cpu = all(p.device.type == "cpu" for p in model.parameters())
                cpp_wrapper = on_cpu and os.environ.get("EQUIFORCE_CPP_WRAPPER") != "0"
            options = {"cpp_wrapper": True} if cpp_wrapper and mode is None else None
            self._fn = torch.compile(
                self._energy_and_forces, dynamic=dynamic, mode=mode, options=options
            )
            self.compiled = True
        self._frame_count_at_start = dynamo_frame_count()

    @property
    def n_compiles(self) -> int:
        """Number of Dynamo frame compilations since this wrapper was made."""
        return dynamo_frame_count() - self._frame_count_at_start

    def _energy_and_forces(
        self,
        positions: torch.Tensor,  # (n_atoms, 3)
        atomic_numbers: torch.Tensor,  # (n_atoms,)
        graph_index: torch.Tensor,  # (n_atoms,)
        edge_index: torch.Tensor,  # (2, n_edges)
        edge_shifts: torch.Tensor,  # (n_edges, 3)
        cell: torch.Tensor,  # (n_graphs, 3, 3)
        pbc: torch.Tensor,  # (n_graphs, 3)
        n_atoms: torch.Tensor,  # (n_graphs,)
        edges_paired: bool,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        def energy(pos: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            graph = AtomicGraph(
                positions=pos,
                atomic_numbers=atomic_numbers,
                graph_index=graph_index,
                edge_index=edge_index,
                edge_shifts=edge_shifts,
                cell=cell,
                pbc=pbc,
                n_atoms=n_atoms,
                edges_paired=edges_paired,
            )
            e = self.model.atomic_energies(graph, graph.edge_vectors(pos))  # (n_atoms,)
            return e.sum(), e

        grad, (_, e_atoms) = torch.func.grad_and_value(energy, has_aux=True)(positions)
        return e_atoms, -grad

    def __call__(self, graph: AtomicGraph) -> dict[str, torch.Tensor]:
        """Energies (float64, E0 included) and forces of every structure in ``graph``.

        Large systems run in Morton atom order (:meth:`PotentialModel.atom_order`);
        the outputs are in ``graph``'s order either way.
        """
        order = self.model.atom_order(graph)
        if order is None:
            return self._call(graph)
        return restore_atom_order(self._call(graph.permuted(*order)), order[1])

    def _call(self, graph: AtomicGraph) -> dict[str, torch.Tensor]:
        args = (
            graph.positions,
            graph.atomic_numbers,
            graph.graph_index,
            graph.edge_index,
            graph.edge_shifts,
            graph.cell,
            graph.pbc,
            graph.n_atoms,
            graph.edges_paired,
        )
        if self.model.chunks_edges(graph.n_edges):
            # checkpointed edge chunks use saved-tensor hooks, which torch.func
            # transforms reject: very large graphs take the autograd path
            # (the model finds the atoms already in Morton order: its sort is
            # a no-op permutation, milliseconds against seconds for such graphs)
            out = self.model(graph, compute_forces=True)
            return {k: out[k] for k in (keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES)}
        start = time.perf_counter() if self.compile_seconds is None else 0.0
        try:
            with torch.no_grad():
                e_net, forces = self._fn(*args)
        except Exception as err:  # noqa: BLE001 - any compiler failure -> eager fallback
            if not self.compiled:
                raise
            warnings.warn(
                f"torch.compile failed ({type(err).__name__}: {err}); using eager mode",
                RuntimeWarning,
                stacklevel=2,
            )
            self._fn, self.compiled = self._energy_and_forces, False
            with torch.no_grad():
                e_net, forces = self._fn(*args)
        if self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - start
        e_atom = e_net.to(torch.float64) + self.model.e0[graph.atomic_numbers]
        energy = scatter_sum(e_atom, graph.graph_index, graph.n_graphs)
        return {keys.ENERGY: energy, keys.ATOMIC_ENERGIES: e_atom, keys.FORCES: forces}


class LazyCompile:
    """When to switch a force provider from eager calls to :class:`CompiledPotential`.

    Shared by the ASE calculator and the MD force field. ``compile=True`` compiles
    at the first call, ``False`` never, ``None`` once ``after`` eager calls have
    run (single points stay eager, MD loops get the fast path).

    Args:
        model: the potential.
        compile: the policy above.
        after: eager calls before compiling when ``compile`` is None.
    """

    def __init__(self, model: PotentialModel, compile: bool | None, after: int) -> None:
        self.model, self.compile, self.after = model, compile, after
        self.potential: CompiledPotential | None = None

    def __call__(self, n_calls: int) -> CompiledPotential | None:
        """The compiled wrapper if the policy wants it after ``n_calls`` calls."""
        if self.potential is None:
            wanted = self.compile if self.compile is not None else n_calls >= self.after
            if wanted:
                self.potential = CompiledPotential(self.model)
        return self.potential


def dynamo_frame_count() -> int:
    """Graphs Dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
