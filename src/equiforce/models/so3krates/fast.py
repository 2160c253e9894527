"""So3krates' fast paths: what makes calls faster without changing the maths.

- Filter tables: forces-only calls (MD, evaluation; never training) read the
  radial part of every filter from a cubic Hermite table
  (:mod:`equiforce.accel.spline`) instead of two Dense layers per pair.
- Node projections: the weight-only per-head maps, kept between inference calls.
- Edge chunks: very large graphs are processed in chunks of edges
  (:mod:`equiforce.accel.edge_chunks`), checkpointed when the outputs stay
  differentiable and in place otherwise.

:class:`So3kratesFastPaths` is a mixin of :class:`~equiforce.models.so3krates.model.So3krates`.
"""

from __future__ import annotations

import contextlib
import copy
import functools
from collections.abc import Iterator
from typing import Literal, NamedTuple

import torch

from equiforce.accel.edge_chunks import (
    ChunkedMessages,
    checkpointed_messages,
    compiled_chunk_kernels,
    warn_compile_failure,
)
from equiforce.accel.spline import CubicHermiteTable
from equiforce.accel.weights import weight_state_key
from equiforce.models.so3krates.layer import So3kratesLayer

#: Peak device memory per directed edge of an unchunked eager energy+forces call
#: of So3krates ``default`` (F = 128, 2 layers) in float32, the largest seen:
#: 16.4 GiB for the 10,125-atom box (562,040 edges; 3,000 atoms: 2.02 GiB for
#: 166,608; 1,029 atoms: 0.74 GiB for 57,300), H200, 2026-12-04
#: (``benchmarks/gpu_speed.py``).
FORCES_BYTES_PER_EDGE = 32_000
#: Share of a GPU's memory an unchunked forces-only call may plan for.
GPU_MEMORY_SHARE = 0.3
#: The GPU limit never goes below this many edges (the CPU's chunk size).
GPU_MIN_EDGES = 60_000


def gpu_edge_limit(total_bytes: int, element_size: int, width: float = 1.0) -> int:
    """Edges an unchunked forces-only call may have on a GPU of ``total_bytes``.

    Args:
        total_bytes: the device's memory.
        element_size: bytes per float of the model (4: float32, 8: float64).
        width: the model's per-edge work against So3krates ``default``
            (layers × features × readout heads / (2 × 128)).
    """
    per_edge = FORCES_BYTES_PER_EDGE * width * element_size / 4
    return max(int(GPU_MEMORY_SHARE * total_bytes / per_edge), GPU_MIN_EDGES)


class NodeProjections(NamedTuple):
    """Weight-only inputs of the per-head maps, kept between inference calls."""

    projections: list[torch.Tensor]  # per layer (F, (2·n_q+1)·F)
    #: (n_elements, (2·n_q+1)·F) embedding @ projection; None when the first
    #: features depend on more than the element (SO3LR's charge and spin)
    first_layer: torch.Tensor | None


