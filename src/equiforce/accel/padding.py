"""Pad a graph to bucketed atom and edge counts (static shapes for CUDA graphs).

A CUDA graph replays a fixed sequence of kernels on fixed buffers, so every call
must have the same tensor shapes. In MD the atom count is fixed but the number of
neighbour pairs changes by a few every time the list is rebuilt; compiling one
graph per exact edge count would recompile all the time. Padding the counts up to
a coarse bucket (at most 1/8 larger, see :func:`bucket`) makes a run use one or two
shapes.

The padding lives in a separate structure appended to the batch: ``n_ghost`` ≥ 2
ghost atoms of its own graph (open cell, no periodicity), placed on a line
``2 * cutoff`` apart, and the padded edges all join ghost 0 and ghost 1 (in both
directions, so a paired layout stays paired). Real atoms get no new neighbours
and no global per-structure quantity sees the ghosts; the caller drops the ghost
graph's outputs. Padded edges are longer than the cutoff, so they carry no
message, but nothing relies on that. Long-range pairs (SO3LR) are padded the same
way, to a bucket of their own, and the ghost structure gets zero charge and spin.
"""

from __future__ import annotations

import math
from dataclasses import replace

import torch

from equiforce.data.graph import AtomicGraph

MIN_GHOSTS = 2


def bucket(n: int, minimum: int) -> int:
    """Smallest bucket size ≥ ``n``: multiples of 2^(⌊log2 n⌋ − 3), at least ``minimum``.

    Consecutive buckets differ by at most 1/8 of their size, so padding wastes at
    most 12.5 % of the work, and sizes between 1,024 and 2,047 share 8 buckets.
    """
    if n <= minimum:
        return minimum
    step = 2 ** max(math.floor(math.log2(n)) - 3, 0)
    return -(-n // step) * step


def pad_to_buckets(
    graph: AtomicGraph, cutoff: float, min_atoms: int = 16, min_edges: int = 64
) -> AtomicGraph:
    """``graph`` plus one ghost structure that rounds atoms and edges up to buckets.

    Args:
        graph: the batch (any device/dtype); paired edges stay paired.
        cutoff: the model's cutoff, Å (ghost spacing is twice this).
        min_atoms: smallest atom bucket.
        min_edges: smallest edge bucket.

    Returns:
        A batch with ``graph.n_graphs + 1`` structures whose first ``graph.num_nodes``
        atoms and first structures are ``graph``'s, unchanged.
    """
    n_real, e_real = graph.num_nodes, graph.n_edges
    n_ghost = bucket(n_real + MIN_GHOSTS, min_atoms) - n_real
    n_pad = bucket(e_real, min_edges) - e_real
    if graph.edges_paired and n_pad % 2:
        n_pad += 1
    pos, dev = graph.positions, graph.positions.device
    ghost_pos = torch.zeros(n_ghost, 3, dtype=pos.dtype, device=dev)
    ghost_pos[:, 0] = 2.0 * cutoff * torch.arange(n_ghost, dtype=pos.dtype, device=dev)
    g0, g1 = n_real, n_real + 1
    edge_index, edge_shifts = _ghost_pairs(
        graph.edge_index, graph.edge_shifts, n_pad, g0, g1, graph.edges_paired
    )
    z = graph.atomic_numbers
    long_range = {}
    if graph.lr_edge_index is not None:
        n_lr = graph.lr_edge_index.shape[1]
        lr_pad = bucket(n_lr, min_edges) - n_lr
        lr_pad += lr_pad % 2 if graph.edges_paired else 0
        long_range["lr_edge_index"], long_range["lr_edge_shifts"] = _ghost_pairs(
            graph.lr_edge_index, graph.lr_edge_shifts, lr_pad, g0, g1,
            graph.edges_paired,
        )  # fmt: skip
    for name in ("charge", "spin"):
        value = getattr(graph, name)
        if value is not None:
            long_range[name] = torch.cat([value, value.new_zeros(1)])
    return replace(
        graph,
        **long_range,
        positions=torch.cat([pos, ghost_pos]),
        atomic_numbers=torch.cat([z, z[:1].expand(n_ghost)]),
        graph_index=torch.cat(
            [graph.graph_index, graph.graph_index.new_full((n_ghost,), graph.n_graphs)]
        ),
        edge_index=edge_index,
        edge_shifts=edge_shifts,
        cell=torch.cat([graph.cell, graph.cell.new_zeros(1, 3, 3)]),
        pbc=torch.cat([graph.pbc, graph.pbc.new_zeros(1, 3)]),
        n_atoms=torch.cat([graph.n_atoms, graph.n_atoms.new_tensor([n_ghost])]),
        targets={},
    )


def _ghost_pairs(
    index: torch.Tensor,  # (2, n)
    shifts: torch.Tensor,  # (n, 3)
    n_pad: int,
    g0: int,
    g1: int,
    paired: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``index``/``shifts`` plus ``n_pad`` ghost pairs g0-g1 (paired lists stay so)."""
    dev = index.device
    if paired:
        half, m = index.shape[1] // 2, n_pad // 2
        fwd = torch.tensor([[g0], [g1]], device=dev).expand(2, m)
        zeros = shifts.new_zeros(m, 3)
        return (
            torch.cat([index[:, :half], fwd, index[:, half:], fwd.flip(0)], dim=1),
            torch.cat([shifts[:half], zeros, shifts[half:], zeros]),
        )
    pair = torch.tensor([[g0, g1], [g1, g0]], device=dev)
    extra = pair.repeat(1, (n_pad + 1) // 2)[:, :n_pad]
    return torch.cat([index, extra], dim=1), torch.cat(
        [shifts, shifts.new_zeros(n_pad, 3)]
    )
