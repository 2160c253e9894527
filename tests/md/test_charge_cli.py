"""``equiforce md/relax --model so3lr --charge Q --spin S`` on a small anion.

The potential energy the MD engine reports at step 0 must be SO3LR's energy
of the structure at charge Q (the ASE calculator with ``info['charge']`` as
reference); catches a charge that never reaches the model (then the run is
neutral and the energies differ by eV).
"""

import argparse
import csv
import json

import pytest
import torch
from ase.build import molecule
from ase.io import write
from helpers import tiny_so3krates

from equiforce import structures
from equiforce.calculator import EquiforceCalculator
from equiforce.md import cli, relax_cli
from equiforce.models.registry import load_model


def _parser(module):
    parser = argparse.ArgumentParser()
    module.register(parser.add_subparsers())
    return parser


@pytest.fixture(scope="module")
def acetate(tmp_path_factory):
    """Acetate (CH3COO⁻) as a .pdb: a format without a charge field."""
    torch.set_num_threads(1)
    atoms = structures.acetate()
    path = tmp_path_factory.mktemp("acetate") / "acetate.pdb"
    write(path, atoms)
    return path


def _energy(path, charge: float, spin: float = 0.0) -> float:
    from ase.io import read

    atoms = read(path)
    atoms.info.update(charge=charge, spin=spin)
    atoms.calc = EquiforceCalculator(load_model("so3lr"), compile=False)
    return float(atoms.get_potential_energy())


def _md_energy(acetate, out, *flags) -> float:
    args = _parser(cli).parse_args(
        ["md", "--model", "so3lr", "--structure", str(acetate), "--steps", "2",
         "--output-interval", "1", "--out", str(out), "--no-progress", *flags]
    )  # fmt: skip
    assert args.func(args) == 0
    rows = list(csv.DictReader((out / "thermo.csv").open()))
    return float(rows[0]["potential_eV"])


def test_md_charge_reaches_so3lr(acetate, tmp_path):
    e_charged = _md_energy(acetate, tmp_path / "q", "--charge", "-1", "--spin", "0")
    e_neutral = _md_energy(acetate, tmp_path / "n")
    assert e_charged == pytest.approx(_energy(acetate, -1.0), abs=1e-3)
    assert e_neutral == pytest.approx(_energy(acetate, 0.0), abs=1e-3)
    assert abs(e_charged - e_neutral) > 0.1  # SO3LR: the charge changes the energy


def test_relax_takes_charge(acetate, tmp_path):
    args = _parser(relax_cli).parse_args(
        ["relax", str(acetate), "--model", "so3lr", "--charge", "-1", "--steps", "0",
         "--out", str(tmp_path / "r"), "--quiet"]
    )  # fmt: skip
    args.func(args)  # 0 steps: not converged (exit 1), the energy is written
    energy = json.loads((tmp_path / "r" / "relax.json").read_text())["energy"]
    assert energy == pytest.approx(_energy(acetate, -1.0), abs=1e-3)


def test_charge_for_a_model_without_charge_input(tmp_path, capsys):
    """--charge to a model that ignores it is refused (exit 2) naming the flag."""
    tiny_so3krates().save(tmp_path / "model.pt")
    write(tmp_path / "w.xyz", molecule("H2O"))
    args = _parser(cli).parse_args(
        ["md", "--model", str(tmp_path / "model.pt"), "--structure",
         str(tmp_path / "w.xyz"), "--steps", "1", "--out", str(tmp_path / "o"),
         "--charge", "1"]
    )  # fmt: skip
    assert args.func(args) == 2
    assert "--charge: model" in capsys.readouterr().err
