"""equiforce inside torch-sim: MD speed, batched FIRE vs ASE's FIRE, adapter overhead.

Functions for ``benchmarks/engines.py`` (each returns plain numbers):

- :func:`md_steps_per_second`: torch-sim NVT Langevin steps per second on one
  ``ase.Atoms`` through :class:`equiforce.engines.torchsim.TorchSimModel`;
- :func:`relax_speedup`: torch-sim's batched FIRE on a list of molecules (one
  call, all at once) against ASE's FIRE on them one by one, same model, same
  backend, same ``fmax``; medians over rounds;
- :func:`adapter_overhead`: the adapter's call against the bare
  ``Potential.compute`` it wraps, on a ~1,000-atom water box.

Alone (default: a random-weight default So3krates, float32, eager):

    PYTHONPATH=src .venv/bin/python benchmarks/engine_torchsim.py \\
        --threads 1 --rounds 3 --out /tmp/engine_torchsim.json
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
from ase import Atoms

from equiforce.bench import machine_info, make_system
from equiforce.calculator import EquiforceCalculator
from equiforce.engines.torchsim import TorchSimModel
from equiforce.models.base import PotentialModel
from equiforce.potential import Potential

ModelLike = PotentialModel | Potential | str | Path


def small_molecules(n: int = 32, rattle: float = 0.1, seed: int = 0) -> list[Atoms]:
    """``n`` G2 molecules of H, C, N, O with 3-12 atoms, rattled by ``rattle`` Å."""
    from ase.collections import g2

    names = [
        name
        for name in g2.names
        if set(g2[name].get_chemical_symbols()) <= set("HCNO")
        and 3 <= len(g2[name]) <= 12
    ]
    mols = []
    for i, name in enumerate(names[:n]):
        atoms = g2[name].copy()
        atoms.rattle(rattle, seed=seed + i)
        mols.append(atoms)
    return mols


def _state(atoms: Atoms | list[Atoms], adapter: TorchSimModel):
    import torch_sim as ts

    return ts.io.atoms_to_state(atoms, adapter.device, adapter.dtype)


def md_steps_per_second(
    model_path_or_model: ModelLike,
    atoms: Atoms,
    n_steps: int,
    device: str = "cpu",
    *,
    dt_fs: float = 0.5,
    temperature_k: float = 300.0,
    compile: bool | None = None,
    warmup: int = 30,
) -> float:
    """torch-sim NVT (Langevin, BAOAB) steps per second of ``atoms``.

    Args:
        model_path_or_model: model, model file or Potential.
        atoms: the system (open or periodic).
        n_steps: timed steps.
        device: torch device.
        dt_fs: time step, fs.
        temperature_k: thermostat target and initial temperature, K.
        compile: the Potential's compile policy (None: compiled after 20 calls,
            which the ``warmup`` steps pass, so the timed steps are compiled).
        warmup: untimed steps first (compilation, allocator).
    """
    import torch_sim as ts
    from torch_sim.units import MetalUnits

    adapter = TorchSimModel(
        model_path_or_model, device=device, compile=compile, compute_stress=False
    )
    kt = torch.tensor(
        temperature_k * float(MetalUnits.temperature), dtype=adapter.dtype
    )
    dt = torch.tensor(dt_fs * 1e-3 * float(MetalUnits.time), dtype=adapter.dtype)
    init, step = ts.integrators.nvt_langevin(adapter, dt=dt, kT=kt, seed=0)
    state = init(_state(atoms, adapter))
    for _ in range(warmup):
        state = step(state)
    _sync(adapter.device)
    start = time.perf_counter()
    for _ in range(n_steps):
        state = step(state)
    _sync(adapter.device)
    return n_steps / (time.perf_counter() - start)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _relax_torchsim(adapter: TorchSimModel, molecules, fmax: float, max_steps: int):
    """(seconds, energies, converged flags, model calls) of one batched FIRE."""
    import torch_sim as ts

    start = time.perf_counter()
    n_calls = adapter.potential.n_calls
    final = ts.optimize(
        system=_state(molecules, adapter),
        model=adapter,
        optimizer=ts.optimizers.fire,
        convergence_fn=ts.runners.generate_force_convergence_fn(
            force_tol=fmax, include_cell_forces=False
        ),
        max_steps=max_steps,
    )
    seconds = time.perf_counter() - start
    converged = ts.quantities.systemwise_max_force(final) < fmax
    energies = final.energy.double().cpu().numpy()
    return (
        seconds,
        energies,
        converged.cpu().numpy(),
        adapter.potential.n_calls - n_calls,
    )


def _relax_ase(potential: Potential, molecules, fmax: float, max_steps: int):
    """(seconds, energies, converged flags, FIRE steps) of ASE's FIRE, one by one."""
    from ase.optimize import FIRE

    energies, converged, steps = [], [], 0
    start = time.perf_counter()
    for mol in molecules:
        atoms = mol.copy()
        atoms.calc = EquiforceCalculator(potential)
        opt = FIRE(atoms, logfile=None)
        converged.append(opt.run(fmax=fmax, steps=max_steps))
        energies.append(atoms.get_potential_energy())
        steps += opt.nsteps
    seconds = time.perf_counter() - start
    return seconds, np.array(energies), np.array(converged), steps


