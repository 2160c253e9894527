"""Side-by-side ablations of the So3krates speed changes, one process per variant set.

1. ``paired``: energy+forces (eager autograd) on the same graph with paired edges
   (filters once per unordered pair) and with ``edges_paired=False`` (per edge),
   interleaved call by call in one process.
2. ``compiled``: the compiled path (:class:`CompiledPotential`) with ATen gathers from
   ``--extern-rows`` rows (default 1,024; 0 = always, 10**9 = never) and the C++ wrapper
   on or off. Run it once per setting; compare medians of runs made one after another.

    python benchmarks/so3krates_ablations.py paired --systems ethanol,water96,box1029
    python benchmarks/so3krates_ablations.py compiled --extern-rows 1024 --cpp-wrapper 1
    python benchmarks/so3krates_ablations.py compiled --extern-rows 1000000000 --cpp-wrapper 1
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import torch

from equiforce.bench import machine_info, make_system
from equiforce.data.graph import AtomicGraph
from equiforce.models.compiled import CompiledPotential
from equiforce.models.registry import build_model
from equiforce.nn import scatter
from equiforce.runtime import tune_allocator


def _median_ms(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def _calls(n_atoms: int) -> int:
    return 200 if n_atoms < 50 else (10 if n_atoms < 2000 else 4)


def paired(systems: list[str], model) -> list[dict]:
    """Per-pair vs per-edge filters, eager, interleaved in one process."""
    rows = []
    for name in systems:
        atoms = make_system(name)
        g = AtomicGraph.from_atoms(atoms, model.cutoff, torch.float32, False)
        gu = replace(g, edges_paired=False)
        for _ in range(2):
            model(g), model(gu)
        n = _calls(len(atoms))
        tp, tu = [], []
        for _ in range(n):
            tp.append(_median_ms(lambda g=g: model(g), 1))
            tu.append(_median_ms(lambda gu=gu: model(gu), 1))
        rows.append(
            {
                "system": name,
                "atoms": len(atoms),
                "edges": g.n_edges,
                "paired_ms": statistics.median(tp),
                "per_edge_ms": statistics.median(tu),
            }
        )
        print(rows[-1], flush=True)
    return rows


def compiled(systems: list[str], model, extern_rows: int, cpp: bool) -> list[dict]:
    """Compiled energy+forces with the given gather threshold and wrapper."""
    scatter.EXTERN_MIN_ROWS = extern_rows
    pot = CompiledPotential(model, cpp_wrapper=cpp)
    rows = []
    for name in systems:
        atoms = make_system(name)
        g = AtomicGraph.from_atoms(atoms, model.cutoff, torch.float32, False)
        for _ in range(5):
            pot(g)
        rows.append(
            {
                "system": name,
                "atoms": len(atoms),
                "extern_rows": extern_rows,
                "cpp_wrapper": cpp,
                "compiled_ms": _median_ms(lambda g=g: pot(g), _calls(len(atoms))),
                "compiled": pot.compiled,
            }
        )
        print(rows[-1], flush=True)
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["paired", "compiled"])
    p.add_argument("--systems", default="ethanol,water96,box1029")
    p.add_argument("--extern-rows", type=int, default=scatter.EXTERN_MIN_ROWS)
    p.add_argument("--cpp-wrapper", type=int, choices=(0, 1), default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--json", default=None, help="append results to this JSON-lines file"
    )
    args = p.parse_args(argv)
    tune_allocator()
    torch.set_num_threads(args.threads)
    model = build_model("so3krates", "default", dtype=torch.float32).eval()
    systems = args.systems.split(",")
    if args.what == "paired":
        rows = paired(systems, model)
    else:
        rows = compiled(systems, model, args.extern_rows, bool(args.cpp_wrapper))
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps({"machine": machine_info(), "rows": rows}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
