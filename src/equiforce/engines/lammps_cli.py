"""``equiforce lammps IN_FILE``: run a LAMMPS input with ``pair_style equiforce``."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add ``equiforce lammps``."""
    p = subparsers.add_parser(
        "lammps",
        help="run a LAMMPS input whose pair style is equiforce (serial, fix external)",
        description=(
            "Run an ordinary LAMMPS input in which 'pair_style equiforce' and "
            "'pair_coeff * * MODEL.pt O H' (one element per atom type) name the "
            "model; they become 'pair_style zero <cutoff>' plus a fix external "
            "calling the model (docs/engines/lammps.md)."
        ),
    )
    p.add_argument("input", help="LAMMPS input script")
    p.add_argument("--model", help="model file replacing the one in pair_coeff")
    p.add_argument("--device", help="torch device (default: pair_style's or cpu)")
    p.add_argument("--dtype", choices=("float32", "float64"), help="compute dtype")
    p.add_argument("--skin", type=float, help="neighbour-list skin, Å")
    p.add_argument(
        "-v",
        "--var",
        nargs=2,
        action="append",
        default=[],
        metavar=("NAME", "VALUE"),
        help="LAMMPS index variable, as lmp -var NAME VALUE",
    )
    p.add_argument("--log", default="log.lammps", help="LAMMPS log ('none': no log)")
    p.add_argument("--quiet", action="store_true", help="no LAMMPS screen output")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    from equiforce.engines.lammps import run_input
    from equiforce.errors import EquiforceError

    try:
        run_input(
            args.input,
            args.model,
            variables=dict(args.var),
            log=None if args.log == "none" else args.log,
            screen=not args.quiet,
            device=args.device,
            dtype=args.dtype,
            skin=args.skin,
        )
    except Exception as err:
        # the lammps module raises a bare Exception("ERROR: ...") for input errors
        if type(err) is Exception and str(err).startswith("ERROR"):
            raise EquiforceError(f"{args.input}: LAMMPS {err}") from err
        raise
    return 0
