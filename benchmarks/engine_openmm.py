"""equiforce models in OpenMM: MD steps per second and the adapter's overhead.

The model runs as an ``openmm.PythonForce`` (``equiforce.engines.openmm``). At
one system (default: 343 waters on a 3.1 Å grid, 1,029 atoms, periodic), side by
side in alternating rounds on one :class:`Potential`:

- ``compute``: ``Potential.compute(positions, numbers, cell, pbc)``, the bare call;
- ``force_fn``: the PythonForce's function called on an OpenMM ``State`` (unit
  conversions in and out, the box vectors);
- ``openmm``: ``context.setPositions`` + ``context.getState(getEnergy, getForces)``
  (OpenMM calling the function from C++, copying positions and forces);
- ``md_step``: one ``VerletIntegrator`` step (one force evaluation a step).

Positions move by 1e-4 Å between calls (inside the skin: no neighbour-list
rebuild). The adapter's own cost is timed on the same paths with a stand-in
potential returning a stored result, and reported as ms and as a fraction of
``compute``. Then ``md_steps_per_second`` times a fresh Verlet run.

    .venv/bin/python benchmarks/engine_openmm.py --n-mol 343 --repeats 15 \
        --threads 1 --out /tmp/engine_openmm.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import openmm
import openmm.app as app
import torch
from ase import Atoms

from equiforce.bench import machine_info, water_positions
from equiforce.engines.openmm import EquiforceForceFunction, create_force
from equiforce.models.base import PotentialModel
from equiforce.models.registry import build_model
from equiforce.potential import Potential


def topology_of(atoms: Atoms) -> app.Topology:
    """A one-residue topology of ``atoms`` (with the box when periodic)."""
    top = app.Topology()
    res = top.addResidue("MOL", top.addChain())
    for s in atoms.get_chemical_symbols():
        top.addAtom(s, app.Element.getBySymbol(s), res)
    if atoms.pbc.all():
        top.setPeriodicBoxVectors(np.asarray(atoms.cell) / 10 * openmm.unit.nanometer)
    return top


def simulation(
    model: PotentialModel | Potential | str | Path | None,
    atoms: Atoms,
    platform: str = "CPU",
    dt_fs: float = 0.5,
    force: openmm.Force | None = None,
    **force_kwargs,
) -> openmm.Context:
    """A Verlet context of ``atoms`` whose only force is the model (or ``force``)."""
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(m)
    if atoms.pbc.all():
        system.setDefaultPeriodicBoxVectors(*(np.asarray(atoms.cell) / 10))
    if force is None:
        force = create_force(model, topology_of(atoms), **force_kwargs)
    system.addForce(force)
    ctx = openmm.Context(
        system,
        openmm.VerletIntegrator(dt_fs * 1e-3),
        openmm.Platform.getPlatformByName(platform),
    )
    ctx.setPositions(atoms.positions / 10)
    ctx.setVelocitiesToTemperature(300, 1)
    return ctx


def md_steps_per_second(
    model_path_or_model: PotentialModel | Potential | str | Path,
    atoms: Atoms,
    n_steps: int,
    platform: str = "CPU",
    warmup: int = 25,
    **force_kwargs,
) -> float:
    """OpenMM Verlet steps per second of ``atoms`` with the model as its force.

    Args:
        model_path_or_model: a model, model file or :class:`Potential`.
        atoms: the structure (periodic when ``atoms.pbc.all()``).
        n_steps: timed steps.
        platform: OpenMM platform (``"CPU"`` or ``"Reference"``).
        warmup: untimed steps first (the compiled backend switches on after 20
            calls by default).
        **force_kwargs: :func:`equiforce.engines.openmm.create_force` options.
    """
    ctx = simulation(model_path_or_model, atoms, platform, **force_kwargs)
    integrator = ctx.getIntegrator()
    integrator.step(warmup)
    start = time.perf_counter()
    integrator.step(n_steps)
    return n_steps / (time.perf_counter() - start)


def _time(fn, seconds: float) -> float:
    """Median ms of repeated ``fn()`` calls for about ``seconds``."""
    times, start = [], time.perf_counter()
    while len(times) < 5 or time.perf_counter() - start < seconds:
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return 1e3 * statistics.median(times)


class _CachedPotential:
    """A stand-in Potential returning one stored result: the adapter's cost alone."""

    def __init__(self, potential: Potential, outputs: dict[str, torch.Tensor]) -> None:
        self.device, self.dtype = potential.device, potential.dtype
        self.outputs = outputs

    def compute(self, *args, **kwargs) -> dict[str, torch.Tensor]:
        return self.outputs


def _paths(ctx: openmm.Context, fn, jiggle) -> dict:
    """The force_fn / openmm / md_step paths of one context and function."""
    state = ctx.getState(getPositions=True)

    def through_openmm() -> None:
        ctx.setPositions(jiggle() / 10)
        ctx.getState(getEnergy=True, getForces=True)

    return {
        "force_fn": lambda: fn(state),
        "openmm": through_openmm,
        "md_step": lambda: ctx.getIntegrator().step(1),
    }


