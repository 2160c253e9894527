"""The optional long-range fields of :class:`~equiforce.data.graph.AtomicGraph`.

Models with long-range terms (SO3LR) need a second neighbour list with a larger
cutoff (``lr_edge_index``, ``lr_edge_shifts``) and the per-structure total charge
and spin. These helpers build and collate them; the graph stays
valid without them (every other model ignores them).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from equiforce.data.neighbors import neighbor_list

if TYPE_CHECKING:
    from equiforce.data.graph import AtomicGraph


def lr_pairs(
    positions: np.ndarray,
    lr_cutoff: float | None,
    cell: np.ndarray,
    pbc: np.ndarray,
    dtype: torch.dtype,
) -> dict[str, torch.Tensor]:
    """``lr_edge_index``/``lr_edge_shifts`` within ``lr_cutoff`` (none when None)."""
    if lr_cutoff is None:
        return {}
    # shifts straight in the graph's dtype: no int64 copy of the largest array
    shift_dtype = torch.empty(0, dtype=dtype).numpy().dtype
    index, shifts = neighbor_list(positions, lr_cutoff, cell, pbc, shift_dtype)
    return {
        "lr_edge_index": torch.from_numpy(index),
        "lr_edge_shifts": torch.from_numpy(shifts),
    }


def graph_values(graphs: list[AtomicGraph], name: str) -> torch.Tensor | None:
    """Per-structure ``charge``/``spin`` of a batch; zero where a graph has none."""
    values = [getattr(g, name) for g in graphs]
    given = [v for v in values if v is not None]
    if not given:
        return None
    like = given[0]
    return torch.cat(
        [
            v if v is not None else like.new_zeros(g.n_graphs)
            for v, g in zip(values, graphs, strict=True)
        ]
    )


def collate_lr(
    graphs: list[AtomicGraph], atom_offsets: np.ndarray
) -> dict[str, torch.Tensor]:
    """Long-range pairs of a batch (all graphs must have them, or none)."""
    have = [g.lr_edge_index is not None for g in graphs]
    if not any(have):
        return {}
    if not all(have):
        raise ValueError("cannot collate graphs with and without long-range pairs")
    return {
        "lr_edge_index": torch.cat(
            [
                g.lr_edge_index + int(o)
                for g, o in zip(graphs, atom_offsets, strict=True)
            ],
            dim=1,
        ),
        "lr_edge_shifts": torch.cat([g.lr_edge_shifts for g in graphs]),
    }
