"""Relaxation: ASE optimisers over equiforce models, cell filter, CLI."""

import argparse
import json

import numpy as np
import pytest
from ase import Atoms
from ase.build import bulk, molecule
from ase.io import read, write
from helpers import morse_model, tiny_so3krates

from equiforce.calculator import EquiforceCalculator
from equiforce.md import relax_cli
from equiforce.md.relax import relax


def _max_force(atoms, calc) -> float:
    fresh = atoms.copy()
    fresh.calc = calc
    return float(np.linalg.norm(fresh.get_forces(), axis=1).max())


def _energy(atoms, calc) -> float:
    a = atoms.copy()
    a.calc = calc
    return a.get_potential_energy()


@pytest.mark.parametrize("optimizer", ["fire", "bfgs", "lbfgs"])
def test_distorted_ethanol_relaxes_with_an_equiforce_model(optimizer, tmp_path):
    """An equiforce model with a minimum (a Morse term) through
    EquiforceCalculator: every optimiser reaches max |F| < 0.01 eV/Å from a
    distorted ethanol, checked with a fresh calculator without list reuse (fails
    if the optimiser's forces are stale or the run stops early), and the files
    agree with the result."""
    model = morse_model(r0=1.3)
    atoms = molecule("CH3CH2OH")
    atoms.rattle(0.1, seed=2)
    fresh = EquiforceCalculator(model, skin=0.0, compile=False)
    assert _max_force(atoms, fresh) > 1.0  # really distorted
    result, final = relax(
        atoms,
        EquiforceCalculator(model, compile=False),
        optimizer=optimizer,
        fmax=0.01,
        steps=3000,
        out_dir=tmp_path,
        progress_every=None,
    )
    assert result.converged and not result.cell_relaxed
    assert _max_force(final, fresh) < 0.01
    assert result.energy < _energy(atoms, fresh)
    summary = json.loads((tmp_path / "relax.json").read_text())
    assert summary["converged"] and summary["steps"] == result.steps
    frames = read(tmp_path / "relax_trajectory.xyz", ":")
    assert len(frames) == result.steps + 1  # the start and every step
    np.testing.assert_allclose(
        read(tmp_path / "final.xyz").positions, final.positions, atol=1e-8
    )


def test_strained_crystal_relaxes_its_cell_to_zero_stress():
    """fcc crystal of a Morse model, strained anisotropically: the cell filter
    brings the stress to ~0 and the lattice back to cubic at the lattice
    constant of an independent energy scan (fails without the cell degrees
    of freedom, or with a wrong stress sign or volume factor)."""
    model = morse_model(r0=3.0, depth=0.05)
    calc = EquiforceCalculator(model, compile=False)
    scan = np.linspace(3.8, 4.4, 25)
    energies = [_energy(bulk("Ar", "fcc", a=a, cubic=True), calc) for a in scan]
    k = int(np.argmin(energies))
    fit = np.polyfit(scan[k - 2 : k + 3], energies[k - 2 : k + 3], 2)
    a_scan = -fit[1] / (2 * fit[0])
    atoms = bulk("Ar", "fcc", a=a_scan, cubic=True)
    atoms.set_cell(atoms.cell @ np.diag([1.06, 0.97, 1.0]), scale_atoms=True)
    atoms.rattle(0.02, seed=3)
    strained = EquiforceCalculator(model, compile=False)
    atoms.calc = strained
    stress0 = np.abs(atoms.get_stress()).max()
    result, final = relax(atoms, calc, fmax=1e-4, steps=2000, progress_every=None)
    assert result.converged and result.cell_relaxed
    stress = np.abs(np.asarray(result.stress)).max()
    # FrechetCellFilter's cell "force" is V·σ/N: fmax bounds |σ| by fmax·N/V
    assert stress < 1e-4 * len(final) / final.get_volume() < 0.01 * stress0
    np.testing.assert_allclose(final.cell.lengths(), [a_scan] * 3, atol=2e-3)
    np.testing.assert_allclose(final.cell.angles(), [90.0] * 3, atol=0.05)


def test_cell_relaxation_of_an_open_structure_is_refused():
    with pytest.raises(ValueError, match="periodic in 3-D"):
        relax(molecule("H2O"), EquiforceCalculator(morse_model(1.0)), cell=True)


def _parser():
    parser = argparse.ArgumentParser()
    relax_cli.register(parser.add_subparsers())
    return parser


def test_relax_cli_exit_codes_and_out_policy(tmp_path):
    """Not converged -> 1 with files; a non-empty --out is refused (2) unless
    --overwrite; converged -> 0; a non-model file -> 2 naming it."""
    tiny_so3krates().save(tmp_path / "model.pt")
    write(tmp_path / "ethanol.xyz", molecule("CH3CH2OH"))
    out = tmp_path / "run"
    base = [
        "relax",
        str(tmp_path / "ethanol.xyz"),
        "--model",
        str(tmp_path / "model.pt"),
    ]
    base += ["--out", str(out), "--quiet"]
    args = _parser().parse_args([*base, "--steps", "2", "--fmax", "1e-9"])
    assert args.func(args) == 1
    summary = json.loads((out / "relax.json").read_text())
    assert not summary["converged"] and summary["steps"] == 2
    assert (out / "final.xyz").exists() and (out / "relax_trajectory.xyz").exists()
    args = _parser().parse_args([*base, "--fmax", "100"])
    assert args.func(args) == 2  # refused: out exists and is not empty
    args = _parser().parse_args([*base, "--fmax", "100", "--overwrite"])
    assert args.func(args) == 0
    (tmp_path / "bad.pt").write_text("not a model")
    bad = _parser().parse_args(
        ["relax", str(tmp_path / "ethanol.xyz"), "--model", str(tmp_path / "bad.pt"),
         "--out", str(tmp_path / "x")]
    )  # fmt: skip
    assert bad.func(bad) == 2


def test_relax_cli_relaxes_periodic_cells_by_default(tmp_path, capsys):
    tiny_so3krates().save(tmp_path / "model.pt")
    write(
        tmp_path / "c.xyz",
        Atoms("C2", [[0, 0, 0], [1.2, 1.1, 0.9]], cell=[3.5] * 3, pbc=True),
    )
    args = _parser().parse_args(
        ["relax", str(tmp_path / "c.xyz"), "--model", str(tmp_path / "model.pt"),
         "--out", str(tmp_path / "o"), "--steps", "1"]
    )  # fmt: skip
    args.func(args)
    summary = json.loads((tmp_path / "o" / "relax.json").read_text())
    assert summary["cell_relaxed"] and summary["stress"] is not None
    assert "relax step" in capsys.readouterr().out  # progress lines
