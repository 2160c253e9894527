"""Flush subnormal ("denormal") floats to zero on every thread that runs CPU kernels.

x86 CPUs handle subnormal operands and results (|x| < ``torch.finfo(dtype).tiny``,
1.2e-38 in float32) in microcode on some instructions, tens to a hundred times
slower than normal numbers. Setting the MXCSR flags FTZ (results flushed to zero)
and DAZ (inputs read as zero) avoids that at the cost of values below 1e-38, which
an energy or a force never depends on (``docs/benchmarks.md``, "Denormals").

``torch.set_flush_denormal(True)`` sets both flags on the *calling thread only*.
POSIX threads inherit the floating-point environment when they are created, so
threads started afterwards flush too, but the OpenMP workers that run ATen's
intra-op loops already exist once any parallel operator has run (and are reused
for the rest of the process). :func:`flush_denormals` therefore also runs one
OpenMP parallel region (``GOMP_parallel`` of the OpenMP runtime torch loaded),
in which every worker sets the flags on itself.

Threads this does not reach: OpenMP teams of *other* Python threads created
before the call (each Python thread that runs parallel operators owns its
team), idle workers beyond the current thread count, and threads of libraries
with their own pools. Threads created afterwards (a larger thread count, the
edge-chunk workers of :mod:`equiforce.accel.edge_chunks`) inherit the mode. Call it at the start of a
command, before work starts, as the ``equiforce`` entry points do. Set
``EQUIFORCE_FLUSH_DENORMALS=0`` to opt out.

The mode belongs to the process, not to equiforce, so the library does not set
it behind a host program's back: a :class:`~equiforce.potential.Potential` built
from Python flushes only with ``flush_denormals=True`` or
``EQUIFORCE_FLUSH_DENORMALS=1`` (:func:`library_default`); the command-line
entry points and the whole-run functions behind them (``train``, ``resume``,
``run_md``) flush unless it is ``0``.
"""

from __future__ import annotations

import ctypes
import functools
import os
import threading
from collections import Counter

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

#: Environment variable: "0" keeps IEEE subnormals (no flushing).
ENV = "EQUIFORCE_FLUSH_DENORMALS"

_OPENMP_NAMES = ("libgomp", "libomp", "libiomp")
_UNINITIALISED = ("empty", "new_empty")


#: float dtype -> (integer view, exponent mask, mantissa mask) of its bits
_BITS = {
    torch.float16: (torch.int16, 0x7C00, 0x03FF),
    torch.bfloat16: (torch.int16, 0x7F80, 0x007F),
    torch.float32: (torch.int32, 0x7F800000, 0x007FFFFF),
    torch.float64: (torch.int64, 0x7FF0000000000000, 0x000FFFFFFFFFFFFF),
}


def subnormal_count(x: torch.Tensor) -> int:
    """Number of subnormal entries of a floating-point tensor (0 for others).

    Read from the bits (exponent field zero, mantissa not), so that the count
    is right while flushing is on: with DAZ set, arithmetic and comparisons
    read subnormal inputs as zero.

    Args:
        x: any tensor.
    """
    if x.dtype not in _BITS:
        return 0
    int_dtype, exponent, mantissa = _BITS[x.dtype]
    bits = x.detach().contiguous().view(int_dtype)
    return int((((bits & exponent) == 0) & ((bits & mantissa) != 0)).sum())


@functools.cache
def _openmp_library() -> ctypes.CDLL | None:
    """The OpenMP runtime loaded into this process (torch's), or None."""
    try:
        with open("/proc/self/maps") as fh:
            paths = {line.split()[-1] for line in fh if ".so" in line}
    except OSError:  # not Linux
        return None
    for path in sorted(paths):
        if os.path.basename(path).startswith(_OPENMP_NAMES):
            try:
                lib = ctypes.CDLL(path)
                lib.GOMP_parallel  # noqa: B018 - the entry point must exist
            except (OSError, AttributeError):
                continue
            return lib
    return None