class So3kratesFastPaths:
    """Filter tables, cached node projections and edge chunks of So3krates."""

    def _init_fast_paths(self) -> None:
        """Runtime settings of the fast paths (not part of the config)."""
        #: Process edges in chunks of this size. None: automatic, i.e. all at once
        #: up to ``auto_chunk_edges`` edges (≈ 6 GiB of float32 intermediates) when
        #: the outputs stay differentiable (training: checkpointed chunks cost
        #: ≈ 1.3x), up to ``auto_chunk_edges_detached`` when they do not (MD,
        #: evaluation: the in-place chunks cost the same as all edges at once,
        #: 10,125-atom box at 2 threads 3.40 vs 3.34 s, and peak at 4.7 instead of
        #: 10.9 GiB; ``so3krates_ablations.py calls --edge-chunk-size``); chunks of
        #: ``auto_chunk_size`` edges above (``auto_chunk_size_detached`` for the
        #: in-place chunks, which run several at a time: 101k-atom box at 2
        #: threads, 250k-edge chunks one at a time 40 s, 60k-edge chunks two at a
        #: time 30 s, ``docs/benchmarks.md`` section 8, "Edge chunks"). Runtime
        #: settings for very large systems, not part of the config.
        self.edge_chunk_size: int | None = None
        self.auto_chunk_edges: int = 1_000_000
        self.auto_chunk_edges_detached: int = 300_000
        self.auto_chunk_size: int = 250_000
        self.auto_chunk_size_detached: int = 60_000
        #: Forces-only chunked calls run each chunk's messages and their
        #: vector-Jacobian product as compiled graphs (dynamic shapes, compiled
        #: once per layer): eager chunks spend most of their time in separate
        #: element-wise passes over edge-sized tensors.
        self.compile_chunks: bool = True
        #: Compiled chunks computed at once, each on its own thread (CPU; the
        #: kernels run without the GIL). None: the caller's torch thread count.
        self.chunk_workers: int | None = None
        #: Forces-only calls (MD, evaluation; never training) read the radial part
        #: of every filter from a cubic Hermite table in the basis' smooth
        #: coordinate (:mod:`equiforce.accel.spline`) instead of computing its two
        #: Dense layers per pair. "auto": float32 models; "on"; "off". With 1,000
        #: intervals a trained filter is interpolated to ~1e-8 relative (below
        #: float32 rounding). Runtime settings, not part of the config.
        self.filter_table: Literal["auto", "on", "off"] = "auto"
        self.filter_table_intervals: int = 1000
        self._tables_cache: tuple[tuple, list[CubicHermiteTable]] | None = None
        self._active_tables: list[CubicHermiteTable] | None = None
        self._table_tensors: list[torch.Tensor] | None = None
        #: per-layer node projections of the current inference call (detached)
        self._active_projections: NodeProjections | None = None
        self._projections_cache: tuple[tuple, NodeProjections] | None = None
        self._projection_weights: list[torch.Tensor] | None = None

    def _table_inputs(self) -> list[torch.Tensor]:
        """Every tensor the radial filter parts depend on.

        Listed once (walking the modules costs ~25 µs, a third of a small
        molecule's compiled call); the same parameter objects stay in place under
        ``load_state_dict``, optimizers and ``.to()``.
        """
        if self._table_tensors is None:
            tensors = list(self.rbf.buffers())
            for layer in self.layers:
                mlps = (
                    (layer.filter_r1, layer.filter_r2)
                    if layer.ev
                    else (layer.filter_r1,)
                )
                for mlp in mlps:
                    tensors += list(mlp.parameters())
            self._table_tensors = tensors
        return self._table_tensors

    def filter_tables(self) -> list[CubicHermiteTable]:
        """One table per layer: pair distance -> :meth:`So3kratesLayer.radial_parts`.

        Built in float64 from the current weights and stored in the model's dtype;
        rebuilt when a weight changed (in-place updates bump its version), moved or
        the model changed dtype.
        """
        weight = self.embedding.weight
        dtype, device = weight.dtype, weight.device
        tensors = self._table_inputs()
        key = (dtype, device, self.filter_table_intervals, *weight_state_key(tensors))
        if self._tables_cache is not None and self._tables_cache[0] == key:
            return self._tables_cache[1]
        basis = copy.deepcopy(self.rbf).double()
        ends = basis.to_table(torch.tensor([0.0, self.cutoff], dtype=torch.float64))
        lo, hi = sorted(float(x) for x in ends)
        tables = []
        for layer in self.layers:
            exact = copy.deepcopy(layer).double()

            def parts(s: torch.Tensor, exact=exact) -> torch.Tensor:
                return exact.radial_parts(basis(basis.from_table(s)))

            n = self.filter_table_intervals
            tables.append(
                CubicHermiteTable(parts, lo, hi, n, dtype=dtype, device=device)
            )
        self._tables_cache = (key, tables)
        return tables

    def _tables_wanted(self) -> bool:
        if self.filter_table == "on":
            return True
        if self.filter_table == "off":
            return False
        if self.filter_table != "auto":
            raise ValueError(
                f"filter_table must be 'auto', 'on' or 'off', got {self.filter_table!r}"
            )
        return self.embedding.weight.dtype == torch.float32

    def node_projections(self) -> NodeProjections:
        """Every layer's :meth:`So3kratesLayer.node_projection`, kept between calls.

        Rebuilt when one of its weights or the embedding changed (version
        counters) or moved. Only for calls that take no parameter gradients.
        """
        if self._projection_weights is None:
            self._projection_weights = [self.embedding.weight] + [
                p for layer in self.layers for p in layer.projection_weights()
            ]
        key = weight_state_key(self._projection_weights)
        if self._projections_cache is not None and self._projections_cache[0] == key:
            return self._projections_cache[1]
        with torch.no_grad():
            mats = [layer.node_projection() for layer in self.layers]
            first = self.embedding.weight @ mats[0]
        maps = NodeProjections(mats, first)
        self._projections_cache = (key, maps)
        return maps

    def clear_inference_caches(self) -> None:
        """Drop the filter tables and node projections kept between calls.

        They are rebuilt when a weight changes in place (its version counter),
        moves or changes dtype, but not when it is written through ``.data``
        (``p.data.copy_(...)``: that alias has a version counter of its own).
        Call this after such a write.
        """
        self._tables_cache = None
        self._projections_cache = None
        super().clear_inference_caches()

    @contextlib.contextmanager
    def inference_tables(self) -> Iterator[None]:
        """Calls inside read weight-only quantities from caches.

        The radial filters from :meth:`filter_tables` (see ``filter_table``) and
        the per-head maps from :meth:`node_projections`.
        """
        previous = self._active_tables, self._active_projections
        self._active_tables = self.filter_tables() if self._tables_wanted() else None
        self._active_projections = self.node_projections()
        try:
            yield
        finally:
            self._active_tables, self._active_projections = previous

    # ---------------------------------------------------------------- chunks
    def _edge_chunk(self, n_edges: int, differentiable: bool) -> int | None:
        """Edge chunk size for a graph of ``n_edges`` (None: no chunking).

        ``differentiable``: as in :meth:`chunks_edges`.
        """
        chunk = self.edge_chunk_size
        limit = (
            self.auto_chunk_edges if differentiable else self.auto_chunk_edges_detached
        )
        device_limit = 0 if differentiable else self._device_edge_limit()
        if device_limit:  # a GPU: its memory decides, larger or smaller
            limit = device_limit
        if chunk is None and n_edges > limit:
            chunk = (
                self.auto_chunk_size
                if differentiable
                # on a GPU, few large chunks (each launches every kernel once)
                else max(self.auto_chunk_size_detached, device_limit // 2)
            )
        return chunk if chunk is not None and n_edges > chunk else None

    def _device_edge_limit(self) -> int:
        """Forces-only edges a CUDA device takes at once (0 on the CPU).

        The CPU limits above keep host memory and cache in mind; a GPU holds far
        more edges at once, and there the chunks cost time (H200, 10,125-atom box,
        562k edges, energy+forces: 162 ms in 60k-edge chunks, 34 ms at once;
        CUDA graphs 154 / 12 ms). The limit takes
        :data:`GPU_MEMORY_SHARE` of the device's memory at
        :data:`FORCES_BYTES_PER_EDGE` per edge (scaled by the dtype's size, the
        layers and features, and the readout heads, whose forces are one backward
        each);
        larger graphs take chunks of half that many edges (101k-atom box, 5.5 M
        edges, in 60k-edge chunks: 1.22 s on the H200; in half-limit chunks:
        not yet measured).
        """
        p = next(self.parameters(), None)
        if p is None or p.device.type != "cuda":
            return 0
        total = torch.cuda.get_device_properties(p.device).total_memory
        cfg = self.config
        width = cfg.num_layers * cfg.num_features * max(self.n_heads, 1) / 256
        return gpu_edge_limit(total, p.element_size(), width)

    def chunks_edges(self, n_edges: int, differentiable: bool) -> bool:
        """True when edges are processed in chunks (very large graphs)."""
        return self._edge_chunk(n_edges, differentiable) is not None

    def _chunked_layer(
        self,
        layer,
        features,
        ev,
        q,
        kv,
        d,
        vec,
        phi,
        idx_i,
        idx_j,
        chunk: int,
        n_dir: int,
        table: CubicHermiteTable | None,
        differentiable: bool,
        d_ev_global: torch.Tensor | None = None,
    ):
        """One layer with edges in chunks (see :mod:`equiforce.accel.edge_chunks`).

        Memory is O(n_atoms·F + chunk·F) instead of O(n_edges·F): per-edge
        intermediates of a chunk are recomputed in the backward pass, at about 1.3x
        the cost. ``d`` and ``phi`` are per pair; a chunk takes ``chunk / n_dir``
        pairs with all their directions. When the outputs must stay differentiable
        (training: forces in the loss) chunks are checkpointed; otherwise (forces
        for MD or evaluation) :class:`ChunkedMessages` sums in place. ``table``:
        the layer's filter table, if filters are read from one. ``q`` and ``kv``:
        :meth:`So3kratesLayer.node_maps` of ``features``. ``vec``: the edge
        vectors (n_edges, 3); each chunk computes its spherical harmonics from
        them (on all edges at once, outside the compiled chunks, they were a
        third of a 100k-atom call). ``d_ev_global``: the global attention's
        Euclidean-variable update (n_atoms, m_tot), added to the messages'.
        """
        F = features.shape[1]
        chunk_messages = functools.partial(self.chunk_messages, layer, table, n_dir)
        tensors = (q, kv, ev, d, vec, phi, idx_i, idx_j)
        if differentiable:
            d_f, d_ev = checkpointed_messages(chunk_messages, *tensors, chunk, n_dir, F)
            return layer.update(features, ev, d_f, _plus(d_ev, d_ev_global))
        kernels = None
        if self.compile_chunks and not torch.compiler.is_compiling():
            kernels = compiled_chunk_kernels(self, layer, table, n_dir)
        try:
            d_f, d_ev = ChunkedMessages.apply(
                chunk_messages, kernels, chunk, n_dir, F, *tensors
            )
        except Exception as err:  # noqa: BLE001 - compiler failure -> eager chunks
            if kernels is None:
                raise
            warn_compile_failure(err)
            self.compile_chunks = False
            return self._chunked_layer(
                layer, features, ev, q, kv, d, vec, phi, idx_i, idx_j, chunk, n_dir,
                table, differentiable, d_ev_global,
            )  # fmt: skip
        d_ev = _plus(d_ev, d_ev_global) if layer.ev else None
        return layer.update(features, ev, d_f, d_ev)

    def chunk_messages(
        self,
        layer: So3kratesLayer,
        table: CubicHermiteTable | None,
        n_dir: int,
        q: torch.Tensor,  # (n_atoms, n_q·F)
        kv: torch.Tensor,  # (n_atoms, (n_q+1)·F)
        ev: torch.Tensor,  # (n_atoms, m_tot)
        d_c: torch.Tensor,  # (n_pairs_c,)
        vec_c: torch.Tensor,  # (n_edges_c, 3) edge vectors
        phi_c: torch.Tensor,  # (n_pairs_c,)
        i_c: torch.Tensor,  # (n_edges_c,)
        j_c: torch.Tensor,  # (n_edges_c,)
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Δf and Δx of one chunk of pairs (all their directions) in ``layer``."""
        sph_c = self._harmonics(vec_c)  # (n_edges_c, m_tot)
        if table is None:
            hidden = layer.radial_hidden(self.rbf(d_c).to(d_c.dtype))
        else:
            hidden = table(self.rbf.to_table(d_c))
        # Euclidean variables still zero; only at inference, where parameter
        # gradients are not taken (training keeps exact zeros for the skipped weights)
        first = layer is self.layers[0] and self._active_projections is not None
        return layer.edge_messages(
            q, kv, ev, hidden, sph_c, phi_c, i_c, j_c, n_dir, table is not None, first
        )


def _plus(a: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    """The sum a + b, or a when b is None."""
    return a if b is None else a + b
