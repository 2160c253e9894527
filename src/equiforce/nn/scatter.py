"""Row gathers and segment sums over edges and atoms.

Eager mode uses ``index_select`` / ``index_add_`` directly. Under ``torch.compile``
both go through two small custom operators (:func:`gather_rows`,
:func:`scatter_rows`) that are each other's gradient: Inductor then calls ATen's
vectorised kernels instead of generating element-wise atomic adds for the backward
of a gather, which measured 3x slower than ``index_add_`` on the CPU (88 ms of a
270 ms call for 1,029 periodic waters; session 2, exact filters). Below
``EXTERN_MIN_ROWS`` rows Inductor's own fused kernels are cheaper than the extra
calls (ethanol 0.76 vs 0.91 ms, ``benchmarks/so3krates_ablations.py compiled
--extern-rows 0``); the shape test specialises the compiled graph once (two graphs:
small and large). Since session 6 the threshold is off by default (see
``EXTERN_MIN_ROWS``).

Under ``torch.func.vmap`` (a committee's members in one call,
:mod:`equiforce.uncertainty.batched`), ATen's batching rules turn a row gather
into ``gather`` with an expanded index and a row sum into ``scatter_add``, 10-25x
slower than the K plain calls. Inside :func:`vmap_row_ops` both go through
:func:`batched_rows` / :func:`batched_sum`, whose batching rules call
``index_select`` / ``index_add_`` once along the rows of all K members (member
axis first, contiguous: mixed layouts made the element-wise ops around them 2x
slower), or fold the members into the rows when the index differs per member. They have no autograd formula of their own: under ``vmap`` their batching
rules run first and autograd records the ``index_select`` / ``index_add_`` these
call.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

#: Row count from which compiled code calls the ATen gather/scatter kernels. Off
#: (never) since So3krates reads its filters from tables: Inductor's own loops
#: then won at every size at 1 and 2 threads (compiled ms, ATen from 1,024 rows /
#: never, 2 threads: water96 8.0 / 6.6, box1029 157 / 140, box3000 563 / 440;
#: ``benchmarks/so3krates_ablations.py compiled --extern-rows``,
#: docs/bench/session6/extern_rows.jsonl).
EXTERN_MIN_ROWS = 1 << 62
_extern_enabled = True
_vmap_rows = False


@contextmanager
def inductor_row_ops() -> Iterator[None]:
    """Trace with Inductor's own gathers/scatters at every size.

    For graphs that differentiate twice with ``torch.func`` (the compiled training
    step): the custom operators have no functorch rule for nested transforms.
    Dynamo guards on the flag, so graphs traced inside and outside do not mix.
    """
    global _extern_enabled
    previous, _extern_enabled = _extern_enabled, False
    try:
        yield
    finally:
        _extern_enabled = previous


@contextmanager
def vmap_row_ops() -> Iterator[None]:
    """Row gathers and sums with batching rules of their own (see the module note)."""
    global _vmap_rows
    previous, _vmap_rows = _vmap_rows, True
    try:
        yield
    finally:
        _vmap_rows = previous


def _is_batched(x: torch.Tensor) -> bool:
    """Whether ``x`` is a ``vmap`` batched tensor (its batching rule will run)."""
    return torch._C._functorch.is_batchedtensor(x)


@torch.library.custom_op("equiforce::batched_rows", mutates_args=())
def batched_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x.index_select(0, index)``, with a batching rule for ``vmap``."""
    return x.index_select(0, index)