def relax_speedup(
    model: ModelLike,
    molecules: list[Atoms],
    *,
    fmax: float = 0.01,
    max_steps: int = 500,
    rounds: int = 3,
    device: str = "cpu",
    compile: bool = False,
) -> dict:
    """torch-sim's batched FIRE against ASE's FIRE one molecule at a time.

    Both call the same model through their own :class:`Potential` (same device,
    dtype, skin and compile setting); rounds alternate the two.

    Returns:
        ``torchsim_s`` and ``ase_s`` (median seconds for all molecules),
        ``speedup`` (ase_s / torchsim_s), ``torchsim_calls`` (batched model
        calls), ``ase_steps`` (sum of ASE FIRE steps), ``*_converged`` (how
        many reached ``fmax`` within ``max_steps``), ``max_energy_diff_ev``,
        ``median_energy_diff_ev`` and ``energy_agree_1mev`` (|ΔE| between the
        final energies of the molecules both converged: a rugged model can send
        the two FIRE variants to different minima),
        ``n_molecules``, ``n_atoms``, ``fmax``, ``compile``, per-round times.
    """
    adapter = TorchSimModel(model, device=device, compile=compile, compute_stress=False)
    ase_potential = Potential(adapter.model, device=device, compile=compile)
    ts_times, ase_times = [], []
    for _ in range(rounds):
        t_ts, e_ts, ok_ts, calls = _relax_torchsim(adapter, molecules, fmax, max_steps)
        t_ase, e_ase, ok_ase, steps = _relax_ase(
            ase_potential, molecules, fmax, max_steps
        )
        ts_times.append(t_ts)
        ase_times.append(t_ase)
    ts_s, ase_s = statistics.median(ts_times), statistics.median(ase_times)
    diff = np.abs(e_ts - e_ase)[ok_ts & ok_ase]  # molecules both converged
    return {
        "n_molecules": len(molecules),
        "n_atoms": sum(len(m) for m in molecules),
        "fmax": fmax,
        "max_steps": max_steps,
        "compile": compile,
        "torchsim_s": ts_s,
        "ase_s": ase_s,
        "speedup": ase_s / ts_s,
        "torchsim_calls": calls,
        "ase_steps": steps,
        "torchsim_converged": int(ok_ts.sum()),
        "ase_converged": int(ok_ase.sum()),
        "max_energy_diff_ev": float(diff.max(initial=0.0)),
        "median_energy_diff_ev": float(np.median(diff)) if diff.size else 0.0,
        "energy_agree_1mev": int((diff < 1e-3).sum()),
        "torchsim_rounds_s": ts_times,
        "ase_rounds_s": ase_times,
    }


