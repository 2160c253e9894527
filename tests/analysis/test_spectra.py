"""VACF and spectra: analytic cosine, harmonic triatomic normal modes."""

import numpy as np
import torch

from equiforce.analysis.spectrum import (
    cosine_overlap,
    find_peaks_cm,
    power_spectrum,
    wasserstein_1,
)
from equiforce.analysis.vacf import autocorrelation, vacf
from equiforce.md.forcefield import HarmonicBonds
from equiforce.md.integrators import VelocityVerlet
from equiforce.md.state import maxwell_boltzmann, state_from_atoms
from equiforce.units import AMU_A2_PER_FS2_TO_EV, C_CM_PER_FS


def test_unbiased_autocorrelation_matches_direct_sum():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(50, 2))
    c = autocorrelation(x, max_lag=10)
    for lag in (0, 3, 10):
        direct = np.mean(x[: 50 - lag] * x[lag:], axis=0)
        np.testing.assert_allclose(c[lag], direct, rtol=1e-10)


def test_vacf_of_cosine_returns_its_frequency():
    nu0, dt = 1000.0, 1.0  # cm⁻¹, fs; period 33.356 fs
    t = np.arange(8000) * dt
    v = np.cos(2 * np.pi * C_CM_PER_FS * nu0 * t + 0.3)
    vel = np.zeros((len(t), 2, 3))
    vel[:, 0, 0], vel[:, 1, 2] = v, -v  # zero total momentum with equal masses
    c = vacf(vel, masses=np.array([1.0, 1.0]), max_lag=2000)
    assert c[0] == 1.0
    spec = power_spectrum(c, dt)
    peak = spec.wavenumber[np.argmax(spec.intensity)]
    assert abs(peak - nu0) < spec.resolution_cm
    assert abs(spec.nyquist_cm - 16678) < 1
    # mass weighting changes relative heights: heavier atom's line dominates
    v2 = np.cos(2 * np.pi * C_CM_PER_FS * 2500.0 * t)
    vel2 = np.zeros((len(t), 4, 3))  # heavy pair at 1,000 cm⁻¹, light pair at 2,500
    vel2[:, 0, 0], vel2[:, 1, 0], vel2[:, 2, 1], vel2[:, 3, 1] = v, -v, v2, -v2
    masses = np.array([10.0, 10.0, 1.0, 1.0])
    s_w = power_spectrum(vacf(vel2, masses, 2000), dt)
    s_u = power_spectrum(vacf(vel2, masses, 2000, mass_weighted=False), dt)
    h = lambda s, nu: s.intensity[np.argmin(abs(s.wavenumber - nu))]  # noqa: E731
    assert h(s_w, 1000) / h(s_w, 2500) > 9 * h(s_u, 1000) / h(s_u, 2500)


def _normal_modes_cm(force, state):
    """Harmonic wavenumbers from a finite-difference Hessian."""
    pos0 = state.positions.clone()
    n = pos0.numel()
    hess = np.zeros((n, n))
    for a in range(n):
        for sign in (1, -1):
            state.positions = pos0.clone()
            state.positions.view(-1)[a] += sign * 1e-4
            hess[a] -= sign * force(state)[1].view(-1).numpy() / 2e-4
    state.positions = pos0
    m = np.repeat(state.masses.numpy(), 3)
    lam = np.linalg.eigvalsh(hess / np.sqrt(np.outer(m, m)))
    omega = np.sqrt(lam[lam > 1e-6] / AMU_A2_PER_FS2_TO_EV)  # rad/fs
    return np.sort(omega / (2 * np.pi * C_CM_PER_FS))


