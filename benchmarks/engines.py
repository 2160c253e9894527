"""MD steps/s of one model in every engine, and each adapter's overhead.

Same model (default So3krates, float32, random weights with a zero readout so the
MD stays finite: the speed does not depend on the weights' values), same structure,
one process, one after another: the native engine (``equiforce md``'s runner), ASE
(velocity Verlet over ``EquiforceCalculator``), torch-sim, OpenMM (``PythonForce``)
and LAMMPS (``fix external``). The bare model call is ``Potential.compute`` on the
same atoms with the compiled backend, positions moved by 1e-4 Å (no neighbour
rebuild); ``overhead = (1 / steps_per_s) / bare − 1``.

    PYTHONPATH=src .venv/bin/python benchmarks/engines.py --systems ethanol,box1029 \\
        --out docs/bench/engines/engines.json
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

sys.path.insert(0, str(Path(__file__).resolve().parent))

from equiforce.bench import machine_info, make_system  # noqa: E402
from equiforce.models.registry import build_model  # noqa: E402
from equiforce.potential import Potential  # noqa: E402

#: timed MD steps per system (warm-up steps come first and compile the backend)
STEPS = {"ethanol": 400, "box1029": 12, "box10k": 3}


def model_for_bench() -> torch.nn.Module:
    """Default So3krates, float32 (its readout starts at zero: finite MD with random
    weights, and a trained model's arithmetic)."""
    return build_model("so3krates", "default", dtype=torch.float32, seed=0).eval()


def bare_call_ms(model, atoms, seconds: float = 3.0) -> float:
    """Median ms of ``Potential.compute`` (compiled, no neighbour rebuild)."""
    pot = Potential(model, compile=True)
    pos = atoms.positions.copy()
    args = (atoms.numbers, atoms.cell.array[None], atoms.pbc[None])
    for _ in range(3):
        pot.compute(pos, *args)
    times, t_end = [], time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < 3:
        pos += 1e-4
        t = time.perf_counter()
        pot.compute(pos, *args)
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times)


def native_steps_per_second(model, atoms, n_steps: int, warmup: int = 25) -> float:
    """The native engine's NVE steps/s (no output files)."""
    from equiforce.md.config import MDConfig
    from equiforce.md.forcefield import ModelForceField
    from equiforce.md.runner import Simulation

    config = MDConfig(timestep=0.25, dtype="float32", compile=True,
                      stability={"enabled": False})  # fmt: skip
    sim = Simulation(ModelForceField(model, compile=True), [atoms], config)
    sim.run(warmup, progress=False)
    t = time.perf_counter()
    sim.run(warmup + n_steps, progress=False)
    return n_steps / (time.perf_counter() - t)


def ase_steps_per_second(model, atoms, n_steps: int, warmup: int = 25) -> float:
    """ASE velocity Verlet over the equiforce calculator."""
    from ase import units
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution
    from ase.md.verlet import VelocityVerlet

    from equiforce.calculator import EquiforceCalculator

    atoms = atoms.copy()
    MaxwellBoltzmannDistribution(atoms, temperature_K=300, rng=np.random.default_rng(0))
    atoms.calc = EquiforceCalculator(model, compile=True)
    dyn = VelocityVerlet(atoms, 0.25 * units.fs)
    dyn.run(warmup)
    t = time.perf_counter()
    dyn.run(n_steps)
    return n_steps / (time.perf_counter() - t)


def engines() -> dict:
    """name -> steps/s function ``(model, atoms, n_steps)``."""
    import engine_lammps
    import engine_openmm

    out = {"native": native_steps_per_second, "ase": ase_steps_per_second}
    try:
        import engine_torchsim

        out["torch-sim"] = engine_torchsim.md_steps_per_second
    except ImportError:  # torch-sim not installed
        pass
    out["openmm"] = engine_openmm.md_steps_per_second

    def lammps(model, atoms, n_steps):
        if not atoms.pbc.any():  # a LAMMPS data file needs a box: 15 Å of vacuum
            atoms = atoms.copy()
            atoms.center(vacuum=15.0)
        return engine_lammps.md_steps_per_second(model, atoms, n_steps)

    out["lammps"] = lammps
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--systems", default="ethanol,box1029")
    parser.add_argument("--engines", default=None, help="comma list (default: all)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    model = model_for_bench()
    table = engines()
    if args.engines:
        table = {k: v for k, v in table.items() if k in args.engines.split(",")}
    rows = []
    for name in args.systems.split(","):
        atoms = make_system(name)
        bare = bare_call_ms(model, atoms)
        print(f"{name}: {len(atoms)} atoms, bare model call {bare:.3f} ms", flush=True)
        for engine, fn in table.items():
            try:
                sps = fn(model, atoms, STEPS.get(name, 10))
            except Exception as err:  # noqa: BLE001 - one engine failing is a row
                rows.append({"system": name, "engine": engine, "error": repr(err)})
                print(f"  {engine}: failed ({err!r})", flush=True)
                continue
            overhead = 1000.0 / sps / bare - 1.0
            rows.append({"system": name, "n_atoms": len(atoms), "engine": engine,
                         "steps_per_s": sps, "bare_ms": bare,
                         "overhead": overhead})  # fmt: skip
            print(f"  {engine}: {sps:.2f} steps/s, {overhead:+.1%} over the model "
                  "call", flush=True)  # fmt: skip
    result = {"machine": machine_info(), "threads": args.threads, "rows": rows}
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=1, default=str) + "\n")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    np.set_printoptions(precision=4)
    sys.exit(main())