def set_in_openmp_workers(enabled: bool, n_threads: int | None = None) -> int:
    """Set the flush mode on every thread of the caller's OpenMP team.

    Args:
        enabled: the mode (``torch.set_flush_denormal`` argument).
        n_threads: team size; default: torch's intra-op thread count. Workers
            that a larger count started earlier and that sit idle now are not
            reached; threads started later inherit the caller's mode.

    Returns:
        Number of distinct threads that set the mode (0 if no OpenMP runtime
        was found).
    """
    lib = _openmp_library()
    if lib is None:
        return 0
    n_threads = n_threads or torch.get_num_threads()
    seen: set[int] = set()

    @ctypes.CFUNCTYPE(None, ctypes.c_void_p)
    def body(_data: int) -> None:  # runs on each thread of the team (takes the GIL)
        torch.set_flush_denormal(enabled)
        seen.add(threading.get_native_id())

    lib.GOMP_parallel.argtypes = [
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_uint,
        ctypes.c_uint,
    ]
    lib.GOMP_parallel(ctypes.cast(body, ctypes.c_void_p), None, n_threads, 0)
    return len(seen)


def flush_denormals(enabled: bool | None = None) -> bool:
    """Flush subnormals to zero on this thread and its OpenMP workers.

    Args:
        enabled: the mode to set; None: on unless ``EQUIFORCE_FLUSH_DENORMALS=0``.

    Returns:
        True when flushing is now on (False: opted out, or a CPU without the
        flags, i.e. not x86 with SSE3).
    """
    if enabled is None:
        enabled = os.environ.get(ENV, "1") != "0"
    if not torch.set_flush_denormal(enabled):
        return False  # the CPU has no such mode: nothing to do on the workers
    set_in_openmp_workers(enabled)
    return enabled


def library_default() -> bool:
    """Whether library front ends flush by default: only if the variable is ``1``."""
    return os.environ.get(ENV) == "1"


def flush_active() -> bool:
    """Whether the calling thread flushes float32 subnormals (a float32 probe)."""
    tiny = torch.finfo(torch.float32).tiny
    x = torch.tensor([tiny], dtype=torch.float32)
    return float(x * 0.5) == 0.0  # 0.5·tiny is subnormal unless flushed


def subnormals_from_all_threads(n: int = 1 << 20) -> int:
    """Subnormals left in a product computed by all of torch's intra-op threads.

    Multiplies ``n`` float32 numbers 1e-20 by 1e-20 (each result 1e-40, subnormal)
    in one parallel elementwise operator, which splits the work over
    ``torch.get_num_threads()`` threads; each thread that does not flush leaves
    its share subnormal. 0 means every participating thread flushes.

    Args:
        n: elements (well above ATen's grain size of 32,768 per thread).
    """
    x = torch.full((n,), 1e-20, dtype=torch.float32)
    return subnormal_count(x * 1e-20)


class SubnormalCensus(TorchDispatchMode):
    """Where subnormals come from: a count per ATen operator of the values it returned.

    Use as a context manager around eager code, autograd backward included (not
    around ``torch.func.jvp``: counting its dual tensors crashes torch 2.13;
    nor compiled graphs, which it does not see into)::

        with SubnormalCensus() as census:
            loss.backward()
        census.counts.most_common(5)

    Views (``t``, ``slice``, ``detach``) are skipped: they return values an
    earlier operator produced; so are allocations (``empty_like``), whose
    uninitialised memory holds arbitrary bits. In-place and fused operators (``_fused_adam_``)
    are counted by the arguments they write to.

    Attributes:
        counts: operator name -> subnormal values it returned.
        sizes: operator name -> floating-point values it returned.
    """

    def __init__(self) -> None:
        super().__init__()
        self.counts: Counter[str] = Counter()
        self.sizes: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = func.overloadpacket.__name__
        if func.is_view or name.startswith(_UNINITIALISED):
            return out
        leaves = tree_leaves(out) + (
            tree_leaves(args) if func._schema.is_mutable else []
        )
        for t in leaves:
            if isinstance(t, torch.Tensor) and t.is_floating_point():
                self.counts[name] += subnormal_count(t)
                self.sizes[name] += t.numel()
        return out
