"""Cost of uncertainty: latent, multi-head and committee energy+forces calls vs one model.

Eager float32 calls on one structure (ethanol by default, or the first frame of
``--structure FILE``), interleaved rounds, median ms per call. The latent
uncertainty's mixture is fitted to the untrained model's features of rattled
copies of the structure: its cost depends on the components and the feature
width only. Usage::

    python benchmarks/uncertainty_cost.py [--preset default] [--heads 4] [--rounds 7]
    python benchmarks/uncertainty_cost.py --structure data/uncertainty/3bpa_xtb_train_300K.extxyz
    python benchmarks/uncertainty_cost.py --committee-only [--structure FILE]
    python benchmarks/uncertainty_cost.py --sizes [--heads 8]
    python benchmarks/uncertainty_cost.py --compiled [--dims 32|0] [--structure FILE]
    python benchmarks/uncertainty_cost.py --compiled-committee [--heads 4] [--structure FILE]

``--compiled``: one model and its latent uncertainty through the compiled
backend MD and the calculator use (``Potential(compile=True)``; on a CPU the
AOTInductor library, built once per model: minutes), paired overhead, plus the
latent model's eager call for scale. ``--compiled-committee``: a committee of
``--heads`` members, each through its own compiled backend (what MD uses), against
one compiled model and the eager committee (members batched where the size rule
says so).

A committee is timed with its members batched (one vmapped call,
``Committee.batched = "on"``) and one by one (``"off"``); ``--sizes`` sweeps
structures from 3 to 216 atoms and prints the paired batched / one-by-one ratio
against the edge count, the quantity of the committee's size rule
(``BATCH_MAX_EDGES``).
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
from equiforce.uncertainty.latent import DEFAULT_DIMS, model_features


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


def committee_sizes(k: int, preset: str, pairs: int) -> None:
    """Paired batched / one-by-one ratio of a committee of ``k`` over sizes."""
    bpa = read("data/uncertainty/3bpa_xtb_train_300K.extxyz", index=0)
    cases = {
        "H2O": molecule("H2O"),
        "ethanol": molecule("CH3CH2OH"),
        "C6H6": molecule("C6H6"),
        "3BPA[:14]": bpa[:14],
        "3BPA[:18]": bpa[:18],
        "3BPA[:22]": bpa[:22],
        "3BPA": bpa,
        "3BPA x2": replicated(bpa, (2, 1, 1)),
        "3BPA x4": replicated(bpa, (2, 2, 1)),
        "3BPA x8": replicated(bpa, (2, 2, 2)),
    }
    committee = Committee([_so3krates(preset, s) for s in range(k)])
    # the graph and thread settings of every front end (Potential flushes
    # subnormal floats: without it the batched call gained less, 3BPA 0.95-1.45)
    pot = Potential(committee, compile=False, skin=0.5)
    for name, atoms in cases.items():
        graph = pot.graph_for(atoms.positions, atoms.numbers, None, None, None)

        def call(mode: str, graph: AtomicGraph = graph) -> float:
            committee.batched = mode
            t0 = time.perf_counter()
            committee.member_outputs(graph, True, False)
            return time.perf_counter() - t0

        call("on"), call("off")
        times = []
        for i in range(pairs):
            pair = (call("on"), call("off")) if i % 2 else (call("off"), call("on"))
            times.append(pair[::-1] if i % 2 else pair)  # (one by one, batched)
        seq = 1000 * statistics.median(t[0] for t in times)
        bat = 1000 * statistics.median(t[1] for t in times)
        ratio = statistics.median(t[1] / t[0] for t in times)
        n_edges = graph.edge_index.shape[1]
        print(f"K={k} {name:10s} {len(atoms):3d} atoms {n_edges:4d} edges "
              f"edges*K {n_edges * k:5d}: one by one {seq:7.2f} ms, batched "
              f"{bat:7.2f} ms, paired ratio {ratio:.2f}", flush=True)  # fmt: skip


def replicated(atoms, grid: tuple[int, int, int], spacing: float = 11.0):
    """Copies of ``atoms`` (centred) on a ``grid``, ``spacing`` Å apart, open."""
    atoms = atoms.copy()
    atoms.positions -= atoms.positions.mean(0)
    atoms.cell, atoms.pbc = None, False
    out = atoms.copy()[:0]
    for shift in np.ndindex(*grid):
        copy = atoms.copy()
        copy.positions += spacing * np.array(shift)
        out += copy
    return out


def _so3krates(preset: str, seed: int, heads: int = 1):
    return build_model(
        "so3krates", preset, seed=seed, readout_heads=heads, zero_init_readout=False
    )


def _committee(models, mode: str) -> Committee:
    c = Committee(models)
    c.batched = mode
    return c


def _scoring_ms(latent, features, graph, calls: int) -> float:
    """ms of the latent model's work beyond the model call (mixture, map, max)."""
    latent.score(features, graph)
    t0 = time.perf_counter()
    for _ in range(calls):
        latent.score(features, graph)[keys.FORCES_STD_MAX].item()
    return 1000 * (time.perf_counter() - t0) / calls


