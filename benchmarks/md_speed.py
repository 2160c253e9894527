"""MD steps per second: native equiforce engine vs ASE VelocityVerlet (same model).

For each molecule (ethanol, 9 atoms; aspirin, 21 atoms, first frame of the shipped
rMD17 test split) and each engine, runs ``--warmup`` steps, then times ``--steps``
NVE steps at 0.5 fs (velocities from Maxwell–Boltzmann at 300 K, neighbour-list skin
0.5 Å in both engines), and reports steps/s, ns/day and the native/ASE speed-up.
MACE (``mace-torch``) is timed in ASE too when importable (``mace_off`` small if its
weights are cached locally; skipped otherwise). No trajectory output is written, so
the numbers measure the integrator + model loop.

``--replicas 1,8,32`` also times the native engine with that many independent
replicas in one batch (as ``equiforce md --replicas`` and ``equiforce stability``
run them) and reports replica-steps per second: the throughput when many seeds or
temperatures are wanted, against ASE running them one after another.

Usage (tiny smoke run)::

    python benchmarks/md_speed.py --steps 20 --warmup 5 --json /tmp/md_speed.json

Real numbers::

    python benchmarks/md_speed.py \
        --model ethanol=runs/ethanol/best.pt,aspirin=runs/aspirin/best.pt \
        --steps 2000 --warmup 200 --dtype float32 --json docs/md_speed.json

Each molecule needs a model trained on it: with another molecule's model it flies
apart within a few hundred steps (the script warns, and records the neighbour-list
rebuilds per step and the edges per atom of every native run).
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
MOLECULES = {
    "ethanol": ROOT / "data/rmd17/rmd17_ethanol_test_01.npz",
    "aspirin": ROOT / "data/rmd17/rmd17_aspirin_test_01.npz",
}


def _model_paths(spec: str | None, names: list[str]) -> dict[str, str | None]:
    """``--model``: one checkpoint for every molecule, or ``name=path,name=path``."""
    if not spec or "=" not in spec:
        return dict.fromkeys(names, spec)
    paths = dict(item.split("=", 1) for item in spec.split(","))
    missing = [n for n in names if n not in paths]
    if missing:
        raise SystemExit(f"--model: no checkpoint for {', '.join(missing)}")
    return {n: paths[n] for n in names}


def _model(path: str | None, dtype: torch.dtype):
    if path:
        from equiforce.models.registry import load_model

        return load_model(path, dtype=dtype)
    from equiforce.models.registry import build_model

    return build_model("so3krates", preset="default", dtype=dtype)


def _structure(name: str):
    from equiforce.data.io import read

    atoms = read(MOLECULES[name], index="0")[0]
    atoms.calc = None
    return atoms


def time_native(
    model,
    atoms,
    steps: int,
    warmup: int,
    dtype: torch.dtype,
    compile: bool = True,
    replicas: int = 1,
    device: str = "cpu",
) -> tuple[float, dict[str, float]]:
    """Steps/s of the native engine (float64 integration, model in ``dtype``).

    With ``replicas`` > 1 that many independent copies run in one batch (one model
    call per step for all of them); the rate is batch steps per second. Also
    returns the neighbour-list rebuilds per timed step and the edges per atom at
    the end.
    """
    from equiforce.md.forcefield import ModelForceField
    from equiforce.md.integrators import VelocityVerlet
    from equiforce.md.state import maxwell_boltzmann, state_from_atoms

    state = state_from_atoms([atoms] * replicas, device=device)
    maxwell_boltzmann(state, 300.0, torch.Generator().manual_seed(0))
    ff = ModelForceField(model, skin=0.5, dtype=dtype, compile=compile)
    integ = VelocityVerlet(0.5)
    integ.init(state, ff)
    for _ in range(warmup):
        integ.step(state, ff)
    _sync(device)
    t0 = time.perf_counter()
    builds = ff.n_builds
    for _ in range(steps):
        integ.step(state, ff)
    _sync(device)
    rate = steps / (time.perf_counter() - t0)
    # a molecule that flew apart (a model trained on another molecule) rebuilds its
    # list every step and ends with no edges: its rate measures nothing useful
    health = {
        "rebuilds_per_step": (ff.n_builds - builds) / max(steps, 1),
        "edges_per_atom": ff.graph.n_edges / ff.graph.num_nodes,
    }
    return rate, health


def _sync(device: str) -> None:
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_ase(calc, atoms, steps: int, warmup: int) -> float:
    """Steps/s of ASE's VelocityVerlet with ``calc``."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    atoms = atoms.copy()
    atoms.calc = calc
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    dyn = VelocityVerlet(atoms, timestep=0.5 * units.fs)
    dyn.run(warmup)
    t0 = time.perf_counter()
    dyn.run(steps)
    return steps / (time.perf_counter() - t0)


