"""Cost of the Euclidean fast attention (EFA) branch against the local So3krates.

Eager energy+forces calls (float32, forces-only inference path) of the default
So3krates without and with EFA in both layers (50-point Lebedev grid,
D_qk = 16, D_v = 32), and of one EFA block alone (forward + gradient with respect
to positions and features) next to one local layer's messages and update.
Systems: ethanol and open clusters of ~1,000 and ~4,000 atoms (jittered simple
cubic packing at 0.1 atoms/Å³, C/H/O), all within r_max = 50 Å::

    PYTHONPATH=src python benchmarks/efa_cost.py --threads 2 --repeats 5

Prints one JSON line per system (minimum seconds per call, calls interleaved).
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np
import torch

from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model

EFA = {"r_max": 50.0, "max_frequency": math.pi / 50.0, "lebedev_order": 11}

ETHANOL = (
    np.array(
        [
            [0.0072, -0.5687, 0.0],
            [-1.2854, 0.2499, 0.0],
            [1.1304, 0.3147, 0.0],
            [0.0392, -1.1972, 0.8900],
            [0.0392, -1.1972, -0.8900],
            [-1.3175, 0.8784, 0.8900],
            [-1.3175, 0.8784, -0.8900],
            [-2.1422, -0.4239, 0.0],
            [1.9857, -0.1365, 0.0],
        ]
    ),
    np.array([6, 6, 8, 1, 1, 1, 1, 1, 1]),
)


def cluster(n_atoms: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """About ``n_atoms`` atoms in a sphere, 0.1 atoms/Å³, jittered cubic packing."""
    rng = np.random.default_rng(seed)
    a = 0.1 ** (-1 / 3)  # lattice spacing, Å
    radius = (3 * n_atoms / (4 * math.pi * 0.1)) ** (1 / 3)
    m = int(radius / a) + 1
    grid = np.stack(np.meshgrid(*[np.arange(-m, m + 1)] * 3), -1).reshape(-1, 3) * a
    pos = grid[np.linalg.norm(grid, axis=1) <= radius]
    pos = pos + rng.uniform(-0.15, 0.15, size=pos.shape)
    z = rng.choice([1, 1, 6, 8], size=len(pos))
    return pos, z


def timings(fns: dict, repeats: int) -> dict[str, float]:
    """Minimum seconds per call of each function, calls interleaved.

    Interleaving and the minimum keep the comparison fair on a shared machine
    (other processes slow whichever call they overlap).
    """
    for fn in fns.values():
        fn()  # warm-up (filter tables, allocator)
    times: dict[str, list[float]] = {k: [] for k in fns}
    for _ in range(repeats):
        for key, fn in fns.items():
            start = time.perf_counter()
            fn()
            times[key].append(time.perf_counter() - start)
    return {k: min(v) for k, v in times.items()}


def measure(name: str, pos, z, repeats: int) -> dict:
    local = build_model("so3krates", dtype=torch.float32, seed=0).eval()
    glob = build_model(
        "so3krates", dtype=torch.float32, seed=0, global_attention=EFA
    ).eval()
    graph = AtomicGraph.from_arrays(pos, z, local.cutoff, dtype=torch.float32)
    row = {"system": name, "n_atoms": len(z), "n_edges": graph.n_edges}
    # one EFA block alone: forward + gradient w.r.t. positions and features
    block = glob.global_attention["0"]
    feats = torch.randn(len(z), 128)
    p = graph.positions

    def efa_call() -> None:
        f = feats.clone().requires_grad_(True)
        x = p.clone().requires_grad_(True)
        y = block(f, x, graph.graph_index, graph.n_atoms)[0]  # (N, F)
        torch.autograd.grad(y.square().sum(), (f, x))

    fns = {
        "local_model_s": lambda: local(graph),
        "efa_model_s": lambda: glob(graph),
        "efa_block_s": efa_call,
    }
    row.update(timings(fns, repeats))
    row["efa_added"] = row["efa_model_s"] / row["local_model_s"] - 1.0
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--sizes", type=int, nargs="*", default=[1000, 4000])
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    systems = [("ethanol", *ETHANOL)]
    systems += [(f"cluster{n}", *cluster(n)) for n in args.sizes]
    for name, pos, z in systems:
        print(json.dumps(measure(name, pos, z, args.repeats)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
