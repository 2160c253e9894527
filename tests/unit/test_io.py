import numpy as np
import pytest
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write

import equiforce
from equiforce.data.io import DataError
from equiforce.units import energy_factor


def test_rmd17_npz_is_converted_to_ev(ethanol_train):
    raw = np.load(ethanol_train)
    frames = equiforce.read(ethanol_train, index="0:3", energy_unit="kcal/mol")
    assert len(frames) == 3
    kcal = energy_factor("kcal/mol")
    assert frames[1].get_potential_energy() == pytest.approx(raw["energies"][1] * kcal)
    np.testing.assert_allclose(frames[2].get_forces(), raw["forces"][2] * kcal)
    assert frames[0].get_chemical_formula() == "C2H6O"


def test_isolated_atoms_extxyz(isolated_atoms):
    frames = equiforce.read(isolated_atoms)
    e0 = {a.get_chemical_symbols()[0]: a.get_potential_energy() for a in frames}
    assert e0["H"] == pytest.approx(-13.568422383046626)


def write_npz(tmp_path, **arrays):
    path = tmp_path / "d.npz"
    np.savez(path, **arrays)
    return path


def good_arrays(n_frames=2, n=3):
    rng = np.random.default_rng(0)
    pos = np.array([[0, 0, 0], [1.0, 0, 0], [0, 1.0, 0]])[None].repeat(n_frames, 0)
    return {
        "R": pos + rng.normal(0, 0.01, pos.shape),
        "z": np.array([8, 1, 1]),
        "E": rng.normal(size=(n_frames, 1)),
        "F": rng.normal(size=(n_frames, n, 3)),
    }


def test_sgdml_and_hartree_bohr_units(tmp_path):
    arr = good_arrays()
    path = write_npz(tmp_path, **arr)
    frames = equiforce.read(
        path, energy_unit="Hartree", force_unit="Hartree/Bohr", length_unit="Angstrom"
    )
    assert frames[0].get_potential_energy() == pytest.approx(
        arr["E"][0, 0] * 27.211386, rel=1e-6
    )


@pytest.mark.parametrize(
    ("mutate", "field", "frame"),
    [
        (lambda a: a.__setitem__("z", np.array([8, 1, 200])), "atomic_numbers", 0),
        (lambda a: a["R"].__setitem__((1, 2, 0), np.nan), "positions", 1),
        (lambda a: a["R"].__setitem__((1, 2), a["R"][1, 1] + 0.01), "positions", 1),
        (lambda a: a["F"].__setitem__((0, 0, 0), np.inf), "forces", 0),
    ],
    ids=["unknown-element", "nan-coordinate", "overlapping-atoms", "inf-force"],
)
def test_bad_frames_name_file_frame_and_field(tmp_path, mutate, field, frame):
    arr = good_arrays()
    mutate(arr)
    path = write_npz(tmp_path, **arr)
    with pytest.raises(DataError) as err:
        equiforce.read(path)
    msg = str(err.value)
    assert str(path) in msg and f"frame {frame}" in msg and field in msg


def test_mismatched_force_shape(tmp_path):
    arr = good_arrays()
    arr["F"] = arr["F"][:, :2]
    path = write_npz(tmp_path, **arr)
    with pytest.raises(DataError, match="forces"):
        equiforce.read(path)


def test_missing_forces_when_required(tmp_path):
    arr = good_arrays()
    del arr["F"]
    path = write_npz(tmp_path, **arr)
    assert len(equiforce.read(path)) == 2
    with pytest.raises(DataError, match="frame 0: forces: missing"):
        equiforce.read(path, require=("energy", "forces"))


def test_unknown_unit_and_missing_file(tmp_path, ethanol_train):
    with pytest.raises(DataError, match="unknown energy unit 'kcal'"):
        equiforce.read(ethanol_train, energy_unit="kcal")
    with pytest.raises(DataError, match="does not exist"):
        equiforce.read(tmp_path / "nope.xyz")


def test_extxyz_empty_structure_and_zero_volume_cell(tmp_path):
    empty = tmp_path / "empty.xyz"
    write(empty, [Atoms("H2", positions=[[0, 0, 0], [0.8, 0, 0]]), Atoms()])
    with pytest.raises(DataError, match="frame 1: positions: empty"):
        equiforce.read(empty)
    flat = tmp_path / "flat.xyz"
    a = Atoms(
        "H2", positions=[[0, 0, 0], [0.8, 0, 0]], cell=[[2, 0, 0], [0, 2, 0], [0, 0, 0]]
    )
    a.pbc = [True, True, False]
    write(flat, a)
    # a flat cell periodic in x, y only is fine; periodic in z it is degenerate
    assert len(equiforce.read(flat)) == 1
    b = a.copy()
    b.pbc = True
    write(flat, b)
    with pytest.raises(DataError, match="cell: zero-volume"):
        equiforce.read(flat)


def test_extxyz_custom_info_and_array_keys(tmp_path):
    a = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [0, 0.96, 0]])
    a.info["REF_energy"] = -14.5
    a.arrays["REF_forces"] = np.ones((3, 3))
    path = tmp_path / "ref.xyz"
    write(path, a)
    (b,) = equiforce.read(path, energy_key="REF_energy", forces_key="REF_forces")
    assert b.get_potential_energy() == -14.5
    np.testing.assert_array_equal(b.get_forces(), np.ones((3, 3)))


def test_extxyz_calculator_results_and_stress(tmp_path):
    a = Atoms(
        "Si2", positions=[[0, 0, 0], [1.3, 1.3, 1.3]], cell=np.eye(3) * 5.4, pbc=True
    )
    a.calc = SinglePointCalculator(
        a, energy=-10.0, forces=np.zeros((2, 3)), stress=np.arange(6.0)
    )
    path = tmp_path / "si.xyz"
    write(path, a)
    (b,) = equiforce.read(path)
    np.testing.assert_allclose(b.get_stress(), np.arange(6.0))
