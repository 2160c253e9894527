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
  O(n_atoms·F + n_edges·m_tot + chunk·F) however many chunks there are. Only
  differentiable once, and not with respect to the weights (which also saves
  their gradient products in every chunk's backward).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch
from torch.autograd.function import once_differentiable
from torch.utils.checkpoint import checkpoint

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


class ChunkedMessages(torch.autograd.Function):
    """Δf and Δx of one layer, chunk by chunk, with an in-place chunked backward.

    ``apply(fn, chunk, n_dir, n_features, q, kv, ev, d, sph, phi, idx_i, idx_j)``
    returns ``(Δf (n_atoms, F), Δx (n_atoms, m_tot))`` (Δx is zeros when ``fn``
    returns None for it). Gradients flow to the tensor inputs only: the weights
    ``fn`` uses are constants here, so use it only when no weight gradient can be
    asked for (outputs detached, as in MD and evaluation).
    """

    @staticmethod
    def forward(ctx, fn, chunk, n_dir, n_features, *tensors):  # noqa: D102
        q, ev, d = tensors[0], tensors[2], tensors[3]
        d_f = q.new_zeros((q.shape[0], n_features))
        d_ev = ev.new_zeros(ev.shape)
        for sl in pair_slices(d.shape[0], chunk, n_dir):
            part_f, part_ev = fn(*chunk_args(tensors, sl, n_dir))
            d_f += part_f
            if part_ev is not None:
                d_ev += part_ev
            del part_f, part_ev
        ctx.fn, ctx.chunk, ctx.n_dir = fn, chunk, n_dir
        ctx.save_for_backward(*tensors)
        return d_f, d_ev

    @staticmethod
    @once_differentiable
    def backward(ctx, g_f, g_ev):  # noqa: D102
        q, kv, ev, d, sph, phi, idx_i, idx_j = ctx.saved_tensors
        fn, n_dir, n_pairs = ctx.fn, ctx.n_dir, d.shape[0]
        needs = ctx.needs_input_grad[4:10]  # q, kv, ev, d, sph, phi
        grads = [
            torch.zeros_like(t) if need else None
            for t, need in zip((q, kv, ev, d, sph, phi), needs, strict=True)
        ]
        # leaves sharing storage with the inputs (no copies); autograd.grad gives
        # their gradients as atom-sized tensors of the same size at every chunk
        atom_leaves = [t.detach().requires_grad_() for t in (q, kv, ev)]
        for sl in pair_slices(n_pairs, ctx.chunk, n_dir):
            with torch.enable_grad():
                d_c = d[sl].detach().requires_grad_()
                sph_c = directions(sph, sl, n_dir).detach().requires_grad_()
                phi_c = phi[sl].detach().requires_grad_()
                i_c = directions(idx_i, sl, n_dir)
                j_c = directions(idx_j, sl, n_dir)
                part_f, part_ev = fn(*atom_leaves, d_c, sph_c, phi_c, i_c, j_c)
                outs, g_outs = [part_f], [g_f]
                if part_ev is not None:
                    outs.append(part_ev)
                    g_outs.append(g_ev)
                inputs = [*atom_leaves, d_c, sph_c, phi_c]
                chunk_grads = torch.autograd.grad(
                    outs, inputs, g_outs, allow_unused=True, materialize_grads=False
                )
            del outs, part_f, part_ev
            for k, g in enumerate(chunk_grads):
                if g is None or grads[k] is None:
                    continue
                if k in (3, 5):  # d, phi: per pair
                    grads[k][sl] += g
                elif k == 4:  # sph: per edge, direction-major
                    m = g.shape[1:]
                    grads[k].view(n_dir, n_pairs, *m)[:, sl] += g.view(n_dir, -1, *m)
                else:
                    grads[k] += g
            del chunk_grads
        return (None, None, None, None, *grads, None, None)
