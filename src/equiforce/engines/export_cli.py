"""``equiforce export``: write a model as a file that runs with torch alone."""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    """Add ``equiforce export``."""
    p = subparsers.add_parser(
        "export",
        help="write a model as a TorchScript or AOTInductor file (torch only)",
        description=(
            "Write MODEL's energy, forces, per-atom energies and virial over a "
            "caller-supplied neighbour list as a file that loads with torch alone "
            "(docs/engines/export.md)."
        ),
    )
    p.add_argument("model", help="equiforce model file (checkpoint)")
    p.add_argument(
        "--format", required=True, choices=("torchscript", "aoti"), dest="fmt"
    )
    p.add_argument("--out", required=True, help="file to write (.pt / .pt2)")
    p.add_argument(
        "--dtype", choices=("float32", "float64"), help="default: the model's"
    )
    p.add_argument(
        "--elements",
        help="elements the file accepts, e.g. H,C,O (default: the training data's)",
    )
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    import torch

    from equiforce.engines.export import export_model, parse_elements

    # ExportError and CheckpointError are EquiforceErrors: equiforce.cli.main
    # prints them and exits 2
    elements = parse_elements(args.elements) if args.elements else None
    dtype = getattr(torch, args.dtype) if args.dtype else None
    result = export_model(
        args.model, args.fmt, args.out, dtype=dtype, elements=elements
    )
    meta = result.metadata
    print(
        f"wrote {result.path} ({args.fmt}, {meta['dtype']}, cutoff "
        f"{meta['cutoff']} Å, elements {','.join(meta['element_symbols'])}) in "
        f"{result.trace_seconds + result.build_seconds:.1f} s"
    )
    return 0
