"""Equivariance study: cost, data efficiency and MD stability of the model families.

Three parts (issue 5), each resumable and written into ``--out`` (default
``docs/equivariance_study``; ``--small`` defaults to ``docs/equivariance_study_small``):

* **cost**: milliseconds per energy+forces call against the number of atoms
  (ethanol, then non-periodic water clusters at ≈1 g/cm³, 9 … 10,002 atoms) for
  SchNet, PaiNN, NequIP-like and So3krates at their paper defaults; against l_max
  for the NequIP-like model and against the So3krates degree set. Fitted scaling
  exponents (log t vs log N for N ≥ 96, log t vs log (L+1)) and cost per edge.
  Expected: t ∝ N (fixed cutoff); So3krates/PaiNN-style updates cost
  ∝ (L+1)² per edge, full Clebsch–Gordan tensor products grow faster (the number
  of (l1, l2, l3) paths times their (2l+1)-sized blocks, up to ∝ (L+1)⁶ naively).
* **data**: learning curves (rMD17 ethanol and aspirin, n_train 50 … 950) per
  model through :func:`equiforce.workflows.learning_curve.learning_curve`.
* **stability**: So3krates with and without Euclidean variables trained to the
  same validation force error (the invariant model sets the target; the EV model
  trains in chunks until it reaches it), then NVT MD (Nosé–Hoover chain) at 300 K
  and 500 K over several seeds via
  :func:`equiforce.workflows.stability.run_stability_study`.

Examples::

    python benchmarks/equivariance_study.py --small            # < 3 min smoke run
    python benchmarks/equivariance_study.py --parts cost --threads 2
    python benchmarks/equivariance_study.py --parts data --train-minutes 10
    python benchmarks/equivariance_study.py --parts stability --md-ps 20 --seeds 6

Every finished measurement is saved at once (JSON, atomic), so Ctrl-C loses at
most the current one and a re-run continues. ``report.md`` (tables, command,
machine, date) and the plots are rebuilt from whatever results exist.
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

from equiforce.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
FAMILIES = ("schnet", "painn", "nequip", "so3krates")

FULL = {
    "sizes": (9, 96, 384, 1029, 3000, 10002),
    "sweep_atoms": 384,
    "nequip_lmax": (1, 2, 3),
    "so3krates_degrees": ((1,), (1, 2), (1, 2, 3), (1, 2, 3, 4)),
    # random readouts for timing (So3krates and PaiNN default to a zero readout)
    "overrides": {
        "so3krates": {"zero_init_readout": False},
        "painn": {"zero_init_readout": False},
    },
    "min_seconds": 2.0,
    "min_calls": 3,
    "molecules": ("ethanol", "aspirin"),
    "lc_sizes": (50, 100, 250, 500, 950),
    # a fixed wall-clock budget per size, annealed over that budget (cosine on
    # the training-time clock), so every family and size ends at min_lr
    "lc_training": {
        "max_epochs": None,
        "max_minutes": 10.0,
        "schedule": "cosine",
        "schedule_clock": "time",
        "warmup_steps": 100,
        "min_lr": 1e-5,
    },
    "lc_data": {"n_valid": 50},
    "test_index": ":",
    "stab_training": {"max_epochs": None, "max_minutes": 30.0, "valid_interval": 190},
    "stab_chunk": 1900,
    "stab_max_steps": 200_000,
    "md": {"ensemble": "nhc", "timestep": 0.5, "time_ps": 20.0, "output_interval": 100},
    "temperatures": (300.0, 500.0),
    "seeds": 6,
}
TINY = {
    "so3krates": {
        "num_features": 16,
        "num_layers": 1,
        "degrees": (1, 2),
        "num_radial": 8,
        "readout_hidden": 16,
        "zero_init_readout": False,
    },
    "schnet": {"num_features": 16, "num_interactions": 1, "num_radial": 12},
    "painn": {"num_features": 16, "num_interactions": 1, "num_radial": 8},
    "nequip": {"num_features": 4, "num_layers": 1, "radial_hidden": 8, "num_bessel": 4},
}
SMALL = {
    **FULL,
    "sizes": (9, 48),
    "sweep_atoms": 24,
    "min_seconds": 0.2,
    "min_calls": 2,
    "molecules": ("ethanol",),
    "lc_sizes": (8, 16),
    "lc_training": {
        "max_epochs": None,
        "max_steps": 4,
        "valid_interval": 2,
        "batch_size": 4,
        "valid_batch_size": 8,
    },
    "lc_data": {"n_valid": 4},
    "test_index": ":8",
    "lc_overrides": TINY,
    "stab_training": {
        "max_epochs": None,
        "max_steps": 4,
        "valid_interval": 2,
        "batch_size": 4,
        "valid_batch_size": 8,
    },
    "stab_chunk": 2,
    "stab_max_steps": 8,
    "md": {
        "ensemble": "nhc",
        "timestep": 0.5,
        "steps": 16,
        "output_interval": 8,
        "compile": False,
    },
    "temperatures": (300.0, 500.0),
    "seeds": 2,
}


# ------------------------------------------------------------------ helpers
def atomic_write(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (see :mod:`equiforce.atomic`)."""
    atomic_write_text(path, text)


