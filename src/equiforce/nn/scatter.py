"""Segment sums over edges and atoms (index_add_ based, autograd- and compile-friendly)."""

from __future__ import annotations

import torch


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index``.

    Args:
        src: (n, ...) values.
        index: (n,) int64 target row of each value.
        dim_size: number of output rows.

    Returns:
        (dim_size, ...) sums; rows that receive nothing are zero.
    """
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)
