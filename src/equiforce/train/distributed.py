"""Training on several processes with ``torch.distributed``: one shard of each batch each.

``training.processes = P`` splits every step's batch (the same indices a single
process would take, see :meth:`equiforce.train.trainer.Trainer.batch_indices`) over
P processes: process r takes ``indices[r::P]``. Each computes the loss gradient of
its shard and scales it by its share of the batch's structures; one all-reduce sums
the shares, so every process holds the gradient of the whole batch's loss (exactly
so when every structure carries every label, since each loss term is a mean over
structures) and takes the same optimiser step. The weights therefore stay equal
without being sent around; they are broadcast from process 0 once at the start.

Process 0 alone validates, writes metrics, TensorBoard events and checkpoints, and
shows progress. At the start of every step it broadcasts its stop decision, its
training clock and the learning rate, so the others follow its clock (time-based
schedules), its schedule (reduce-on-plateau) and its stop (budget, early stopping,
Ctrl-C).

Under ``torchrun`` (or any launcher that sets ``RANK`` and ``WORLD_SIZE``) the
launched processes are the training processes (:func:`join_launched`), on one
node or several; otherwise ``equiforce train`` spawns them itself.

On a CPU the P processes are spawned by :func:`spawn` on this machine and talk
over gloo (each with ``training.threads`` torch threads; default: the cores split
evenly); on GPUs each takes ``cuda:r`` and NCCL. Why on a CPU: small batches of
small molecules leave a second thread mostly idle (Inductor's loops are
single-threaded), while a second process runs its own shard at full speed.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing
import os
import signal
import socket
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.distributed as dist

#: Why training stops (``Trainer.should_stop``, ``final_metrics.json``'s ``stop``).
INTERRUPTED = "interrupted"
MAX_STEPS = "max_steps/max_epochs reached"
MAX_MINUTES = "max_minutes reached"
EARLY_STOPPING = "early stopping"
DIVERGED = "diverged (non-finite loss)"
#: Stop reasons by code (0: go on); process 0 broadcasts the code each step.
STOP_REASONS = (None, INTERRUPTED, MAX_STEPS, MAX_MINUTES, EARLY_STOPPING, DIVERGED)


@dataclass(frozen=True)
class Group:
    """This process's place in a training run of ``world`` processes.

    Attributes:
        rank: this process (0 is the one that writes).
        world: number of processes.
        device: where this process's tensors live (``cuda:rank`` on GPUs).
    """

    rank: int
    world: int
    device: torch.device

    @property
    def main(self) -> bool:
        """Whether this process validates, logs and writes."""
        return self.rank == 0

    @property
    def _comm_device(self) -> torch.device:
        # NCCL needs CUDA tensors; gloo takes CPU tensors
        return self.device if self.device.type == "cuda" else torch.device("cpu")

    def shard(self, indices: np.ndarray) -> np.ndarray:
        """This process's part of a batch: every ``world``-th index from ``rank``."""
        return indices[self.rank :: self.world]

    def follow(
        self, stop: str | None, elapsed: float, lr: float
    ) -> tuple[str | None, float, float]:
        """Process 0's stop reason, training clock (s) and learning rate, everywhere."""
        code = STOP_REASONS.index(stop)
        msg = torch.tensor(
            [code, elapsed, lr], dtype=torch.float64, device=self._comm_device
        )
        dist.broadcast(msg, src=0)
        code, elapsed, lr = msg.tolist()
        return STOP_REASONS[int(code)], elapsed, lr

    def sum_gradients(
        self,
        params: Sequence[torch.nn.Parameter],
        share: float,
        parts: dict[str, float],
    ) -> dict[str, float]:
        """Replace each ``p.grad`` by Σ_ranks share·grad; return Σ share·parts.

        A parameter without a gradient counts as zero; it keeps ``grad = None``
        (Adam skips it, as in one process) only when no process has a gradient for
        it. One all-reduce carries gradients, loss parts and these flags.

        Args:
            params: the trained parameters, in the same order on every process.
            share: this shard's structures / the batch's structures.
            parts: this shard's loss parts (means over its structures).
        """
        names = sorted(parts)
        if not names:
            raise ValueError("sum_gradients: no loss parts")
        dtype = params[0].dtype
        pieces = [
            (p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) * share
            for p in params
        ]
        flags = [float(p.grad is not None) for p in params]
        tail = torch.tensor(
            [parts[k] * share for k in names] + flags, dtype=dtype, device=self.device
        )
        flat = torch.cat([*pieces, tail]).to(self._comm_device)
        dist.all_reduce(flat)
        flat = flat.to(self.device)
        sizes = [p.numel() for p in params]
        grads = torch.split(flat[: sum(sizes)], sizes)
        tail = flat[sum(sizes) :].tolist()
        for p, g, had in zip(params, grads, tail[len(names) :], strict=True):
            p.grad = g.view_as(p) if had > 0 else None
        return dict(zip(names, tail[: len(names)], strict=True))

    def broadcast_module(self, module: torch.nn.Module) -> None:
        """Overwrite every parameter and buffer with process 0's."""
        with torch.no_grad():
            for t in [*module.parameters(), *module.buffers()]:
                buf = t.detach().to(self._comm_device)
                dist.broadcast(buf, src=0)
                if buf.data_ptr() != t.data_ptr():
                    t.copy_(buf)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def die_with_parent() -> None:
    """On Linux, have the kernel kill this process when its parent dies.

    A spawned training process must not outlive the command that started it (a
    SIGKILL of ``equiforce train`` would otherwise leave orphans that keep
    computing and block each other in collectives).
    """
    if sys.platform.startswith("linux"):
        with contextlib.suppress(OSError, AttributeError):
            libc = ctypes.CDLL(None, use_errno=True)
            pr_set_pdeathsig = 1
            libc.prctl(pr_set_pdeathsig, signal.SIGKILL)
    parent = multiprocessing.parent_process()
    if parent is not None and os.getppid() != parent.pid:
        os._exit(1)  # the parent died before the line above took effect


