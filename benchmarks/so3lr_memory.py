"""Peak memory and time of pretrained SO3LR (PME) on periodic water, by size.

Runs ``benchmarks/so3lr_pme.py --part full`` (energy, forces and stress of one
call through ``equiforce.Potential``, float32, eager, neighbour lists included)
once per size, each in its own process (peak RSS, ``ru_maxrss``, is per
process) under an address-space cap (``--max-gib``, default 20: an allocation
beyond it fails in that process instead of pushing a shared machine into swap),
and prints one JSON line per size and a markdown table at the end.
``--part graph`` measures the neighbour graph alone.

Usage::

    python benchmarks/so3lr_memory.py --atoms 1000,10000,30000
    python benchmarks/so3lr_memory.py --atoms 100000 --max-gib 20
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def run_one(atoms: int, args: argparse.Namespace) -> dict:
    """One size in a fresh process; the row, or the error it stopped with."""
    cmd = [
        sys.executable, str(HERE / "so3lr_pme.py"), "--atoms", str(atoms),
        "--part", args.part, "--threads", str(args.threads),
        "--repeats", str(args.repeats), "--max-gib", str(args.max_gib),
    ]  # fmt: skip
    if args.pair_chunk_mib is not None:
        cmd += ["--pair-chunk-mib", str(args.pair_chunk_mib)]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True, env=os.environ.copy())
    wall = time.perf_counter() - t0
    load = os.getloadavg()
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:]
        return {"atoms": atoms, "failed": tail[0] if tail else proc.returncode}
    row = json.loads(proc.stdout.strip().splitlines()[-1])
    return row | {"process_s": round(wall, 1), "load": [round(x, 1) for x in load]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", default="1000,10000,30000")
    parser.add_argument("--part", choices=["full", "graph"], default="full")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--max-gib", type=float, default=20.0)
    parser.add_argument("--pair-chunk-mib", type=float, default=None)
    args = parser.parse_args()
    rows = []
    for atoms in (int(a) for a in args.atoms.split(",")):
        row = run_one(atoms, args)
        print(json.dumps(row), flush=True)
        rows.append(row)
    print("\n| atoms | 12 Å pairs | s per call | peak RSS GiB | load |")
    print("|---|---|---|---|---|")
    for r in rows:
        if "failed" in r:
            print(f"| {r['atoms']:,} | — | — | failed: {r['failed']} | — |")
            continue
        secs = " / ".join(f"{s:.1f}" for s in r["seconds"])
        print(
            f"| {r['atoms']:,} | {r.get('lr_pairs', 0):,} | {secs} | "
            f"{r['peak_rss_GiB']:.2f} | {r['load'][0]} |"
        )


if __name__ == "__main__":
    main()
