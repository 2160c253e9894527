"""Cost of uncertainty: latent, multi-head and committee energy+forces calls vs one model.

Eager float32 calls on one structure (ethanol by default, or the first frame of
``--structure FILE``), interleaved rounds, median ms per call. The latent
uncertainty's mixture is fitted to the untrained model's features of rattled
copies of the structure: its cost depends on the components and the feature
width only. Usage::

    python benchmarks/uncertainty_cost.py [--preset default] [--heads 4] [--rounds 7]
    python benchmarks/uncertainty_cost.py --structure data/uncertainty/3bpa_xtb_train_300K.extxyz
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from ase.build import molecule
from ase.io import read

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model
from equiforce.potential import Potential
from equiforce.uncertainty import Committee, HeadEnsemble, LatentUncertainty
from equiforce.uncertainty.density import fit_error_scale, fit_mixture
from equiforce.uncertainty.latent import model_features


def _timer(pot: Potential, atoms, calls: int):
    pot.compute(atoms.positions, atoms.numbers)  # warm-up, graph built

    def run() -> float:
        t0 = time.perf_counter()
        for _ in range(calls):
            out = pot.compute(atoms.positions, atoms.numbers)
            out[keys.FORCES].sum().item()
        return 1000 * (time.perf_counter() - t0) / calls

    return run


def paired_overhead(pot_a: Potential, pot_b: Potential, atoms, pairs: int) -> float:
    """Median over back-to-back call pairs of t_b / t_a − 1, in percent.

    Adjacent calls see the same load, so on a shared machine this resolves a few
    percent where medians of separate rounds drift by ±10 %; the order within a
    pair alternates.
    """
    one = {}
    for name, pot in (("a", pot_a), ("b", pot_b)):
        pot.compute(atoms.positions, atoms.numbers)

        def call(pot=pot) -> float:
            t0 = time.perf_counter()
            pot.compute(atoms.positions, atoms.numbers)[keys.FORCES].sum().item()
            return time.perf_counter() - t0

        one[name] = call
    ratios = []
    for i in range(pairs):
        if i % 2:
            tb, ta = one["b"](), one["a"]()
        else:
            ta, tb = one["a"](), one["b"]()
        ratios.append(tb / ta)
    return 100 * (statistics.median(ratios) - 1)


def _scoring_ms(latent, features, graph, calls: int) -> float:
    """ms of the latent model's work beyond the model call (mixture, map, max)."""
    latent.score(features, graph)
    t0 = time.perf_counter()
    for _ in range(calls):
        latent.score(features, graph)[keys.FORCES_STD_MAX].item()
    return 1000 * (time.perf_counter() - t0) / calls


def latent_of(model, atoms, components: int) -> LatentUncertainty:
    """``model`` with a mixture fitted to its features of 20 rattled ``atoms``."""
    rng = np.random.default_rng(0)
    feats = []
    for _ in range(20):
        pos = atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)
        dtype = next(model.parameters()).dtype
        g = AtomicGraph.from_arrays(pos, atoms.numbers, model.cutoff, dtype=dtype)
        with torch.no_grad():
            feats.append(model_features(model, g, forces=False)[0])
    density = fit_mixture(torch.cat(feats), components)
    u = density.distance(torch.cat(feats).double())
    return LatentUncertainty(model, density, fit_error_scale(u, 0.1 * u))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="default")
    p.add_argument("--molecule", default="CH3CH2OH")
    p.add_argument("--structure", help="a structure file (first frame) instead")
    p.add_argument("--components", type=int, default=8, help="latent mixture")
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    atoms = read(args.structure, index=0) if args.structure else molecule(args.molecule)
    label = args.structure or args.molecule

    def model(seed: int, heads: int = 1):
        return build_model(
            "so3krates", args.preset, seed=seed, readout_heads=heads,
            zero_init_readout=False,
        )  # fmt: skip

    k = args.heads
    multi = model(0, k)
    single = model(0)
    cases = {
        "one model": single,
        f"latent ({args.components} components)": latent_of(
            single, atoms, args.components
        ),
        f"{k} heads, mean only": multi,
        f"{k} heads + energy_std": HeadEnsemble(multi, forces_std=False),
        f"{k} heads + forces_std": HeadEnsemble(multi),
        f"committee of {k}": Committee([model(s) for s in range(k)]),
    }
    timers = {
        name: _timer(Potential(m, compile=False, skin=0.5), atoms, args.calls)
        for name, m in cases.items()
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, run in timers.items():
            times[name].append(run())
    lat = cases[f"latent ({args.components} components)"]
    graph = AtomicGraph.from_arrays(
        atoms.positions, atoms.numbers, lat.cutoff, dtype=torch.float32
    )
    with torch.no_grad():
        feats = model_features(lat.model, graph, forces=False)[0]
    times["latent scoring alone"] = [
        _scoring_ms(lat, feats, graph, args.calls * 10) for _ in range(args.rounds)
    ]
    base = statistics.median(times["one model"])
    print(f"{label} ({len(atoms)} atoms), So3krates {args.preset}, float32 eager, "
          f"{args.threads} thread(s), median of {args.rounds} rounds x {args.calls}")  # fmt: skip
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name:28s} {med:8.2f} ms  {100 * (med / base - 1):+6.1f} %")
    pots = {n: Potential(m, compile=False, skin=0.5) for n, m in cases.items()}
    pairs = args.rounds * args.calls
    lat_name = f"latent ({args.components} components)"
    for a, b in (
        ("one model", lat_name),
        (f"{k} heads, mean only", f"{k} heads + energy_std"),
    ):
        ov = paired_overhead(pots[a], pots[b], atoms, pairs)
        print(f"paired: {b} vs {a}: {ov:+.1f} % (median of {pairs} pairs)")


if __name__ == "__main__":
    main()
