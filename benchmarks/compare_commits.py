"""Compiled energy+forces speed of two commits, alternating on one machine.

For refactors that must not slow anything down: each round runs one child process
per source tree (old, then new; the order flips every round), each child builds the
default So3krates (random weights, seed 0, float32) and times the compiled
energy+forces call (``CompiledPotential.for_device``, the backend MD and the ASE
calculator use) on every system, after warm-up. The old tree is a detached git
worktree of ``--old`` (made under ``/tmp`` if missing); the new one is this
checkout. Ratio = median over rounds of new / old per system.

    .venv/bin/python benchmarks/compare_commits.py --old 646e726 \
        --systems ethanol,aspirin,box1029,box10k --rounds 3 --out docs/bench/compare.json

Systems: names of ``equiforce.bench.SYSTEMS`` and ``aspirin`` (frame 0 of the
shipped rMD17 aspirin test file). Ctrl-C keeps the finished rounds in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, statistics, sys, time
import numpy as np, torch
torch.set_num_threads(int(sys.argv[2]))
try:
    from equiforce.accel.compiled import CompiledPotential
except ImportError:  # trees before the accel/ package
    from equiforce.models.compiled import CompiledPotential
from equiforce.bench import make_system
from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model

def atoms_of(name):
    if name == "aspirin":
        import ase
        d = np.load(sys.argv[3])
        return ase.Atoms(numbers=d["nuclear_charges"], positions=d["coords"][0])
    return make_system(name)

model = build_model("so3krates", "default", zero_init_readout=False).eval()
fast = CompiledPotential.for_device(model)
out = {}
for name in sys.argv[1].split(","):
    atoms = atoms_of(name)
    g = AtomicGraph.from_arrays(atoms.positions, atoms.numbers, model.cutoff,
                                cell=np.asarray(atoms.cell), pbc=atoms.pbc,
                                dtype=torch.float32)
    for _ in range(3):
        fast(g)
    times, start = [], time.perf_counter()
    while len(times) < 5 or (time.perf_counter() - start < 3.0 and len(times) < 2000):
        t = time.perf_counter(); fast(g); times.append(time.perf_counter() - t)
    out[name] = {"ms": 1e3 * statistics.median(times), "calls": len(times),
                 "atoms": g.num_nodes, "backend": fast.backend}
print(json.dumps(out))
"""


def worktree(rev: str) -> Path:
    """A detached worktree of ``rev`` under /tmp (made once)."""
    sha = subprocess.check_output(["git", "-C", str(ROOT), "rev-parse", rev], text=True)
    path = Path("/tmp") / f"equiforce-{sha.strip()[:10]}"
    if not (path / "src").is_dir():
        subprocess.check_call(
            ["git", "-C", str(ROOT), "worktree", "add", "--detach", str(path), rev]
        )
    return path


def run_child(src: Path, systems: str, threads: int) -> dict:
    env = {**os.environ, "PYTHONPATH": str(src / "src")}
    aspirin = ROOT / "data" / "rmd17" / "rmd17_aspirin_test_01.npz"
    res = subprocess.run(
        [sys.executable, "-c", CHILD, systems, str(threads), str(aspirin)],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--old", required=True, help="git revision of the old tree")
    ap.add_argument("--systems", default="ethanol,aspirin,box1029,box10k")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, default=Path("/tmp/compare_commits.json"))
    args = ap.parse_args()
    trees = {"old": worktree(args.old), "new": ROOT}
    rounds: list[dict] = []
    try:
        for r in range(args.rounds):
            order = ("old", "new") if r % 2 == 0 else ("new", "old")
            row = {}
            for tag in order:
                t = time.perf_counter()
                row[tag] = run_child(trees[tag], args.systems, args.threads)
                print(
                    f"round {r + 1}/{args.rounds} {tag}: "
                    + ", ".join(f"{k} {v['ms']:.3f} ms" for k, v in row[tag].items())
                    + f" ({time.perf_counter() - t:.0f} s)",
                    file=sys.stderr,
                )
            rounds.append(row)
    except KeyboardInterrupt:
        print("interrupted; writing the finished rounds", file=sys.stderr)
    table = {}
    for name in args.systems.split(","):
        ratios = [r["new"][name]["ms"] / r["old"][name]["ms"] for r in rounds]
        if ratios:
            table[name] = {
                "old_ms": statistics.median(r["old"][name]["ms"] for r in rounds),
                "new_ms": statistics.median(r["new"][name]["ms"] for r in rounds),
                "ratio_new_over_old": statistics.median(ratios),
                "ratios": ratios,
            }
    result = {
        "old": args.old,
        "new": subprocess.check_output(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"], text=True
        ).strip(),
        "threads": args.threads,
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
        "table": table,
        "rounds": rounds,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)
    print("| system | old ms | new ms | new/old |\n|---|---|---|---|")
    for name, t in table.items():
        print(
            f"| {name} | {t['old_ms']:.3f} | {t['new_ms']:.3f} | "
            f"{t['ratio_new_over_old']:.3f} |"
        )


if __name__ == "__main__":
    main()
