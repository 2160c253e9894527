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
  preallocated buffers; gathers and sums are done per chunk, so no atom-sized
  temporary is made per chunk. Every temporary has the same size from chunk to chunk, so
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


#: (q_i, kv_j, ev_ij, d_c, sph_c, phi_c) -> (messages (E_c, F), Δx terms (E_c, m) or None)
TermsFn = Callable[..., tuple[torch.Tensor, torch.Tensor | None]]


def chunk_rows(
    q: torch.Tensor,  # (n_atoms, n_q·F)
    kv: torch.Tensor,  # (n_atoms, (n_q+1)·F)
    ev: torch.Tensor,  # (n_atoms, m_tot)
    i_c: torch.Tensor,  # (E_c,)
    j_c: torch.Tensor,  # (E_c,)
    n_pairs_c: int,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A chunk's rows: q_i (E_c, ·), kv_j (E_c, ·), x_j − x_i (n_pairs_c, m_tot)."""
    i_p, j_p = i_c[:n_pairs_c], j_c[:n_pairs_c]
    ev_ij = ev.index_select(0, j_p) - ev.index_select(0, i_p)
    return q.index_select(0, i_c), kv.index_select(0, j_c), ev_ij


class ChunkedMessages(torch.autograd.Function):
    """Δf and Δx of one layer, chunk by chunk, with an in-place chunked backward.

    ``apply(terms, chunk, n_dir, n_features, q, kv, ev, d, sph, phi, idx_i, idx_j)``
    returns ``(Δf (n_atoms, F), Δx (n_atoms, m_tot))`` (Δx is zeros when ``terms``
    returns None for it). ``terms`` maps a chunk's gathered rows
    (:func:`chunk_rows`) and its per-pair/per-edge inputs to per-edge messages;
    the gathers and the sums over centres happen here, so every chunk costs
    O(chunk) in both passes: no atom-sized temporary is made per chunk (with
    atom-sized ones, 100,000 atoms in 22 chunks per layer spent most of their
    time zero-filling and adding atom-sized gradients). Gradients flow to the
    tensor inputs only: the weights ``terms`` uses are constants here, so use it
    only when no weight gradient can be asked for (outputs detached, as in MD and
    evaluation).
    """

    @staticmethod
    def forward(ctx, terms, chunk, n_dir, n_features, *tensors):  # noqa: D102
        q, kv, ev, d, sph, phi, idx_i, idx_j = tensors
        d_f = q.new_zeros((q.shape[0], n_features))
        d_ev = ev.new_zeros(ev.shape)
        for sl in pair_slices(d.shape[0], chunk, n_dir):
            i_c, j_c = directions(idx_i, sl, n_dir), directions(idx_j, sl, n_dir)
            rows = chunk_rows(q, kv, ev, i_c, j_c, sl.stop - sl.start)
            msg, ev_msg = terms(*rows, d[sl], directions(sph, sl, n_dir), phi[sl])
            d_f.index_add_(0, i_c, msg)
            if ev_msg is not None:
                d_ev.index_add_(0, i_c, ev_msg)
            del rows, msg, ev_msg
        ctx.terms, ctx.chunk, ctx.n_dir = terms, chunk, n_dir
        ctx.save_for_backward(*tensors)
        return d_f, d_ev

    @staticmethod
    @once_differentiable
    def backward(ctx, g_f, g_ev):  # noqa: D102
        q, kv, ev, d, sph, phi, idx_i, idx_j = ctx.saved_tensors
        terms, n_dir, n_pairs = ctx.terms, ctx.n_dir, d.shape[0]
        needs = ctx.needs_input_grad[4:10]  # q, kv, ev, d, sph, phi
        grads = [
            torch.zeros_like(t) if need else None
            for t, need in zip((q, kv, ev, d, sph, phi), needs, strict=True)
        ]
        for sl in pair_slices(n_pairs, ctx.chunk, n_dir):
            n_pc = sl.stop - sl.start
            i_c, j_c = directions(idx_i, sl, n_dir), directions(idx_j, sl, n_dir)
            rows = chunk_rows(q, kv, ev, i_c, j_c, n_pc)
            with torch.enable_grad():
                leaves = [
                    *(r.requires_grad_() for r in rows),
                    d[sl].detach().requires_grad_(),
                    directions(sph, sl, n_dir).detach().requires_grad_(),
                    phi[sl].detach().requires_grad_(),
                ]
                msg, ev_msg = terms(*leaves)
                outs, g_outs = [msg], [g_f.index_select(0, i_c)]
                if ev_msg is not None:
                    outs.append(ev_msg)
                    g_outs.append(g_ev.index_select(0, i_c))
                chunk_grads = torch.autograd.grad(
                    outs, leaves, g_outs, allow_unused=True, materialize_grads=False
                )
            del outs, g_outs, msg, ev_msg, leaves, rows
            g_qi, g_kvj, g_evij, g_d, g_sph, g_phi = chunk_grads
            if grads[0] is not None and g_qi is not None:
                grads[0].index_add_(0, i_c, g_qi)
            if grads[1] is not None and g_kvj is not None:
                grads[1].index_add_(0, j_c, g_kvj)
            if grads[2] is not None and g_evij is not None:
                grads[2].index_add_(0, j_c[:n_pc], g_evij)
                grads[2].index_add_(0, i_c[:n_pc], g_evij, alpha=-1)
            if grads[3] is not None and g_d is not None:
                grads[3][sl] += g_d
            if grads[4] is not None and g_sph is not None:
                m = g_sph.shape[1:]
                grads[4].view(n_dir, n_pairs, *m)[:, sl] += g_sph.view(n_dir, -1, *m)
            if grads[5] is not None and g_phi is not None:
                grads[5][sl] += g_phi
            del chunk_grads
        return (None, None, None, None, *grads, None, None)
