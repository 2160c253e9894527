"""``equiforce md`` subcommand (thin wrapper) and the MD flags it shares.

:func:`add_md_flags` and :func:`load_inputs` are reused by the stability study's
command (:mod:`equiforce.workflows.cli`).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_md_flags(p: argparse.ArgumentParser) -> None:
    """Add the flags of one MD run (model, structure, md.yaml and its overrides)."""
    p.add_argument(
        "--model",
        required=True,
        type=Path,
        help="model checkpoint (.pt); a committee: its run directory "
        "(member_<k>/best.pt) or comma-separated files",
    )
    p.add_argument(
        "--structure",
        required=True,
        type=Path,
        help="initial structure(s), any readable format",
    )
    p.add_argument(
        "--config", type=Path, default=None, help="md.yaml (flags override it)"
    )
    p.add_argument(
        "--ensemble", choices=("nve", "langevin", "csvr", "nhc", "npt"), default=None
    )
    p.add_argument("--pressure", type=float, default=None, help="NPT target, bar")
    p.add_argument("--taup", type=float, default=None, help="NPT barostat time, fs")
    p.add_argument(
        "--barostat", choices=("isotropic", "anisotropic"), default=None, help="NPT"
    )
    p.add_argument("--temperature", type=float, default=None, help="K")
    p.add_argument("--timestep", type=float, default=None, help="fs")
    p.add_argument("--steps", type=int, default=None)
    p.add_argument(
        "--time-ps", type=float, default=None, help="simulated time instead of --steps"
    )
    p.add_argument(
        "--output-interval", type=int, default=None, help="steps between frames"
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument(
        "--frame", type=int, default=None, help="frame of --structure to start from"
    )
    p.add_argument(
        "--replicas", type=int, default=None, help="independent replicas in one batch"
    )
    p.add_argument("--device", default=None)
    p.add_argument(
        "--format",
        dest="trajectory_format",
        choices=("auto", "extxyz", "hdf5"),
        default=None,
    )
    p.add_argument(
        "--max-force-std",
        type=float,
        default=None,
        metavar="EV_A",
        help="ensemble models: act when a frame's largest per-atom force std "
        "exceeds this, eV/Å (docs/uncertainty.md)",
    )
    p.add_argument(
        "--uncertainty-action",
        choices=("stop", "flag"),
        default=None,
        help="above --max-force-std: stop the run (default) or flag the frame",
    )
    p.add_argument("--no-progress", action="store_true")


def register(subparsers) -> None:
    """Add ``md``."""
    p = subparsers.add_parser("md", help="molecular dynamics with a trained model")
    add_md_flags(p)
    p.add_argument("--out", type=Path, default=Path("md_run"), help="output folder")
    p.add_argument(
        "--resume", action="store_true", help="continue from OUT/md_state.pt"
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="replace an earlier run's outputs in OUT (default: refuse)",
    )
    add_charge_flags(p)
    p.set_defaults(func=_md)


def add_charge_flags(p: argparse.ArgumentParser) -> None:
    """``--charge`` and ``--spin`` (models with those inputs, e.g. SO3LR)."""
    p.add_argument(
        "--charge", type=float, default=None, help="total charge, e (default: the "
        "structure file's info['charge'], else 0); models such as --model so3lr",
    )  # fmt: skip
    p.add_argument(
        "--spin", type=float, default=None, help="total spin S (default: the file's "
        "info['spin'], else 0)",
    )  # fmt: skip


def _config(args: argparse.Namespace):
    from equiforce.md.config import load_md_config
    from equiforce.md.uncertainty import uncertainty_overrides

    return load_md_config(
        args.config,
        ensemble=args.ensemble,
        temperature=getattr(args, "temperature", None),
        pressure=getattr(args, "pressure", None),
        taup=getattr(args, "taup", None),
        barostat=getattr(args, "barostat", None),
        timestep=args.timestep,
        steps=args.steps,
        time_ps=args.time_ps,
        output_interval=args.output_interval,
        seed=args.seed,
        frame=args.frame,
        n_replicas=args.replicas,
        device=args.device,
        trajectory_format=args.trajectory_format,
        **uncertainty_overrides(args),
    )


def load_inputs(args: argparse.Namespace):
    """(config, model, structures) or raise a ValueError with a clear message."""
    from equiforce.data.io import read
    from equiforce.md.uncertainty import load_md_model

    config = _config(args)
    dtype = None
    if config.model_dtype is not None:
        import torch

        dtype = getattr(torch, config.model_dtype)
    model = load_md_model(args.model, config, dtype)
    structures = read(args.structure)
    if not -len(structures) <= config.frame < len(structures):
        raise ValueError(
            f"{args.structure}: frame {config.frame} out of range "
            f"({len(structures)} frames)"
        )
    return config, model, structures


def _md(args) -> int:
    from equiforce.md.forcefield import set_total_charge
    from equiforce.md.runner import run_md

    try:
        config, model, structures = load_inputs(args)
        atoms = structures[config.frame]
        set_total_charge(atoms, model, args.charge, args.spin)
    except ValueError as err:  # ConfigError, DataError, CheckpointError
        print(f"error: {err}", file=sys.stderr)
        return 2
    atoms.calc = None
    import torch

    from equiforce.accel.runtime import free_cores

    torch.set_num_threads(config.threads or free_cores())
    result = run_md(
        model,
        [atoms],
        config,
        args.out,
        resume=args.resume,
        progress=not args.no_progress,
        overwrite=args.overwrite,
    )
    print(
        f"{result.steps_done} steps in {result.wall_s:.1f} s: "
        f"{result.steps_per_s:.1f} steps/s, "
        f"{result.ns_per_day:.3f} ns/day; outputs in {args.out}"
    )
    for e in result.events:
        print(
            f"unstable: system {e.system} at {e.time_fs / 1000:.3f} ps "
            f"(step {e.step}): {e.reason}"
        )
    if result.stop_reason:
        print(f"stopped: {result.stop_reason}")
        return 1
    if result.interrupted:
        print(f"interrupted at step {result.steps_done}; continue with --resume")
        return 130
    return 0 if result.stable else 1
