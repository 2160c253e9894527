"""Peak memory and time of SO3LR on a periodic water box with PME electrostatics.

One structure per process (peak RSS is per process): a cubic box of water
molecules at ≈ 1 g/cm³ (3.1 Å lattice, random orientations, jiggled), float32,
one thread unless ``--threads``. ``--part full`` runs the whole model through
``equiforce.Potential`` (energy, forces, stress; neighbour lists built inside,
skin 0); ``--part pme`` runs only the periodic electrostatics term
(:class:`~equiforce.models.longrange.ewald.PeriodicCoulomb`, SO3LR's σ = 4 Å)
on random neutral charges, energy + forces + virial by autograd; ``--part
graph`` only builds ``Potential``'s neighbour graph (both pair lists). Prints
one JSON line: atoms, mesh, seconds per call, peak RSS (GiB, ``ru_maxrss``),
the RSS before the call (the structure and model alone) and the long-range
pairs. ``--pair-chunk-mib`` sets SO3LR's ``pair_chunk_bytes``; ``--max-gib``
caps the process's address space (``RLIMIT_AS``: an allocation beyond it
fails instead of pushing a shared machine into swap).
:mod:`so3lr_memory` runs it over several sizes, one process each.

Usage::

    python benchmarks/so3lr_pme.py --atoms 100000 --part pme
    python benchmarks/so3lr_pme.py --atoms 3000 --part full
"""

from __future__ import annotations

import argparse
import json
import resource
import time

import numpy as np
import torch


def water_box(n_atoms: int, seed: int = 0):
    """Positions (n, 3), numbers (n,), cubic cell (3, 3) of ≈ n_atoms/3 waters."""
    from ase.build import molecule

    side = max(1, round((n_atoms / 3) ** (1 / 3)))
    rng = np.random.default_rng(seed)
    w = molecule("H2O")
    grid = np.stack(np.meshgrid(*[np.arange(side)] * 3, indexing="ij"), -1).reshape(
        -1, 3
    )  # (side³, 3)
    rot, _ = np.linalg.qr(rng.normal(size=(len(grid), 3, 3)))  # (side³, 3, 3)
    pos = np.einsum("mij,aj->mai", rot, w.positions) + 3.1 * (grid[:, None] + 0.5)
    pos = pos.reshape(-1, 3) + rng.normal(0, 0.05, (len(grid) * 3, 3))
    numbers = np.tile(w.numbers, len(grid))
    return pos, numbers, np.eye(3) * 3.1 * side


def peak_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # kB → GiB


def run_pme(pos, numbers, cell, dtype, repeats):
    from equiforce.models.longrange.ewald import PeriodicCoulomb

    term = PeriodicCoulomb(4.0, "pme")
    rng = np.random.default_rng(1)
    q = torch.tensor(np.where(numbers == 8, -0.8, 0.4) + rng.normal(0, 0.05, len(pos)))
    q = (q - q.mean()).to(dtype)
    pos_t, cell_t = torch.tensor(pos, dtype=dtype), torch.tensor(cell, dtype=dtype)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        p = pos_t.clone().requires_grad_(True)
        strain = torch.zeros(3, 3, dtype=dtype, requires_grad=True)
        deform = torch.eye(3, dtype=dtype) + 0.5 * (strain + strain.T)
        e = term(p @ deform, q, (cell_t @ deform)[None], [len(q)], [True]).sum()
        forces, virial = torch.autograd.grad(e, [p, strain])
        times.append(time.perf_counter() - t0)
    from torchpme.lib.kvectors import get_ns_mesh

    mesh = get_ns_mesh(cell_t, term.mesh_spacing).tolist()
    return times, {"energy_eV": float(e.detach()), "mesh": mesh}


def _potential(dtype, chunk_mib):
    from equiforce.models.registry import load_model
    from equiforce.potential import Potential

    model = load_model("so3lr")
    if chunk_mib is not None:
        model.pair_chunk_bytes = int(chunk_mib * 2**20)
    return Potential(model, dtype=dtype, skin=0.0, compile=False)


def run_full(pos, numbers, cell, dtype, repeats, chunk_mib=None):
    pot = _potential(dtype, chunk_mib)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = pot.compute(pos, numbers, cell, np.ones(3, bool), stress=True)
        times.append(time.perf_counter() - t0)
    return times, {
        "lr_pairs": int(pot.graph.lr_edge_index.shape[1]),
        "energy_eV": float(out["energy"].sum()),
        "electrostatics_eV": float(out["energy:electrostatics"].sum()),
        "dispersion_eV": float(out["energy:dispersion"].sum()),
    }


def run_graph(pos, numbers, cell, dtype, repeats, chunk_mib=None):
    pot = _potential(dtype, chunk_mib)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        graph = pot.graph_for(pos, numbers, cell, np.ones(3, bool))
        times.append(time.perf_counter() - t0)
    return times, {"lr_pairs": int(graph.lr_edge_index.shape[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--atoms", type=int, default=3000)
    parser.add_argument("--part", choices=["full", "pme", "graph"], default="full")
    parser.add_argument("--pair-chunk-mib", type=float, default=None)
    parser.add_argument("--max-gib", type=float, default=None)
    parser.add_argument("--dtype", default="float32")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    if args.max_gib is not None:
        limit = int(args.max_gib * 2**30)
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    pos, numbers, cell = water_box(args.atoms)
    before = peak_gib()
    if args.part == "pme":
        times, extra = run_pme(pos, numbers, cell, dtype, args.repeats)
    else:
        run = run_full if args.part == "full" else run_graph
        times, extra = run(pos, numbers, cell, dtype, args.repeats, args.pair_chunk_mib)
    print(
        json.dumps(
            {
                "part": args.part,
                "atoms": len(pos),
                "box_A": round(float(cell[0, 0]), 2),
                "dtype": args.dtype,
                "threads": args.threads,
                "pair_chunk_mib": args.pair_chunk_mib,
                "seconds": [round(t, 2) for t in times],
                "peak_rss_GiB": round(peak_gib(), 3),
                "rss_before_GiB": round(before, 3),
                **extra,
            }
        )
    )


if __name__ == "__main__":
    main()
