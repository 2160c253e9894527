"""equiforce models inside OpenMM: PythonForce adapter and the openmmml plugin.

Every comparison runs on OpenMM's Reference platform (double precision) with a
float64 model, so agreement is limited only by rounding.
"""

import copy
import importlib.metadata

import numpy as np
import openmm
import openmm.app as app
import pytest
import torch
from _openmm_systems import (
    context,
    energy_forces,
    ethanol,
    solvated_dipeptide,
    tiny_model,
    topology_of,
    water_box,
)
from ase import Atoms
from openmm import unit
from openmmml import MLPotential

from equiforce.calculator import EquiforceCalculator
from equiforce.engines.openmm import (
    EV_PER_A_TO_KJ_PER_MOL_NM,
    EV_TO_KJ_PER_MOL,
    create_force,
)
from equiforce.engines.openmm_entry import EquiforcePotentialImplFactory
from equiforce.models.checkpoint import CheckpointError, save_model


@pytest.fixture(autouse=True)
def _one_thread():
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@pytest.fixture(scope="module", autouse=True)
def _register():
    """The plugin as the installed entry point would register it."""
    MLPotential.registerImplFactory("equiforce", EquiforcePotentialImplFactory())


@pytest.fixture(scope="module")
def model():
    return tiny_model()


