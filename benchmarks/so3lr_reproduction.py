"""equiforce's SO3LR against so3krates-torch's: the largest deviations per structure.

Runs :func:`equiforce.models.so3lr.reproduction.compare` on the reproduction set
(neutral molecules incl. rMD17 frames, acetate, an ion pair, the glycine
zwitterion, C70H142, a periodic water box with the shifted kernel and with PME)
in float64 and float32, one thread, and prints a Markdown table: energy per atom,
relative energy, forces, the worst single term, partial charges. The table in
docs/so3lr.md ("Agreement with so3krates-torch") is this script's output.

Usage: ``PYTHONPATH=src python benchmarks/so3lr_reproduction.py [--rmd17 data/rmd17]``
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
from pathlib import Path

import torch

from equiforce.models.so3lr.reproduction import (
    PME,
    compare,
    equiforce_model,
    reference_calculator,
    reproduction_set,
)

DTYPES = {"float64": torch.float64, "float32": torch.float32}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    default = Path(__file__).resolve().parents[1] / "data" / "rmd17"
    parser.add_argument("--rmd17", type=Path, default=default)
    args = parser.parse_args()
    torch.set_num_threads(1)
    structures = reproduction_set(args.rmd17)
    rows: dict[str, dict] = {name: {} for name in structures}
    for label, dtype in DTYPES.items():
        models = {pme: equiforce_model(dtype, pme) for pme in (False, True)}
        calcs = {pme: reference_calculator(dtype, pme) for pme in (False, True)}
        for name, atoms in structures.items():
            pme = name == PME
            rows[name][label] = compare(atoms, models[pme], calcs[pme])
    print(
        f"{datetime.date.today()}, {platform.processor() or platform.machine()}, "
        f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f}, "
        f"torch {torch.__version__}, one thread"
    )
    print()
    print(
        "| structure | atoms | float64 ΔE/atom (eV) | float64 max ΔF (eV/Å) "
        "| float64 worst term ΔE/atom | float64 max Δq (e) "
        "| float32 ΔE/E | float32 ΔE/atom | float32 max ΔF | float32 max Δq |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, by_dtype in rows.items():
        d64, d32 = by_dtype["float64"], by_dtype["float32"]
        term, worst = max(d64.terms.items(), key=lambda kv: kv[1])
        rel32 = d32.energy * d32.n_atoms / abs(d32.energy_ref)
        print(
            f"| {name} | {d64.n_atoms} | {d64.energy:.1e} | {d64.forces:.1e} "
            f"| {worst:.1e} ({term}) | {d64.charges:.1e} | {rel32:.1e} "
            f"| {d32.energy:.1e} | {d32.forces:.1e} | {d32.charges:.1e} |"
        )
    for label in DTYPES:
        devs = [r[label] for r in rows.values()]
        print(
            f"\n{label} max over the set: ΔE/atom {max(d.energy for d in devs):.1e}, "
            f"ΔF {max(d.forces for d in devs):.1e}, terms "
            f"{max(max(d.terms.values()) for d in devs):.1e}, Δq "
            f"{max(d.charges for d in devs):.1e}, Δ Hirshfeld "
            f"{max(d.hirshfeld for d in devs):.1e}"
        )


if __name__ == "__main__":
    main()
