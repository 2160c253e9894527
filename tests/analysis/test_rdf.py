"""RDF/h(r) and the analyze CLI."""

import argparse
import sys
from pathlib import Path

import numpy as np
from ase.build import bulk

sys.path.insert(0, str(Path(__file__).parents[1] / "md"))
from helpers import lj_cluster  # noqa: E402

from equiforce.analysis.rdf import h_of_r, hr_mae, rdf  # noqa: E402
from equiforce.md.config import MDConfig  # noqa: E402
from equiforce.md.forcefield import LennardJones  # noqa: E402
from equiforce.md.runner import run_md  # noqa: E402


def test_rdf_of_fcc_lattice_gives_12_nearest_neighbours():
    a = 3.6
    atoms = bulk("Cu", "fcc", a=a, cubic=True).repeat(3)
    pos = atoms.get_positions()[None]
    r, g = rdf(pos, atoms.cell[:], atoms.pbc, r_max=5.0, n_bins=500)
    first = r[np.argmax(g)]
    assert abs(first - a / np.sqrt(2)) < 0.01
    rho = len(atoms) / atoms.get_volume()
    dr = r[1] - r[0]
    shell = r < 0.5 * (a / np.sqrt(2) + a)
    coordination = np.sum(4 * np.pi * r[shell] ** 2 * g[shell] * rho * dr)
    assert abs(coordination - 12) < 0.2


def test_h_of_r_normalised_and_mae():
    pos = lj_cluster().get_positions()[None]
    r, h = h_of_r(pos)
    assert abs(h.sum() - 1) < 1e-12 and len(r) == 500
    _, h2 = h_of_r(pos * 1.1)
    assert hr_mae(h, h) == 0 and hr_mae(h, h2) > 0


def test_analyze_cli_writes_csv_and_png(tmp_path):
    from equiforce.analysis import cli

    cfg = MDConfig(
        ensemble="nve", temperature=20.0, timestep=5.0, steps=400, output_interval=2
    )
    run_md(LennardJones(), [lj_cluster()], cfg, tmp_path, progress=False)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    for kind, names in (
        ("vacf", ["vacf"]),
        ("spectrum", ["spectrum"]),
        ("rdf", ["hr"]),
    ):
        args = parser.parse_args(
            ["analyze", kind, str(tmp_path / "trajectory.xyz"), "--max-lag-fs", "1000"]
        )
        assert args.func(args) == 0
        for name in names:
            assert (tmp_path / f"trajectory_{name}.csv").exists()
            assert (tmp_path / f"trajectory_{name}.png").stat().st_size > 1000
    args = parser.parse_args(["analyze", "vacf", str(tmp_path / "missing.xyz")])
    assert args.func(args) == 2
