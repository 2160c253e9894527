"""``equiforce md`` end to end with a saved tiny model."""

import argparse

from ase.build import molecule
from ase.io import write
from helpers import tiny_so3krates

from equiforce.data.trajectory import read_trajectory
from equiforce.md import cli


def _parser():
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    return parser


def test_md_cli_runs_and_resumes(tmp_path):
    tiny_so3krates().save(tmp_path / "model.pt")
    write(tmp_path / "ethanol.xyz", molecule("CH3CH2OH"))
    (tmp_path / "md.yaml").write_text(
        "md:\n  compile: false\n  output_interval: 5\n"
        "  stability:\n    enabled: false\n"
    )
    common = [
        "md",
        "--model",
        str(tmp_path / "model.pt"),
        "--structure",
        str(tmp_path / "ethanol.xyz"),
        "--config",
        str(tmp_path / "md.yaml"),
        "--ensemble",
        "csvr",
        "--temperature",
        "50",
        "--timestep",
        "0.25",
        "--out",
        str(tmp_path / "run"),
        "--no-progress",
    ]
    args = _parser().parse_args([*common, "--steps", "10"])
    assert args.func(args) == 0
    args = _parser().parse_args([*common, "--steps", "20", "--resume"])
    assert args.func(args) == 0
    traj = read_trajectory(tmp_path / "run" / "trajectory.xyz")
    assert list(traj.step) == [0, 5, 10, 15, 20]
    bad = _parser().parse_args(
        [*common[:-3], "--steps", "-3", "--out", str(tmp_path / "x")]
    )
    assert bad.func(bad) == 2