def adapter_overhead(
    model: ModelLike,
    atoms: Atoms | None = None,
    *,
    calls: int = 30,
    device: str = "cpu",
    compile: bool = False,
) -> dict:
    """Median ms of the adapter's call and of the bare ``Potential.compute``.

    One Potential serves both; calls alternate one by one (a busy machine's
    load then weighs on both alike); positions move by 1e-4 Å between calls
    (inside the skin: no rebuild); forces and stress on.

    Returns:
        ``n_atoms``, ``potential_ms``, ``adapter_ms``, ``overhead_ms``,
        ``overhead_pct`` (medians over ``calls`` calls of each).
    """
    atoms = atoms if atoms is not None else make_system("box1029")
    adapter = TorchSimModel(model, device=device, compile=compile)
    pot = adapter.potential
    state = _state(atoms, adapter)
    base = state.positions.clone()
    rows = state.cell.mT
    pbc = torch.tensor([bool(state.pbc)] * 3).expand(1, 3)
    gen = torch.Generator(device=adapter.device).manual_seed(0)

    def jiggle() -> torch.Tensor:
        noise = torch.randn(base.shape, generator=gen, device=base.device)
        return base + 1e-4 * noise.to(base.dtype)

    def bare() -> None:
        pot.compute(jiggle(), state.atomic_numbers, rows, pbc, state.system_idx, True)

    def through_adapter() -> None:
        state.positions = jiggle()
        adapter(state)

    times: dict = {bare: [], through_adapter: []}
    for i in range(calls + 3):
        for fn in (bare, through_adapter) if i % 2 else (through_adapter, bare):
            t = time.perf_counter()
            fn()
            _sync(adapter.device)
            if i >= 3:  # warm-up calls
                times[fn].append(time.perf_counter() - t)
    p = 1e3 * statistics.median(times[bare])
    a = 1e3 * statistics.median(times[through_adapter])
    return {
        "n_atoms": len(atoms),
        "potential_ms": p,
        "adapter_ms": a,
        "overhead_ms": a - p,
        "overhead_pct": 100 * (a - p) / p,
        "n_builds": pot.n_builds,
        "compile": compile,
    }


def _random_model(size: str, dtype: torch.dtype) -> PotentialModel:
    """Random-weight So3krates: the ``default`` preset, or ``tiny`` (F=16, 1 layer)."""
    from equiforce.models.registry import build_model

    if size == "tiny":
        params = {"num_features": 16, "num_layers": 1, "degrees": (1, 2)}
        return build_model(
            "so3krates", zero_init_readout=False, dtype=dtype, seed=0, **params
        )
    return build_model(
        "so3krates", "default", zero_init_readout=False, dtype=dtype, seed=0
    )


def main(argv: list[str] | None = None) -> int:
    """Run the three measurements and print (and optionally write) JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--model", help="model file (default: a random So3krates, see --size)"
    )
    parser.add_argument(
        "--size", default="default", choices=["default", "tiny"], help="random model"
    )
    parser.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--threads", type=int, default=1, help="torch threads (1 on a busy machine)"
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--n-molecules", type=int, default=32)
    parser.add_argument("--fmax", type=float, default=0.01)
    parser.add_argument("--max-steps", type=int, default=500)
    parser.add_argument("--md-system", default="ethanol", help="equiforce.bench name")
    parser.add_argument("--md-steps", type=int, default=200)
    parser.add_argument("--overhead-system", default="box1029")
    parser.add_argument("--overhead-calls", type=int, default=30)
    parser.add_argument(
        "--compile", action="store_true", help="compiled backend in all three"
    )
    parser.add_argument("--out", type=Path, help="write the JSON here")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    model = Path(args.model) if args.model else _random_model(args.size, dtype)
    comp = bool(args.compile)
    record = {
        "machine": machine_info(),
        "command": " ".join(sys.argv),
        "dtype": args.dtype,
        "model": args.model or f"random so3krates ({args.size})",
        "md": {
            "system": args.md_system,
            "steps_per_second": md_steps_per_second(
                model,
                make_system(args.md_system),
                args.md_steps,
                args.device,
                compile=comp,
            ),
            "compile": comp,
        },
        "relax": relax_speedup(
            model,
            small_molecules(args.n_molecules),
            fmax=args.fmax,
            max_steps=args.max_steps,
            rounds=args.rounds,
            device=args.device,
            compile=comp,
        ),
        "overhead": adapter_overhead(
            model,
            make_system(args.overhead_system),
            calls=args.overhead_calls,
            device=args.device,
            compile=comp,
        ),
    }
    text = json.dumps(record, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