def overhead(
    model: PotentialModel,
    atoms: Atoms,
    repeats: int,
    seconds: float,
    dtype: torch.dtype,
    compile: bool | None,
) -> dict:
    """Median ms of the ways of computing forces (module docstring).

    With the model, the four paths alternate call by call (``repeats`` calls
    each), so machine load hits them alike. The adapter's own cost is then
    timed alone, on the same paths with a stand-in potential that returns a
    stored result (``seconds`` per path).
    """
    potential = Potential(model, dtype=dtype, compile=compile)
    periodic = bool(atoms.pbc.all())
    ctx = simulation(potential, atoms, "CPU")  # the same Potential inside
    fn = EquiforceForceFunction(potential, atoms.numbers, periodic)
    rng = np.random.default_rng(0)
    base = atoms.positions.copy()
    cell, pbc = np.asarray(atoms.cell), atoms.pbc

    def jiggle() -> np.ndarray:
        return base + rng.normal(scale=1e-4, size=base.shape)  # Å

    paths = {"compute": lambda: potential.compute(jiggle(), fn.numbers, cell, pbc)}
    paths |= _paths(ctx, fn, jiggle)
    # the MD run has its own Potential: its atoms drift away from ``base``, and a
    # shared neighbour list would be rebuilt at every switch between the paths
    md_potential = Potential(model, dtype=dtype, compile=compile)
    md_ctx = simulation(md_potential, atoms, "CPU")
    paths["md_step"] = lambda: md_ctx.getIntegrator().step(1)
    for _ in range(potential.compile_after + 2):  # the switch to compiled, warm-up
        paths["compute"]()
        paths["md_step"]()
    rows: dict[str, list[float]] = {k: [] for k in paths}
    for r in range(repeats + 1):
        for tag, f in paths.items() if r % 2 else reversed(paths.items()):
            t = time.perf_counter()
            f()
            if r:  # the first round warms every path
                rows[tag].append(1e3 * (time.perf_counter() - t))
    med = {k: statistics.median(v) for k, v in rows.items()}

    outputs = potential.compute(base, fn.numbers, cell, pbc)
    stand_in = _CachedPotential(potential, outputs)
    null_fn = EquiforceForceFunction(stand_in, atoms.numbers, periodic)
    force = openmm.PythonForce(null_fn)
    force.setUsesPeriodicBoundaryConditions(periodic)
    null_ctx = simulation(None, atoms, "CPU", force=force)
    adapter = {
        k: _time(f, seconds) for k, f in _paths(null_ctx, null_fn, jiggle).items()
    }
    return {
        "atoms": len(atoms),
        "ms": med,
        "adapter_ms": adapter,
        "adapter_over_compute": {k: v / med["compute"] for k, v in adapter.items()},
        "backend": potential.compiled.backend if potential.compiled else "eager",
        "dtype": str(potential.dtype).removeprefix("torch."),
        "neighbour_builds": potential.n_builds,
        "md_neighbour_builds": md_potential.n_builds,
        "calls": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-mol", type=int, default=343, help="waters (3 atoms each)")
    ap.add_argument("--open", action="store_true", help="a cluster, not a periodic box")
    ap.add_argument(
        "--molecule", default=None, help="an ase.build.molecule name instead of water"
    )
    ap.add_argument(
        "--model", default=None, help="model file (default: a fresh So3krates)"
    )
    ap.add_argument("--preset", default="default")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--eager", action="store_true", help="never compile")
    ap.add_argument("--repeats", type=int, default=15, help="model calls per path")
    ap.add_argument("--seconds", type=float, default=3.0, help="per adapter timing")
    ap.add_argument("--md-steps", type=int, default=20, help="timed MD steps")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", type=Path, default=Path("/tmp/engine_openmm.json"))
    args = ap.parse_args()
    dtype = getattr(torch, args.dtype)
    if args.model:
        from equiforce.models.registry import load_model

        model = load_model(args.model, dtype=dtype)
    else:
        # a fresh model: random weights, zero readout (E ≡ 0): a trained model's
        # arithmetic, and MD without the large random forces that blow it apart
        model = build_model("so3krates", args.preset, dtype=dtype)
    if args.molecule:
        from ase.build import molecule

        atoms = molecule(args.molecule)
    else:
        pos, z, edge = water_positions(args.n_mol)
        atoms = Atoms(numbers=z, positions=pos)
        if not args.open:
            atoms.cell, atoms.pbc = np.eye(3) * edge, True
    kwargs = {"dtype": dtype, "compile": False if args.eager else None}
    if args.threads:
        torch.set_num_threads(args.threads)
    result = {
        "machine": machine_info(),
        "date": time.strftime("%Y-%m-%d"),
        "command": " ".join(sys.argv),
        "threads": args.threads,
        "openmm": openmm.__version__,
        "overhead": overhead(model, atoms, args.repeats, args.seconds, **kwargs),
        "md_steps": args.md_steps,
    }
    result["md_steps_per_second"] = md_steps_per_second(
        model, atoms, args.md_steps, **kwargs
    )
    r = result["overhead"]
    print(f"{r['atoms']} atoms, {r['dtype']}, backend {r['backend']}")
    print("| path | ms with the model | adapter alone, ms | adapter / compute |")
    print("|---|---|---|---|")
    for k, ms in r["ms"].items():
        own = r["adapter_ms"].get(k)
        cols = (
            "– | –"
            if own is None
            else f"{own:.3f} | {r['adapter_over_compute'][k]:.4f}"
        )
        print(f"| {k} | {ms:.1f} | {cols} |")
    print(f"MD: {result['md_steps_per_second']:.3f} steps/s")
    tmp = args.out.with_suffix(".tmp")
    tmp.write_text(json.dumps(result, indent=1))
    tmp.replace(args.out)


if __name__ == "__main__":
    main()
