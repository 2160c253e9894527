"""Compiled energy+forces for inference (MD, ASE calculator, evaluation).

At small sizes the cost of a PyTorch potential is per-call overhead: Python,
operator dispatch and the autograd engine running a separate backward. Here the
forces are computed inside one traced function with ``torch.func.grad_and_value``
and the whole forward+backward is compiled by ``torch.compile`` (Inductor), once,
with dynamic atom and edge counts (``dynamic=True``), so a new neighbour count
does not recompile (with ATen row ops on, ``scatter.EXTERN_MIN_ROWS``, one
specialisation happens at that edge count: two graphs in all). On the CPU Inductor's C++ wrapper
replaces the Python code that calls the kernels (ethanol 0.91 -> 0.81 ms,
``benchmarks/so3krates_ablations.py``; the
first compilation takes ~20 s instead of ~5 s; ``EQUIFORCE_CPP_WRAPPER=0`` turns
it off). If compilation fails the model's own autograd path is used, with a warning.

On the CPU the default backend goes one step further: the same function is compiled
ahead of time by AOTInductor with the weights inside (:mod:`equiforce.accel.aoti`),
1.4-1.5x faster than ``torch.compile`` for small molecules; ``torch.compile`` serves
the graphs it does not take and its build failures.

On a GPU, per-call overhead is kernel launches (an eager call of the default
So3krates is ~11 ms on an H100 whatever the size up to 3,000 atoms). There
:meth:`CompiledPotential.for_device` compiles with static shapes and CUDA graphs
(``mode="reduce-overhead"``); atom and edge counts are padded to buckets
(:mod:`equiforce.accel.padding`) so that an MD run replays one or two graphs
instead of recompiling at every neighbour-list rebuild. (Static shapes are also
what works on torch 2.11: its Dynamo fails on the dynamic-shape ``torch.func``
graph on CUDA.)
"""

from __future__ import annotations

import contextlib
import os
import time
import warnings
from collections.abc import Iterator
from dataclasses import replace
from typing import TYPE_CHECKING

import torch

from equiforce import keys
from equiforce.accel import runtime
from equiforce.accel.aoti import AOTIFunction
from equiforce.accel.padding import pad_to_buckets
from equiforce.accel.runtime import one_thread_below
from equiforce.accel.signature import (
    GRAPH_INPUT_DIMS,
    arguments,
    compiled_inputs,
    dynamo_frame_count,
    term_keys,
    wants_aoti,
    with_features,
)
from equiforce.data.graph import AtomicGraph
from equiforce.data.ordering import restore_atom_order
from equiforce.energy import VIRIAL, atomic_outputs, finish

if TYPE_CHECKING:
    from equiforce.models.base import PotentialModel

