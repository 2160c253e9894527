"""So3krates attention layers over edges in chunks, for graphs of 10⁵-10⁶ atoms.

A layer's per-edge intermediates (gathered queries, keys and values, radial filters,
attention weights) cost ~3 kB per edge in float32; a 100,000-atom water box has
5.6 million directed edges, so they cannot all live at once. Two ways to process
the edges in chunks, both exact:

* :func:`checkpointed_messages` (outputs that stay differentiable, as in training
  with forces in the loss): every chunk runs under
  :func:`torch.utils.checkpoint.checkpoint`, so autograd keeps only the chunk's
  inputs and recomputes the rest in the backward pass. Differentiable twice, but
  each chunk's backward allocates fresh atom-sized gradient tensors, and the
  running sums of the chunks are new tensors too.
* :class:`ChunkedMessages` (forces by one backward, outputs detached: MD,
  evaluation): a custom autograd function whose forward sums the chunks' messages
  into two preallocated buffers without recording anything, and whose backward
  recomputes one chunk at a time and sums its gradients in place into
  preallocated buffers. Every temporary has the same size from chunk to chunk, so
  the allocator reuses the same blocks and the memory stays
  O(n_atoms·F + n_edges·m + chunk·F) however many chunks there are. Only
  differentiable once, and not with respect to the weights (which also saves
  their gradient products in every chunk's backward).

  By default each chunk's messages and their vector-Jacobian product run as two
  compiled graphs (:func:`compiled_chunk_kernels`; dynamic shapes, Inductor's own
  row gathers, compiled once per layer, ~25 s): eager chunks spend most of their
  time in separate element-wise passes over edge-sized tensors (a 10k-atom box:
  ``cat`` and ``mul`` 65 % of the call, ``so3krates_ablations.py profile``). 101,094 periodic waters at one thread,
  second call: 25.2 s compiled vs 56.5 s eager
  (``benchmarks/so3krates_ablations.py calls --systems box100k --compile-chunks``).

On the CPU the compiled kernels run chunks on several threads at once
(``ChunkKernels.workers``, by default the caller's torch thread count): their
generated loops are single-threaded (``runtime.INDUCTOR_CPU_OPTIONS``) and, with
Inductor's C++ wrapper, run without the GIL, so each thread takes one chunk
whole, loops and matrix products alike. Results are summed in chunk order on
the calling thread: the same numbers as one chunk at a time.

The per-edge geometry argument (``sph`` below, m values per directed edge) is
whatever the chunk function needs per edge: So3krates passes the edge vectors
(m = 3) and computes the spherical harmonics inside each chunk, where the
compiled kernels fuse them.
"""

from __future__ import annotations

import collections
import contextlib
import os
import warnings
import weakref
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import NamedTuple, TypeVar

import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

from equiforce.accel import runtime
from equiforce.accel.runtime import one_thread_below
from equiforce.nn.scatter import inductor_row_ops