def latent_of(
    model, atoms, components: int, dims: int | None = None
) -> LatentUncertainty:
    """``model`` with a mixture fitted to its features of 20 rattled ``atoms``."""
    rng = np.random.default_rng(0)
    feats = []
    for _ in range(20):
        pos = atoms.positions + rng.normal(scale=0.05, size=atoms.positions.shape)
        dtype = next(model.parameters()).dtype
        g = AtomicGraph.from_arrays(pos, atoms.numbers, model.cutoff, dtype=dtype)
        with torch.no_grad():
            feats.append(model_features(model, g, forces=False)[0])
    density = fit_mixture(torch.cat(feats), components, n_dims=dims)
    u = density.distance(torch.cat(feats).double())
    return LatentUncertainty(model, density, fit_error_scale(u, 0.1 * u))


def compiled_latent(
    atoms, preset: str, components: int, pairs: int, dims: int | None
) -> None:
    """Paired overhead of the latent uncertainty on the compiled backend."""
    single = _so3krates(preset, 0)
    lat = latent_of(single, atoms, components, dims)
    plain, scored = Potential(single, compile=True), Potential(lat, compile=True)
    eager = Potential(lat, compile=False)
    for pot in (plain, scored, eager):
        pot.compute(atoms.positions, atoms.numbers)  # builds the libraries
    assert (
        scored.compiled is not None
        and scored.compiled.backend == plain.compiled.backend
    )
    backend = plain.compiled.backend
    ms = {}
    for name, pot in (
        ("compiled", plain),
        ("latent compiled", scored),
        ("latent eager", eager),
    ):
        run = _timer(pot, atoms, 20)
        ms[name] = statistics.median(run() for _ in range(max(3, pairs // 20)))
    width = f"{lat.density.n_dims} of {lat.density.n_features} axes"
    print(f"{len(atoms)} atoms, So3krates {preset}, float32, backend {backend}, "
          f"latent {components} components over {width}: "
          + ", ".join(f"{k} {v:.3f} ms" for k, v in ms.items()))  # fmt: skip
    ov = paired_overhead(plain, scored, atoms, pairs)
    print(f"paired: latent compiled vs one model compiled: {ov:+.1f} % ({pairs} pairs)")
    ov = paired_overhead(plain, eager, atoms, pairs)
    print(f"paired: latent eager vs one model compiled: {ov:+.1f} % ({pairs} pairs)")


def compiled_committee(atoms, preset: str, k: int, pairs: int) -> None:
    """A committee on its members' compiled backends vs one compiled model."""
    members = [_so3krates(preset, s) for s in range(k)]
    plain = Potential(_so3krates(preset, 0), compile=True)
    fast = Potential(Committee(members), compile=True)
    eager = Potential(Committee(members), compile=False)
    for pot in (plain, fast, eager):
        pot.compute(atoms.positions, atoms.numbers)  # builds the libraries
    backend = fast.compiled.backend
    assert backend == plain.compiled.backend, (backend, plain.compiled.backend)
    ms = {}
    for name, pot in (
        ("one model compiled", plain),
        (f"committee of {k} compiled", fast),
        (f"committee of {k} eager", eager),
    ):
        run = _timer(pot, atoms, 20)
        ms[name] = statistics.median(run() for _ in range(max(3, pairs // 20)))
    print(f"{len(atoms)} atoms, So3krates {preset}, float32, backend {backend}: "
          + ", ".join(f"{k} {v:.3f} ms" for k, v in ms.items()))  # fmt: skip
    for name, pot in ((f"committee of {k} compiled", fast), ("eager", eager)):
        ov = paired_overhead(plain, pot, atoms, pairs)
        print(
            f"paired: {name} / one model compiled: {1 + ov / 100:.2f}x ({pairs} pairs)"
        )
    ov = paired_overhead(fast, eager, atoms, pairs)
    print(f"paired: committee eager / compiled: {1 + ov / 100:.2f}x ({pairs} pairs)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--preset", default="default")
    p.add_argument("--molecule", default="CH3CH2OH")
    p.add_argument("--structure", help="a structure file (first frame) instead")
    p.add_argument("--components", type=int, default=8, help="latent mixture")
    p.add_argument(
        "--dims",
        type=int,
        default=DEFAULT_DIMS,
        help=f"latent: principal feature axes of the mixture (default {DEFAULT_DIMS}, "
        "as `equiforce uncertainty fit`; 0 = all)",
    )
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--calls", type=int, default=20)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--committee-only", action="store_true")
    p.add_argument(
        "--grid",
        help="'a,b,c': that many copies of the structure, 11 Å apart (open)",
    )
    p.add_argument("--sizes", action="store_true", help="committee size sweep")
    p.add_argument(
        "--compiled", action="store_true", help="latent on the compiled backend"
    )
    p.add_argument(
        "--compiled-committee",
        action="store_true",
        help="a committee of --heads members on their compiled backends",
    )
    args = p.parse_args()
    args.dims = args.dims or None  # 0: every feature axis
    torch.set_num_threads(args.threads)
    if args.sizes:
        committee_sizes(args.heads, args.preset, args.rounds * args.calls)
        return
    atoms = read(args.structure, index=0) if args.structure else molecule(args.molecule)
    label = args.structure or args.molecule
    if args.grid:
        atoms = replicated(atoms, tuple(int(n) for n in args.grid.split(",")))
        label += f" x {args.grid}"

    if args.compiled:
        compiled_latent(
            atoms, args.preset, args.components, args.rounds * args.calls, args.dims
        )
        return
    if args.compiled_committee:
        compiled_committee(atoms, args.preset, args.heads, args.rounds * args.calls)
        return
    k = args.heads
    single = _so3krates(args.preset, 0)
    members = [_so3krates(args.preset, s) for s in range(k)]
    seq_name, bat_name = f"committee of {k}, one by one", f"committee of {k}, batched"
    cases = {"one model": single}
    if not args.committee_only:
        multi = _so3krates(args.preset, 0, k)
        cases |= {
            f"latent ({args.components} components)": latent_of(
                single, atoms, args.components, args.dims
            ),
            f"{k} heads, mean only": multi,
            f"{k} heads + energy_std": HeadEnsemble(multi, forces_std=False),
            f"{k} heads + forces_std": HeadEnsemble(multi),
        }
    cases |= {
        seq_name: _committee(members, "off"),
        bat_name: _committee(members, "on"),
    }
    timers = {
        name: _timer(Potential(m, compile=False, skin=0.5), atoms, args.calls)
        for name, m in cases.items()
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):
        for name, run in timers.items():
            times[name].append(run())
    lat_name = f"latent ({args.components} components)"
    if lat_name in cases:
        lat = cases[lat_name]
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
    compared = [(seq_name, bat_name), ("one model", seq_name), ("one model", bat_name)]
    if lat_name in cases:
        compared += [
            ("one model", lat_name),
            (f"{k} heads, mean only", f"{k} heads + energy_std"),
        ]
    for a, b in compared:
        ov = paired_overhead(pots[a], pots[b], atoms, pairs)
        print(f"paired: {b} vs {a}: {ov:+.1f} % (median of {pairs} pairs)")


if __name__ == "__main__":
    main()
