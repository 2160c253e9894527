"""SO3LR energy+forces per call: equiforce vs so3krates-torch, side by side.

Both evaluate the same pretrained SO3LR (r_c 4.5 Å, r_lr 12 Å) on the same
structures through each front end's own ASE calculator, float32, one thread,
neighbour lists included on both sides (equiforce with skin 0, so that every call
rebuilds both lists as so3krates-torch does). equiforce runs its compiled backend
(``compile=True``: on a CPU the AOTInductor library, built once and kept in
``~/.cache/equiforce/aoti``; the first run spends minutes building it). Calls
alternate (one equiforce, one so3krates-torch) on positions jittered by 1e-3 Å;
median over the repeats after warm-up calls.

Systems: ethanol (9 atoms), the linear alkane C33H68 (101 atoms) and open water
clusters of 999 and 9,999 atoms (3.1 Å grid, ≈ 1 g/cm³; no periodic cell: SO3LR's
periodic electrostatics is not implemented yet). A second table compares, on
equiforce's side, the full SO3LR with the same model without its physical terms
(ZBL, electrostatics, dispersion; no long-range neighbour list): the cost of the
long-range part.

Usage: ``python benchmarks/so3lr_speed.py [--repeats 10] [--systems ethanol alkane
water1k water10k] [--overhead water1k] [--no-reference]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable

import numpy as np
import torch
from ase import Atoms
from ase.build import molecule

from equiforce.structures import alkane


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


SYSTEMS: dict[str, tuple[str, Callable[[], Atoms], int]] = {
    # key: (label, builder, repeats divisor)
    "ethanol": ("ethanol (9)", lambda: molecule("CH3CH2OH"), 1),
    "alkane": ("alkane C33H68 (101)", lambda: alkane(33), 1),
    "water1k": ("water cluster (999)", lambda: water_cluster(333), 3),
    "water10k": ("water cluster (9,999)", lambda: water_cluster(3333), 10),
}


def local_only(model: torch.nn.Module) -> torch.nn.Module:
    """The same SO3LR without ZBL, electrostatics and dispersion (same weights)."""
    cfg = model.config.model_copy(
        update={"zbl": False, "electrostatics": False, "dispersion": False}
    )
    local = type(model)(cfg, e0=model.e0.clone())
    missing, _ = local.load_state_dict(model.state_dict(), strict=False)
    assert not missing, missing
    return local.to(next(model.parameters()).dtype)


def time_calls(
    calcs: dict[str, Callable[[Atoms], None]],
    atoms: Atoms,
    repeats: int,
    warmup: int,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, float]:
    """Median ms per call of each calculator, calls alternating."""
    times: dict[str, list[float]] = {key: [] for key in calcs}
    rng = np.random.default_rng(1)
    for k in range(repeats + warmup):
        atoms = atoms.copy()
        atoms.positions += rng.normal(0, 1e-3, atoms.positions.shape)
        for key, call in calcs.items():
            t = clock()
            call(atoms.copy())
            if k >= warmup:
                times[key].append(1e3 * (clock() - t))
    return {key: statistics.median(v) for key, v in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--systems", nargs="+", default=list(SYSTEMS), choices=SYSTEMS)
    parser.add_argument(
        "--overhead", nargs="*", default=["water1k"], choices=SYSTEMS,
        help="systems of the local-model-only vs full SO3LR table",
    )  # fmt: skip
    parser.add_argument(
        "--no-reference", action="store_true", help="skip so3krates-torch"
    )
    parser.add_argument(
        "--clock", choices=("wall", "cpu"), default="wall",
        help="wall time, or this process's CPU time (on a loaded machine)",
    )  # fmt: skip
    args = parser.parse_args()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    torch.set_num_threads(1)
    from equiforce.calculator import EquiforceCalculator
    from equiforce.models.registry import load_model

    print(
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"torch {torch.__version__}, 1 thread, float32, {args.clock} clock; "
        "load average at start "
        f"{os.getloadavg()[0]:.1f}"
    )
    model = load_model("so3lr", dtype=torch.float32)

    def calculator(m: torch.nn.Module, skin: float = 0.0) -> Callable[[Atoms], None]:
        calc = EquiforceCalculator(m, skin=skin, compile=True)

        def call(atoms: Atoms) -> None:
            atoms.calc = calc
            atoms.get_forces()

        return call

    calcs = {"equiforce": calculator(model)}
    if not args.no_reference:
        from so3krates_torch.calculator.so3 import SO3LRCalculator

        previous = torch.get_default_dtype()
        ref = SO3LRCalculator(default_dtype="float32")
        torch.set_default_dtype(previous)

        def reference(atoms: Atoms) -> None:
            atoms.calc = ref
            torch.set_default_dtype(torch.float32)  # so3krates-torch builds from it
            try:
                atoms.get_forces()
            finally:
                torch.set_default_dtype(previous)

        calcs["so3krates-torch"] = reference
    print("\n| system | so3krates-torch ms | equiforce ms | ratio |")
    print("|---|---|---|---|")
    for key in args.systems:
        label, build, divisor = SYSTEMS[key]
        repeats = max(3, args.repeats // divisor)
        ms = time_calls(calcs, build(), repeats, args.warmup, clock)
        r, m = ms.get("so3krates-torch", float("nan")), ms["equiforce"]
        print(f"| {label} | {r:.1f} | {m:.2f} | {r / m:.1f}x |", flush=True)
    if args.overhead:
        local = local_only(model)
        print(
            "\n| system | skin Å | local model only ms | full SO3LR ms "
            "| long-range cost |"
        )
        print("|---|---|---|---|---|")
        # skin 0: both neighbour lists at every call; 0.5 (Potential's default,
        # MD): lists reused while atoms move < skin/2 (here: every call)
        for key in args.overhead:
            label, build, divisor = SYSTEMS[key]
            repeats = max(3, args.repeats // divisor)
            for skin in (0.0, 0.5):
                both = {
                    "local": calculator(local, skin),
                    "full": calculator(model, skin),
                }
                ms = time_calls(both, build(), repeats, args.warmup, clock)
                extra = ms["full"] / ms["local"] - 1.0
                print(
                    f"| {label} | {skin} | {ms['local']:.1f} | {ms['full']:.1f} "
                    f"| {extra:+.0%} |",
                    flush=True,
                )
    print(f"\nload average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