def join(rank: int, world: int, port: int, device_type: str) -> Group:
    """Join the process group of a spawned run (called in each process).

    Args:
        rank: this process.
        world: number of processes.
        port: the TCP port of process 0's rendezvous on 127.0.0.1.
        device_type: ``"cpu"`` (gloo) or ``"cuda"`` (NCCL, device ``cuda:rank``).
    """
    die_with_parent()
    device, backend = _device_and_backend(device_type, rank)
    dist.init_process_group(
        backend,
        init_method=f"tcp://127.0.0.1:{port}",
        rank=rank,
        world_size=world,
    )
    return Group(rank, world, device)


def _device_and_backend(device_type: str, local_rank: int) -> tuple[torch.device, str]:
    if device_type == "cuda":
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device, "nccl"
    return torch.device("cpu"), "gloo"


def launched_world() -> int:
    """Processes of the launcher that started this one (``torchrun``); 1 if none."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_rank() -> int:
    """This process's rank under a launcher (``torchrun``); 0 if none."""
    return int(os.environ.get("RANK", "0"))


def join_launched(device_type: str, processes: int) -> Group:
    """Join the process group of a launcher such as ``torchrun`` (``env://``).

    Every process the launcher started runs ``equiforce train``; rank, world size
    and rendezvous come from its environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``). On GPUs process r of a
    node takes ``cuda:LOCAL_RANK``. Several nodes work the same way.

    Args:
        device_type: ``"cpu"`` (gloo) or ``"cuda"`` (NCCL).
        processes: ``training.processes`` of the config: 1 or the launcher's
            world size.

    Raises:
        ValueError: ``processes`` is neither.
    """
    world = launched_world()
    if processes not in (1, world):
        raise ValueError(
            f"training.processes={processes}, but the launcher started {world} "
            "processes: leave it at 1 (or set it to the same number) under torchrun"
        )
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    device, backend = _device_and_backend(device_type, local_rank)
    if not dist.is_initialized():
        dist.init_process_group(backend, init_method="env://")
    return Group(rank, world, device)


def agree(ok: bool, group: Group) -> bool:
    """Whether process 0 succeeded (its ``ok``, broadcast to every process)."""
    flag = torch.tensor([float(ok)], device=group._comm_device)
    dist.broadcast(flag, src=0)
    return bool(flag.item())


def leave() -> None:
    """Leave the process group (end of a worker)."""
    if dist.is_initialized():
        dist.destroy_process_group()


def threads_per_process(threads: int | None, world: int) -> int:
    """``threads`` when set, else this machine's cores split evenly (at least 1).

    Under a launcher the split is over the processes on this node
    (``LOCAL_WORLD_SIZE``), not over all of them.
    """
    if threads:
        return threads
    local = int(os.environ.get("LOCAL_WORLD_SIZE", world))
    return max(1, (os.cpu_count() or 1) // local)


def spawn(world: int, target: Callable, args: tuple, device_type: str) -> None:
    """Run ``target(rank, world, port, *args)`` in ``world`` new processes; wait.

    Ctrl-C reaches every process (they share the terminal's process group) and
    each training process turns it into a clean stop; this parent ignores it while
    it waits, so that it does not tear them down before they have saved.

    Raises:
        ValueError: more CUDA processes than GPUs.
        RuntimeError: a process failed (its traceback is printed by it).
    """
    import torch.multiprocessing as mp

    if device_type == "cuda" and torch.cuda.device_count() < world:
        raise ValueError(
            f"training.processes={world} on CUDA needs {world} GPUs; "
            f"{torch.cuda.device_count()} visible"
        )
    port = free_port()
    context = mp.start_processes(
        target,
        args=(world, port, *args),
        nprocs=world,
        join=False,
        start_method="spawn",
    )
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        while not context.join():
            pass
    except mp.ProcessRaisedException as err:
        raise RuntimeError(f"a training process failed:\n{err}") from None
    except mp.ProcessExitedException as err:
        raise RuntimeError(f"a training process died: {err}") from None
    finally:
        signal.signal(signal.SIGINT, previous)
