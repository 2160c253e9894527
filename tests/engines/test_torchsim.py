"""equiforce models inside torch-sim: contract, ASE agreement, stress, MD, FIRE.

A tiny untrained (nonzero readout) So3krates in float64 stands in for a trained
model: every check below compares against an independent reference (ASE's
calculator and optimizer, finite differences, equipartition, Verlet's order), so
the model's weights do not matter.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.build import bulk, molecule
from ase.optimize import FIRE
from ase.stress import voigt_6_to_full_3x3_stress

ts = pytest.importorskip("torch_sim")

from torch_sim.models.interface import validate_model_outputs  # noqa: E402
from torch_sim.units import MetalUnits  # noqa: E402

from equiforce.bench import water_positions  # noqa: E402
from equiforce.calculator import EquiforceCalculator  # noqa: E402
from equiforce.engines.torchsim import TorchSimModel  # noqa: E402
from equiforce.models.checkpoint import CheckpointError  # noqa: E402
from equiforce.testing import tiny_so3krates  # noqa: E402

CPU = torch.device("cpu")
F64 = torch.float64
FS = MetalUnits.time * 1e-3  # 1 fs in torch-sim's metal time unit
KB = float(MetalUnits.temperature)  # eV/K


@pytest.fixture(scope="module")
def model():
    return tiny_so3krates()


def _ts(model, **kwargs) -> TorchSimModel:
    return TorchSimModel(model, compile=False, **kwargs)


def _molecules(names=("H2O", "NH3", "CH4", "CH3CH2OH"), rattle=0.05) -> list[Atoms]:
    mols = []
    for i, name in enumerate(names):
        atoms = molecule(name)
        atoms.rattle(rattle, seed=i)
        mols.append(atoms)
    return mols


def _periodic() -> list[Atoms]:
    """Two periodic cells with non-symmetric (sheared) lattices.

    A non-symmetric cell makes a row/column mix-up of torch-sim's column cell
    change the neighbour list and the stress, so the comparisons below see it.
    """
    pos, z, _ = water_positions(8, seed=2)
    water = Atoms(
        numbers=z,
        positions=pos + 1.0,
        cell=[[6.4, 0.0, 0.0], [0.8, 6.3, 0.0], [-0.5, 0.6, 6.5]],
        pbc=True,
    )
    si = bulk("Si", "diamond", a=5.43, cubic=True)
    si.set_cell(si.cell.array @ [[1, 0, 0], [0.1, 1, 0], [0, -0.15, 1]], True)
    for i, atoms in enumerate((water, si)):
        atoms.rattle(0.05, seed=10 + i)
    return [water, si]


# ------------------------------------------------------------------ contract
def test_torch_sim_validator_passes(model):
    # fails on a wrong output key or shape, a mutated input, or a batched result
    # that differs from the single-system one (torch-sim's own Si + Fe check)
    adapter = _ts(model, compute_forces=False, compute_stress=False)
    validate_model_outputs(adapter, CPU, F64)
    assert adapter.compute_forces and adapter.compute_stress  # the validator set them
    assert adapter.device == CPU and adapter.dtype == F64


def test_flags_select_outputs(model):
    state = ts.io.atoms_to_state(_molecules(), CPU, F64)
    full = _ts(model)(state)
    energy_only = _ts(model, compute_forces=False, compute_stress=False)(state)
    assert set(full) == {"energy", "forces", "stress"}
    assert set(energy_only) == {"energy"}
    torch.testing.assert_close(energy_only["energy"], full["energy"])
    assert torch.all(full["stress"] == 0)  # open systems: no stress


def test_state_dict_input_equals_sim_state(model):
    # torch-sim also passes plain dicts; pbc as one flag, (3,) or per-system flags
    state = ts.io.atoms_to_state(_periodic(), CPU, F64)
    ref = _ts(model)(state)
    fields = ("positions", "cell", "atomic_numbers", "system_idx")
    for pbc in (True, torch.tensor([True] * 3), torch.ones(2, 3, dtype=torch.bool)):
        out = _ts(model)({**{k: getattr(state, k) for k in fields}, "pbc": pbc})
        for key in ref:
            torch.testing.assert_close(out[key], ref[key])


def test_float32_model_returns_float32(model):
    adapter = TorchSimModel(model, dtype=torch.float32, compile=False)
    state = ts.io.atoms_to_state(_periodic(), CPU, torch.float32)
    out = adapter(state)
    assert adapter.dtype == torch.float32
    assert all(v.dtype == torch.float32 for v in out.values())


def test_repartitioned_batch_rebuilds_the_graph(model):
    # torch-sim's autobatcher swaps systems in and out: the same atoms at the same
    # places may come back split into other systems; fails if the neighbour graph
    # of the old partition (edges across the new system boundary) is reused
    mols = _molecules(("H2O", "H2O"), rattle=0.0)
    mols[1].positions += [2.5, 0.0, 0.0]  # within the cutoff of the first
    state = ts.io.atoms_to_state(mols, CPU, F64)
    adapter = _ts(model)
    adapter(state)
    state.system_idx = torch.tensor([0, 0, 0, 0, 1, 1])  # O H H O | H H
    fresh = _ts(model)(state)
    again = adapter(state)
    torch.testing.assert_close(again["energy"], fresh["energy"])
    torch.testing.assert_close(again["forces"], fresh["forces"])


# ------------------------------------------------------------------ bad input
def test_unknown_element_is_named(model):
    state = ts.io.atoms_to_state(_molecules(), CPU, F64)
    state.atomic_numbers[5] = 0  # edited in place after a good call
    adapter = _ts(model)
    with pytest.raises(ValueError, match=r"atom 5: element Z=0"):
        adapter(state)


def test_untrained_element_of_a_checkpoint_is_named(model, tmp_path):
    path = tmp_path / "m.pt"
    model.save(path, statistics={"e0": {"1": -13.6, "8": -2041.0}})
    adapter = TorchSimModel(path, compile=False)
    adapter(ts.io.atoms_to_state(_molecules(("H2O",)), CPU, F64))  # H, O: fine
    state = ts.io.atoms_to_state(_molecules(("H2O", "CH4")), CPU, F64)
    with pytest.raises(ValueError, match=r"Z=6 \(C\).*knows H, O"):
        adapter(state)


def test_foreign_file_is_named(tmp_path):
    bad = tmp_path / "not_a_model.pt"
    torch.save({"weights": torch.zeros(3)}, bad)
    with pytest.raises(CheckpointError, match="not_a_model.pt: not an equiforce"):
        TorchSimModel(bad)
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(CheckpointError, match="notes.txt: not a readable"):
        TorchSimModel(text)
    with pytest.raises(TypeError, match="PotentialModel"):
        TorchSimModel(torch.nn.Linear(3, 1))


# ------------------------------------------------------------ ASE agreement
@pytest.mark.parametrize("systems", [_molecules, _periodic], ids=["open", "periodic"])
def test_batch_equals_ase_calculator(model, systems):
    # fails on a batching error (atoms given to the wrong system), a cell given
    # as columns, a stress sign or Voigt mix-up, or a unit conversion
    atoms_list = systems()
    out = _ts(model)(ts.io.atoms_to_state(atoms_list, CPU, F64))
    start = 0
    for i, atoms in enumerate(atoms_list):
        atoms.calc = EquiforceCalculator(model, dtype=F64, compile=False)
        n = len(atoms)
        e_ref = atoms.get_potential_energy()
        f_ref = atoms.get_forces()
        np.testing.assert_allclose(out["energy"][i].item(), e_ref, rtol=1e-5)
        f = out["forces"][start : start + n].numpy()
        np.testing.assert_allclose(f, f_ref, rtol=1e-5, atol=1e-5 * np.abs(f_ref).max())
        if atoms.pbc.any():
            s_ref = voigt_6_to_full_3x3_stress(atoms.get_stress())
            s = out["stress"][i].numpy()
            np.testing.assert_allclose(
                s, s_ref, rtol=1e-5, atol=1e-5 * np.abs(s_ref).max()
            )
        start += n


def test_stress_is_volume_normalised_strain_derivative(model):
    # torch-sim defines stress as (1/V) dE/dε (quantities.get_pressure); fails on a
    # sign flip, a missing 1/V or a transposed cell
    atoms_list = _periodic()
    adapter = _ts(model, skin=0.0)
    stress = adapter(ts.io.atoms_to_state(atoms_list, CPU, F64))["stress"]
    h = 1e-5
    for a, b in [(0, 0), (1, 1), (2, 2), (0, 1), (0, 2), (1, 2)]:
        eps = np.zeros((3, 3))
        eps[a, b] = eps[b, a] = 0.5 * h if a != b else h
        energies = []
        for sign in (1, -1):
            strained = []
            for atoms in atoms_list:
                s = atoms.copy()
                deform = np.eye(3) + sign * eps
                s.set_cell(atoms.cell.array @ deform, scale_atoms=False)
                s.positions = atoms.positions @ deform
                strained.append(s)
            state = ts.io.atoms_to_state(strained, CPU, F64)
            energies.append(adapter(state)["energy"])
        volume = torch.tensor([abs(np.linalg.det(x.cell.array)) for x in atoms_list])
        fd = (energies[0] - energies[1]) / (2 * h) / volume
        torch.testing.assert_close(stress[:, a, b], fd, rtol=1e-5, atol=1e-7)


# ---------------------------------------------------------------------- MD
def test_langevin_brings_each_system_to_its_own_temperature(model):
    # three systems start cold (5 K) with targets 150, 300 and 600 K; fails on a
    # dt/kT unit error, on per-system targets mixed up across the batch, or on
    # forces that heat or blow up the systems
    mols = _molecules(("CH4", "NH3", "CH3CH2OH"), rattle=0.0)
    adapter = _ts(model, compute_stress=False)
    state = ts.io.atoms_to_state(mols, CPU, F64)
    targets = torch.tensor([150.0, 300.0, 600.0], dtype=F64)
    dt = torch.tensor(0.5 * FS, dtype=F64)
    init, step = ts.integrators.nvt_langevin(
        adapter, dt=dt, kT=targets * KB, gamma=torch.tensor(1 / (5 * FS)), seed=3
    )
    state = init(state, kT=torch.full((3,), 5.0 * KB, dtype=F64), seed=3)
    temps = []
    for i in range(1600):
        state = step(state)
        if i >= 400:  # 200 fs = 40 thermostat times to equilibrate
            temps.append(
                ts.quantities.calc_temperature(
                    masses=state.masses,
                    momenta=state.momenta,
                    system_idx=state.system_idx,
                )
            )
    mean = torch.stack(temps).mean(0)
    # equipartition over 1,200 steps. NH3 has 12 degrees of freedom, so its
    # instantaneous T scatters by √(2/12) ≈ 41 %; with a 5 fs thermostat time the
    # kinetic energy decorrelates in ~5 steps, ~120 independent samples: error of
    # the mean ≈ 4 %, and 15 % is ~4σ (with 20 fs it was ~10 %, and bit-level
    # differences between runs, e.g. flushed subnormals, moved NH3 to 350 K)
    torch.testing.assert_close(mean, targets, rtol=0.15, atol=0)
    assert torch.all(mean.argsort() == torch.arange(3))


def _relaxed(adapter, mols, fmax) -> "ts.SimState":
    """torch-sim's batched FIRE down to max |F| < fmax, as a plain SimState.

    (A FireState would carry FIRE's velocities into an MD init as momenta.)
    """
    out = ts.optimize(
        system=ts.io.atoms_to_state(mols, CPU, F64),
        model=adapter,
        optimizer=ts.optimizers.fire,
        convergence_fn=ts.runners.generate_force_convergence_fn(
            force_tol=fmax, include_cell_forces=False
        ),
        max_steps=2000,
    )
    return ts.SimState(
        positions=out.positions,
        masses=out.masses,
        cell=out.cell,
        pbc=out.pbc,
        atomic_numbers=out.atomic_numbers,
        system_idx=out.system_idx,
    )


def _nve_std(model, dt_fs: float, time_fs: float = 30.0) -> tuple[torch.Tensor, ...]:
    """Standard deviations (n_systems,) of the total and the kinetic energy.

    Ethanol and methane start at a minimum of the model (the untrained model's
    forces at ASE's geometries are eV/Å), so 50 K stays a small, smooth motion.
    """
    adapter = _ts(model, compute_stress=False)
    state = _relaxed(adapter, _molecules(("CH3CH2OH", "CH4")), fmax=0.01)
    init, step = ts.integrators.nve(
        adapter, dt=torch.tensor(dt_fs * FS, dtype=F64), kT=torch.tensor(50.0 * KB)
    )
    state = init(state, seed=1)
    total, kin = [], []
    for _ in range(round(time_fs / dt_fs)):
        state = step(state)
        kinetic = ts.quantities.calc_kinetic_energy(
            masses=state.masses, momenta=state.momenta, system_idx=state.system_idx
        )
        total.append(state.energy + kinetic)
        kin.append(kinetic)
    return torch.stack(total).std(0), torch.stack(kin).std(0)


def test_nve_energy_error_shrinks_fourfold_when_dt_halves(model):
    # velocity Verlet is second order: the conserved-energy fluctuation scales
    # with dt²; fails on forces inconsistent with the energy (wrong sign, a
    # stale neighbour list, a force/energy unit mismatch), which give first-order
    # drift or no convergence at all, in either system of the batch
    coarse, kinetic = _nve_std(model, 0.5)
    fine, _ = _nve_std(model, 0.25)
    ratio = coarse / fine
    assert torch.all((ratio > 3.0) & (ratio < 5.0)), ratio
    # conserved far better than the kinetic energy fluctuates
    assert torch.all(coarse < 0.05 * kinetic), (coarse, kinetic)


# -------------------------------------------------------------------- FIRE
def test_batched_fire_matches_ase_fire_one_by_one(model):
    # the batch relaxes together; fails if a system stops unconverged, if
    # forces point the wrong way (no descent), or if torch-sim reaches other
    # minima than ASE's FIRE from the same start
    mols = _molecules()
    adapter = _ts(model, compute_stress=False)
    relaxed = _relaxed(adapter, mols, fmax=0.01)
    final = adapter(relaxed)  # recomputed, not the optimizer's stored values
    norms = final["forces"].norm(dim=-1)  # (n_atoms,)
    f_max = torch.stack(
        [norms[relaxed.system_idx == i].max() for i in range(len(mols))]
    )
    assert torch.all(f_max < 0.01), f_max
    for i, atoms in enumerate(mols):
        atoms.calc = EquiforceCalculator(model, dtype=F64, compile=False)
        start = atoms.get_potential_energy()
        FIRE(atoms, logfile=None).run(fmax=0.01, steps=2000)
        e_ase = atoms.get_potential_energy()
        assert start - e_ase > 0.3  # a real relaxation, not a no-op
        # both stop at |F| < 0.01 eV/Å: energies agree to ~F²/k, far below 1 meV
        assert abs(final["energy"][i].item() - e_ase) < 1e-3


# --------------------------------------------------------------- benchmark
def test_benchmark_functions_run(model):
    # benchmarks/engine_torchsim.py is called by benchmarks/engines.py; fails if
    # its functions break or its FIRE comparison stops comparing like with like
    path = Path(__file__).resolve().parents[2] / "benchmarks" / "engine_torchsim.py"
    spec = importlib.util.spec_from_file_location("bench_engine_torchsim", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    mols = bench.small_molecules(3)
    assert len(mols) == 3 and all(3 <= len(m) <= 12 for m in mols)
    relax = bench.relax_speedup(model, mols[:2], rounds=1)
    assert relax["torchsim_converged"] == relax["ase_converged"] == 2
    assert relax["max_energy_diff_ev"] < 1e-3 and relax["speedup"] > 0
    assert bench.md_steps_per_second(model, mols[0], 5, compile=False, warmup=2) > 0
    overhead = bench.adapter_overhead(model, molecule("CH3CH2OH"), calls=3)
    assert overhead["n_builds"] == 1  # 1e-4 Å moves stay inside the skin
