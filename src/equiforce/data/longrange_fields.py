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

if TYPE_CHECKING:
    from equiforce.data.graph import AtomicGraph


def lr_fields(
    index: np.ndarray, shifts: np.ndarray, dtype: torch.dtype
) -> dict[str, torch.Tensor]:
    """``lr_edge_index`` (2, n_lr) and ``lr_edge_shifts`` (n_lr, 3) of a pair list."""
    return {
        "lr_edge_index": torch.as_tensor(index, dtype=torch.long),
        "lr_edge_shifts": float_tensor(shifts, dtype),
    }


def float_tensor(array: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
    """``array`` (a NumPy array) as a tensor of float ``dtype``.

    The cast runs in NumPy (single-threaded, ~25 µs for 10⁵ values): torch casts
    large arrays on its thread pool, and waking it cost 10-20 ms per call on this
    project's loaded 2-core machine (int64 shifts of 999 waters, two threads).
    """
    np_dtype = _NUMPY_FLOATS.get(dtype)
    if np_dtype is None:  # no NumPy equivalent (bfloat16): torch casts
        return torch.as_tensor(array).to(dtype)
    return torch.from_numpy(np.ascontiguousarray(array, dtype=np_dtype))


_NUMPY_FLOATS = {torch.float32: np.float32, torch.float64: np.float64}


def shift_dtype(dtype: torch.dtype) -> type:
    """The NumPy dtype in which to build image shifts for a graph of ``dtype``.

    Shifts built straight in the float dtype need no int64 copy of the largest
    array (10⁸ long-range pairs at 100,000 atoms); :func:`float_tensor` then
    wraps them without a cast. int64 where NumPy has no such float (bfloat16).
    """
    return _NUMPY_FLOATS.get(dtype, np.int64)


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
    graphs: list[AtomicGraph], atom_offsets: np.ndarray, paired: bool = False
) -> dict[str, torch.Tensor]:
    """Long-range pairs of a batch (all graphs must have them, or none).

    ``paired``: every graph's pairs are paired (``edges_paired``); the batch's are
    then paired too: all first halves, then all second halves.
    """
    have = [g.lr_edge_index is not None for g in graphs]
    if not any(have):
        return {}
    if not all(have):
        raise ValueError("cannot collate graphs with and without long-range pairs")
    index = [
        g.lr_edge_index + int(o) for g, o in zip(graphs, atom_offsets, strict=True)
    ]
    shifts = [g.lr_edge_shifts for g in graphs]
    if paired:
        halves = [g.lr_edge_index.shape[1] // 2 for g in graphs]
        index, shifts = (
            paired_halves(index, halves, 1),
            paired_halves(shifts, halves, 0),
        )
    return {
        "lr_edge_index": torch.cat(index, dim=1),
        "lr_edge_shifts": torch.cat(shifts),
    }


def paired_halves(parts: list[torch.Tensor], halves: list[int], dim: int) -> list:
    """``[a1, b1, a2, b2, …]`` → ``[a1, a2, …, b1, b2, …]`` (split along ``dim``)."""
    first = [p.narrow(dim, 0, h) for p, h in zip(parts, halves, strict=True)]
    second = [p.narrow(dim, h, h) for p, h in zip(parts, halves, strict=True)]
    return first + second
