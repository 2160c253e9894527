"""FLOPs per edge of a So3krates energy+forces call and the fraction of peak reached.

1. Counts the floating-point operations of one eager energy+forces call
   (``torch.utils.flop_counter.FlopCounterMode``: matrix products and other ops
   with a registered formula, forward and backward) and divides by the number of
   directed edges and of unordered pairs.
   With the radial filters read from the inference table (``--filter-table``, on
   for float32 by default) the table lookups are element-wise work: not counted.
2. Measures this machine's float32 matrix-product rate with the same threads: a large
   square product and an edge-shaped (n_pairs × F) @ (F × F) product.
3. Times the call (eager and compiled, median) and reports the achieved GFLOP/s as a
   fraction of both rates.

    python benchmarks/flops.py --systems box1029,box10k --threads 2 \\
        --json docs/bench/session3/flops.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

from equiforce.accel.compiled import CompiledPotential
from equiforce.accel.runtime import tune_allocator
from equiforce.bench import machine_info, make_system
from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model


def _median_s(fn, n: int) -> float:
    times = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def matmul_gflops(m: int, k: int, n: int, repeats: int = 5) -> float:
    """Median float32 GFLOP/s of an (m × k) @ (k × n) product."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    a @ b  # warm-up
    return 2 * m * k * n / _median_s(lambda: a @ b, repeats) / 1e9


def main(argv: list[str] | None = None) -> int:
    """Count, time and print; optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--systems", default="box1029")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--calls", type=int, default=3, help="timed calls per mode")
    p.add_argument("--no-compiled", action="store_true")
    p.add_argument("--square", type=int, default=4096, help="square product size")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--filter-table",
        choices=("auto", "on", "off"),
        default="auto",
        help="model.filter_table: radial filters from the inference table or computed",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    tune_allocator()
    model = build_model("so3krates", "default", zero_init_readout=False).eval()
    model.filter_table = args.filter_table
    # weight-only caches (filter tables, node projections) built once, outside
    # the count, as in every call after the first
    model.filter_tables()
    model.node_projections()
    F = model.config.num_features
    square = matmul_gflops(args.square, args.square, args.square, repeats=3)
    rows = []
    for name in args.systems.split(","):
        g = AtomicGraph.from_atoms(make_system(name), model.cutoff, torch.float32)
        n_pairs = g.n_edges // 2 if g.edges_paired else g.n_edges
        with FlopCounterMode(display=False) as counter:
            model(g)
        flops = counter.get_total_flops()
        edge_rate = matmul_gflops(n_pairs, F, F)
        row = {
            "system": name,
            "atoms": int(g.n_atoms.sum()),
            "edges": g.n_edges,
            "pairs": n_pairs,
            "gflop_per_call": flops / 1e9,
            "flop_per_edge": flops / g.n_edges,
            "flop_per_pair": flops / n_pairs,
            "square_matmul_gflops": square,
            "edge_matmul_gflops": edge_rate,
            "filter_table": args.filter_table,
        }
        model(g)  # warm-up
        modes = {"eager": lambda g=g: model(g)}
        if not args.no_compiled and not model.chunks_edges(g.n_edges, True):
            pot = CompiledPotential(model)
            pot(g)
            modes["compiled"] = lambda g=g, pot=pot: pot(g)
        for mode, fn in modes.items():
            seconds = _median_s(fn, args.calls)
            achieved = flops / seconds / 1e9
            row[f"{mode}_s"] = seconds
            row[f"{mode}_gflops"] = achieved
            row[f"{mode}_fraction_of_square"] = achieved / square
            row[f"{mode}_fraction_of_edge_matmul"] = achieved / edge_rate
        rows.append(row)
        print(json.dumps(row, indent=1), flush=True)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        report = {"machine": machine_info(), "threads": args.threads, "rows": rows}
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
