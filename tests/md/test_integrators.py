"""Physics of the integrators with analytic potentials (fast, float64)."""

import numpy as np
import pytest
import torch
from helpers import lj_cluster, tethered_gas

from equiforce.md.forcefield import LennardJones
from equiforce.md.integrators import (
    CSVR,
    Langevin,
    NoseHooverChain,
    VelocityVerlet,
    conserved_energy,
)
from equiforce.md.state import (
    maxwell_boltzmann,
    remove_angular_momentum,
    replicate,
    state_from_atoms,
)
from equiforce.nn.scatter import scatter_sum
from equiforce.units import KB_EV


def _nve_energy_std(dt: float, time_fs: float = 400.0) -> float:
    state = state_from_atoms([lj_cluster()])
    maxwell_boltzmann(state, 30.0, torch.Generator().manual_seed(1))
    lj, integ = LennardJones(), VelocityVerlet(dt)
    integ.init(state, lj)
    energies = []
    for _ in range(int(time_fs / dt)):
        integ.step(state, lj)
        energies.append(float(conserved_energy(state)[0]))
    return float(np.std(energies)), float(np.std(energies)) / 1.0


def test_maxwell_boltzmann_zero_momenta_and_exact_temperature():
    state = state_from_atoms([lj_cluster(), lj_cluster(seed=3)])
    maxwell_boltzmann(state, 300.0, torch.Generator().manual_seed(0))
    p_tot = scatter_sum(state.momenta, state.system_idx, 2)
    assert torch.allclose(p_tot, torch.zeros_like(p_tot), atol=1e-10)
    before = state.momenta.clone()
    remove_angular_momentum(state)  # already zero: nothing changes
    assert torch.allclose(before, state.momenta, atol=1e-10)
    assert torch.allclose(
        state.temperature(), torch.full((2,), 300.0, dtype=torch.float64)
    )
    assert torch.all(state.dof == 3 * 7 - 6)


def test_nve_lj_energy_error_scales_with_dt_squared():
    std_dt, _ = _nve_energy_std(4.0)
    std_half, _ = _nve_energy_std(2.0)
    assert std_dt < 1e-4  # eV, vs kinetic energy ~ 0.02 eV
    assert 3.0 < std_dt / std_half < 5.0


def _lj_replicas(integ, n_steps=4000, burn=800, temperature=25.0):
    """16 Ar7 clusters (bound at 25 K); returns kinetic energies (T, 16) and dof."""
    state = replicate(state_from_atoms([lj_cluster()]), 16)
    maxwell_boltzmann(state, temperature, torch.Generator().manual_seed(2))
    lj = LennardJones()
    integ.init(state, lj)
    e0 = conserved_energy(state).clone()
    kin = []
    for i in range(n_steps):
        integ.step(state, lj)
        if i >= burn:
            kin.append(state.kinetic_energy().clone())
    drift = (conserved_energy(state) - e0).abs().max().item()
    return torch.stack(kin).numpy(), float(state.dof[0]), drift


@pytest.mark.parametrize(
    "integ",
    [
        Langevin(5.0, 25.0, seed=0, friction=0.01),
        CSVR(5.0, 25.0, seed=0, taut=100.0),
        NoseHooverChain(5.0, 25.0, tdamp=200.0, chain_length=3),
    ],
    ids=["langevin", "csvr", "nhc"],
)
def test_thermostat_reproduces_canonical_kinetic_energy(integ):
    kin, nf, drift = _lj_replicas(integ)
    kt = KB_EV * 25.0
    mean_ref, var_ref = 0.5 * nf * kt, 0.5 * nf * kt**2  # Gamma(nf/2, kT)
    # ~16 x 100 independent samples: 1σ ≈ 0.6 % (mean), 4 % (variance)
    assert abs(kin.mean() / mean_ref - 1) < 0.03
    assert abs(kin.var() / var_ref - 1) < 0.15
    # the conserved quantity (E + thermostat energy) stays constant
    assert drift < 0.01 * mean_ref


def test_langevin_harmonic_equipartition():
    """BAOAB samples x exactly for harmonic springs even at ω·dt ≈ 0.5: <k x²> = 3 kT.

    (Its kinetic temperature carries an O(dt²) bias, ~5 % here, by design.)
    """
    atoms, state, force = tethered_gas(64, 2)
    maxwell_boltzmann(
        state,
        300.0,
        torch.Generator().manual_seed(2),
        remove_com=False,
        remove_rotation=False,
    )
    integ = Langevin(4.0, 300.0, seed=0, friction=0.05)
    integ.init(state, force)
    kin, x2 = [], []
    for i in range(6000):
        integ.step(state, force)
        if i >= 500:
            kin.append(float(state.kinetic_energy().mean()))
            d2 = (force.k * (state.positions - force.reference) ** 2).sum()
            x2.append(float(d2) / state.n_atoms)
    kt = KB_EV * 300.0
    assert abs(np.mean(kin) / (1.5 * 64 * kt) - 1) < 0.1
    assert abs(np.mean(x2) / (3 * kt) - 1) < 0.03


def test_csvr_with_long_tau_is_nearly_nve_and_tracks_heat():
    state = state_from_atoms([lj_cluster()])
    maxwell_boltzmann(state, 30.0, torch.Generator().manual_seed(1))
    integ, lj = CSVR(2.0, 30.0, seed=3, taut=100.0), LennardJones()
    integ.init(state, lj)
    e0 = conserved_energy(state).clone()
    for _ in range(500):
        integ.step(state, lj)
    assert abs(float(state.extra["heat"][0])) > 1e-4  # the thermostat did work
    assert abs(float(conserved_energy(state)[0] - e0[0])) < 1e-4


def test_replicas_batched_equal_single_runs():
    single = state_from_atoms([lj_cluster()])
    maxwell_boltzmann(single, 50.0, torch.Generator().manual_seed(4))
    batch = replicate(single, 3)
    lj = LennardJones()
    for st in (single, batch):
        integ = VelocityVerlet(2.0)
        integ.init(st, lj)
        for _ in range(200):
            integ.step(st, lj)
    for r in range(3):
        assert torch.allclose(
            batch.positions[r * 7 : (r + 1) * 7], single.positions, atol=1e-12
        )
