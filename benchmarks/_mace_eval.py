"""Test-set errors of a trained MACE model (peers venv only).

Run by ``benchmarks/rmd17_cpu.py`` with ``.venv-peers/bin/python``. Reads an
extxyz file with reference ``REF_energy`` (eV) and ``REF_forces`` (eV/Å),
predicts every frame with ``mace.calculators.MACECalculator`` and writes JSON
with the same definitions as ``equiforce eval``: energy errors per structure
(total energy, meV), force errors per Cartesian component (meV/Å)::

    python benchmarks/_mace_eval.py --model run/mace.model --test test.xyz \
        --out run/test_metrics.json --threads 1

The model is evaluated in float64 by default: in float32 the total energy of a
molecule of ~10^4 eV is only resolved to ~1 meV, the size of the errors measured.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", type=Path, required=True)
    p.add_argument("--test", type=Path, required=True)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)

    import ase.io
    from mace.calculators import MACECalculator
    from rich.progress import track

    calc = MACECalculator(
        model_paths=str(args.model), device="cpu", default_dtype=args.dtype
    )
    frames = ase.io.read(args.test, ":", format="extxyz")
    de, df = [], []
    for k, atoms in enumerate(track(frames, description="MACE test")):
        try:
            ref_e = float(atoms.info["REF_energy"])
            ref_f = np.asarray(atoms.arrays["REF_forces"], dtype=float)
        except KeyError as err:
            print(f"{args.test}: frame {k} has no {err.args[0]}", file=sys.stderr)
            return 2
        atoms.calc = calc
        de.append(atoms.get_potential_energy() - ref_e)
        df.append(atoms.get_forces() - ref_f)
    de, df = np.asarray(de), np.concatenate(df)  # (n_frames,), (n_atoms_total, 3)
    metrics = {
        "n_structures": len(de),
        "dtype": args.dtype,
        "energy_mae": 1000 * float(np.abs(de).mean()),
        "energy_rmse": 1000 * float(np.sqrt((de**2).mean())),
        "forces_mae": 1000 * float(np.abs(df).mean()),
        "forces_rmse": 1000 * float(np.sqrt((df**2).mean())),
    }
    tmp = args.out.with_name(f".{args.out.name}.tmp")
    tmp.write_text(json.dumps(metrics, indent=2))
    tmp.replace(args.out)
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