#: (q, kv, ev, d_c, sph_c, phi_c, i_c, j_c) -> (Δf, Δx or None) of one chunk
ChunkFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def pair_slices(n_pairs: int, chunk: int, n_dir: int) -> Iterator[slice]:
    """Slices of pairs, each taking about ``chunk`` directed edges."""
    step = max(chunk // n_dir, 1)
    for start in range(0, n_pairs, step):
        yield slice(start, min(start + step, n_pairs))


def directions(x: torch.Tensor, sl: slice, n_dir: int) -> torch.Tensor:
    """Rows of the edges of pairs ``sl`` in every direction, direction-major.

    ``x`` has one row per directed edge, edge ``p + k·n_pairs`` being pair ``p`` in
    direction ``k``; the result keeps that layout for the chunk's pairs.
    """
    n_pairs = x.shape[0] // n_dir
    return x.view(n_dir, n_pairs, *x.shape[1:])[:, sl].flatten(0, 1)


def chunk_args(tensors: tuple[torch.Tensor, ...], sl: slice, n_dir: int) -> tuple:
    """Arguments of ``fn`` for pairs ``sl``: atom tensors whole, edge tensors sliced.

    ``tensors`` is ``(q, kv, ev, d, sph, phi, idx_i, idx_j)``; ``d`` and ``phi`` are
    per pair, ``sph`` and the indices per directed edge.
    """
    q, kv, ev, d, sph, phi, idx_i, idx_j = tensors
    sph_c, i_c, j_c = (directions(t, sl, n_dir) for t in (sph, idx_i, idx_j))
    return q, kv, ev, d[sl], sph_c, phi[sl], i_c, j_c


def checkpointed_messages(
    fn: ChunkFn,
    q: torch.Tensor,  # (n_atoms, n_q·F)
    kv: torch.Tensor,  # (n_atoms, (n_q+1)·F)
    ev: torch.Tensor,  # (n_atoms, m_tot)
    d: torch.Tensor,  # (n_pairs,)
    sph: torch.Tensor,  # (n_edges, m_tot)
    phi: torch.Tensor,  # (n_pairs,)
    idx_i: torch.Tensor,  # (n_edges,)
    idx_j: torch.Tensor,  # (n_edges,)
    chunk: int,
    n_dir: int,
    n_features: int,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Δf (n_atoms, F) and Δx (n_atoms, m_tot) summed over checkpointed chunks."""
    tensors = (q, kv, ev, d, sph, phi, idx_i, idx_j)
    d_f = q.new_zeros((q.shape[0], n_features))
    d_ev = None
    for sl in pair_slices(d.shape[0], chunk, n_dir):
        args = chunk_args(tensors, sl, n_dir)
        part_f, part_ev = checkpoint(fn, *args, use_reentrant=False)
        d_f = d_f + part_f
        if part_ev is not None:
            d_ev = part_ev if d_ev is None else d_ev + part_ev
    return d_f, d_ev


class ChunkKernels(NamedTuple):
    """Compiled forward and vector-Jacobian product of one layer's chunk function.

    ``forward(q, kv, ev, d_c, sph_c, phi_c, i_c, j_c)`` -> (Δf, Δx or None);
    ``vjp(q, kv, ev, d_c, sph_c, phi_c, i_c, j_c, g_f, g_ev)`` -> the gradients of
    ⟨Δf, g_f⟩ + ⟨Δx, g_ev⟩ with respect to (q, kv, ev, d_c, sph_c, phi_c), i.e. the
    vector-Jacobian product.
    """

    forward: Callable
    vjp: Callable
    #: called once when a kernel fails: the owner goes back to eager chunks
    on_failure: Callable[[], None] = lambda: None
    #: chunks computed at once, each on its own thread (1: one after another)
    workers: int = 1


def _chunk_forward(model, layer, table, n_dir, *args):
    return model.chunk_messages(layer, table, n_dir, *args)


def _chunk_vjp(
    model, layer, table, n_dir, q, kv, ev, d_c, sph_c, phi_c, i_c, j_c, g_f, g_ev
):
    # the vjp as the gradient of a scalar. Traced with Inductor's own row ops
    # (inductor_row_ops): Dynamo failed on the ATen row gathers' autograd.Function
    # under torch.func here, with torch.func.vjp and with torch.func.grad alike
    def projection(q, kv, ev, d_c, sph_c, phi_c):
        d_f, d_ev = model.chunk_messages(
            layer, table, n_dir, q, kv, ev, d_c, sph_c, phi_c, i_c, j_c
        )
        out = (d_f * g_f).sum()
        return out if d_ev is None else out + (d_ev * g_ev).sum()

    grad = torch.func.grad(projection, argnums=(0, 1, 2, 3, 4, 5))
    return grad(q, kv, ev, d_c, sph_c, phi_c)


#: compiled wrappers per (device type, function)
_COMPILED: dict[tuple[str, str], Callable] = {}


def chunk_workers(model, device: torch.device) -> int:
    """How many chunks run at once.

    ``model.chunk_workers``, or when it is None the caller's torch thread count
    on the CPU and 1 on other devices.
    """
    workers = getattr(model, "chunk_workers", None)
    if workers is None:
        workers = torch.get_num_threads() if device.type == "cpu" else 1
    if workers < 1:
        raise ValueError(f"chunk_workers must be >= 1 or None, got {workers}")
    return workers


def compiled_chunk_kernels(model, layer, table, n_dir: int) -> ChunkKernels:
    """The compiled :class:`ChunkKernels` of ``model.chunk_messages`` for ``layer``.

    One ``torch.compile`` wrapper per function and device type for the whole
    process; Dynamo specialises on the (model, layer, table) objects, which stay
    the same from call to call, and marks every size dynamic, so an MD run
    compiles once per layer. On the CPU with Inductor's C++ wrapper (no Python
    between kernels, and no GIL: chunks run on several threads at once;
    ``EQUIFORCE_CPP_WRAPPER=0`` turns it off and the chunks run one at a time).
    """
    device = next(model.parameters()).device
    on_cpu = device.type == "cpu"
    cpp_wrapper = on_cpu and os.environ.get("EQUIFORCE_CPP_WRAPPER") != "0"
    if (device.type, "forward") not in _COMPILED:
        options = dict(runtime.INDUCTOR_CPU_OPTIONS) if on_cpu else {}
        if cpp_wrapper:
            options["cpp_wrapper"] = True
        _COMPILED[device.type, "forward"] = torch.compile(
            _chunk_forward, dynamic=True, options=options
        )
        _COMPILED[device.type, "vjp"] = torch.compile(
            _chunk_vjp, dynamic=True, options=options
        )
    fwd, vjp = _COMPILED[device.type, "forward"], _COMPILED[device.type, "vjp"]

    def with_inductor_rows(fn):
        def call(*args):
            # args[6] = i_c: the chunk's edges (one thread: see runtime)
            threads = one_thread_below(
                args[6].shape[0],
                runtime.COMPILED_ONE_THREAD_MAX_EDGES,
                args[0].device,
            )
            with inductor_row_ops(), threads:
                return fn(model, layer, table, n_dir, *args)

        return call

    return ChunkKernels(
        with_inductor_rows(fwd),
        with_inductor_rows(vjp),
        lambda: setattr(model, "compile_chunks", False),
        chunk_workers(model, device) if cpp_wrapper or not on_cpu else 1,
    )


_T = TypeVar("_T")
_R = TypeVar("_R")


def map_in_order(
    fn: Callable[[_T], _R], items: Iterable[_T], workers: int
) -> Iterator[_R]:
    """``fn(item)`` for every item, yielded in order, ``workers`` at a time.

    With one worker a plain loop. Otherwise each call runs on a pool thread whose
    start-up gave it one torch thread and the caller's grad mode; the first call runs alone (it
    may compile, and compiling is serial anyway). For the whole run the process
    uses one torch thread and Inductor's own row ops, set here once rather than
    by each call (both are process-wide), and the caller's thread count is
    restored afterwards. At most ``2·workers`` calls are submitted ahead, so
    the results waiting to be consumed stay few.
    """
    items = iter(items)
    if workers <= 1:
        yield from map(fn, items)
        return
    grad = torch.is_grad_enabled()

    def start_worker() -> None:  # both are per-thread settings
        torch.set_num_threads(1)
        torch.set_grad_enabled(grad)

    threads = torch.get_num_threads()
    with contextlib.ExitStack() as stack:
        torch.set_num_threads(1)
        stack.callback(torch.set_num_threads, threads)
        stack.enter_context(inductor_row_ops())
        pool = stack.enter_context(
            ThreadPoolExecutor(workers, initializer=start_worker)
        )
        # waits for running calls if the consumer stops early
        stack.callback(pool.shutdown, wait=True, cancel_futures=True)
        first = next(items, _END)
        if first is _END:
            return
        yield pool.submit(fn, first).result()
        pending: collections.deque = collections.deque()
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= 2 * workers:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()


_END = object()


class ChunkPlan(NamedTuple):
    """One chunk of the in-place path, on the atoms its edges touch.

    Attributes:
        pairs: the chunk's pairs (with all their directions).
        atoms: (n_local,) sorted global indices of the atoms its edges join.
        i_local, j_local: (n_edges_c,) its edge indices into ``atoms``.
    """

    pairs: slice
    atoms: torch.Tensor
    i_local: torch.Tensor
    j_local: torch.Tensor


#: the last plan: (weak refs to idx_i and idx_j, chunk, n_dir, plans)
_LAST_PLAN: list = [None]


def plan_chunks(
    idx_i: torch.Tensor, idx_j: torch.Tensor, chunk: int, n_dir: int
) -> list[ChunkPlan]:
    """The chunks of a layer (the same for every layer and for the backward).

    The last plan is kept while its index tensors live: the layers of one call
    (and MD steps between neighbour-list rebuilds) share it.
    """
    last = _LAST_PLAN[0]
    if (
        last is not None
        and last[0]() is idx_i
        and last[1]() is idx_j
        and last[2:4] == (chunk, n_dir)
    ):
        return last[4]
    plans = _plan_chunks(idx_i, idx_j, chunk, n_dir)
    _LAST_PLAN[0] = (weakref.ref(idx_i), weakref.ref(idx_j), chunk, n_dir, plans)
    return plans


def _plan_chunks(
    idx_i: torch.Tensor, idx_j: torch.Tensor, chunk: int, n_dir: int
) -> list[ChunkPlan]:
    plans = []
    n_pairs = idx_i.shape[0] // n_dir
    for sl in pair_slices(n_pairs, chunk, n_dir):
        i_c, j_c = directions(idx_i, sl, n_dir), directions(idx_j, sl, n_dir)
        atoms, local = torch.unique(torch.cat([i_c, j_c]), return_inverse=True)
        n = i_c.shape[0]
        plans.append(ChunkPlan(sl, atoms, local[:n], local[n:]))
    return plans


def local_args(tensors: tuple[torch.Tensor, ...], plan: ChunkPlan, n_dir: int):
    """Arguments of a chunk function restricted to the chunk's own atoms.

    ``tensors`` is ``(q, kv, ev, d, sph, phi, idx_i, idx_j)``; the atom tensors
    come back as rows ``plan.atoms``, the edge tensors sliced, and the indices
    local.
    """
    q, kv, ev, d, sph, phi = tensors[:6]
    a, sl = plan.atoms, plan.pairs
    return (
        q.index_select(0, a),
        kv.index_select(0, a),
        ev.index_select(0, a),
        d[sl],
        directions(sph, sl, n_dir),
        phi[sl],
        plan.i_local,
        plan.j_local,
    )


class ChunkedMessages(torch.autograd.Function):
    """Δf and Δx of one layer, chunk by chunk, with an in-place chunked backward.

    ``apply(fn, kernels, chunk, n_dir, n_features, q, kv, ev, d, sph, phi, idx_i,
    idx_j)`` returns ``(Δf (n_atoms, F), Δx (n_atoms, m_tot))`` (Δx is zeros when
    ``fn`` returns None for it). ``kernels``: compiled forward and vjp of ``fn``
    (:class:`ChunkKernels`), or None for eager chunks. Gradients flow to the tensor
    inputs only: the weights ``fn`` uses are constants here, so use it only when no
    weight gradient can be asked for (outputs detached, as in MD and evaluation).

    Every chunk runs on the rows of the atoms its edges join
    (:class:`ChunkPlan`), not on whole atom tensors: atom-sized temporaries in
    every chunk would cost O(n_chunks · n_atoms), i.e. grow with the square of
    the system size.
    """

    @staticmethod
    def forward(ctx, fn, kernels, chunk, n_dir, n_features, *tensors):  # noqa: D102
        q, ev, idx_i, idx_j = tensors[0], tensors[2], tensors[6], tensors[7]
        d_f = q.new_zeros((q.shape[0], n_features))
        d_ev = ev.new_zeros(ev.shape)
        forward = fn if kernels is None else kernels.forward
        workers = 1 if kernels is None else kernels.workers
        plans = plan_chunks(idx_i, idx_j, chunk, n_dir)

        def messages(plan: ChunkPlan):
            return forward(*local_args(tensors, plan, n_dir))

        for plan, (part_f, part_ev) in zip(
            plans, map_in_order(messages, plans, workers), strict=True
        ):
            d_f.index_add_(0, plan.atoms, part_f)
            if part_ev is not None:
                d_ev.index_add_(0, plan.atoms, part_ev)
            del part_f, part_ev
        ctx.fn, ctx.kernels, ctx.plans, ctx.n_dir = fn, kernels, plans, n_dir
        ctx.save_for_backward(*tensors)
        return d_f, d_ev

    @staticmethod
    @once_differentiable
    def backward(ctx, g_f, g_ev):  # noqa: D102
        tensors = ctx.saved_tensors
        fn, n_dir, n_pairs = ctx.fn, ctx.n_dir, tensors[3].shape[0]
        needs = ctx.needs_input_grad[5:11]  # q, kv, ev, d, sph, phi
        grads = [
            torch.zeros_like(t) if need else None
            for t, need in zip(tensors[:6], needs, strict=True)
        ]
        kernels = ctx.kernels

        def chunk_inputs(plan: ChunkPlan) -> tuple:
            """The chunk function's arguments and the output gradients' rows."""
            args = local_args(tensors, plan, n_dir)
            return (
                args,
                g_f.index_select(0, plan.atoms),
                g_ev.index_select(0, plan.atoms),
            )

        def compiled_vjp(plan: ChunkPlan):
            args, g_f_c, g_ev_c = chunk_inputs(plan)
            return kernels.vjp(*args, g_f_c, g_ev_c)

        results = None
        if kernels is not None:
            results = map_in_order(compiled_vjp, ctx.plans, kernels.workers)
        for plan in ctx.plans:
            if results is not None:
                try:
                    chunk_grads = next(results)
                except Exception as err:  # noqa: BLE001 - compiler failure -> eager
                    warn_compile_failure(err)
                    kernels.on_failure()
                    results = None  # this chunk and the rest eagerly
                else:
                    _add_chunk_grads(grads, chunk_grads, plan, n_dir, n_pairs)
                    del chunk_grads
                    continue
            args, g_f_c, g_ev_c = chunk_inputs(plan)
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_() for t in args[:6]]
                part_f, part_ev = fn(*leaves, *args[6:])
                outs, g_outs = [part_f], [g_f_c]
                if part_ev is not None:
                    outs.append(part_ev)
                    g_outs.append(g_ev_c)
                chunk_grads = torch.autograd.grad(
                    outs, leaves, g_outs, allow_unused=True, materialize_grads=False
                )
            del outs, part_f, part_ev
            _add_chunk_grads(grads, chunk_grads, plan, n_dir, n_pairs)
            del chunk_grads
        if results is not None:  # restores the thread settings now, not at GC
            results.close()
        return (None, None, None, None, None, *grads, None, None)


def warn_compile_failure(err: Exception) -> None:
    """The warning given when compiled chunk kernels fail (eager chunks follow)."""
    warnings.warn(
        f"compiling the edge chunks failed ({type(err).__name__}: {err}); "
        "using eager chunks",
        RuntimeWarning,
        stacklevel=3,
    )


def _add_chunk_grads(
    grads, chunk_grads, plan: ChunkPlan, n_dir: int, n_pairs: int
) -> None:
    """Add one chunk's gradients of (q, kv, ev, d_c, sph_c, phi_c) in place."""
    sl = plan.pairs
    for k, g in enumerate(chunk_grads):
        if g is None or grads[k] is None:
            continue
        if k in (3, 5):  # d, phi: per pair
            grads[k][sl] += g
        elif k == 4:  # sph: per edge, direction-major
            m = g.shape[1:]
            grads[k].view(n_dir, n_pairs, *m)[:, sl] += g.view(n_dir, -1, *m)
        else:  # atom rows of the chunk
            grads[k].index_add_(0, plan.atoms, g)
