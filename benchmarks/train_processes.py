"""Training steps per second with one or several processes (``training.processes``).

Runs ``equiforce train`` on an example config for a fixed number of steps once per
setting, in rounds that alternate the settings (so they see the same machine
state), and reads the training clock from each run's ``metrics.csv``: the time per
step between the first and the last logged row after ``--skip`` steps (so the
compilation of the first step and the process start are not counted). No
validation runs in between.

    .venv/bin/python benchmarks/train_processes.py --molecule ethanol \\
        --settings 1x1,1x2,2x1 --steps 800 --rounds 2 --compile \\
        --json docs/bench/session10/train_processes_ethanol.json

A setting ``PxT[:B]`` is P processes with T torch threads each and batch B
(default ``--batch-size``).
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from datetime import date
from pathlib import Path

import torch

from equiforce.atomic import atomic_write_json

ROOT = Path(__file__).resolve().parents[1]
EQUIFORCE = Path(sys.executable).parent / "equiforce"


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--molecule", choices=["aspirin", "ethanol"], default="ethanol")
    p.add_argument("--settings", default="1x1,1x2,2x1", help="comma list of PxT[:B]")
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--steps", type=int, default=800)
    p.add_argument("--skip", type=int, default=100, help="steps not timed")
    p.add_argument("--rounds", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="training.compile")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args()


def parse_setting(text: str, batch: int) -> tuple[int, int, int]:
    """``PxT[:B]`` -> (processes, threads each, batch size)."""
    pt, _, b = text.partition(":")
    p, t = (int(x) for x in pt.split("x"))
    return p, t, int(b) if b else batch


def ms_per_step(metrics_csv: Path, skip: int) -> float:
    """Training milliseconds per step between the rows after ``skip`` and the last."""
    with open(metrics_csv, newline="") as fh:
        clock = {int(r["step"]): float(r["elapsed_s"]) for r in csv.DictReader(fh)}
    steps = sorted(s for s in clock if s >= skip)
    first, last = steps[0], steps[-1]
    return 1e3 * (clock[last] - clock[first]) / (last - first)


def run_once(args, processes: int, threads: int, batch: int, folder: Path) -> float:
    """Train one short run; its ms per step."""
    run_dir = folder / f"p{processes}_t{threads}_b{batch}"
    sets = {
        "training.max_steps": args.steps,
        "training.max_epochs": "null",
        "training.max_minutes": "null",
        "training.valid_interval": 10 * args.steps,
        "training.log_interval": 50,
        "training.batch_size": batch,
        "training.processes": processes,
        "training.threads": threads,
        "training.compile": str(args.compile).lower(),
    }
    cmd = [
        str(EQUIFORCE),
        "train",
        str(ROOT / "examples" / f"rmd17_{args.molecule}.yaml"),
    ]
    cmd += ["--run-dir", str(run_dir), "--quiet"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    ms = ms_per_step(run_dir / "metrics.csv", args.skip)
    shutil.rmtree(run_dir)
    return ms


def main() -> None:
    """Time every setting in alternating rounds; print and save the medians."""
    args = parse_args()
    settings = [parse_setting(s, args.batch_size) for s in args.settings.split(",")]
    times: dict[tuple[int, int, int], list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="equiforce-train-processes-") as tmp:
        for r in range(args.rounds):
            for p, t, b in settings:
                ms = run_once(args, p, t, b, Path(tmp))
                times.setdefault((p, t, b), []).append(ms)
                print(
                    f"round {r + 1}/{args.rounds}: {p} process(es) x {t} thread(s), "
                    f"batch {b}: {ms:.2f} ms/step, {b / ms * 1e3:.0f} structures/s",
                    flush=True,
                )
    rows = []
    for (p, t, b), v in times.items():
        ms = statistics.median(v)
        rows.append(
            {
                "processes": p,
                "threads": t,
                "batch_size": b,
                "ms_per_step": ms,
                "structures_per_s": b / ms * 1e3,
                "all_ms": v,
            }
        )
    result = {
        "molecule": args.molecule,
        "compile": args.compile,
        "steps": args.steps,
        "skip": args.skip,
        "rounds": args.rounds,
        "rows": rows,
        "machine": platform.processor() or platform.machine(),
        "date": date.today().isoformat(),
        "torch": torch.__version__,
    }
    print(json.dumps(result, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
