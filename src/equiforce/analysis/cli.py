"""``equiforce analyze vacf|spectrum|rdf TRAJ``: CSV + PNG next to the trajectory.

Each subcommand reads an equiforce trajectory (extxyz or HDF5, see
:mod:`equiforce.data.trajectory`), calls one library function and writes
``<stem>_<kind>.csv`` and ``<stem>_<kind>.png`` (or under ``--out``).
"""

from __future__ import annotations

import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add ``analyze`` with its ``vacf``, ``spectrum`` and ``rdf`` actions."""
    p = subparsers.add_parser(
        "analyze", help="VACF, vibrational spectrum, RDF/h(r) of a trajectory"
    )
    p.add_argument("kind", choices=("vacf", "spectrum", "rdf"))
    p.add_argument("trajectory", type=Path, help="extxyz or HDF5 trajectory")
    p.add_argument(
        "--out", type=Path, default=None, help="output folder (default: next to TRAJ)"
    )
    p.add_argument(
        "--max-lag-fs", type=float, default=2000.0, help="VACF length τ_max, fs"
    )
    p.add_argument(
        "--no-mass-weight", action="store_true", help="w_i = 1 instead of m_i"
    )
    p.add_argument(
        "--skip-fs", type=float, default=0.0, help="discard this much initial time"
    )
    p.add_argument(
        "--pad", type=int, default=4, help="zero-padding factor of the spectrum"
    )
    p.add_argument(
        "--max-cm", type=float, default=4000.0, help="plot range of the spectrum"
    )
    p.add_argument(
        "--r-max", type=float, default=None, help="RDF range, Å (6 g(r), 10 h(r))"
    )
    p.add_argument(
        "--bins", type=int, default=None, help="RDF bins (300 g(r), 500 h(r))"
    )
    p.set_defaults(func=_analyze)


def _analyze(args) -> int:
    from equiforce.analysis import report
    from equiforce.data.trajectory import read_trajectory

    try:
        traj = read_trajectory(args.trajectory)
    except (FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = args.out or args.trajectory.parent
    out.mkdir(parents=True, exist_ok=True)
    stem = out / args.trajectory.stem
    try:
        if args.kind == "rdf":
            paths = report.rdf_report(traj, stem, args.r_max, args.bins)
        else:
            paths = report.vacf_report(
                traj,
                stem,
                kind=args.kind,
                max_lag_fs=args.max_lag_fs,
                mass_weighted=not args.no_mass_weight,
                skip_fs=args.skip_fs,
                pad=args.pad,
                max_cm=args.max_cm,
            )
    except ValueError as err:
        print(f"error: {args.trajectory}: {err}", file=sys.stderr)
        return 2
    for path in paths:
        print(f"wrote {path}")
    return 0
