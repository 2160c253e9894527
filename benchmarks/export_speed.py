"""Export time and call time of ``equiforce export`` files against the in-process backend.

Builds the default So3krates (random weights, readout not zeroed; weights do not
change the cost),
exports it as TorchScript and as an AOTInductor package, and times one
energy+forces call of each on ethanol and a periodic water box, next to the
in-process compiled backend (:class:`equiforce.accel.compiled.CompiledPotential`,
AOTInductor with paired edges) and eager ``model(graph)``. The same neighbour
list serves every path (built once; not timed)::

    python benchmarks/export_speed.py --dtype float32 --threads 1 \
        --out docs/bench/export/export_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def _median_ms(fn, warmup: int, min_seconds: float, min_calls: int) -> float:
    for _ in range(warmup):
        fn()
    times = []
    start = time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def systems():
    """(name, ase.Atoms): ethanol and a 1,029-atom periodic water box."""
    from ase import Atoms
    from ase.build import molecule

    from equiforce.bench import water_positions

    pos, numbers, length = water_positions(343)
    box = Atoms(numbers=numbers, positions=pos, cell=np.eye(3) * length, pbc=True)
    return [("ethanol", molecule("CH3CH2OH")), ("water_1029", box)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--preset", default="default")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--min-seconds", type=float, default=3.0)
    p.add_argument("--out", type=Path, default=Path("export_speed.json"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    from equiforce.accel.compiled import CompiledPotential
    from equiforce.data.graph import AtomicGraph
    from equiforce.engines.export import export_model
    from equiforce.models.registry import build_model

    dtype = getattr(torch, args.dtype)
    # non-zero readout: the force differences below compare real forces
    model = build_model(
        "so3krates", args.preset, dtype=dtype, zero_init_readout=False
    ).eval()
    work = Path(tempfile.mkdtemp(prefix="equiforce-export-bench-"))
    report = {
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": args.threads,
        "dtype": args.dtype,
        "preset": args.preset,
        "export_seconds": {},
        "call_ms": {},
    }
    runners = {}
    for fmt, name in (("torchscript", "model.pt"), ("aoti", "model.pt2")):
        result = export_model(model, fmt, work / name, elements=[1, 8, 6])
        total = result.trace_seconds + result.build_seconds
        report["export_seconds"][fmt] = round(total, 1)
        print(f"export {fmt}: {total:.1f} s", flush=True)
        if fmt == "torchscript":
            runners[fmt] = torch.jit.load(str(result.path))
        else:
            runners[fmt] = torch._inductor.aoti_load_package(str(result.path))
    compiled = CompiledPotential(model)
    for sys_name, atoms in systems():
        g = AtomicGraph.from_atoms(atoms, model.cutoff, dtype=dtype, with_targets=False)
        shifts = torch.bmm(
            g.edge_shifts[:, None, :], g.cell[g.graph_index][g.edge_index[0]]
        )[:, 0]  # (n_edges, 3) Cartesian, Å
        inputs = (g.positions, g.atomic_numbers, g.edge_index, shifts)
        start = time.perf_counter()
        compiled(g)
        build = time.perf_counter() - start
        rows = {
            "eager": lambda g=g: model(g),
            "in_process_compiled": lambda g=g: compiled(g),
            **{fmt: (lambda r=r, x=inputs: r(*x)) for fmt, r in runners.items()},
        }
        ref = compiled(g)
        row = {"n_atoms": g.num_nodes, "n_edges": g.n_edges}
        for label, fn in rows.items():
            with torch.no_grad() if label != "eager" else torch.enable_grad():
                row[label] = round(_median_ms(fn, 5, args.min_seconds, 5), 3)
        for fmt, r in runners.items():
            forces = r(*inputs)[1]
            row[f"{fmt}_max_force_diff"] = float((forces - ref["forces"]).abs().max())
        row["in_process_first_call_s"] = round(build, 1)
        row["in_process_backend"] = compiled.backend
        row["in_process_loaded_from_cache"] = all(
            f.loaded_from_cache for f in (compiled.aoti or {}).values()
        )
        report["call_ms"][sys_name] = row
        print(sys_name, json.dumps(row), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