@batched_rows.register_fake
def _(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.new_empty((index.shape[0], *x.shape[1:]))


@batched_rows.register_vmap
def _(info, in_dims, x: torch.Tensor, index: torch.Tensor):
    x_dim, i_dim = in_dims
    k = info.batch_size
    if x_dim is None:  # shared rows, per-member index: one flat gather
        x = x.unsqueeze(0).expand(k, *x.shape)
    else:
        x = x.movedim(x_dim, 0)
    if i_dim is None:  # one gather along the rows of all members (contiguous out)
        return x.index_select(1, index), 0
    offset = torch.arange(k, device=index.device)[:, None] * x.shape[1]
    flat = (index.movedim(i_dim, 0) + offset).reshape(-1)  # (K·m,)
    out = x.reshape(-1, *x.shape[2:]).index_select(0, flat)
    return out.view(k, -1, *x.shape[2:]), 0


@torch.library.custom_op("equiforce::batched_sum", mutates_args=())
def batched_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Row sum of ``src`` into ``dim_size`` rows, with a batching rule for ``vmap``."""
    return _index_add(src, index, dim_size)


@batched_sum.register_fake
def _(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    return src.new_empty((dim_size, *src.shape[1:]))


@batched_sum.register_vmap
def _(info, in_dims, src: torch.Tensor, index: torch.Tensor, dim_size: int):
    s_dim, i_dim = in_dims[0], in_dims[1]
    k = info.batch_size
    if s_dim is None:
        src = src.unsqueeze(0).expand(k, *src.shape)
    else:
        src = src.movedim(s_dim, 0)
    rest = src.shape[2:]
    if i_dim is None:  # one sum along the rows of all members
        return src.new_zeros((k, dim_size, *rest)).index_add_(1, index, src), 0
    offset = torch.arange(k, device=index.device)[:, None] * dim_size
    flat = (index.movedim(i_dim, 0) + offset).reshape(-1)
    out = _index_add(src.reshape(-1, *rest), flat, k * dim_size)
    return out.view(k, dim_size, *rest), 0


def _index_add(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    out = src.new_zeros((dim_size, *src.shape[1:]))
    return out.index_add_(0, index, src)


@torch.library.custom_op("equiforce::scatter_rows", mutates_args=())
def _scatter_rows(
    src: torch.Tensor, index: torch.Tensor, dim_size: int
) -> torch.Tensor:
    return _index_add(src, index, dim_size)


@_scatter_rows.register_fake
def _(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    return src.new_empty((dim_size, *src.shape[1:]))


@torch.library.custom_op("equiforce::gather_rows", mutates_args=())
def _gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.index_select(0, index)


@_gather_rows.register_fake
def _(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return x.new_empty((index.shape[0], *x.shape[1:]))


class _ScatterRows(torch.autograd.Function):
    """Row scatter-sum whose gradient is a row gather (and vice versa)."""

    @staticmethod
    def forward(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
        return _scatter_rows(src, index, dim_size)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return _GatherRows.apply(grad, index), None, None


class _GatherRows(torch.autograd.Function):
    """Row gather whose gradient is a row scatter-sum."""

    @staticmethod
    def forward(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return _gather_rows(x, index)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[1])
        ctx.n_rows = inputs[0].shape[0]

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (index,) = ctx.saved_tensors
        return _ScatterRows.apply(grad, index, ctx.n_rows), None


def scatter_sum(src: torch.Tensor, index: torch.Tensor, dim_size: int) -> torch.Tensor:
    """Sum rows of ``src`` into ``dim_size`` buckets given by ``index``.

    Args:
        src: (n, ...) values.
        index: (n,) int64 target row of each value.
        dim_size: number of output rows.

    Returns:
        (dim_size, ...) sums; rows that receive nothing are zero.
    """
    if (
        _extern_enabled
        and torch.compiler.is_compiling()
        and src.shape[0] >= EXTERN_MIN_ROWS
    ):
        return _ScatterRows.apply(src, index, dim_size)
    if _vmap_rows and _is_batched(src):
        return batched_sum(src, index, dim_size)
    return _index_add(src, index, dim_size)


def gather_rows(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``x[index]`` along rows: (n, ...) -> (len(index), ...); see the module note."""
    if (
        _extern_enabled
        and torch.compiler.is_compiling()
        and index.shape[0] >= EXTERN_MIN_ROWS
    ):
        return _GatherRows.apply(x, index)
    if _vmap_rows and _is_batched(x):
        return batched_rows(x, index)
    return x.index_select(0, index)
