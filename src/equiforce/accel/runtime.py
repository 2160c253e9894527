"""Process-level performance settings for CPU inference.

glibc's malloc serves every block above 32 MiB with a fresh ``mmap`` and returns it
with ``munmap`` when freed. A So3krates call on a few thousand atoms allocates dozens
of such per-edge tensors, so every call pays hundreds of thousands of page faults and
the kernel's zeroing of those pages: on this project's 2-core machine that was
~40 % of the wall time of a 1,029-atom energy+forces call (261,000 minor faults per
call; with the setting below: 0 faults and 1.3-2x faster calls).

:func:`tune_allocator` makes glibc keep large blocks in its heap for reuse
(``M_MMAP_MAX = 0``) and never return the heap's top to the OS (``M_TRIM_THRESHOLD
= -1``). It is what preloading jemalloc or tcmalloc achieves (the usual advice for
PyTorch on CPUs), without an environment change before start-up. Cost: the
resident size stays at its peak. Set ``EQUIFORCE_MALLOC_TUNING=0`` to opt out, or
``EQUIFORCE_TRIM_THRESHOLD`` (bytes) to give memory back above that much.

Why no trimming: a call whose transient memory exceeds the trim threshold hands
it back to the OS when it is freed and faults it in again at the next call. With
a 1 GiB threshold (sessions 4-6) a 10,125-atom periodic water box took 860,000
minor faults and 1.4 s of system time per compiled energy+forces call: 2.3 s per
call against 1.10 s with no trimming (2 threads, 2026-11-25, both with and
without edge chunks). That was the whole of the "time per edge doubles above
3,000 atoms" once measured (``docs/benchmarks.md`` section 8, "No heap trimming").

Very large graphs (10⁵ atoms, edges in chunks) keep the same setting: their
in-place chunked backward (:mod:`equiforce.accel.edge_chunks`) allocates blocks of
the same sizes at every chunk, which the heap reuses.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import os
import sys
from collections.abc import Iterator

import torch

_M_TRIM_THRESHOLD = -1
_M_MMAP_MAX = -4
_done = False

#: glibc trim threshold (bytes of free memory at the top of the heap before it is
#: returned to the OS); -1 never trims. Read by :func:`tune_allocator`.
TRIM_THRESHOLD = int(os.environ.get("EQUIFORCE_TRIM_THRESHOLD", -1))


def tune_allocator() -> bool:
    """Apply the glibc malloc settings once per process (Linux/glibc only).

    Returns:
        True when the settings are active (now or from an earlier call).
    """
    global _done
    if _done:
        return True
    if os.environ.get(
        "EQUIFORCE_MALLOC_TUNING", "1"
    ) == "0" or not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        ok = (
            libc.mallopt(_M_MMAP_MAX, 0) == 1
            and libc.mallopt(_M_TRIM_THRESHOLD, TRIM_THRESHOLD) == 1
        )
    except (OSError, AttributeError):  # not glibc (musl, ...): nothing to tune
        return False
    _done = ok
    return ok


#: Let compiled CPU calls on small graphs run on one thread (:func:`one_thread_below`).
SMALL_GRAPHS_ONE_THREAD = True

#: Inductor options for compiled CPU inference: its generated loops run on one
#: thread at every size. Their scatters are atomic adds, which two threads
#: contend for (compiled ms, loops on 1 / 2 threads: water96 5.9 / 6.6, box1029
#: 131 / 140, box3000 395 / 440, session 6). The matrix products in the same
#: graph are ATen calls, which do scale: see :data:`COMPILED_ONE_THREAD_MAX_EDGES`.
INDUCTOR_CPU_OPTIONS: dict[str, object] = {"cpp.threads": 1}

#: Compiled CPU inference (energy+forces, edge-chunk kernels) on graphs below this
#: many edges runs on one thread; above it the ATen matrix products get the
#: caller's threads (the loops stay on one, :data:`INDUCTOR_CPU_OPTIONS`).
#: Compiled ms, one thread / products on two, 2-core development machine,
#: 2026-11-25 (``benchmarks/so3krates_ablations.py threads --threads 2``):
#: ethanol (72 edges) 0.334 / 0.334, aspirin (292) 0.660 / 0.602, water96 4.45 /
#: 3.89, water384 28.9 / 25.8, box1029 117 / 107, box3000 347 / 315.
COMPILED_ONE_THREAD_MAX_EDGES = 256


@contextlib.contextmanager
def one_thread_below(n_edges: int, limit: int, device: torch.device) -> Iterator[None]:
    """Run the block on one CPU thread when a graph has fewer than ``limit`` edges.

    The ATen calls of a compiled graph (matrix products; its own loops are
    single-threaded, :data:`INDUCTOR_CPU_OPTIONS`) cost more in thread start-up
    than they share on small graphs (compiled inference below
    :data:`COMPILED_ONE_THREAD_MAX_EDGES`, the compiled training step below
    ``compiled_step.ONE_THREAD_MAX_EDGES``). The caller's thread count is
    restored afterwards. It is
    process-wide: calls from several Python threads at once would see each
    other's setting.

    Args:
        n_edges: edges of the graph the block computes on.
        limit: fewest edges that keep the caller's thread count.
        device: where the graph lives (only CPU graphs are affected).
    """
    threads = torch.get_num_threads()
    if (
        threads == 1
        or not SMALL_GRAPHS_ONE_THREAD
        or n_edges >= limit
        or torch.device(device).type != "cpu"
    ):
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def free_cores() -> int:
    """Cores this process may use that other work is not busy on (at least 1).

    The cores in this process's affinity mask minus the 1-minute load average,
    rounded: on a shared 2-core machine that is already busy, one thread (two
    threads contending with another job ran a training step 7x slower than one).
    """
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        n = os.cpu_count() or 1
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):
        load = 0.0
    return max(1, min(n, round(n - load)))
