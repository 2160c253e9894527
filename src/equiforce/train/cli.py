"""Subcommands ``train``, ``eval`` and ``learning-curve`` (thin wrappers).

Exit status: 0 success, 2 invalid config/data/arguments (reported before any
file is written), 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    """Add ``train``, ``eval`` and ``learning-curve`` to the ``equiforce`` parser."""
    p = subparsers.add_parser("train", help="train a model from a YAML config")
    p.add_argument("config", nargs="?", help="YAML config (not needed with --resume)")
    p.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="K=V",
        help="override a config value, e.g. --set training.lr=3e-4 (repeatable)",
    )
    p.add_argument("--run-dir", help="output folder (default: runs/<config name>)")
    p.add_argument(
        "--resume", metavar="RUN_DIR", help="continue an interrupted run exactly"
    )
    p.add_argument(
        "--committee",
        type=int,
        metavar="K",
        help="train K members (seeds seed..seed+K-1) into RUN_DIR/member_<k>, one "
        "after another; the same command continues an interrupted committee",
    )
    p.add_argument("--quiet", action="store_true", help="no progress output")
    p.set_defaults(func=_train)

    p = subparsers.add_parser("eval", help="errors of a model on a labelled file")
    p.add_argument("--model", required=True, help="checkpoint (best.pt, last.pt, ...)")
    p.add_argument("--data", required=True, help="labelled file (npz, extxyz, ...)")
    p.add_argument(
        "--out", help="output folder (default: <model dir>/eval_<data name>)"
    )
    p.add_argument("--energy-unit", default="eV", help="unit of stored energies")
    p.add_argument("--force-unit", help="unit of stored forces (default energy/length)")
    p.add_argument("--energy-key", help="key of energies in the file")
    p.add_argument("--forces-key", help="key of forces in the file")
    p.add_argument("--format", help="ASE format or 'npz' (default from suffix)")
    p.add_argument("--index", default=":", help="frames to use, e.g. '0:500'")
    p.add_argument("--batch-size", type=int, default=50)
    p.add_argument("--device", default="cpu")
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_eval)

    p = subparsers.add_parser(
        "learning-curve", help="test error against training-set size"
    )
    p.add_argument("config", help="YAML config (data.test is the test file)")
    p.add_argument(
        "--sizes", required=True, help="comma-separated sizes, e.g. 50,100,250"
    )
    p.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="K=V"
    )
    p.add_argument("--test", help="test file (same keys/units as data.train)")
    p.add_argument(
        "--out", help="output folder (default: runs/<config name>_learning_curve)"
    )
    p.add_argument("--quiet", action="store_true")
    p.set_defaults(func=_learning_curve)


def _fail(message: str) -> int:
    print(message, file=sys.stderr)
    return 2


def _train(args: argparse.Namespace) -> int:
    from equiforce.config import ConfigError, load_config
    from equiforce.data.io import DataError
    from equiforce.models.checkpoint import CheckpointError
    from equiforce.train.distributed import INTERRUPTED, launched_rank
    from equiforce.train.launch import RunDirError, resume, train

    try:
        if args.resume:
            best = resume(args.resume, args.overrides, progress=not args.quiet)
        else:
            if not args.config:
                return _fail("equiforce train: give a config file or --resume RUN_DIR")
            config = load_config(args.config, args.overrides)
            run_dir = args.run_dir or Path("runs") / Path(args.config).stem
            if args.committee is not None:
                return _train_committee(config, run_dir, args)
            best = train(config, run_dir, progress=not args.quiet)
    except ConfigError as err:
        return _fail("\n".join(err.lines))
    except (DataError, RunDirError, CheckpointError, ValueError) as err:
        return _fail(f"error: {err}")
    final = json.loads((Path(best).parent / "final_metrics.json").read_text())
    interrupted = final.get("stop") == INTERRUPTED
    if launched_rank() == 0:  # under torchrun process 0 alone reports the result
        if interrupted:
            print(
                f"interrupted: continue with equiforce train --resume "
                f"{Path(best).parent}",
                file=sys.stderr,
            )
        else:
            print(best)
    return 130 if interrupted else 0


def _train_committee(config, run_dir: Path, args: argparse.Namespace) -> int:
    from equiforce.train.committee import train_committee

    bests, interrupted = train_committee(
        config, run_dir, args.committee, progress=not args.quiet
    )
    if interrupted:
        print(
            f"interrupted: continue with the same command ({len(bests)} of "
            f"{args.committee} members done)",
            file=sys.stderr,
        )
        return 130
    print(run_dir)
    return 0


def _eval(args: argparse.Namespace) -> int:
    from pydantic import ValidationError

    from equiforce.config import DataSource
    from equiforce.data.io import DataError
    from equiforce.models.checkpoint import CheckpointError
    from equiforce.train.evaluate import evaluate

    try:
        source = DataSource(
            path=args.data,
            format=args.format,
            index=args.index,
            energy_key=args.energy_key,
            forces_key=args.forces_key,
            energy_unit=args.energy_unit,
            force_unit=args.force_unit,
        )
    except ValidationError as err:
        return _fail(f"error: {err}")
    out = args.out or Path(args.model).resolve().parent / f"eval_{Path(args.data).stem}"
    try:
        evaluate(args.model, source, out, args.batch_size, args.device, not args.quiet)
    except (DataError, CheckpointError, ValueError) as err:
        return _fail(f"error: {err}")
    print(Path(out) / "metrics.json")
    return 0


def _learning_curve(args: argparse.Namespace) -> int:
    from equiforce.config import ConfigError, load_config
    from equiforce.data.io import DataError
    from equiforce.train.launch import RunDirError
    from equiforce.workflows.learning_curve import learning_curve

    try:
        sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    except ValueError:
        return _fail(f"--sizes: expected comma-separated integers, got {args.sizes!r}")
    if not sizes or min(sizes) <= 0:
        return _fail("--sizes: give at least one positive size")
    try:
        config = load_config(args.config, args.overrides)
        test = None
        if args.test:
            test = config.data.train.model_copy(
                update={"path": str(Path(args.test).resolve()), "index": ":"}
            )
        out = args.out or Path("runs") / f"{Path(args.config).stem}_learning_curve"
        learning_curve(config, sizes, out, test=test, progress=not args.quiet)
    except ConfigError as err:
        return _fail("\n".join(err.lines))
    except (DataError, RunDirError, ValueError) as err:
        return _fail(f"error: {err}")
    print(Path(out) / "learning_curve.csv")
    return 0
