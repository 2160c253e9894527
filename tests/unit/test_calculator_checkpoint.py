import numpy as np
import pytest
import torch
from ase import Atoms, units
from ase.calculators.test import gradient_test
from ase.md.verlet import VelocityVerlet

import equiforce
from equiforce.models.checkpoint import CheckpointError
from equiforce.testing import TINY_SO3KRATES

SMALL = TINY_SO3KRATES


@pytest.fixture
def model():
    return equiforce.build_model("so3krates", dtype=torch.float64, **SMALL)


def test_ase_gradient_check(model, ethanol_test):
    atoms = equiforce.read(ethanol_test, index="0", energy_unit="kcal/mol")[0]
    atoms.calc = equiforce.EquiforceCalculator(model, compile=False)
    f, fnum = gradient_test(atoms)
    assert np.abs(f - fnum).max() < 1e-4
    assert atoms.get_potential_energies().sum() == pytest.approx(
        atoms.get_potential_energy()
    )


def test_ase_stress_matches_numerical(model):
    atoms = Atoms(
        "C2O",
        positions=[[0, 0, 0], [1.2, 0.3, 0.1], [0.4, 1.3, 1.0]],
        cell=[[3.1, 0.2, 0], [0.1, 3.3, 0.2], [0.2, 0.1, 2.9]],
        pbc=True,
    )
    atoms.calc = equiforce.EquiforceCalculator(model, compile=False)
    s = atoms.get_stress()
    s_num = atoms.calc.calculate_numerical_stress(atoms, d=1e-5)
    np.testing.assert_allclose(s, s_num, atol=1e-7)


def test_neighbour_list_reuse_with_skin(model, ethanol_test):
    atoms = equiforce.read(ethanol_test, index="0", energy_unit="kcal/mol")[0]
    calc = equiforce.EquiforceCalculator(model, skin=1.0, compile=False)
    fresh = equiforce.EquiforceCalculator(model, skin=0.0, compile=False)
    atoms.calc = calc
    dyn = VelocityVerlet(atoms, 0.5 * units.fs)
    for _ in range(5):
        dyn.run(2)
        f_reused = atoms.get_forces()
        np.testing.assert_allclose(
            f_reused, fresh.get_property("forces", atoms), atol=1e-10
        )
    assert calc.n_rebuilds < 5


def test_checkpoint_loads_with_weights_only_and_by_path(model, tmp_path, ethanol_test):
    path = tmp_path / "m.pt"
    model.save(path, statistics={"note": "test"})
    payload = torch.load(path, weights_only=True)
    assert payload["format_version"] == 1 and payload["statistics"] == {"note": "test"}
    atoms = equiforce.read(ethanol_test, index="0", energy_unit="kcal/mol")[0]
    atoms.calc = equiforce.EquiforceCalculator(path, compile=False)
    e_path = atoms.get_potential_energy()
    atoms.calc = equiforce.EquiforceCalculator(model, compile=False)
    assert e_path == pytest.approx(atoms.get_potential_energy(), abs=1e-12)


def test_truncated_and_foreign_checkpoints_give_clear_errors(model, tmp_path):
    path = tmp_path / "m.pt"
    model.save(path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="not a readable equiforce checkpoint"):
        equiforce.load_model(path)
    foreign = tmp_path / "foreign.pt"
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="not an equiforce checkpoint"):
        equiforce.load_model(foreign)
    with pytest.raises(CheckpointError, match="does not exist"):
        equiforce.load_model(tmp_path / "missing.pt")


def test_unknown_model_and_preset_names():
    with pytest.raises(ValueError, match="did you mean 'so3krates'"):
        equiforce.build_model("so3kratez")
    with pytest.raises(ValueError, match="preset"):
        equiforce.build_model("so3krates", "defualt")
    with pytest.raises(ValueError, match="num_feature"):
        equiforce.build_model("so3krates", num_feature=12)
