"""``equiforce`` command line: thin subcommands, each calling one library function.

Each area module exposes ``register(subparsers)``, which adds its subcommands and
sets ``func`` (a callable ``args -> int`` exit status) on each parser. Heavy
imports happen inside the handlers so that ``equiforce --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from equiforce.errors import (
    EXIT_USER_ERROR,
    EquiforceError,
    is_write_error,
    output_error,
)
from equiforce.version import __version__

#: Modules whose ``register`` adds subcommands, in the order shown by --help.
SUBCOMMAND_MODULES: tuple[str, ...] = (
    "equiforce.train.cli",  # train, eval, learning-curve
    "equiforce.train.uncertainty_cli",  # uncertainty fit
    "equiforce.md.cli",  # md
    "equiforce.md.relax_cli",  # relax
    "equiforce.workflows.cli",  # stability
    "equiforce.analysis.cli",  # analyze
    "equiforce.bench",  # bench
    "equiforce.engines.lammps_cli",  # lammps
    "equiforce.engines.export_cli",  # export
)


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser with every subcommand."""
    parser = argparse.ArgumentParser(
        prog="equiforce",
        description="Train equivariant interatomic potentials and run molecular dynamics.",
    )
    parser.add_argument(
        "--version", action="version", version=f"equiforce {__version__}"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in SUBCOMMAND_MODULES:
        importlib.import_module(name).register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``equiforce`` console script."""
    from equiforce.accel.denormals import flush_denormals
    from equiforce.accel.runtime import tune_allocator

    tune_allocator()
    flush_denormals()  # every command; EQUIFORCE_FLUSH_DENORMALS=0 opts out
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted: finished work was saved", file=sys.stderr)
        return 130
    except EquiforceError as err:  # the fault policy: message, exit 2
        print(f"error: {err}", file=sys.stderr)
        return EXIT_USER_ERROR
    except OSError as err:
        if not is_write_error(err):
            raise
        print(f"error: {output_error(err)}", file=sys.stderr)
        return EXIT_USER_ERROR


if __name__ == "__main__":
    sys.exit(main())
