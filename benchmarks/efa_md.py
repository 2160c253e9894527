"""NVE of C₁₇H₄ with a local and an EFA So3krates: energy drift and end-group twist.

Issue 20's MD check. The two models of ``benchmarks/global_study.py`` (its
``run_model``: the ``examples/global_cumulene{_local,}.yaml`` configs with the
C₁₇H₄ settings of its ``SCANS``; ``--override`` adds config overrides) are trained on the C₁₇H₄ twist scan (or reused when
``--out/runs/c17h4_{local,efa}`` holds a finished run). Each then runs NVE with
the native engine (:func:`equiforce.md.runner.run_md`, what ``equiforce md``
calls; velocity Verlet, 0.5 fs) from the rigid planar geometry
(``examples/global/generate.py``, twist 0°, relaxed with the model by FIRE to
0.01 eV/Å unless ``--no-relax``) with 300 K Maxwell–Boltzmann velocities, for
``--time-ps`` or until ``--budget-minutes`` of wall time (the run stops as on
Ctrl-C, with its files and a checkpoint written).

Recorded per model: energy drift (linear fit of the total energy, eV/atom/ps),
the stability monitor's verdict, and the end-group twist per frame
(:func:`equiforce.analysis.torsion.end_group_twist`). The reference is the
GFN2-xTB scan's E(θ) (a cos 2kθ fit, k ≤ 3, to all 200 noisy frames) Boltzmann
weighted at 300 K: p(θ) ∝ exp(−E(θ)/k_BT) on [0°, 90°] (a dihedral angle: uniform
measure). Each model's own rigid-scan profile (no noise) and its Boltzmann
expectation are recorded too: they say what that model's MD can sample.

Chemistry: H₂C=(C=)ₙ₋₂=CH₂ with an odd number of C=C bonds has coplanar ends,
with an even number perpendicular ends (allene, 2 bonds: 90°). C₁₇H₄ has 16:
the reference prefers 90° (xTB: planar is 0.43 eV higher, rigid).

    PYTHONPATH=src nice -n 5 python benchmarks/efa_md.py --minutes 6 \\
        --budget-minutes 12 --out benchmarks/results/efa_md

Writes ``--out/results_{T}K.json``, ``--out/md_{local,efa}_{T}K/`` (thermo.csv,
trajectory, result.json) and ``--plot`` (twist histograms, energy vs time).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import signal
import sys
import threading
from datetime import date
from pathlib import Path

import numpy as np
import torch
from ase import Atoms

from equiforce.analysis.torsion import end_group_twist
from equiforce.calculator import EquiforceCalculator
from equiforce.data.io import read
from equiforce.data.trajectory import read_trajectory
from equiforce.md.config import MDConfig
from equiforce.md.relax import relax
from equiforce.md.runner import run_md, thermo_table
from equiforce.models.registry import load_model

sys.path.insert(0, str(Path(__file__).resolve().parent))
from global_study import DATA, ROOT, SCANS, predict, run_model  # noqa: E402

K_B = 8.617333262e-5  # eV/K
#: C₁₇H₄ as built by examples/global/generate.py: C 0…16, H 17, 18 on C 0, H 19, 20 on C 16.
ENDS = ((0, 17, 18), (16, 19, 20))
#: overrides of global_study's configs for the MD models (none: they weight forces 1.0)
EXTRA: tuple[str, ...] = ()
BINS = np.linspace(0.0, 90.0, 19)  # 5° bins


def generator():
    """``examples/global/generate.py`` as a module (the scan's geometry builder)."""
    path = ROOT / "examples" / "global" / "generate.py"
    spec = importlib.util.spec_from_file_location("generate_global", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def rigid_scan(angles: np.ndarray) -> list[Atoms]:
    """Noise-free C₁₇H₄ at each twist (degrees)."""
    gen = generator()
    out = []
    for a in angles:
        pos, z = gen.cumulene(17, float(a))
        out.append(Atoms(numbers=z, positions=pos))
    return out


def fit_profile(theta: np.ndarray, energy: np.ndarray, order: int = 3) -> np.ndarray:
    """Least-squares coefficients of E(θ) = Σ_{k≤order} c_k cos(2kθ) (θ in degrees)."""
    basis = np.cos(2 * np.radians(theta)[:, None] * np.arange(order + 1))
    return np.linalg.lstsq(basis, energy, rcond=None)[0]


def eval_profile(coef: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """E(θ) of :func:`fit_profile` coefficients."""
    return np.cos(2 * np.radians(theta)[:, None] * np.arange(len(coef))) @ coef


def boltzmann(energy: np.ndarray, temperature: float) -> np.ndarray:
    """Normalised weights exp(−E/k_BT) on a uniform grid."""
    w = np.exp(-(energy - energy.min()) / (K_B * temperature))
    return w / w.sum()


def histogram(twist: np.ndarray) -> np.ndarray:
    """Probability per 5° bin on [0°, 90°]."""
    h, _ = np.histogram(twist, bins=BINS)
    return h / max(h.sum(), 1)


def binned(grid: np.ndarray, p: np.ndarray) -> np.ndarray:
    """A density on a fine uniform grid summed into the 5° bins."""
    idx = np.clip(np.digitize(grid, BINS) - 1, 0, len(BINS) - 2)
    return np.bincount(idx, weights=p, minlength=len(BINS) - 1)


def reference(temperature: float) -> dict:
    """The xTB scan's E(θ) fit and its Boltzmann twist distribution."""
    stem, key, *_ = SCANS["c17h4"]
    frames = read(DATA / f"{stem}.extxyz", require=("energy",))
    theta = np.array([a.info[key] for a in frames])
    energy = np.array([a.get_potential_energy() for a in frames])
    coef = fit_profile(theta, energy)
    grid = np.linspace(0.0, 90.0, 901)
    e = eval_profile(coef, grid)
    p = boltzmann(e, temperature)
    return {
        "coef": coef,
        "grid": grid,
        "p": p,
        "hist": binned(grid, p),
        "mean_deg": float((grid * p).sum()),
        "e90_minus_e0_eV": float(e[-1] - e[0]),
    }


def model_profile(model, temperature: float) -> dict:
    """A model's rigid-scan E(θ) (19 angles) and its Boltzmann mean twist."""
    angles = np.linspace(0.0, 90.0, 19)
    e = predict(model, rigid_scan(angles))
    coef = fit_profile(angles, e)
    grid = np.linspace(0.0, 90.0, 901)
    p = boltzmann(eval_profile(coef, grid), temperature)
    return {
        "angles_deg": angles.tolist(),
        "energy_eV": (e - e[0]).tolist(),
        "e90_minus_e0_eV": float(e[-1] - e[0]),
        "boltzmann_mean_deg": float((grid * p).sum()),
    }


def run_nve(model, kind: str, args: argparse.Namespace) -> dict:
    """NVE from the planar geometry; stops at ``--time-ps`` or the wall budget."""
    tag = "" if args.relax else "_rigid"
    out_dir = args.out / f"md_{kind}_{args.temperature:g}K{tag}"
    relaxed = {}
    resume = args.resume and (out_dir / "md_state.pt").exists()
    if resume or not (out_dir / "result.json").exists() or args.rerun:
        atoms = rigid_scan(np.array([0.0]))[0]  # (resume: the state is loaded)
        if (
            args.relax and not resume
        ):  # the model's planar stationary point (the twist stays 0°)
            calc = EquiforceCalculator(model, compile=False)
            summary, atoms = relax(
                atoms, calc, fmax=0.01, steps=2000, progress_every=None
            )
            atoms.calc = None
            relaxed = {
                "relax_converged": summary.converged,
                "relax_steps": summary.steps,
                "relaxed_twist_deg": float(end_group_twist(atoms.positions, *ENDS)),
            }
            (out_dir.parent / f"relax_{kind}.json").write_text(json.dumps(relaxed))
        config = MDConfig(
            ensemble="nve",
            temperature=args.temperature,
            timestep=args.timestep,
            time_ps=args.time_ps,
            output_interval=args.interval,
            threads=args.threads,
            seed=args.seed,
            compile=not args.eager,
        )
        # the budget ends the run as Ctrl-C would: files and checkpoint written
        timer = threading.Timer(
            args.budget_minutes * 60, os.kill, (os.getpid(), signal.SIGINT)
        )
        timer.start()
        try:
            run_md(
                model,
                [atoms],
                config,
                out_dir,
                resume=resume,
                progress=True,
                overwrite=not resume,
            )
        finally:
            timer.cancel()
    result = json.loads((out_dir / "result.json").read_text())
    thermo = thermo_table(out_dir / "thermo.csv")
    t_ps = thermo["time_fs"] / 1000.0
    n_atoms = 21
    total = thermo["total_eV"]
    # a run stopped by the stability monitor: fit the drift before the failure
    # (the last 100 fs before the event hold the blow-up itself)
    end = min((e["time_fs"] for e in result["events"]), default=None)
    keep = slice(None) if end is None else t_ps < end / 1000.0 - 0.1
    slope = np.polyfit(t_ps[keep], total[keep], 1)[0] if len(t_ps) > 2 else np.nan
    traj = next(out_dir.glob("trajectory.*"))
    twist = end_group_twist(read_trajectory(traj).positions, *ENDS)
    relax_file = out_dir.parent / f"relax_{kind}.json"
    if args.relax and relax_file.exists():
        relaxed = json.loads(relax_file.read_text())
    return relaxed | {
        "time_ps": float(t_ps[-1]),
        "steps": int(thermo["step"][-1]),
        "steps_per_s": result["steps_per_s"],
        "wall_s": result["wall_s"],
        "stopped_by_budget": bool(result["interrupted"]),
        "stable": bool(result["stable"]),
        "events": result["events"],
        "drift_eV_per_atom_ps": float(slope / n_atoms),
        "total_energy_std_eV": float(total[keep].std()),
        "drift_fit_until_ps": float(t_ps[keep][-1]),
        "mean_temperature_K": float(thermo["temperature_K"].mean()),
        "twist_mean_deg": float(twist.mean()),
        "twist_hist": histogram(twist).tolist(),
        "_series": (t_ps, thermo["potential_eV"], total, twist),
    }


def overlap(p: np.ndarray, q: np.ndarray) -> float:
    """Histogram overlap Σ min(p, q) (1: identical, 0: disjoint)."""
    return float(np.minimum(p, q).sum())


def plot(results: dict, ref: dict, path: Path, temperature: float) -> None:
    """Twist histograms against the reference; energies and twist vs time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4))
    centres = 0.5 * (BINS[1:] + BINS[:-1])
    ax = axes[0]
    ax.plot(centres, ref["hist"] / 5.0, "k-", lw=2, label="xTB scan, Boltzmann")
    for (kind, r), c in zip(results.items(), ("C3", "C0"), strict=False):
        ax.step(
            centres,
            np.array(r["twist_hist"]) / 5.0,
            where="mid",
            color=c,
            label=f"{kind} MD {r['time_ps']:.0f} ps (overlap {r['overlap']:.2f})",
        )
    ax.set_xlabel("end-group twist (°)")
    ax.set_ylabel("probability density (1/°)")
    ax.set_title(f"C₁₇H₄ end-group twist, NVE from planar, {temperature:g} K")
    ax.legend(fontsize=7)
    for (kind, r), c in zip(results.items(), ("C3", "C0"), strict=False):
        t, pot, total, twist = r["_series"]
        axes[1].plot(t, total - total[0], color=c, lw=0.8, label=f"{kind} total")
        axes[1].plot(t, pot - total[0], color=c, lw=0.3, alpha=0.5)
        axes[2].plot(t, twist, color=c, lw=0.3, label=kind)
    axes[1].set_xlabel("time (ps)")
    axes[1].set_ylabel("E − E_total(0) (eV); faint: potential")
    axes[1].legend(fontsize=7)
    axes[2].set_xlabel("time (ps)")
    axes[2].set_ylabel("twist (°)")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    """Train (or reuse) both models, run NVE, compare with the reference."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=6.0, help="training per model")
    p.add_argument("--time-ps", type=float, default=100.0)
    p.add_argument("--timestep", type=float, default=0.5, help="fs")
    p.add_argument("--temperature", type=float, default=300.0, help="K")
    p.add_argument("--interval", type=int, default=20, help="steps between frames")
    p.add_argument(
        "--budget-minutes", type=float, default=12.0, help="MD wall time per model"
    )
    p.add_argument("--models", nargs="+", choices=("local", "efa"), default=None)
    p.add_argument("--eager", action="store_true", help="no compiled model")
    p.add_argument(
        "--override",
        action="append",
        default=[],
        help="extra training-config override key=value (repeatable; use another --out)",
    )
    p.add_argument(
        "--backend",
        choices=("inductor", "aoti"),
        default="inductor",
        help="compiled backend (aoti: minutes of build for the EFA model)",
    )
    p.add_argument("--rerun", action="store_true", help="redo finished MD runs")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue MD runs stopped by the budget (towards --time-ps)",
    )
    p.add_argument(
        "--no-relax",
        dest="relax",
        action="store_false",
        help="start from the rigid construction instead of the model's relaxed one",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", type=Path, default=Path("benchmarks/results/efa_md"))
    p.add_argument(
        "--plot", type=Path, default=ROOT / "docs/bench/global/efa_md_torsion.png"
    )
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    os.environ["EQUIFORCE_COMPILE_BACKEND"] = args.backend
    torch.set_num_threads(args.threads)
    ref = reference(args.temperature)
    print(
        f"reference (xTB fit): E(90°) − E(0°) = {ref['e90_minus_e0_eV']:.3f} eV, "
        f"Boltzmann mean twist {ref['mean_deg']:.1f}° at {args.temperature:g} K",
        flush=True,
    )
    results = {}
    for kind in args.models or ("local", "efa"):
        extra = (*EXTRA, *args.override)
        best = run_model(kind, "c17h4", args.minutes, args.out, args.threads, extra)
        model = load_model(best)
        prof = model_profile(model, args.temperature)
        r = run_nve(model, kind, args) | {"rigid_scan": prof}
        r["overlap"] = overlap(np.array(r["twist_hist"]), ref["hist"])
        results[kind] = r
        print(
            f"{kind}: {r['time_ps']:.1f} ps ({r['steps']} steps, "
            f"{r['steps_per_s']:.0f} steps/s), stable {r['stable']}, drift "
            f"{r['drift_eV_per_atom_ps']:.2e} eV/atom/ps, <T> "
            f"{r['mean_temperature_K']:.0f} K, twist mean {r['twist_mean_deg']:.1f}° "
            f"(reference {ref['mean_deg']:.1f}°), overlap {r['overlap']:.2f}; rigid "
            f"scan E(90°)−E(0°) {prof['e90_minus_e0_eV']:+.3f} eV",
            flush=True,
        )
    plot(results, ref, args.plot, args.temperature)
    meta = {
        "command": " ".join([Path(sys.argv[0]).name, *(argv or sys.argv[1:])]),
        "date": date.today().isoformat(),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}",
        "torch": torch.__version__,
        "training_minutes": args.minutes,
        "extra_overrides": list(EXTRA),
        "overrides": args.override,
        "start": "model-relaxed planar" if args.relax else "rigid planar",
    }
    clean = {
        k: {x: v for x, v in r.items() if x != "_series"} for k, r in results.items()
    }
    reference_out = {
        "fit_coef_eV": ref["coef"].tolist(),
        "e90_minus_e0_eV": ref["e90_minus_e0_eV"],
        "boltzmann_mean_deg": ref["mean_deg"],
        "hist": ref["hist"].tolist(),
        "bins_deg": BINS.tolist(),
        "temperature_K": args.temperature,
        "uniform_overlap": overlap(np.full(18, 1 / 18), ref["hist"]),
    }
    tag = "" if args.relax else "_rigid"
    path = args.out / f"results_{args.temperature:g}K{tag}.json"
    path.write_text(
        json.dumps(meta | {"reference": reference_out, "models": clean}, indent=1)
        + "\n"
    )
    print(f"wrote {path} and {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
