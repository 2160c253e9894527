"""GPU timings of So3krates energy+forces: eager, compiled, compiled + CUDA graphs.

Usage (on a CUDA machine): python benchmarks/gpu_speed.py --out gpu_speed.json
"""

import argparse
import json
import time

import torch

import equiforce
from equiforce.bench import machine_info, make_system
from equiforce.data.graph import AtomicGraph
from equiforce.models.compiled import CompiledPotential


def timed(fn, n):
    for _ in range(3):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    times.sort()
    return 1e3 * times[len(times) // 2]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument(
        "--systems",
        default="ethanol,benzene,water96,water384,water1029,"
        "box1029,box3000,box10k,box100k",
    )
    ap.add_argument("--out", default="gpu_speed.json")
    args = ap.parse_args()
    rows = []
    for dtype in (torch.float32, torch.float64):
        model = equiforce.build_model(
            "so3krates", "default", dtype=dtype, zero_init_readout=False
        ).to("cuda")
        fast = CompiledPotential(model)
        for name in args.systems.split(","):
            atoms = make_system(name)
            t = time.perf_counter()
            g = AtomicGraph.from_atoms(atoms, model.cutoff, dtype=dtype)
            nl_ms = 1e3 * (time.perf_counter() - t)
            g = g.to("cuda")
            n = 200 if len(atoms) < 1000 else 20
            row = {
                "system": name,
                "n_atoms": len(atoms),
                "n_edges": g.n_edges,
                "dtype": str(dtype).split(".")[-1],
                "neighbor_ms_cpu": nl_ms,
            }
            torch.cuda.reset_peak_memory_stats()
            try:
                row["eager_ms"] = timed(lambda: model(g), n)  # noqa: B023
                row["peak_mem_gib_eager"] = torch.cuda.max_memory_allocated() / 2**30
                row["compiled_ms"] = timed(lambda: fast(g), n)  # noqa: B023
                if len(atoms) < 1000:
                    graphs_fast = CompiledPotential(
                        model, dynamic=False, mode="reduce-overhead"
                    )
                    row["cudagraph_ms"] = timed(lambda: graphs_fast(g), n)  # noqa: B023
            except (torch.OutOfMemoryError, RuntimeError) as err:
                row["error"] = f"{type(err).__name__}: {err}"[:200]
            print(row, flush=True)
            rows.append(row)
            torch.cuda.empty_cache()
    with open(args.out, "w") as fh:
        json.dump({"machine": machine_info(), "rows": rows}, fh, indent=2)


if __name__ == "__main__":
    main()
