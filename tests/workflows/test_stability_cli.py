"""``equiforce stability`` end to end with a saved tiny model."""

import argparse

from ase.build import molecule
from ase.io import write
from helpers import tiny_so3krates

from equiforce.workflows import cli


def _parser():
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser


def test_stability_cli_writes_table(tmp_path, capsys):
    tiny_so3krates().save(tmp_path / "model.pt")
    write(tmp_path / "ethanol.xyz", [molecule("CH3CH2OH")] * 2)
    args = _parser().parse_args(
        [
            "stability",
            "--model",
            str(tmp_path / "model.pt"),
            "--structure",
            str(tmp_path / "ethanol.xyz"),
            "--ensemble",
            "nhc",
            "--timestep",
            "0.25",
            "--steps",
            "10",
            "--output-interval",
            "5",
            "--temperatures",
            "100,200",
            "--seeds",
            "2",
            "--out",
            str(tmp_path / "st"),
            "--no-progress",
        ]
    )
    assert args.func(args) == 0
    rows = (tmp_path / "st" / "summary.csv").read_text().splitlines()
    assert rows[0].startswith("temperature_K,n_runs,stable_fraction") and len(rows) == 3
    assert "stable" in capsys.readouterr().out