@pytest.fixture(scope="module")
def model_file(model, tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    save_model(model, path)
    return path


def reference(model, atoms: Atoms) -> tuple[float, np.ndarray]:
    """Energy (eV) and forces (eV/Å) from the ASE calculator."""
    atoms = atoms.copy()
    atoms.calc = EquiforceCalculator(model, compile=False)
    return atoms.get_potential_energy(), atoms.get_forces()


def assert_matches_calculator(ctx, model, atoms, groups=-1, subset=None):
    """OpenMM energy/forces (kJ/mol) equal the calculator's (eV) to 1e-5 relative."""
    e, f = energy_forces(ctx, groups)
    e_ref, f_ref = reference(model, atoms)
    f = f if subset is None else f[subset]
    np.testing.assert_allclose(e / EV_TO_KJ_PER_MOL, e_ref, rtol=1e-5)
    scale = np.abs(f_ref).max()
    assert scale > 0.1  # a model with no forces would pass anything
    np.testing.assert_allclose(
        f / EV_PER_A_TO_KJ_PER_MOL_NM, f_ref, rtol=1e-5, atol=1e-5 * scale
    )


# ------------------------------------------------------------------ (a)
def test_ethanol_energy_forces_equal_calculator(model_file, model):
    """MLPotential('equiforce', modelPath=...).createSystem matches ASE.

    Catches wrong unit factors (nm/Å, kJ/mol/eV), a lost atom order or a
    wrong element mapping (each changes the numbers far beyond 1e-5).
    """
    atoms = ethanol()
    system = MLPotential("equiforce", modelPath=str(model_file)).createSystem(
        topology_of(atoms), compile=False, device="cpu"
    )
    # masses from the topology's elements
    masses = [system.getParticleMass(i).value_in_unit(unit.dalton) for i in range(9)]
    np.testing.assert_allclose(masses, atoms.get_masses(), rtol=1e-3)
    assert_matches_calculator(context(system, atoms.positions), model, atoms)


def test_force_function_pickles(model):
    """copy.deepcopy(system) (XmlSerializer underneath) keeps a working model.

    OpenMM pickles the PythonForce's function; an unpicklable one makes
    deepcopy and XML serialisation of the System raise.
    """
    atoms = ethanol()
    system = openmm.System()
    for m in atoms.get_masses():
        system.addParticle(m)
    system.addForce(create_force(model, topology_of(atoms), compile=False))
    clone = copy.deepcopy(system)
    assert_matches_calculator(context(clone, atoms.positions), model, atoms)


# ------------------------------------------------------------------ (b)
def _nve_energy_fluctuation(system, atoms, dt_fs, time_fs, seed=3):
    ctx = context(system, atoms.positions, dt_fs)
    rng = np.random.default_rng(seed)
    m = atoms.get_masses()[:, None]
    kt = 0.0083144626 * 300  # kJ/mol at 300 K
    v = rng.normal(size=(len(atoms), 3)) * np.sqrt(kt / m)  # nm/ps
    ctx.setVelocities(v - (m * v).sum(0) / m.sum())
    energies = []
    for _ in range(int(round(time_fs / dt_fs))):
        ctx.getIntegrator().step(1)
        s = ctx.getState(getEnergy=True)
        energies.append(
            (s.getPotentialEnergy() + s.getKineticEnergy()).value_in_unit(
                unit.kilojoule_per_mole
            )
        )
    energies = np.array(energies)
    return energies.std(), energies


def test_nve_energy_error_scales_with_dt_squared(model):
    """Verlet with OpenMM + the model conserves energy to O(dt²).

    Forces that were not the gradient of the energy (a unit slip between the
    two, forces of the wrong atoms) give an error that does not shrink ~4x
    when the step halves.
    """
    atoms = ethanol()
    system = MLPotential("equiforce", model=model).createSystem(
        topology_of(atoms), compile=False, device="cpu", removeCMMotion=False
    )
    err_1, e1 = _nve_energy_fluctuation(system, atoms, 0.5, 60.0)
    err_2, e2 = _nve_energy_fluctuation(system, atoms, 0.25, 60.0)
    assert np.isfinite(e1).all() and np.isfinite(e2).all()
    assert err_1 > 1e-3  # the dynamics moved (kJ/mol)
    assert 3.0 < err_1 / err_2 < 5.5, (err_1, err_2)


# ------------------------------------------------------------------ (c)
@pytest.fixture(scope="module")
def dipeptide():
    return solvated_dipeptide(box_nm=1.7)


def _classical_ml_internal(system, ml):
    """Counts of bonded terms with every atom inside ``ml``, per force class."""
    counts = {}
    for f in system.getForces():
        if isinstance(f, openmm.HarmonicBondForce):
            terms = [f.getBondParameters(i)[:2] for i in range(f.getNumBonds())]
        elif isinstance(f, openmm.HarmonicAngleForce):
            terms = [f.getAngleParameters(i)[:3] for i in range(f.getNumAngles())]
        elif isinstance(f, openmm.PeriodicTorsionForce):
            terms = [f.getTorsionParameters(i)[:4] for i in range(f.getNumTorsions())]
        else:
            continue
        name = type(f).__name__
        counts[name] = sum(all(a in ml for a in t) for t in terms)
    return counts


def test_mixed_system_forces_are_model_plus_remaining_classical(dipeptide, model):
    """ML/MM (open boundaries): ML atoms feel model + ML–water classical forces.

    Expected forces, built without openmmml: the model on the peptide alone plus
    (classical forces in water − classical forces of the peptide alone in
    vacuum), i.e. only the peptide–water terms. Catches bonded or nonbonded
    peptide-internal classical terms left in (double counting), model forces
    scattered onto the wrong particles, and unit slips.
    """
    ff, solute_top, solute_pos, top, pos = dipeptide
    ml = list(range(solute_top.getNumAtoms()))
    mm = ff.createSystem(top, nonbondedMethod=app.NoCutoff, constraints=None)
    mixed = MLPotential("equiforce", model=model).createMixedSystem(
        top, mm, ml, compile=False, device="cpu"
    )
    # the peptide's bonded classical terms are gone, and only those
    before = _classical_ml_internal(mm, set(ml))
    after = _classical_ml_internal(mixed, set(ml))
    assert set(before) == {
        "HarmonicBondForce",
        "HarmonicAngleForce",
        "PeriodicTorsionForce",
    }
    assert all(n > 0 for n in before.values()) and all(n == 0 for n in after.values())

    _, f_mixed = energy_forces(context(mixed, pos * 10))
    _, f_full = energy_forces(context(mm, pos * 10))
    vacuum = ff.createSystem(solute_top, nonbondedMethod=app.NoCutoff, constraints=None)
    _, f_alone = energy_forces(context(vacuum, solute_pos * 10))
    peptide = Atoms(
        numbers=[a.element.atomic_number for a in solute_top.atoms()],
        positions=pos[ml] * 10,
    )
    _, f_model = reference(model, peptide)
    expected = f_model * EV_PER_A_TO_KJ_PER_MOL_NM + f_full[ml] - f_alone
    scale = np.abs(expected).max()
    np.testing.assert_allclose(f_mixed[ml], expected, rtol=1e-6, atol=1e-6 * scale)
    # water keeps exactly its classical forces minus the peptide-internal ones:
    # the ML Force adds nothing to non-ML atoms
    np.testing.assert_allclose(
        f_mixed[len(ml) :], f_full[len(ml) :], rtol=1e-6, atol=1e-6 * scale
    )


def test_mixed_periodic_pme_runs_and_model_sees_images(dipeptide, model):
    """Periodic ML/MM with PME: a few Langevin steps, then the ML group's forces.

    The solvated box is shifted so the peptide straddles a box face: OpenMM may
    hand the ML atoms wrapped into the box, and only a periodic model call
    (box vectors from the State) gives the intact molecule's forces.
    """
    ff, solute_top, _, top, pos = dipeptide
    ml = list(range(solute_top.getNumAtoms()))
    mm = ff.createSystem(
        top, nonbondedMethod=app.PME, nonbondedCutoff=0.7 * unit.nanometer
    )
    mixed = MLPotential("equiforce", model=model).createMixedSystem(
        top, mm, ml, forceGroup=1, compile=False, device="cpu"
    )
    box = np.diag(np.asarray(top.getPeriodicBoxVectors().value_in_unit(unit.nanometer)))
    shifted = pos - pos[ml].mean(0)  # peptide at a corner
    integrator = openmm.LangevinMiddleIntegrator(300, 1.0, 0.0005)
    integrator.setRandomNumberSeed(1)
    ctx = openmm.Context(
        mixed, integrator, openmm.Platform.getPlatformByName("Reference")
    )
    ctx.setPositions(shifted)
    openmm.LocalEnergyMinimizer.minimize(ctx, 50.0, 50)
    integrator.step(10)
    state = ctx.getState(
        getPositions=True,
        getEnergy=True,
        getForces=True,
        groups={1},
        enforcePeriodicBox=False,
    )
    assert np.isfinite(
        state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
    )
    now = np.asarray(state.getPositions(asNumpy=True).value_in_unit(unit.nanometer))
    f = np.asarray(
        state.getForces(asNumpy=True).value_in_unit(
            unit.kilojoule_per_mole / unit.nanometer
        )
    )
    assert not np.any(f[len(ml) :])  # the ML Force touches only the ML atoms
    peptide = Atoms(
        numbers=[a.element.atomic_number for a in solute_top.atoms()],
        positions=now[ml] * 10,
        cell=np.diag(box) * 10,
        pbc=True,
    )
    # the peptide really straddles a face of the box
    assert (now[ml] < 0).any() and (now[ml] > 0).any()
    e_ref, f_ref = reference(model, peptide)
    np.testing.assert_allclose(
        state.getPotentialEnergy().value_in_unit(unit.kilojoule_per_mole)
        / EV_TO_KJ_PER_MOL,
        e_ref,
        rtol=1e-5,
    )
    np.testing.assert_allclose(
        f[ml] / EV_PER_A_TO_KJ_PER_MOL_NM,
        f_ref,
        rtol=1e-5,
        atol=1e-5 * np.abs(f_ref).max(),
    )


# ------------------------------------------------------------------ (d)
def test_periodic_water_box_equals_calculator(model):
    """A whole-system periodic water box: OpenMM box vectors reach the model.

    27 waters in a 9.3 Å box with a 5 Å cutoff: many pairs cross the box faces,
    so ignoring the box (or misreading nm as Å) changes energy and forces.
    """
    atoms, top = water_box(27)
    system = MLPotential("equiforce", model=model).createSystem(
        top, compile=False, device="cpu"
    )
    assert system.usesPeriodicBoundaryConditions()
    ctx = context(system, atoms.positions)
    assert_matches_calculator(ctx, model, atoms)
    open_e, _ = reference(
        model, Atoms(numbers=atoms.numbers, positions=atoms.positions)
    )
    e, _ = energy_forces(ctx)
    assert abs(e / EV_TO_KJ_PER_MOL - open_e) > 1e-3  # the box matters here


# ------------------------------------------------------------------ (e)
def test_element_the_model_lacks_names_the_atom(tmp_path):
    """A model trained on H, C, O refuses a chlorine, naming atom and element."""
    trained = tiny_model(e0={1: -13.6, 6: -1029.0, 8: -2041.0})
    path = tmp_path / "hco.pt"
    save_model(trained, path)
    atoms = Atoms("CH3Cl", positions=np.random.default_rng(0).normal(0, 1.0, (5, 3)))
    with pytest.raises(
        ValueError, match=r"atom 4 \(Cl4 of residue MOL.*Cl \(Z=17\).*H, C, O"
    ):
        MLPotential("equiforce", modelPath=str(path)).createSystem(topology_of(atoms))


def test_atom_without_element_is_refused(model):
    top = topology_of(ethanol())
    top.addAtom("EP", None, next(top.residues()))  # a virtual site
    with pytest.raises(ValueError, match=r"atom 9 \(EP of residue MOL.*no element"):
        create_force(model, top)


@pytest.mark.parametrize("content", [b"not a model", None])
def test_file_that_is_not_a_model(tmp_path, content):
    """Garbage bytes and a torch file of another dict: the error names the file."""
    path = tmp_path / "other.pt"
    if content is None:
        torch.save({"weights": torch.zeros(3)}, path)
    else:
        path.write_bytes(content)
    with pytest.raises(CheckpointError, match="other.pt.*not"):
        MLPotential("equiforce", modelPath=str(path))


def test_needs_a_model():
    with pytest.raises(ValueError, match="modelPath"):
        MLPotential("equiforce")


# ---------------------------------------------------------- entry point
def test_entry_point_registered():
    """openmmml finds the plugin through its entry point group.

    Needs the package (re)installed after pyproject.toml gained the entry point.
    """
    eps = importlib.metadata.entry_points(group="openmmml.potentials")
    ep = {e.name: e for e in eps}.get("equiforce")
    assert ep is not None, "reinstall equiforce: no openmmml.potentials entry point"
    assert ep.load() is EquiforcePotentialImplFactory


# ------------------------------------------------------------ benchmark
def test_benchmark_md_steps_per_second(model_file):
    """benchmarks/engine_openmm.py's entry point runs on a model file."""
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "engine_openmm.py"
    spec = importlib.util.spec_from_file_location("bench_engine_openmm", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    rate = bench.md_steps_per_second(
        model_file, ethanol(), 5, platform="Reference", warmup=2, compile=False
    )
    assert np.isfinite(rate) and rate > 0
