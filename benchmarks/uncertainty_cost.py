"""Cost of uncertainty: multi-head and committee energy+forces calls vs one model.

Eager float32 calls on one structure (ethanol by default), interleaved rounds,
median ms per call. Usage::

    python benchmarks/uncertainty_cost.py [--preset default] [--heads 4] [--rounds 7]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from ase.build import molecule

from equiforce import keys
from equiforce.models.registry import build_model
from equiforce.potential import Potential
from equiforce.uncertainty import Committee, HeadEnsemble


def _timer(pot: Potential, atoms, calls: int):
    pot.compute(atoms.positions, atoms.numbers)  # warm-up, graph built

    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            out = pot.compute(atoms.positions, atoms.numbers)
            out[keys.FORCES].sum().item()
        return 1000 * (time.perf_counter() - t0) / calls

    return run


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="default")
    p.add_argument("--molecule", default="CH3CH2OH")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    atoms = molecule(args.molecule)

    def model(seed: int, heads: int = 1):
        return build_model(
            "so3krates", args.preset, seed=seed, readout_heads=heads,
            zero_init_readout=False,
        )  # fmt: skip

    k = args.heads
    multi = model(0, k)
    cases = {
        "one model": model(0),
        f"{k} heads, mean only": multi,
        f"{k} heads + energy_std": HeadEnsemble(multi, forces_std=False),
        f"{k} heads + forces_std": HeadEnsemble(multi),
        f"committee of {k}": Committee([model(s) for s in range(k)]),
    }
    timers = {
        name: _timer(Potential(m, compile=False, skin=0.5), atoms, args.calls)
        for name, m in cases.items()
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, run in timers.items():
            times[name].append(run())
    base = statistics.median(times["one model"])
    print(f"{args.molecule}, So3krates {args.preset}, float32 eager, "
          f"{args.threads} thread(s), median of {args.rounds} rounds x {args.calls}")  # fmt: skip
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name:28s} {med:8.2f} ms  {100 * (med / base - 1):+6.1f} %")


if __name__ == "__main__":
    main()
