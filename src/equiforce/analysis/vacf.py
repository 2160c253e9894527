"""Velocity autocorrelation functions (md-protocol.md §4.2).

C(τ) = ⟨Σ_i w_i v_i(t₀)·v_i(t₀+τ)⟩_{t₀}, with w_i = m_i (mass-weighted, the
vibrational density of states) or w_i = 1. The average over time origins t₀ is
computed for every atom and Cartesian component at once with the Wiener–Khinchin
theorem: zero-pad the n-sample series to 2n, C = IFFT(|FFT(v)|²)[:n], then divide
lag τ by the number of origins n − τ (**unbiased** estimate; dividing by n, as
SchNetPack does, acts like an extra triangular window). Windowing is left to
:mod:`equiforce.analysis.spectrum`.
"""

from __future__ import annotations

import numpy as np


def autocorrelation(
    x: np.ndarray, max_lag: int | None = None, unbiased: bool = True
) -> np.ndarray:
    """Autocorrelation of each channel along axis 0, averaged over time origins.

    Args:
        x: (n_t, ...) real series.
        max_lag: largest lag returned (default n_t − 1).
        unbiased: divide lag τ by n_t − τ (else by n_t).

    Returns:
        (max_lag + 1, ...) correlations.
    """
    x = np.asarray(x, dtype=np.float64)
    n = x.shape[0]
    max_lag = n - 1 if max_lag is None else int(max_lag)
    if not 0 <= max_lag < n:
        raise ValueError(f"max_lag={max_lag} must be in [0, {n - 1}] for {n} samples")
    spec = np.fft.rfft(x, n=2 * n, axis=0)
    corr = np.fft.irfft(spec * spec.conj(), n=2 * n, axis=0)[: max_lag + 1]
    norm = (n - np.arange(max_lag + 1)) if unbiased else np.full(max_lag + 1, n)
    return corr / norm.reshape(-1, *([1] * (x.ndim - 1)))


def remove_rigid_motion(
    velocities: np.ndarray,
    masses: np.ndarray,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """Subtract the centre-of-mass velocity (and rigid rotation, given positions).

    Args:
        velocities: (n_t, n_atoms, 3).
        masses: (n_atoms,).
        positions: (n_t, n_atoms, 3) for rotation removal (molecules), or None.

    Returns:
        (n_t, n_atoms, 3) internal velocities.
    """
    m = np.asarray(masses, float)[None, :, None]
    v = velocities - (m * velocities).sum(1, keepdims=True) / m.sum()
    if positions is None:
        return v
    com = (m * positions).sum(1, keepdims=True) / m.sum()
    r = positions - com  # (T, N, 3)
    ang = (m * np.cross(r, v)).sum(1)  # (T, 3)
    r2 = (r**2).sum(-1)  # (T, N)
    eye = np.eye(3)
    inertia = np.einsum("n,tn,ij->tij", m[0, :, 0], r2, eye) - np.einsum(
        "n,tni,tnj->tij", m[0, :, 0], r, r
    )
    omega = np.einsum("tij,tj->ti", np.linalg.pinv(inertia), ang)  # (T, 3)
    return v - np.cross(omega[:, None, :], r)


def vacf(
    velocities: np.ndarray,
    masses: np.ndarray | None = None,
    max_lag: int | None = None,
    mass_weighted: bool = True,
    normalize: bool = True,
    positions: np.ndarray | None = None,
) -> np.ndarray:
    """Velocity autocorrelation function summed over atoms and components.

    Args:
        velocities: (n_t, n_atoms, 3), any unit.
        masses: (n_atoms,) amu (required when ``mass_weighted``).
        max_lag: largest lag in frames (default: n_t − 1).
        mass_weighted: weights w_i = m_i (else 1).
        normalize: scale so that C(0) = 1.
        positions: (n_t, n_atoms, 3) to remove rigid rotation (molecules);
            the centre-of-mass velocity is always removed when masses are given.

    Returns:
        (max_lag + 1,) C(τ) for τ = 0, 1, … frames.
    """
    v = np.asarray(velocities, float)
    if v.ndim != 3 or v.shape[-1] != 3:
        raise ValueError(f"velocities must be (n_frames, n_atoms, 3), got {v.shape}")
    if masses is not None:
        v = remove_rigid_motion(v, masses, positions)
    if mass_weighted:
        if masses is None:
            raise ValueError("mass-weighted VACF needs masses")
        w = np.asarray(masses, float)
    else:
        w = np.ones(v.shape[1])
    c = autocorrelation(v, max_lag)  # (L, N, 3)
    c = np.einsum("lnk,n->l", c, w)
    if normalize:
        if c[0] == 0:
            raise ValueError("VACF has C(0) = 0 (all velocities zero)")
        c = c / c[0]
    return c