def test_spectrum_of_harmonic_triatomic_matches_normal_modes():
    from ase import Atoms

    mol = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    state = state_from_atoms([mol])
    pairs = torch.tensor([[0, 1], [0, 2], [1, 2]])
    d0 = (state.positions[pairs[:, 1]] - state.positions[pairs[:, 0]]).norm(dim=-1)
    force = HarmonicBonds(
        pairs, torch.tensor([45.0, 45.0, 8.0], dtype=torch.float64), d0
    )
    modes = _normal_modes_cm(force, state)
    assert len(modes) == 3
    maxwell_boltzmann(state, 50.0, torch.Generator().manual_seed(0))
    integ, dt = VelocityVerlet(0.25), 0.25
    integ.init(state, force)
    vel, pos = [], []
    for i in range(32000):
        integ.step(state, force)
        if i % 4 == 0:
            vel.append(state.velocities.numpy().copy())
            pos.append(state.positions.numpy().copy())
    c = vacf(np.array(vel), state.masses.numpy(), max_lag=1500, positions=np.array(pos))
    spec = power_spectrum(c, 4 * dt)
    peaks = [p for p, _ in find_peaks_cm(spec, rel_height=0.02)]
    for mode in modes:
        assert min(abs(np.array(peaks) - mode)) < spec.resolution_cm, (modes, peaks)
    # comparison metrics: identical spectra overlap fully, shifted ones do not
    assert (
        wasserstein_1(spec, spec) < 1e-9 and abs(cosine_overlap(spec, spec) - 1) < 1e-9
    )
    from equiforce.analysis.spectrum import Spectrum

    shifted = Spectrum(
        spec.wavenumber + 100.0, spec.intensity, spec.dt_fs, spec.max_lag_fs
    )
    assert 85.0 < wasserstein_1(spec, shifted, hi=8000.0) < 110.0


def _cosine_spectrum(nu0: float, dt: float, n_lags: int, **kw):
    tau = np.arange(n_lags) * dt
    return power_spectrum(np.cos(2 * np.pi * C_CM_PER_FS * nu0 * tau), dt, **kw)


def test_pure_cosine_has_one_line_without_side_lobes():
    # zero padding placed after the mirrored negative lags made the halves interfere:
    # side lobes of 74-97 % of the peak and a peak list full of artefacts
    spec = _cosine_spectrum(1000.0, 1.0, 1001)
    y, nu = spec.intensity / spec.intensity.max(), spec.wavenumber
    main = abs(nu - 1000.0) < 2 * spec.resolution_cm  # the Hann main lobe
    assert abs(nu[np.argmax(y)] - 1000.0) < 0.25 * spec.resolution_cm
    assert y[~main & (nu < 8000)].max() < 0.06  # Hann side lobes: ~3 %
    assert [round(p) for p, _ in find_peaks_cm(spec)] == [round(nu[np.argmax(y)])]


def test_damped_oscillation_gives_a_lorentzian_of_the_right_width():
    # C = exp(-τ/T) cos(ωτ) has a Lorentzian line of FWHM 1/(π T) (frequency)
    nu0, t_decay, dt = 2000.0, 200.0, 0.5  # cm⁻¹, fs, fs
    tau = np.arange(40001) * dt  # 20 ps ≫ T: no window needed
    c = np.exp(-tau / t_decay) * np.cos(2 * np.pi * C_CM_PER_FS * nu0 * tau)
    spec = power_spectrum(c, dt, window="none", pad=2)
    y, nu = spec.intensity, spec.wavenumber
    k = np.argmax(y)
    above = np.nonzero(y >= y[k] / 2)[0]
    fwhm = nu[above[-1]] - nu[above[0]]
    expected = 1.0 / (np.pi * t_decay) / C_CM_PER_FS  # 1/fs -> cm⁻¹
    assert abs(nu[k] - nu0) < 1.0
    assert abs(fwhm - expected) < 0.05 * expected, (fwhm, expected)
    # Lorentzian tails: at 3 half-widths from the centre, 1/(1+9) of the peak
    off = np.argmin(abs(nu - (nu0 + 3 * expected / 2)))
    assert abs(y[off] / y[k] - 0.1) < 0.01