def _mace_calc():
    try:
        from mace.calculators import mace_off
    except ImportError:
        return None
    try:
        return mace_off(model="small", device="cpu", default_dtype="float32")
    except Exception as err:  # noqa: BLE001 - no network / no cached weights
        print(f"MACE skipped: {type(err).__name__}: {err}")
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--model",
        default=None,
        help="checkpoint for every molecule, or name=path,name=path "
        "(default: untrained default preset)",
    )
    p.add_argument("--molecules", default="ethanol,aspirin")
    p.add_argument("--steps", type=int, default=1000)
    p.add_argument("--warmup", type=int, default=100)
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument(
        "--eager", action="store_true", help="no torch.compile (both engines)"
    )
    p.add_argument("--threads", type=int, default=None, help="torch threads")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument(
        "--replicas",
        default="",
        help="comma list of batch sizes for replica throughput (e.g. 8,32)",
    )
    p.add_argument("--json", type=Path, default=Path("md_speed.json"))
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from equiforce.calculator import EquiforceCalculator

    dtype = getattr(torch, args.dtype)
    compile = not args.eager
    dev = args.device
    names = args.molecules.split(",")
    paths = _model_paths(args.model, names)
    mace = _mace_calc() if dev == "cpu" else None
    rows = []
    for name in names:
        model = _model(paths[name], dtype).to(dev)
        atoms = _structure(name)
        # warm both paths first (TorchScript/e3nn specialise on the first calls)
        time_native(model, atoms, args.warmup, 0, dtype, compile, device=dev)
        time_ase(
            EquiforceCalculator(
                model, dtype=dtype, skin=0.5, compile=compile, device=dev
            ),
            atoms,
            args.warmup,
            0,
        )
        native, health = time_native(
            model, atoms, args.steps, args.warmup, dtype, compile, device=dev
        )
        if health["rebuilds_per_step"] > 0.2 or health["edges_per_atom"] < 1:
            print(
                f"WARNING {name}: {health['rebuilds_per_step']:.2f} neighbour-list "
                f"rebuilds per step, {health['edges_per_atom']:.1f} edges per atom at "
                "the end: the molecule is flying apart (a model trained on another "
                "molecule?); this rate measures nothing useful"
            )
        calc = EquiforceCalculator(
            model, dtype=dtype, skin=0.5, compile=compile, device=dev
        )
        ase_rate = time_ase(calc, atoms, args.steps, args.warmup)
        row = {
            "molecule": name,
            "n_atoms": len(atoms),
            "native_steps_per_s": native,
            "ase_steps_per_s": ase_rate,
            "speedup": native / ase_rate,
            "native_ns_per_day": native * 0.5 * 86400e-6,
            "model": paths[name] or "so3krates default preset (untrained)",
            **health,
        }
        for n in [int(x) for x in args.replicas.split(",") if x.strip()]:
            rate, _ = time_native(
                model,
                atoms,
                args.steps,
                args.warmup,
                dtype,
                compile,
                replicas=n,
                device=dev,
            )
            row[f"native_x{n}_replica_steps_per_s"] = rate * n
            row[f"native_x{n}_vs_ase"] = rate * n / ase_rate
            print(
                f"{name}: {n} replicas in one batch: {rate * n:.0f} replica-steps/s "
                f"({rate * n / ase_rate:.1f}x ASE's single loop)"
            )
        if mace is not None:
            row["mace_ase_steps_per_s"] = time_ase(mace, atoms, args.steps, args.warmup)
        rows.append(row)
    head = ("molecule", "atoms", "native/s", "ASE/s", "x", "ns/day")
    print("{:>9} {:>5} {:>9} {:>8} {:>5} {:>7}".format(*head))
    for r in rows:
        print(
            f"{r['molecule']:>9} {r['n_atoms']:5d} {r['native_steps_per_s']:9.1f} "
            f"{r['ase_steps_per_s']:8.1f} {r['speedup']:5.2f} "
            f"{r['native_ns_per_day']:7.2f}"
            + (
                f"  MACE-ASE {r['mace_ase_steps_per_s']:.1f}/s"
                if "mace_ase_steps_per_s" in r
                else ""
            )
        )
    meta = {
        "date": time.strftime("%Y-%m-%d %H:%M:%S"),
        "machine": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "device": torch.cuda.get_device_name() if dev.startswith("cuda") else "cpu",
        "dtype": args.dtype,
        "compiled": compile,
        "steps": args.steps,
        "timestep_fs": 0.5,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.json.with_name(f".{args.json.name}.tmp")
    tmp.write_text(json.dumps({"meta": meta, "results": rows}, indent=2))
    tmp.replace(args.json)
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
