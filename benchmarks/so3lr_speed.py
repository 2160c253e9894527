"""SO3LR energy+forces per call: equiforce vs so3krates-torch, side by side.

Both evaluate the same pretrained SO3LR (r_c 4.5 Å, r_lr 12 Å) on the same
structures, alternating one call of each, on one thread; median over repeats
after warm-up, neighbour lists included on both sides (each front end's own
ASE calculator: equiforce ``EquiforceCalculator`` eager, skin 0 so every call
rebuilds its lists as so3krates-torch does).

Usage: ``python benchmarks/so3lr_speed.py [--repeats 20] [--dtype float32 float64]``
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule


def water_cluster(n: int, seed: int = 0) -> Atoms:
    """n water molecules on a 3.1 Å grid (≈ 1 g/cm³), random orientations."""
    rng = np.random.default_rng(seed)
    side = int(np.ceil(n ** (1 / 3)))
    w = molecule("H2O")
    out = Atoms()
    for k in range(n):
        idx = np.array([k % side, (k // side) % side, k // side**2])
        q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
        m = w.copy()
        m.positions = w.positions @ q.T + 3.1 * idx
        out += m
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--dtype", nargs="+", default=["float32", "float64"])
    args = parser.parse_args()
    torch.set_num_threads(1)
    from so3krates_torch.calculator.so3 import SO3LRCalculator

    from equiforce.calculator import EquiforceCalculator
    from equiforce.models.registry import load_model

    systems = {
        "ethanol (9)": molecule("CH3CH2OH"),
        "water cluster (99)": water_cluster(33),
    }
    print("| system | dtype | so3krates-torch ms | equiforce ms | ratio |")
    print("|---|---|---|---|---|")
    for dtype in args.dtype:
        previous = torch.get_default_dtype()
        ref = SO3LRCalculator(default_dtype=dtype)
        torch.set_default_dtype(previous)
        mine = EquiforceCalculator(
            load_model("so3lr", dtype=getattr(torch, dtype)), skin=0.0, compile=False
        )
        for name, atoms in systems.items():
            times: dict[str, list[float]] = {"ref": [], "mine": []}
            rng = np.random.default_rng(1)
            for k in range(args.repeats + 3):
                atoms = atoms.copy()
                atoms.positions += rng.normal(0, 1e-3, atoms.positions.shape)
                for key, calc in (("ref", ref), ("mine", mine)):
                    a = atoms.copy()
                    a.calc = calc
                    torch.set_default_dtype(
                        getattr(torch, dtype) if key == "ref" else previous
                    )
                    t = time.perf_counter()
                    a.get_forces()
                    if k >= 3:
                        times[key].append(1e3 * (time.perf_counter() - t))
                    torch.set_default_dtype(previous)
            r, m = statistics.median(times["ref"]), statistics.median(times["mine"])
            print(f"| {name} | {dtype} | {r:.1f} | {m:.1f} | {r / m:.1f}x |")


if __name__ == "__main__":
    main()