def load_json(path: Path, default):
    return json.loads(path.read_text()) if path.exists() else default


def save_json(path: Path, obj) -> None:
    atomic_write(path, json.dumps(obj, indent=1) + "\n")


def progress_bar():
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        transient=False,
    )


def system(n_atoms: int):
    """Ethanol for 9 atoms, else a water cluster with n_atoms/3 molecules."""
    from ase import Atoms
    from ase.build import molecule

    from equiforce.bench import water_positions

    if n_atoms == 9:
        return molecule("CH3CH2OH")
    if n_atoms % 3:
        raise ValueError(f"water clusters need a multiple of 3 atoms, got {n_atoms}")
    pos, z, _ = water_positions(n_atoms // 3)
    return Atoms(numbers=z, positions=pos)


def fit_exponent(x, y) -> float:
    """Slope of log y against log x (nan with fewer than two points)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    return float(np.polyfit(np.log(x), np.log(y), 1)[0]) if len(x) >= 2 else math.nan


# --------------------------------------------------------------------- cost
def time_call(model, atoms, min_seconds: float, min_calls: int) -> tuple[float, int]:
    """Median ms of ``model(graph)`` (energy+forces) and the number of edges."""
    from equiforce.data.graph import AtomicGraph

    graph = AtomicGraph.from_atoms(atoms, model.cutoff, dtype=torch.float32)
    model(graph)  # warm-up
    times, start = [], time.perf_counter()
    while len(times) < min_calls or time.perf_counter() - start < min_seconds:
        t = time.perf_counter()
        model(graph)
        times.append(time.perf_counter() - t)
        if len(times) >= 200:
            break
    return 1e3 * statistics.median(times), graph.n_edges


def cost_jobs(s: dict) -> list[tuple[str, str, dict, int]]:
    """(model, variant label, overrides, n_atoms) of every measurement."""
    jobs = []
    for name in FAMILIES:
        for n in s["sizes"]:
            jobs.append((name, "default", s["overrides"].get(name, {}), n))
    base = s["overrides"].get("so3krates", {})
    for lmax in s["nequip_lmax"]:
        jobs.append(("nequip", f"l_max={lmax}", {"l_max": lmax}, s["sweep_atoms"]))
    for deg in s["so3krates_degrees"]:
        label = "degrees=" + ",".join(map(str, deg))
        over = {**base, "degrees": deg, "num_features": 132}  # 132: divisible by |L|
        jobs.append(("so3krates", label, over, s["sweep_atoms"]))
    return jobs


def run_cost(s: dict, out: Path, max_call_s: float) -> None:
    from equiforce.models.registry import build_model

    path = out / "cost.json"
    rows = load_json(path, [])
    done = {(r["model"], r["variant"], r["n_atoms"]) for r in rows}
    too_slow: set[tuple[str, str]] = set()
    jobs = cost_jobs(s)
    with progress_bar() as bar:
        task = bar.add_task("cost", total=len(jobs))
        for name, variant, over, n in jobs:
            bar.update(task, description=f"cost {name} {variant} N={n}")
            if (name, variant, n) in done or (name, variant) in too_slow:
                bar.advance(task)
                continue
            model = build_model(name, "default", dtype=torch.float32, **over).eval()
            try:
                ms, n_edges = time_call(
                    model, system(n), s["min_seconds"], s["min_calls"]
                )
            except (RuntimeError, MemoryError) as err:  # out of memory at large N
                ms, n_edges = math.nan, -1
                bar.console.print(f"{name} {variant} N={n}: failed ({err})"[:200])
            row = {
                "model": name,
                "variant": variant,
                "n_atoms": n,
                "n_edges": n_edges,
                "ms": ms,
                "us_per_edge": 1e3 * ms / max(n_edges, 1),
                "n_params": model.num_parameters(),
            }
            rows.append(row)
            save_json(path, rows)
            if not ms < 1e3 * max_call_s:
                too_slow.add((name, variant))  # larger systems would take longer still
            bar.advance(task)


def cost_summary(rows: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per-model size exponents and per-sweep degree exponents."""
    by_size, by_degree = [], []
    for name in FAMILIES:
        sel = [
            r
            for r in rows
            if r["model"] == name and r["variant"] == "default" and np.isfinite(r["ms"])
        ]
        big = [r for r in sel if r["n_atoms"] >= 96]
        if sel:
            last = max(sel, key=lambda r: r["n_atoms"])
            by_size.append(
                {
                    "model": name,
                    "n_params": last["n_params"],
                    "exponent_N": fit_exponent(
                        [r["n_atoms"] for r in big], [r["ms"] for r in big]
                    ),
                    "largest_N": last["n_atoms"],
                    "ms_largest": last["ms"],
                    "us_per_edge_largest": last["us_per_edge"],
                }
            )
    for name, key in (("nequip", "l_max="), ("so3krates", "degrees=")):
        sel = [
            r
            for r in rows
            if r["model"] == name
            and r["variant"].startswith(key)
            and np.isfinite(r["ms"])
        ]
        if sel:
            lmax = [
                max(int(v) for v in r["variant"][len(key) :].split(",")) for r in sel
            ]
            by_degree.append(
                {
                    "model": name,
                    "sweep": key.rstrip("="),
                    "exponent_L+1": fit_exponent(
                        [l + 1 for l in lmax], [r["ms"] for r in sel]
                    ),
                    "points": ", ".join(
                        f"L={l}: {r['ms']:.1f} ms"
                        for l, r in zip(lmax, sel, strict=True)
                    ),
                }
            )
    return by_size, by_degree


def plot_cost(rows: list[dict], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(10, 4))
    for name in FAMILIES:
        sel = sorted(
            (
                r
                for r in rows
                if r["model"] == name
                and r["variant"] == "default"
                and np.isfinite(r["ms"])
            ),
            key=lambda r: r["n_atoms"],
        )
        if sel:
            ax1.loglog(
                [r["n_atoms"] for r in sel], [r["ms"] for r in sel], "o-", label=name
            )
    ax1.set(xlabel="atoms", ylabel="ms per energy+forces", title="cost vs size")
    for name, key in (("nequip", "l_max="), ("so3krates", "degrees=")):
        sel = [
            r
            for r in rows
            if r["model"] == name
            and r["variant"].startswith(key)
            and np.isfinite(r["ms"])
        ]
        if sel:
            lp1 = [
                max(int(v) for v in r["variant"][len(key) :].split(",")) + 1
                for r in sel
            ]
            ax2.loglog(lp1, [r["ms"] for r in sel], "o-", label=f"{name} ({key[:-1]})")
            ax2.loglog(
                lp1, [sel[0]["ms"] * (x / lp1[0]) ** 2 for x in lp1], ":", color="grey"
            )
    ax2.set(
        xlabel="L + 1 (largest degree + 1)",
        ylabel="ms",
        title="cost vs degree (dotted: ∝ (L+1)²)",
    )
    for ax in (ax1, ax2):
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "cost.png", dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------- data
def training_config(
    molecule: str,
    name: str,
    model_overrides: dict,
    training: dict,
    data: dict,
    test_index: str,
    preset: str | None = "default",
):
    """rMD17 config of ``examples/rmd17_<molecule>.yaml`` with the given changes."""
    import yaml

    from equiforce.config import validate_config

    src = EXAMPLES / f"rmd17_{molecule}.yaml"
    raw = yaml.safe_load(src.read_text())
    raw["model"] = {"name": name, "preset": preset, "overrides": dict(model_overrides)}
    raw["training"] = {**raw.get("training", {}), **training}
    raw["data"] = {**raw["data"], **data}
    raw["data"]["test"] = {**raw["data"]["test"], "index": test_index}
    return validate_config(raw, src.parent, source=str(src))


def run_data(s: dict, out: Path, threads: int) -> None:
    try:
        from equiforce.workflows.learning_curve import learning_curve
    except ImportError as err:
        print(
            f"data efficiency skipped: equiforce.workflows.learning_curve is missing "
            f"({err}); it comes with the training issue",
            file=sys.stderr,
        )
        return
    training = {**s["lc_training"], "threads": threads}
    for mol in s["molecules"]:
        for name in FAMILIES:
            over = s.get("lc_overrides", {}).get(name, {})
            cfg = training_config(
                mol, name, over, training, s["lc_data"], s["test_index"]
            )
            rows = learning_curve(
                cfg,
                list(s["lc_sizes"]),
                out / "learning_curves" / mol / name,
                progress=True,
            )
            # re-read before saving: another process may run other molecules
            summary = load_json(out / "learning_curves.json", {})
            summary[f"{mol}/{name}"] = rows
            save_json(out / "learning_curves.json", summary)


def plot_data(summary: dict, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    mols = sorted({k.split("/")[0] for k in summary})
    if not mols:
        return
    fig, axes = plt.subplots(1, len(mols), figsize=(5 * len(mols), 4), squeeze=False)
    for ax, mol in zip(axes[0], mols, strict=True):
        for key, rows in summary.items():
            if key.startswith(mol + "/") and all(
                r["forces_mae"] is not None for r in rows
            ):
                ax.loglog(
                    [r["n_train"] for r in rows],
                    [r["forces_mae"] for r in rows],
                    "o-",
                    label=key.split("/")[1],
                )
        ax.set(xlabel="training structures", ylabel="test force MAE (meV/Å)", title=mol)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "learning_curves.png", dpi=120)
    plt.close(fig)


# ---------------------------------------------------------------- stability
def train_to_target(
    cfg, run_dir: Path, target: float | None, chunk: int, max_steps: int
) -> dict:
    """Train (resumably); with a target, continue in chunks until F MAE ≤ target."""
    from equiforce.train.launch import resume, train

    final = run_dir / "final_metrics.json"
    if not (run_dir / "last.pt").exists():
        if target is not None:
            cfg = cfg.model_copy(
                update={
                    "training": cfg.training.model_copy(update={"max_steps": chunk})
                }
            )
        train(cfg, run_dir)
    elif not final.exists():
        resume(run_dir)  # interrupted before the end of a chunk
    while True:
        m = json.loads(final.read_text())
        if target is None or m["forces_mae"] <= target or m["final_step"] >= max_steps:
            return m
        resume(run_dir, [f"training.max_steps={m['final_step'] + chunk}"])


def run_stability(s: dict, out: Path, threads: int) -> None:
    from equiforce.data.io import read
    from equiforce.md.config import MDConfig
    from equiforce.models.registry import load_model
    from equiforce.workflows.stability import run_stability_study

    path = out / "stability.json"
    result = load_json(path, {})
    training = {**s["stab_training"], "threads": threads}
    tiny = s.get("lc_overrides", {}).get("so3krates", {})
    target = None
    for variant, ev in (("invariant", False), ("euclidean", True)):
        over = {**tiny, "use_euclidean_variables": ev}
        cfg = training_config(
            "ethanol", "so3krates", over, training, s["lc_data"], s["test_index"]
        )
        run_dir = out / "stability" / variant / "train"
        m = train_to_target(cfg, run_dir, target, s["stab_chunk"], s["stab_max_steps"])
        target = m["forces_mae"] if target is None else target
        test = cfg.data.test
        frames = read(
            test.path,
            index=":200",
            energy_unit=test.energy_unit,
            force_unit=test.force_unit,
        )
        for a in frames:
            a.calc = None
        summary = run_stability_study(
            load_model(run_dir / "best.pt"),
            frames,
            MDConfig(**s["md"]),
            list(s["temperatures"]),
            list(range(s["seeds"])),
            out / "stability" / variant / "md",
            progress=True,
        )
        result[variant] = {
            "valid_forces_mae": m["forces_mae"],
            "train_steps": m["final_step"],
            "target_forces_mae": target,
            "md": summary,
        }
        save_json(path, result)


# ------------------------------------------------------------------- report
def md_table(rows: list[dict], cols: list[str]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return "nan" if not np.isfinite(v) else f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def write_report(out: Path, command: str, small: bool) -> None:
    from equiforce.bench import machine_info

    info = machine_info()
    parts = [
        f"# Equivariance study{' (--small smoke run)' if small else ''}\n",
        f"Last command: `{command}`  \nMachine: {info['cpu']}, torch "
        f"{info['torch']}, Python {info['python']}"
        f"{', CUDA ' + info['cuda'] if info['cuda'] else ''}  \nDate: {info['date']}\n",
    ]
    runs = load_json(out / "commands.json", {})
    if runs:
        parts += [
            "Commands that produced each part (parts can run in separate processes):\n",
            md_table(
                [{"part": k, **v} for k, v in sorted(runs.items())],
                ["part", "command", "threads", "date"],
            )
            + "\n",
        ]
    rows = load_json(out / "cost.json", [])
    if rows:
        plot_cost(rows, out)
        by_size, by_degree = cost_summary(rows)
        parts += [
            "## Cost (float32, eager, energy+forces, neighbour list excluded)\n",
            "![cost](cost.png)\n",
            md_table(
                rows,
                [
                    "model",
                    "variant",
                    "n_atoms",
                    "n_edges",
                    "n_params",
                    "ms",
                    "us_per_edge",
                ],
            )
            + "\n",
            "Scaling with size (exponent of t ∝ N^k fitted for N ≥ 96):\n",
            md_table(by_size, list(by_size[0]) if by_size else []) + "\n",
            "Scaling with the largest degree L (t ∝ (L+1)^k at fixed N; "
            "So3krates/PaiNN-style updates expect k ≈ 2 per edge, full tensor "
            "products more):\n",
            md_table(by_degree, ["model", "sweep", "exponent_L+1", "points"]) + "\n",
        ]
    lcs = load_json(out / "learning_curves.json", {})
    if lcs:
        plot_data(lcs, out)
        flat = [
            {"molecule": k.split("/")[0], "model": k.split("/")[1], **r}
            for k, v in lcs.items()
            for r in v
        ]
        parts += [
            "## Data efficiency (test set; meV, meV/Å)\n",
            "![learning curves](learning_curves.png)\n",
            md_table(
                flat,
                [
                    "molecule",
                    "model",
                    "n_train",
                    "energy_mae",
                    "forces_mae",
                    "best_step",
                ],
            )
            + "\n",
        ]
    stab = load_json(out / "stability.json", {})
    if stab:
        flat = [
            {
                "variant": k,
                "valid F MAE": v["valid_forces_mae"],
                "target": v["target_forces_mae"],
                "train steps": v["train_steps"],
                **r,
            }
            for k, v in stab.items()
            for r in v["md"]
        ]
        parts += [
            "## Stability at equal validation force error (So3krates, ethanol)\n",
            md_table(
                flat,
                [
                    "variant",
                    "valid F MAE",
                    "target",
                    "train steps",
                    "temperature_K",
                    "n_runs",
                    "stable_fraction",
                    "mean_ttf_ps",
                    "min_ttf_ps",
                ],
            )
            + "\n",
        ]
    atomic_write(out / "report.md", "\n".join(parts))


# --------------------------------------------------------------------- main
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument(
        "--parts",
        default="cost,data,stability",
        help="comma list of cost, data, stability",
    )
    p.add_argument("--small", action="store_true", help="tiny end-to-end run (< 3 min)")
    p.add_argument("--out", type=Path, help="output folder (default under docs/)")
    p.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    p.add_argument("--sizes", help="comma list of atom counts (9 or multiples of 3)")
    p.add_argument("--min-seconds", type=float, help="timing budget per cost point")
    p.add_argument(
        "--max-call-seconds",
        type=float,
        default=60.0,
        help="skip larger systems of a model once one call takes longer",
    )
    p.add_argument("--molecules", help="comma list of rMD17 molecules (data part)")
    p.add_argument("--train-minutes", type=float, help="training budget per run, min")
    p.add_argument("--md-ps", type=float, help="MD length per stability run, ps")
    p.add_argument("--seeds", type=int, help="MD seeds per temperature")
    return p.parse_args(argv)


def settings(args: argparse.Namespace) -> dict:
    s = dict(SMALL if args.small else FULL)
    if args.sizes:
        s["sizes"] = tuple(int(x) for x in args.sizes.split(","))
    if args.min_seconds is not None:
        s["min_seconds"] = args.min_seconds
    if args.molecules:
        s["molecules"] = tuple(args.molecules.split(","))
    if args.train_minutes is not None:
        for key in ("lc_training", "stab_training"):
            s[key] = {**s[key], "max_minutes": args.train_minutes}
    if args.md_ps is not None:
        s["md"] = {k: v for k, v in s["md"].items() if k != "steps"} | {
            "time_ps": args.md_ps
        }
    if args.seeds is not None:
        s["seeds"] = args.seeds
    return s


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    parts = [p for p in args.parts.split(",") if p]
    unknown = set(parts) - {"cost", "data", "stability"}
    if unknown:
        print(
            f"unknown part(s) {sorted(unknown)}; known: cost, data, stability",
            file=sys.stderr,
        )
        return 2
    out = args.out or ROOT / "docs" / (
        "equivariance_study_small" if args.small else "equivariance_study"
    )
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    s = settings(args)
    command = "python benchmarks/equivariance_study.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)
    )
    runs = load_json(out / "commands.json", {})
    for part in parts:
        label = part
        if part == "data":
            label += ":" + ",".join(s["molecules"])
        runs[label] = {
            "command": command,
            "threads": args.threads,
            "date": time.strftime("%Y-%m-%d"),
        }
    save_json(out / "commands.json", runs)
    code = 0
    try:
        if "cost" in parts:
            run_cost(s, out, args.max_call_seconds)
        if "data" in parts:
            run_data(s, out, args.threads)
        if "stability" in parts:
            run_stability(s, out, args.threads)
    except KeyboardInterrupt:
        print(
            "interrupted: finished measurements are kept; re-run to continue",
            file=sys.stderr,
        )
        code = 130
    write_report(out, command, args.small)
    print(f"report: {out / 'report.md'}")
    return code


if __name__ == "__main__":
    sys.exit(main())
