"""Subcommand ``uncertainty fit``: a training run's latent uncertainty (thin wrapper).

Exit status: 0 success, 2 a directory that is not a finished run, or bad data.
"""

from __future__ import annotations

import argparse
import sys


def register(subparsers) -> None:
    """Add ``uncertainty`` (with its ``fit`` action) to the ``equiforce`` parser."""
    p = subparsers.add_parser(
        "uncertainty", help="uncertainty of one trained model (docs/uncertainty.md)"
    )
    actions = p.add_subparsers(dest="action", metavar="ACTION", required=True)
    f = actions.add_parser(
        "fit",
        help="fit a Gaussian mixture over a run's training features and write "
        "RUN_DIR/latent.pt (used by eval, md and load_ensemble)",
    )
    f.add_argument("run_dir", metavar="RUN_DIR", help="a training run directory")
    f.add_argument(
        "--components", type=int, default=8, help="Gaussian components (default 8)"
    )
    f.add_argument(
        "--dims",
        type=int,
        default=32,
        help="fit the mixture on this many leading principal components of the "
        "features, at most their width (default 32; 0: all of them)",
    )
    f.add_argument("--model-file", default="best.pt", help="model file of the run")
    f.add_argument("--batch-size", type=int, default=20)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--quiet", action="store_true")
    f.set_defaults(func=_fit)


def _fit(args: argparse.Namespace) -> int:
    from equiforce.train.latent_fit import fit_run

    if args.components < 1:
        print("error: --components must be at least 1", file=sys.stderr)
        return 2
    if args.dims < 0:
        print("error: --dims must be 0 (all) or positive", file=sys.stderr)
        return 2
    out = fit_run(
        args.run_dir,
        n_components=args.components,
        batch_size=args.batch_size,
        model_file=args.model_file,
        seed=args.seed,
        progress=not args.quiet,
        n_dims=args.dims or None,
    )
    print(out)
    return 0
