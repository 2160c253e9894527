"""Overhead of the inference Potential and the ASE calculator over the bare model call.

Side by side in one process, alternating in rounds, on the same compiled backend
(float32 default So3krates, random weights):

- ``model``: ``CompiledPotential`` on a prebuilt graph (the bare compiled call);
- ``potential``: ``Potential.compute(positions, numbers, cell, pbc)`` (neighbour
  list reuse check, graph update, the same compiled call);
- ``calculator``: ``atoms.get_forces()`` through ``EquiforceCalculator`` (ASE's
  state check and copy, then the potential).

Positions move by 1e-4 Å between calls (inside the skin: no rebuild), so ASE
recomputes every call. Reports the median ms of each and the ratios to ``model``.

    .venv/bin/python benchmarks/potential_overhead.py --systems ethanol,box1029 \
        --rounds 5 --out /tmp/potential_overhead.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from equiforce.bench import machine_info, make_system
from equiforce.calculator import EquiforceCalculator
from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model
from equiforce.potential import Potential


def _time(fn, seconds: float) -> float:
    """Median ms of repeated ``fn()`` calls for about ``seconds``."""
    times, start = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


def measure(name: str, rounds: int, seconds: float) -> dict:
    """Alternating rounds of the three ways of calling one system."""
    model = build_model("so3krates", "default", zero_init_readout=False).eval()
    atoms = make_system(name)
    potential = Potential(model, compile=True)
    calc = EquiforceCalculator(potential)
    atoms.calc = calc
    rng = np.random.default_rng(0)
    base = atoms.positions.copy()
    graph = AtomicGraph.from_arrays(
        base, atoms.numbers, model.cutoff + potential.skin,
        cell=np.asarray(atoms.cell), pbc=atoms.pbc, dtype=torch.float32,
    )  # fmt: skip
    cell, pbc = np.asarray(atoms.cell), atoms.pbc

    def jiggle() -> np.ndarray:
        return base + rng.normal(scale=1e-4, size=base.shape)

    def bare() -> None:
        graph.positions = torch.as_tensor(jiggle(), dtype=torch.float32)
        potential.compiled(graph)

    def through_potential() -> None:
        potential.compute(jiggle(), atoms.numbers, cell, pbc)

    def through_ase() -> None:
        atoms.positions = jiggle()
        atoms.get_forces()

    through_potential()  # builds the compiled backend (and the library)
    for fn in (bare, through_potential, through_ase):
        for _ in range(3):
            fn()
    rows: dict[str, list[float]] = {"model": [], "potential": [], "calculator": []}
    for r in range(rounds):
        order = [("model", bare), ("potential", through_potential)]
        order.append(("calculator", through_ase))
        for tag, fn in order if r % 2 == 0 else order[::-1]:
            rows[tag].append(_time(fn, seconds))
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "atoms": len(atoms),
        "ms": med,
        "potential_over_model": med["potential"] / med["model"],
        "calculator_over_model": med["calculator"] / med["model"],
        "rebuilds": potential.n_builds,
        "backend": potential.compiled.backend,
        "rounds": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--systems", default="ethanol,box1029")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--seconds", type=float, default=1.0, help="per timing")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/potential_overhead.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    result = {
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
        "threads": args.threads,
        "systems": {},
    }
    print(
        "| system | atoms | model ms | potential ms | calculator ms | pot/model | calc/model |"
    )
    print("|---|---|---|---|---|---|---|")
    for name in args.systems.split(","):
        r = measure(name, args.rounds, args.seconds)
        result["systems"][name] = r
        m = r["ms"]
        print(
            f"| {name} | {r['atoms']} | {m['model']:.3f} | {m['potential']:.3f} | "
            f"{m['calculator']:.3f} | {r['potential_over_model']:.3f} | "
            f"{r['calculator_over_model']:.3f} |",
            flush=True,
        )
        tmp = args.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(result, indent=1))
        tmp.replace(args.out)


if __name__ == "__main__":
    main()