#: Dynamo recompile limit set for static-shape wrappers (buckets × dtypes × models).
STATIC_RECOMPILE_LIMIT = 64


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
        pad: pad atom and edge counts to buckets (:func:`pad_to_buckets`) so that
            static shapes recompile rarely. None: when ``dynamic`` is False.
        backend: ``"aoti"`` (CPU: the function compiled ahead of time with the
            weights inside, :mod:`equiforce.accel.aoti`; ``torch.compile`` for
            graphs it does not take and if it fails) or ``"inductor"``
            (``torch.compile`` only). None: ``EQUIFORCE_COMPILE_BACKEND``, else
            ``"aoti"`` for CPU models with dynamic shapes and no ``mode``.
        features: also return ``node_features`` (n_atoms, F), the model's final
            per-atom features (models with ``node_features``: So3krates, SO3LR).

    Attributes:
        compile_seconds: wall time of the first (compiling) call.
        n_compiles: how many graphs Dynamo compiled so far (1 expected).
        aoti: one :class:`~equiforce.accel.aoti.AOTIFunction` per edge layout
            (paired or not) when the AOTInductor backend is on, else None.
        compiled_inputs: the optional graph fields passed to the compiled
            function (``model.compiled_inputs``, e.g. SO3LR's long-range pairs,
            charge, spin).
        term_keys: the per-term outputs (``atomic_energies:<term>``) it returns
            for models with more than one energy term, else empty.
        features: whether the compiled function also returns the model's final
            per-atom features (``node_features`` (n_atoms, F)).
        scorer: a model that scores its own model's features (a latent
            uncertainty, ``scores_features``), else None. Its model is what is
            compiled; the per-atom score (:meth:`atom_scores`: distance and
            predicted force error) runs inside the compiled function on the
            features, the per-structure maximum outside.
    """

    def __init__(
        self,
        model: PotentialModel,
        compile: bool = True,
        dynamic: bool = True,
        mode: str | None = None,
        cpp_wrapper: bool | None = None,
        pad: bool | None = None,
        backend: str | None = None,
        features: bool = False,
    ) -> None:
        from equiforce.accel.runtime import tune_allocator

        tune_allocator()
        self.scorer = None
        weights_of = model
        if getattr(model, "scores_features", False):
            # a latent uncertainty: its model compiled with the features scored
            # inside (the mixture's buffers are the library's constants too)
            self.scorer, model, features = model, model.model, True
        self.features = bool(features)
        if self.features and not callable(getattr(model, "node_features", None)):
            raise ValueError(
                f"features=True: {type(model).__name__} exposes no per-atom features "
                "(node_features; So3krates and SO3LR do)"
            )
        self._weights_of = weights_of
        self.model = model.eval()
        self.compiled_inputs: tuple[str, ...] = compiled_inputs(model)
        self.term_keys: tuple[str, ...] = term_keys(model)
        self.compile_seconds: float | None = None
        self._fn = self._energy_and_forces
        self.compiled = False
        self.pad = (not dynamic) if pad is None else pad
        self.cudagraphs = mode is not None and "reduce-overhead" in mode
        self._autograd_fallback = False
        self._pad_cache: tuple[torch.Tensor, AtomicGraph] | None = None
        if compile:
            on_cpu = all(p.device.type == "cpu" for p in model.parameters())
            if cpp_wrapper is None:
                cpp_wrapper = on_cpu and os.environ.get("EQUIFORCE_CPP_WRAPPER") != "0"
            options = None
            if mode is None:  # (torch.compile takes a mode or options)
                options = dict(runtime.INDUCTOR_CPU_OPTIONS) if on_cpu else {}
                if cpp_wrapper:
                    options["cpp_wrapper"] = True
            if not dynamic:
                # one graph per bucket, dtype and model: Dynamo's default limit (8
                # per code object, shared by every wrapper) would send later
                # shapes to eager without an error
                cfg = torch._dynamo.config
                cfg.recompile_limit = max(cfg.recompile_limit, STATIC_RECOMPILE_LIMIT)
            self._fn = torch.compile(
                self._energy_and_forces, dynamic=dynamic, mode=mode, options=options
            )
            self.compiled = True
        self.aoti: dict[bool, AOTIFunction] | None = None
        if compile and wants_aoti(backend, on_cpu, dynamic, mode, self.pad):
            self.aoti = {}
        self._frame_count_at_start = dynamo_frame_count()

    @classmethod
    def for_device(cls, model: PotentialModel) -> CompiledPotential:
        """The fastest measured setting for the device that holds ``model``.

        CPU: one dynamic-shape graph with the C++ wrapper. CUDA: static bucketed
        shapes with CUDA graphs (``docs/benchmarks.md`` section 7, GPU).
        """
        on_cuda = any(p.device.type == "cuda" for p in model.parameters())
        if on_cuda:
            return cls(model, dynamic=False, mode="reduce-overhead", pad=True)
        return cls(model)

    @property
    def backend(self) -> str:
        """What the next call of an accepted size runs: aoti, inductor or eager."""
        if self.aoti is not None:
            return "aoti"
        return "inductor" if self.compiled else "eager"

    def _aoti_function(self, paired: bool) -> AOTIFunction:
        fn = self.aoti.get(paired)
        if fn is None:
            model, outer = self.model, self._weights_of

            def energy_and_forces(*args: torch.Tensor) -> tuple[torch.Tensor, ...]:
                return self._energy_and_forces(*args[:8], paired, False, *args[8:])

            extra_dims = (GRAPH_INPUT_DIMS[name] for name in self.compiled_inputs)
            state = [*model.parameters(), *model.buffers()]
            if outer is not model:  # a scorer: a refit may replace its own tensors
                state = _with_scorer_tensors(state, outer, model)
            fn = AOTIFunction(
                energy_and_forces,
                state,
                lambda: (model.inference_generation, outer.inference_generation),
                dims=(0, 0, 0, 1, 0, 0, 0, 0, *extra_dims),
                trace_context=self._trace_context,
            )
            self.aoti[paired] = fn
        return fn

    @contextlib.contextmanager
    def _trace_context(self) -> Iterator[None]:
        """The model's inference caches; sizes traced apart.

        ``make_fx`` gives equal sizes one symbol ("duck shaping"): the example's
        structure count (2) equals edge_index's static leading 2, and a long-range
        pair count may equal the short-range one; a size read from the wrong input
        fixes the library to it. Models that use the structure count inside the
        traced function (the EFA's per-structure sums, SO3LR's charge and spin)
        then failed for three structures, so duck shaping is off for every model.
        """
        with contextlib.ExitStack() as stack:
            from torch.fx.experimental import _config as fx_config

            stack.enter_context(self.model.inference_tables())
            stack.enter_context(fx_config.patch(use_duck_shape=False))
            yield

    def _run_aoti(self, graph: AtomicGraph, args: tuple) -> tuple | None:
        """The AOTInductor library's outputs, or None when it cannot take ``graph``."""
        if not AOTIFunction.accepts(graph.num_nodes, graph.n_edges):
            return None
        if "lr_edge_index" in self.compiled_inputs and not AOTIFunction.accepts(
            graph.num_nodes, graph.lr_edge_index.shape[1]
        ):
            return None

        def example() -> tuple[torch.Tensor, ...]:
            # two structures, so that the structure count stays symbolic
            g = graph if graph.n_graphs > 1 else AtomicGraph.collate([graph, graph])
            return arguments(g, self.compiled_inputs)

        try:
            return self._aoti_function(graph.edges_paired)(example, args)
        except Exception as err:  # noqa: BLE001 - any build/load failure -> torch.compile
            warnings.warn(
                f"AOTInductor failed ({type(err).__name__}: {err}); using torch.compile",
                RuntimeWarning,
                stacklevel=3,
            )
            self.aoti = None
            return None

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
        stress: bool = False,
        *extras: torch.Tensor,  # the model's compiled_inputs, in order
    ) -> tuple[torch.Tensor, ...]:
        """Atomic energies (n_atoms,) float64 with E0, forces (n_atoms, 3)[, virial].

        :func:`equiforce.energy.atomic_outputs` with ``torch.func`` derivatives;
        E0 is added inside the graph too (eager ops cost ~5 µs each, a few % of a
        small molecule's call), the per-structure sums stay outside. ``extras``:
        the optional graph fields of :func:`compiled_inputs` (SO3LR's long-range
        pairs, charge and spin). Models with several energy terms also return
        each term's per-atom energies, in the order of :attr:`term_keys`, and
        with :attr:`features` the final features (n_atoms, F) last, or with a
        :attr:`scorer` their distance and predicted force error (n_atoms,) each.
        """
        graph = AtomicGraph(
            positions=positions,
            atomic_numbers=atomic_numbers,
            graph_index=graph_index,
            edge_index=edge_index,
            edge_shifts=edge_shifts,
            cell=cell,
            pbc=pbc,
            n_atoms=n_atoms,
            edges_paired=edges_paired,
            **dict(zip(self.compiled_inputs, extras, strict=True)),
        )
        model = self.model
        terms_fn = with_features(model) if self.features else model.energy_terms
        out = atomic_outputs(terms_fn, model.e0, graph, stress=stress, method="func")
        e_atom, forces = out[keys.ATOMIC_ENERGIES], out[keys.FORCES]
        extra = [out[k] for k in self.term_keys]
        if self.scorer is not None:
            extra.extend(self.scorer.atom_scores(out[keys.NODE_FEATURES]))
        elif self.features:
            extra.append(out[keys.NODE_FEATURES])
        return (
            (e_atom, forces, out[VIRIAL], *extra)
            if stress
            else (e_atom, forces, *extra)
        )

    def __call__(
        self, graph: AtomicGraph, stress: bool = False
    ) -> dict[str, torch.Tensor]:
        """Energies (float64, E0 included) and forces of every structure in ``graph``.

        Args:
            graph: the structures.
            stress: also return ``stress`` (n_graphs, 3, 3) eV/Å³ (a graph of its
                own, on torch.compile: the AOTInductor library has forces only).

        Large systems run in Morton atom order (:meth:`PotentialModel.atom_order`);
        the outputs are in ``graph``'s order either way.
        """
        self.model.check_graph(graph)  # the traced graph cannot raise on data
        if self.scorer is not None:  # its maps cached: constants when traced
            self.scorer.prepare_scoring(graph.positions.dtype, graph.positions.device)
        order = self.model.atom_order(graph)
        if order is None:
            out = self._call(graph, stress)
        else:
            out = restore_atom_order(
                self._call(graph.permuted(*order), stress), order[1]
            )
        if self.scorer is not None:
            features = out.pop(keys.NODE_FEATURES, None)  # the eager fallback's
            if features is not None:
                with torch.no_grad():
                    u, sigma = self.scorer.atom_scores(features)
            else:
                u, sigma = out.pop(keys.LATENT_DISTANCE), out.pop(keys.FORCES_STD)
            out |= self.scorer.scored_outputs(u, sigma, graph)
        return out

    def _padded(self, graph: AtomicGraph) -> AtomicGraph:
        """``graph`` padded to buckets; MD reuses one topology, so it is cached.

        A cached padding takes the new positions and cells (NPT strains the
        cell while the neighbour list, hence ``edge_index``, stays valid).
        """
        cached = self._pad_cache
        if cached is not None and cached[0] is graph.edge_index:
            padded = cached[1]
            ghosts = padded.positions[graph.num_nodes :]
            ghost_cells = padded.cell[graph.cell.shape[0] :]
            return replace(
                padded,
                positions=torch.cat([graph.positions, ghosts]),
                cell=torch.cat([graph.cell, ghost_cells]),
            )
        padded = pad_to_buckets(graph, self.model.cutoff)
        self._pad_cache = (graph.edge_index, padded)
        return padded

    def _call(self, graph: AtomicGraph, stress: bool) -> dict[str, torch.Tensor]:
        # the training limit (differentiable=True): graphs the model would chunk
        # only for forces-only calls still run here, all edges at once
        accepts = getattr(self.model, "compiled_accepts", None)
        if (
            self.model.chunks_edges(graph.n_edges, True)
            or self._autograd_fallback
            or (accepts is not None and not accepts(graph))
        ):
            # (and graphs the model runs eagerly only: SO3LR's PME cells)
            # checkpointed edge chunks use saved-tensor hooks, which torch.func
            # transforms reject: very large graphs take the autograd path
            # (the model finds the atoms already in Morton order: its sort is
            # a no-op permutation, milliseconds against seconds for such graphs)
            if self.features:
                from equiforce.uncertainty.latent import model_features

                features, out = model_features(self.model, graph, True, stress)
                return out | {keys.NODE_FEATURES: features}
            return self.model(graph, compute_forces=True, compute_stress=stress)
        padded = self._padded(graph) if self.pad else graph
        args = arguments(padded, self.compiled_inputs)
        start = time.perf_counter() if self.compile_seconds is None else 0.0

        # small graphs on one thread; the generated loops are single-threaded
        # anyway (runtime.INDUCTOR_CPU_OPTIONS, COMPILED_ONE_THREAD_MAX_EDGES)
        def small() -> contextlib.AbstractContextManager:
            return one_thread_below(
                padded.n_edges,
                runtime.COMPILED_ONE_THREAD_MAX_EDGES,
                padded.positions.device,
            )

        outputs = None
        if self.aoti is not None and not stress:
            with torch.no_grad(), small():
                outputs = self._run_aoti(padded, args)
        try:
            if self.cudagraphs:
                torch.compiler.cudagraph_mark_step_begin()
            if outputs is None:
                with torch.no_grad(), small(), self.model.inference_tables():
                    outputs = self._fn(
                        *args[:8], padded.edges_paired, stress, *args[8:]
                    )
        except Exception as err:  # noqa: BLE001 - any compiler failure -> eager fallback
            if not self.compiled:
                raise
            warnings.warn(
                f"torch.compile failed ({type(err).__name__}: {err}); using eager mode",
                RuntimeWarning,
                stacklevel=2,
            )
            self.compiled, self._autograd_fallback = False, True
            return self._call(graph, stress)
        if self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - start
        names = (keys.ATOMIC_ENERGIES, keys.FORCES, *((VIRIAL,) if stress else ()))
        names += self.term_keys
        if self.scorer is not None:
            names += (keys.LATENT_DISTANCE, keys.FORCES_STD)
        elif self.features:
            names += (keys.NODE_FEATURES,)
        atomic = dict(zip(names, outputs, strict=True))
        if self.pad:  # drop the ghost atoms and the ghost structure
            atomic = {
                k: v[: graph.n_graphs if k == VIRIAL else graph.num_nodes]
                for k, v in atomic.items()
            }
        if self.cudagraphs:  # the next replay overwrites a CUDA graph's outputs
            atomic = {k: v.clone() for k, v in atomic.items()}
        return finish(graph, atomic)


def _with_scorer_tensors(
    fixed: list[torch.Tensor], scorer: torch.nn.Module, model: torch.nn.Module
):
    """``fixed`` (the model's tensors) plus the scorer's own, looked up at every call.

    The scorer's submodules (a mixture, an error map) are re-read each time, so a
    refit that replaces one, or one of their buffers, is seen; walking the
    model's module tree at every call would cost tens of µs of a 0.3 ms call.
    """

    def state() -> list[torch.Tensor]:
        own = [
            t
            for child in scorer.children()
            if child is not model
            for t in (*child.parameters(), *child.buffers())
        ]
        direct = (*scorer._parameters.values(), *scorer._buffers.values())
        return [*fixed, *own, *(t for t in direct if t is not None)]

    return state
