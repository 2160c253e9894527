"""GPU timings of So3krates energy+forces: eager vs the path MD and the calculator take.

``graphs``: :meth:`CompiledPotential.for_device` on CUDA, i.e. static shapes padded
to buckets (:mod:`equiforce.accel.padding`) and CUDA graphs; it is timed on a
sequence of slightly moved copies of each system (new neighbour lists, as in MD),
so recompilation shows in ``n_compiles``. Systems above the edge-chunk threshold
take the model's autograd path either way. ``--dynamic`` also times the
dynamic-shape compile (the CPU default; on torch 2.11 + CUDA it falls back to
eager, see docs/benchmarks.md section 7).

Usage (on a CUDA machine): python benchmarks/gpu_speed.py --out gpu_speed.json
"""

import argparse
import json
import time
import warnings

import numpy as np
import torch

import equiforce
from equiforce.accel.compiled import CompiledPotential
from equiforce.atomic import atomic_write_text
from equiforce.bench import machine_info, make_system
from equiforce.data.graph import AtomicGraph


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
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--dynamic", action="store_true", help="also the dynamic compile")
    args = ap.parse_args()
    rows = []
    rng = np.random.default_rng(0)
    for dtype in [getattr(torch, d) for d in args.dtypes.split(",")]:
        model = equiforce.build_model(
            "so3krates", "default", dtype=dtype, zero_init_readout=False
        ).to("cuda")
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
            caught = warnings.catch_warnings(record=True)
            seen = caught.__enter__()
            warnings.simplefilter("always")
            try:
                row["eager_ms"] = timed(lambda: model(g), n)  # noqa: B023
                row["peak_mem_gib_eager"] = torch.cuda.max_memory_allocated() / 2**30
                fast = CompiledPotential.for_device(model)
                t = time.perf_counter()
                fast(g)
                torch.cuda.synchronize()
                row["graphs_first_call_s"] = time.perf_counter() - t
                row["graphs_ms"] = timed(lambda: fast(g), n)  # noqa: B023
                # MD-like: moved copies with their own neighbour lists
                edges = set()
                for _ in range(5):
                    moved = atoms.copy()
                    moved.positions += rng.normal(scale=0.05, size=(len(atoms), 3))
                    gm = AtomicGraph.from_atoms(moved, model.cutoff, dtype=dtype)
                    edges.add(gm.n_edges)
                    fast(gm.to("cuda"))
                row["graphs_moved_edge_counts"] = len(edges)
                row["graphs_n_compiles"] = fast.n_compiles
                row["graphs_compiled"] = fast.compiled
                if args.dynamic:
                    dyn = CompiledPotential(model)
                    row["dynamic_ms"] = timed(lambda: dyn(g), n)  # noqa: B023
                    row["dynamic_compiled"] = dyn.compiled
            except (torch.OutOfMemoryError, RuntimeError) as err:
                row["error"] = f"{type(err).__name__}: {err}"[:200]
            finally:
                caught.__exit__(None, None, None)
            # why a compile fell back, say (the first lines of each warning)
            messages = {
                str(w.message)[:300]
                for w in seen
                if issubclass(w.category, RuntimeWarning)
            }
            if messages:
                row["warnings"] = sorted(messages)
            row["chunked"] = model.chunks_edges(g.n_edges, False)  # forces-only
            # the CUDA-graph path takes the autograd path where training would chunk
            row["graphs_autograd_path"] = model.chunks_edges(g.n_edges, True)
            print(row, flush=True)
            rows.append(row)
            torch.cuda.empty_cache()
            # rewritten after every row: a run cut short keeps what it measured
            atomic_write_text(
                args.out,
                json.dumps({"machine": machine_info(), "rows": rows}, indent=2),
            )


if __name__ == "__main__":
    main()
