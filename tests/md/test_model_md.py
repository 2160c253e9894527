"""MD with a tiny So3krates: neighbour-list reuse, NVE, ASE agreement, batching."""

import numpy as np
import pytest
import torch
from ase import units
from ase.build import bulk, molecule
from helpers import tiny_so3krates

from equiforce.md.forcefield import ModelForceField
from equiforce.md.integrators import VelocityVerlet, conserved_energy
from equiforce.md.state import maxwell_boltzmann, state_from_atoms


@pytest.fixture(scope="module")
def model():
    return tiny_so3krates()


def test_skin_reuse_gives_same_forces_as_fresh_list(model):
    state = state_from_atoms([molecule("CH3CH2OH"), molecule("H2O")])
    maxwell_boltzmann(state, 600.0, torch.Generator().manual_seed(0))
    reused = ModelForceField(model, skin=0.1, compile=False)
    integ = VelocityVerlet(0.5)
    integ.init(state, reused)
    for _ in range(40):
        integ.step(state, reused)
        fresh = ModelForceField(model, skin=0.0, compile=False)
        e, f = fresh(state)
        assert torch.allclose(state.forces, f, atol=1e-10, rtol=0)
        assert torch.allclose(state.energy, e, atol=1e-10, rtol=0)
    assert 1 < reused.n_builds < 40  # the list was reused and also rebuilt


def test_skin_reuse_periodic(model):
    atoms = bulk("Cu", "fcc", a=3.6, cubic=True).repeat(2)
    atoms.rattle(0.05, seed=1)
    state = state_from_atoms([atoms])
    ff, moved = ModelForceField(model, skin=0.4, compile=False), state.positions.clone()
    ff(state)
    state.positions = moved + 0.15 * torch.randn(
        moved.shape, dtype=moved.dtype, generator=torch.Generator().manual_seed(3)
    )
    state.positions.clamp_(
        moved - 0.19, moved + 0.19
    )  # < skin/2 along each axis? check:
    disp = (state.positions - moved).norm(dim=-1).max()
    e1, f1 = ff(state)
    e2, f2 = ModelForceField(model, skin=0.0, compile=False)(state)
    assert ff.n_builds == (1 if disp < 0.2 else 2)
    assert torch.allclose(f1, f2, atol=1e-10) and torch.allclose(e1, e2, atol=1e-10)


def _nve_std(model, dt, time_fs=30.0):
    state = state_from_atoms([molecule("CH3CH2OH")])
    maxwell_boltzmann(state, 50.0, torch.Generator().manual_seed(1))
    ff, integ = ModelForceField(model, skin=0.5, compile=False), VelocityVerlet(dt)
    integ.init(state, ff)
    e, k = [], []
    for _ in range(int(time_fs / dt)):
        integ.step(state, ff)
        e.append(float(conserved_energy(state)[0]))
        k.append(float(state.kinetic_energy()[0]))
    return np.std(e), np.std(k)


def test_nve_so3krates_energy_error_scales_with_dt_squared(model):
    std_1, k_1 = _nve_std(model, 0.5)
    std_2, _ = _nve_std(model, 0.25)
    assert std_1 < 0.05 * k_1  # conserved far better than the kinetic energy fluctuates
    assert 3.0 < std_1 / std_2 < 5.0


def test_native_verlet_matches_ase_velocity_verlet(model):
    calc_mod = pytest.importorskip("equiforce.calculator")
    from ase.md.verlet import VelocityVerlet as AseVV

    atoms = molecule("CH3CH2OH")
    state = state_from_atoms([atoms])
    maxwell_boltzmann(state, 300.0, torch.Generator().manual_seed(5))
    atoms.set_velocities(state.velocities.numpy() / units.fs)
    atoms.calc = calc_mod.EquiforceCalculator(model, dtype=torch.float64, compile=False)
    ase_md = AseVV(atoms, timestep=0.5 * units.fs)
    ff, integ = ModelForceField(model, skin=0.5, compile=False), VelocityVerlet(0.5)
    integ.init(state, ff)
    for _ in range(25):
        ase_md.run(1)
        integ.step(state, ff)
        np.testing.assert_allclose(
            state.positions.numpy(), atoms.get_positions(), atol=1e-9
        )
        np.testing.assert_allclose(
            state.velocities.numpy(), atoms.get_velocities() * units.fs, atol=1e-9
        )
    assert abs(float(state.energy[0]) - atoms.get_potential_energy()) < 1e-8


def test_batched_model_md_equals_single_runs(model):
    systems = [molecule("CH3CH2OH"), molecule("CH4")]
    batch = state_from_atoms(systems)
    maxwell_boltzmann(batch, 300.0, torch.Generator().manual_seed(0))
    singles = []
    for s, atoms in enumerate(systems):
        st = state_from_atoms([atoms])
        st.momenta = batch.momenta[batch.system_idx == s].clone()
        singles.append(st)
    for st in [batch, *singles]:
        ff, integ = ModelForceField(model, skin=0.3, compile=False), VelocityVerlet(0.5)
        integ.init(st, ff)
        for _ in range(20):
            integ.step(st, ff)
    for s, st in enumerate(singles):
        sel = batch.system_idx == s
        assert torch.allclose(batch.positions[sel], st.positions, atol=1e-10)
        assert torch.allclose(batch.energy[s], st.energy[0], atol=1e-10)


@pytest.mark.slow
def test_compiled_force_field_matches_eager(model):
    state = state_from_atoms([molecule("CH3CH2OH")])
    maxwell_boltzmann(state, 300.0, torch.Generator().manual_seed(0))
    eager = ModelForceField(model, skin=0.5, compile=False)
    compiled = ModelForceField(model, skin=0.5, compile=True)
    integ = VelocityVerlet(0.5)
    integ.init(state, compiled)
    for _ in range(30):
        integ.step(state, compiled)
        e, f = eager(state)
        assert torch.allclose(state.forces, f, atol=1e-9)
        assert torch.allclose(state.energy, e, atol=1e-9)
