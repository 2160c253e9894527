"""``equiforce relax`` subcommand (thin wrapper over :func:`equiforce.md.relax.relax`)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from equiforce.md.cli import add_charge_flags


def register(subparsers) -> None:
    """Add ``relax``."""
    p = subparsers.add_parser(
        "relax", help="relax a structure (and its cell) with a trained model"
    )
    p.add_argument("structure", type=Path, help="structure file, any readable format")
    p.add_argument("--model", required=True, type=Path, help="model file (.pt)")
    p.add_argument("--optimizer", choices=("fire", "bfgs", "lbfgs"), default="fire")
    p.add_argument("--fmax", type=float, default=0.01, help="max force target, eV/Å")
    p.add_argument("--steps", type=int, default=1000, help="max optimiser steps")
    p.add_argument(
        "--cell",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="relax the cell too (default: on for structures periodic in 3-D)",
    )
    p.add_argument(
        "--pressure", type=float, default=0.0, help="cell relaxation pressure, bar"
    )
    p.add_argument("--frame", type=int, default=0, help="frame of STRUCTURE")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", type=Path, default=Path("relax_run"), help="output folder")
    p.add_argument(
        "--overwrite", action="store_true", help="allow a non-empty --out folder"
    )
    p.add_argument("--quiet", action="store_true", help="no progress lines")
    add_charge_flags(p)
    p.set_defaults(func=_relax)


def _check_out(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"--out {out}: exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not overwrite:
        raise ValueError(
            f"--out {out}: folder exists and is not empty; "
            "pass --overwrite to write into it or choose another folder"
        )


def _relax(args) -> int:
    from equiforce.calculator import EquiforceCalculator
    from equiforce.data.io import read
    from equiforce.md.forcefield import set_total_charge
    from equiforce.md.relax import relax
    from equiforce.models.registry import load_model

    try:
        if args.fmax <= 0 or args.steps < 0:
            raise ValueError("--fmax must be > 0 and --steps >= 0")
        _check_out(args.out, args.overwrite)
        structures = read(args.structure)
        if not -len(structures) <= args.frame < len(structures):
            raise ValueError(
                f"{args.structure}: frame {args.frame} out of range "
                f"({len(structures)} frames)"
            )
        model = load_model(args.model, device=args.device)
        atoms = structures[args.frame]
        atoms.calc = None
        set_total_charge(atoms, model, args.charge, args.spin)
        calc = EquiforceCalculator(model, device=args.device, compile=False)
        result, _ = relax(
            atoms,
            calc,
            optimizer=args.optimizer,
            fmax=args.fmax,
            steps=args.steps,
            cell=args.cell,
            pressure_bar=args.pressure,
            out_dir=args.out,
            progress_every=None if args.quiet else 10,
        )
    except ValueError as err:  # bad input, DataError, CheckpointError
        print(f"error: {err}", file=sys.stderr)
        return 2
    what = "forces and cell" if result.cell_relaxed else "forces"
    if not result.converged:
        print(
            f"NOT converged: {what} after {result.steps} steps, max force "
            f"{result.fmax_optimizer:.4g} eV/Å > {result.fmax_target} eV/Å; "
            f"last structure in {args.out / 'final.xyz'}",
            file=sys.stderr,
        )
        return 1
    print(
        f"converged ({what}) in {result.steps} steps: E = {result.energy:.6f} eV, "
        f"max force {result.fmax:.4g} eV/Å; outputs in {args.out}"
    )
    return 0
