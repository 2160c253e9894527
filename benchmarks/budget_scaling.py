"""Test error against training length: how far the issue-3 targets are from a budget.

Runs ``benchmarks/rmd17_cpu.py`` (So3krates only, the time-clock cosine, so every
run gets its full warm-up + cosine down to 1e-5) at several wall-clock budgets,
one after the other, and fits the test force MAE against the optimiser steps
each run took,

    F_MAE(steps) = c * steps ** -alpha      (least squares in log-log),

then inverts the fit for the steps (and, at this run's seconds per step, the
hours) that a target force MAE would need; the same with the local slope
between the two longest runs. Steps, not minutes, are the axis:
a step does the same arithmetic on any host, so earlier runs on faster or
slower machines (``--also results.json``) sit on the same curve, while their
minutes would not.

    python benchmarks/budget_scaling.py --molecule ethanol --minutes 7.5,15,30 \\
        --threads 1 --compile --out benchmarks/results/budget_ethanol \\
        --also docs/bench/session5/rmd17_ethanol_cpu60/results.json

Each budget goes to ``--out/min_<m>/`` (a finished budget is reused, an
interrupted one resumes, as in rmd17_cpu.py). Outputs in ``--out``:
``scaling.json`` (the points, the fit, the extrapolation), ``scaling.md`` (a
table for docs/benchmarks.md) and ``scaling.png`` (log-log plot).

The extrapolation assumes the power law holds beyond the longest run; curves
of this kind usually flatten towards a floor, so the steps it gives are a
lower bound on what the target needs.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
from datetime import date
from pathlib import Path

import numpy as np

from equiforce.atomic import atomic_write_json, atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from rmd17_cpu import TARGET_F  # noqa: E402  (benchmarks/ is not a package)


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--molecule", choices=sorted(TARGET_F), default="ethanol")
    p.add_argument(
        "--minutes",
        default="7.5,15,30",
        help="comma list of wall-clock budgets to run (empty: only --also)",
    )
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--compile", action="store_true", help="compiled training step")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--also",
        type=Path,
        nargs="*",
        default=[],
        help="results.json files of earlier rmd17_cpu.py runs (same molecule) "
        "to fit together with these",
    )
    p.add_argument(
        "--rate-from",
        type=Path,
        default=None,
        help="results.json whose seconds per step turn steps into hours (default: "
        "this invocation's longest run, else the longest point)",
    )
    p.add_argument("--target", type=float, default=None, help="F MAE, meV/Å")
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)
    args.minutes = [float(m) for m in args.minutes.split(",") if m.strip()]
    if args.target is None:
        args.target = TARGET_F[args.molecule]
    return args


def run_budget(args, minutes: float, out: Path) -> Path:
    """Run (or reuse, or resume) rmd17_cpu.py at one budget; its results.json."""
    cmd = [
        sys.executable,
        str(BENCH / "rmd17_cpu.py"),
        "--molecule",
        args.molecule,
        "--minutes",
        f"{minutes:g}",
        "--threads",
        str(args.threads),
        "--seed",
        str(args.seed),
        "--models",
        "so3krates",
        "--out",
        str(out),
    ]
    if args.compile:
        cmd.append("--compile")
    print(f"== {minutes:g} min: {' '.join(cmd[1:])}", flush=True)
    subprocess.run(cmd, check=True)
    return out / "results.json"


def read_point(path: Path, molecule: str) -> dict:
    """The So3krates row of one rmd17_cpu.py results.json, as a fit point."""
    info = json.loads(path.read_text())
    if info.get("molecule") != molecule:
        raise SystemExit(f"{path}: molecule {info.get('molecule')!r}, not {molecule!r}")
    rows = [r for r in info["rows"] if r["model"] == "So3krates"]
    if not rows:
        raise SystemExit(f"{path}: no So3krates row")
    r = rows[0]
    secs = r.get("train_seconds") or 60 * r["minutes"]
    return {
        "source": str(path.relative_to(ROOT) if path.is_relative_to(ROOT) else path),
        "date": info.get("date"),
        "minutes": r["minutes"],
        "threads": r.get("threads"),
        "steps": int(r["steps"]),
        "ms_per_step": 1000 * secs / r["steps"],
        "energy_mae": r["energy_mae"],
        "forces_mae": r["forces_mae"],
    }


def fit_power_law(steps, errors) -> tuple[float, float, float]:
    """``(c, alpha, r2)`` of ``error = c * steps**-alpha``, least squares in log-log.

    Args:
        steps: optimiser steps of each run, shape ``(n,)``, n ≥ 2.
        errors: the matching test errors, shape ``(n,)``.
    """
    x, y = np.log(np.asarray(steps, float)), np.log(np.asarray(errors, float))
    if len(x) < 2 or np.ptp(x) == 0:
        raise ValueError("a power-law fit needs runs of at least two lengths")
    slope, intercept = np.polyfit(x, y, 1)
    resid = y - (slope * x + intercept)
    ss = float(np.sum((y - y.mean()) ** 2))
    r2 = 1.0 - float(np.sum(resid**2)) / ss if ss > 0 else 1.0
    return float(math.exp(intercept)), float(-slope), r2


def steps_for(target: float, c: float, alpha: float) -> float:
    """Steps at which the fitted power law reaches ``target`` (inf if it never does)."""
    if alpha <= 0:
        return math.inf
    return (c / target) ** (1.0 / alpha)


def scaling_markdown(info: dict) -> str:
    f, t = info["fit"], info["tail_fit"]
    lines = [
        f"### {info['molecule']}: test F MAE against steps ({info['date']})",
        "",
        "| source | budget (min) | threads | steps | ms/step | E MAE (meV) | F MAE (meV/Å) |",
        "|---|---|---|---|---|---|---|",
    ]
    for p in info["points"]:
        lines.append(
            f"| {p['source']} | {p['minutes']:g} | {p['threads']} | {p['steps']:,} | "
            f"{p['ms_per_step']:.1f} | {p['energy_mae']:.2f} | {p['forces_mae']:.2f} |"
        )
    lines += [
        "",
        f"Fit: F MAE = {f['c']:.1f} · steps^−{f['alpha']:.3f} (R² {f['r2']:.3f}). "
        f"Target {info['target']:g} meV/Å: ≥ {info['steps_for_target']:,.0f} steps, "
        f"≥ {info['hours_for_target']:.1f} h at {info['ms_per_step']:.1f} ms/step "
        "(this run's rate; a lower bound if the curve flattens).",
        "",
        f"Slope between the two longest runs ({t['steps'][0]:,} and "
        f"{t['steps'][1]:,} steps): α = {t['alpha']:.3f}; at that slope the target "
        f"needs ≥ {info['steps_for_target_tail']:,.0f} steps, "
        f"≥ {info['hours_for_target_tail']:.1f} h at {info['ms_per_step']:.1f} ms/step "
        f"(≥ {info['hours_for_target_tail_fastest']:.1f} h at the fastest point's "
        f"{info['fastest_ms_per_step']:.1f} ms/step).",
    ]
    return "\n".join(lines) + "\n"


def plot(info: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pts, f = info["points"], info["fit"]
    steps = np.array([p["steps"] for p in pts], float)
    err = np.array([p["forces_mae"] for p in pts], float)
    far = max(steps.max(), min(info["steps_for_target"], 100 * steps.max()))
    xs = np.geomspace(steps.min() / 1.5, far * 1.2, 100)
    fig, ax = plt.subplots(figsize=(5.5, 4))
    ax.loglog(steps, err, "o", label="test F MAE")
    ax.loglog(xs, f["c"] * xs ** -f["alpha"], "-", lw=1, label="power-law fit")
    t = info["tail_fit"]
    tx = np.geomspace(t["steps"][0], far * 1.2, 50)
    ax.loglog(
        tx, t["c"] * tx ** -t["alpha"], ":", lw=1, label="slope of the two longest"
    )
    ax.axhline(info["target"], color="k", ls="--", lw=0.8, label="issue-3 target")
    ax.set_xlabel("optimiser steps (batch 5)")
    ax.set_ylabel("force MAE (meV/Å)")
    ax.set_title(f"rMD17 {info['molecule']}, So3krates, full cosine per run")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out or ROOT / "benchmarks" / "results" / f"budget_{args.molecule}"
    out.mkdir(parents=True, exist_ok=True)
    files = [run_budget(args, m, out / f"min_{m:g}") for m in args.minutes]
    own = [read_point(Path(p), args.molecule) for p in files]
    points = own + [read_point(p.resolve(), args.molecule) for p in args.also]
    points.sort(key=lambda p: p["steps"])
    c, alpha, r2 = fit_power_law(
        [p["steps"] for p in points], [p["forces_mae"] for p in points]
    )
    need = steps_for(args.target, c, alpha)
    # the local slope between the two longest runs: where the curve flattens (a
    # falling slope), this is the closer, still optimistic, extrapolation
    tail = points[-2:]
    tc, ta, _ = fit_power_law(
        [p["steps"] for p in tail], [p["forces_mae"] for p in tail]
    )
    need_tail = steps_for(args.target, tc, ta)
    if args.rate_from is not None:
        ms = read_point(args.rate_from.resolve(), args.molecule)["ms_per_step"]
    else:  # this invocation's longest run (this host), else the longest point
        ms = max(own or points, key=lambda p: p["steps"])["ms_per_step"]
    fastest = min(p["ms_per_step"] for p in points)
    info = {
        "molecule": args.molecule,
        "date": date.today().isoformat(),
        "target": args.target,
        "points": points,
        "fit": {"c": c, "alpha": alpha, "r2": r2},
        "steps_for_target": need,
        "ms_per_step": ms,
        "hours_for_target": need * ms / 1000 / 3600,
        "tail_fit": {"c": tc, "alpha": ta, "steps": [p["steps"] for p in tail]},
        "steps_for_target_tail": need_tail,
        "hours_for_target_tail": need_tail * ms / 1000 / 3600,
        "fastest_ms_per_step": fastest,
        "hours_for_target_tail_fastest": need_tail * fastest / 1000 / 3600,
    }
    atomic_write_json(out / "scaling.json", info)
    text = scaling_markdown(info)
    atomic_write_text(out / "scaling.md", text)
    plot(info, out / "scaling.png")
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
