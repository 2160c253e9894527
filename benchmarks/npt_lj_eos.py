"""NPT check: Lennard-Jones argon density against the JZG equation of state.

Runs the native engine's NPT integrator (stochastic cell rescaling + CSVR) on
``--replicas`` independent boxes of 4·n³ LJ atoms (ε/k_B = 119.8 K, σ = 3.405 Å,
argon mass, cutoff 2.5 σ with the mean-field long-range correction) at T* and
P* = P_JZG(ρ*, T*), and reports the mean density of each replica after
``--burn`` steps, the isothermal compressibility from volume fluctuations, the
EOS values, the wall time, machine and date.

Usage::

    python benchmarks/npt_lj_eos.py --steps 20000 --replicas 4 \
        --json docs/bench/npt_lj_eos.json
"""

from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import numpy as np
import torch
from ase.build import bulk

from equiforce.atomic import atomic_write_json
from equiforce.md.barostat import StochasticCellRescaling, volume
from equiforce.md.lj_eos import compressibility, pressure
from equiforce.md.pair import PeriodicLennardJones
from equiforce.md.state import maxwell_boltzmann, replicate, state_from_atoms
from equiforce.units import KB_EV

EPS_K, SIG = 119.8, 3.405
EPS = EPS_K * KB_EV


def main() -> None:
    """Parse the flags, run, print and optionally write JSON."""
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--t-star", type=float, default=1.5)
    p.add_argument("--rho-star", type=float, default=0.70)
    p.add_argument("--cells", type=int, default=3, help="fcc cells per side")
    p.add_argument("--replicas", type=int, default=4)
    p.add_argument("--steps", type=int, default=20000)
    p.add_argument("--burn", type=int, default=2000)
    p.add_argument("--dt", type=float, default=10.0, help="fs")
    p.add_argument("--taup", type=float, default=1000.0, help="fs")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None)
    args = p.parse_args()
    torch.set_num_threads(1)
    t, rho0 = args.t_star, args.rho_star
    p_star, kappa = pressure(rho0, t), compressibility(rho0, t)
    atoms = bulk("Ar", "fcc", a=(4.0 / rho0) ** (1 / 3) * SIG, cubic=True)
    atoms = atoms.repeat((args.cells,) * 3)
    state = replicate(state_from_atoms([atoms]), args.replicas)
    maxwell_boltzmann(state, t * EPS_K, torch.Generator().manual_seed(args.seed))
    lj = PeriodicLennardJones(EPS, SIG, 2.5 * SIG)
    integ = StochasticCellRescaling(
        args.dt,
        t * EPS_K,
        seed=args.seed + 1,
        pressure=p_star * EPS / SIG**3,
        taup=args.taup,
        compressibility=kappa * SIG**3 / EPS,
    )
    integ.init(state, lj)
    vols = []
    t0 = time.perf_counter()
    for k in range(args.steps):
        integ.step(state, lj)
        if k >= args.burn:
            vols.append(volume(state).numpy().copy())
    wall = time.perf_counter() - t0
    vol = np.array(vols) / SIG**3  # (frames, replicas), reduced
    rho = len(atoms) / vol
    kappa_fluct = vol.var(0) / vol.mean(0) / t
    result = {
        "t_star": t,
        "p_star": p_star,
        "rho_eos": rho0,
        "kappa_eos": kappa,
        "n_atoms": len(atoms),
        "replicas": args.replicas,
        "steps": args.steps,
        "burn": args.burn,
        "dt_fs": args.dt,
        "taup_fs": args.taup,
        "rho_per_replica": rho.mean(0).tolist(),
        "rho_mean": float(rho.mean()),
        "rho_rel_dev": float(rho.mean() / rho0 - 1),
        "rho_sem": float(rho.mean(0).std(ddof=1) / np.sqrt(args.replicas))
        if args.replicas > 1
        else None,
        "kappa_fluct_per_replica": kappa_fluct.tolist(),
        "kappa_fluct_mean": float(kappa_fluct.mean()),
        "wall_s": wall,
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} torch thread(s)",
        "date": datetime.date.today().isoformat(),
    }
    print(json.dumps(result, indent=2))
    if args.json:
        atomic_write_json(args.json, result)


if __name__ == "__main__":
    main()
