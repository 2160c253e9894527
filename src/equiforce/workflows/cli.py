"""``equiforce stability`` subcommand: the stability study (thin wrapper).

Takes the MD flags of ``equiforce md`` (:func:`equiforce.md.cli.add_md_flags`),
runs :func:`equiforce.workflows.stability.run_stability_study` and prints its
summary table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from equiforce.md.cli import add_md_flags, load_inputs


def register(subparsers) -> None:
    """Add ``stability``."""
    s = subparsers.add_parser(
        "stability", help="N seeds x temperatures stability table"
    )
    add_md_flags(s)
    s.add_argument(
        "--temperatures", type=str, default="300,500", help="comma-separated K"
    )
    s.add_argument("--seeds", type=int, default=5, help="number of seeds (0..N-1)")
    s.add_argument(
        "--reference",
        type=Path,
        default=None,
        help="reference trajectory for h(r) error",
    )
    s.add_argument("--out", type=Path, default=Path("stability"), help="output folder")
    s.set_defaults(func=_stability)


def _stability(args: argparse.Namespace) -> int:
    from equiforce.workflows.stability import run_stability_study

    if args.temperature is not None:
        print("error: use --temperatures for the stability study", file=sys.stderr)
        return 2
    try:
        config, model, structures = load_inputs(args)
        temps = [float(t) for t in args.temperatures.split(",") if t.strip()]
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    for a in structures:
        a.calc = None
    summary = run_stability_study(
        model,
        structures,
        config,
        temps,
        list(range(args.seeds)),
        args.out,
        reference=args.reference,
        progress=not args.no_progress,
    )
    print(
        f"{'T (K)':>7} {'runs':>5} {'stable':>7} {'mean ttf (ps)':>14} "
        f"{'min ttf (ps)':>13} {'h(r) MAE':>9}"
    )
    for r in summary:
        print(
            f"{r['temperature_K']:7.0f} {r['n_runs']:5d} {r['stable_fraction']:7.2f} "
            f"{r['mean_ttf_ps']:14.3f} {r['min_ttf_ps']:13.3f} {r['mean_hr_mae']:9.5f}"
        )
    print(f"tables in {args.out}/summary.csv and runs.csv")
    return 0
