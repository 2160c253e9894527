"""Sphere quadrature of Euclidean fast attention: Lebedev grids, error bounds, weights.

The EFA (:mod:`equiforce.nn.efa`) integrates, over directions u of the unit
sphere, plane waves cos/sin(ω u·r_ij) times a spherical harmonic Ŷ_l(u) (l = 0
for the invariant output, l = 1, 2 for the tensor outputs). A Lebedev rule of
order p integrates every spherical polynomial of degree ≤ p exactly, its
weights are positive (normalised here to sum 1, so sums are sphere *averages*)
and its points come in ± pairs.

Harmonics. Ŷ_l = √(4π) Y_l with Y_l e3nn's real spherical harmonics in
"integral" normalisation (:mod:`equiforce.nn.spherical`), i.e. e3nn's
"component" normalisation: Σ_m Ŷ_lm(u)² = 2l + 1, Ŷ_0 = 1, |Ŷ_lm| ≤ √(2l+1).
With this choice the l = 0 output is exactly the invariant one.

Plane-wave (Jacobi–Anger) expansion, with r̂ = r/|r| and b = ω|r|:

    e^{i b u·r̂} = Σ_L i^L (2L+1) j_L(b) P_L(u·r̂) = Σ_L i^L j_L(b) Σ_m Ŷ_Lm(u) Ŷ_Lm(r̂),

so the sphere average ⟨Ŷ_lm(u) e^{i b u·r̂}⟩_u = i^l j_l(b) Ŷ_lm(r̂): the cosine
part gives Re(i^l) j_l Ŷ_l (l = 0: j₀; l = 2: −j₂ Ŷ₂), the sine part
Im(i^l) j_l Ŷ_l (l = 1: j₁ Ŷ₁); the other part vanishes by parity.

Error bound (why a grid can be too coarse). The quadrature of Ŷ_lm P_L is exact
for l + L ≤ p (and the exact average is zero for L ≠ l); for L > p − l it is at
most max|Ŷ_lm| · max|P_L| = √(2l+1). Hence for every pair with phase b

    |quadrature − i^l j_l(b) Ŷ_lm(r̂)| ≤ √(2l+1) Σ_{L>p−l} (2L+1) |j_L(b)| =: ε_{p,l}(b)

(ε_{p,0} is the invariant bound; 2l > p is not allowed). Phases reach at most
b_max = ω_max·r_max (pairs within r_max), and :func:`check_quadrature` requires
max_{b≤b_max} ε_{p,l}(b) ≤ tolerance for the highest degree l used. At the
default tolerance 1e-4 the phase limits (×π) are, for l = 0 / 1 / 2: order 11
(50 points) 1.36 / 1.10 / 0.89, order 15 (86) 2.22 / 1.92 / 1.67, order 19 (146)
3.14 / 2.81 / 2.55, order 23 (194) 4.11 / 3.76 / 3.48. The l = 0 column
reproduces Table S3 of the paper (``LEBEDEV_FREQUENCY_LOOKUP`` of the reference
code) to ~10 %; the tensor outputs need a finer grid for the same b_max
(integrand degree + l).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch

#: Lebedev orders SciPy's ``lebedev_rule`` provides, with their point counts.
LEBEDEV_POINTS = {
    3: 6, 5: 14, 7: 26, 9: 38, 11: 50, 13: 74, 15: 86, 17: 110, 19: 146, 21: 170,
    23: 194, 25: 230, 27: 266, 29: 302, 31: 350, 35: 434, 41: 590, 47: 770,
    53: 974, 59: 1202, 65: 1454, 71: 1730, 77: 2030, 83: 2354, 89: 2702,
    95: 3074, 101: 3470, 107: 3890, 113: 4334, 119: 4802, 125: 5294, 131: 5810,
}  # fmt: skip


@functools.lru_cache(maxsize=32)
def _lebedev_numpy(order: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.integrate import lebedev_rule

    x, w = lebedev_rule(order)
    return np.ascontiguousarray(x.T), w / w.sum()


def lebedev_grid(order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lebedev points and weights of ``order`` (SciPy), float64.

    Returns:
        ``u`` (M, 3) unit vectors and ``w`` (M,) positive weights summing to 1
        (so the quadrature gives the sphere *average*).

    Raises:
        ValueError: ``order`` is not one SciPy provides.
    """
    if order not in LEBEDEV_POINTS:
        raise ValueError(
            f"Lebedev order {order} is not available; choose one of "
            f"{sorted(LEBEDEV_POINTS)}"
        )
    u, w = _lebedev_numpy(order)
    return torch.tensor(u, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)


def normalized_harmonics(degrees: tuple[int, ...], u: torch.Tensor) -> torch.Tensor:
    """Ŷ_l(u) = √(4π) Y_l(u) (module note) for l in ``degrees``: (M, 3) -> (M, Σ(2l+1))."""
    from equiforce.nn.spherical import e3nn_spherical_harmonics

    return e3nn_spherical_harmonics(degrees, u) * math.sqrt(4.0 * math.pi)


def integration_weights(order: int, degrees: tuple[int, ...]) -> torch.Tensor:
    """Tensor-integration weights w_m Ŷ_c(u_m), (C, M) float64, C = Σ_l (2l+1).

    Row c of the l = 0 block is w itself (the invariant output).
    """
    u, w = lebedev_grid(order)
    return (normalized_harmonics(degrees, u) * w[:, None]).t().contiguous()


def quadrature_error_bound(order: int, max_phase: float, degree: int = 0) -> float:
    """The maximum over b ∈ [0, max_phase] of ε_{p,l}(b) (module note), l = ``degree``.

    Bounds the quadrature error of the j_l(b) Ŷ_l kernel for every pair whose
    phase ω_k r_ij is at most ``max_phase`` (radians); inf when 2l > p.
    """
    from scipy.special import spherical_jn

    if 2 * degree > order:
        return math.inf
    start = order + 1 - degree
    ls = np.arange(start, start + max(200, int(4 * max_phase) + 50))
    phases = np.linspace(0.0, max_phase, 129)[1:]
    tails = [float(((2 * ls + 1) * np.abs(spherical_jn(ls, b))).sum()) for b in phases]
    return math.sqrt(2 * degree + 1) * max(tails, default=0.0)


def max_phase_for_order(order: int, tolerance: float, degree: int = 0) -> float:
    """Largest b_max (radians) with :func:`quadrature_error_bound` ≤ ``tolerance``."""
    lo, hi = 0.0, float(order) + 10.0
    for _ in range(50):  # bisection; the bound grows with b in this range
        mid = 0.5 * (lo + hi)
        ok = quadrature_error_bound(order, mid, degree) <= tolerance
        lo, hi = (mid, hi) if ok else (lo, mid)
    return lo


def check_quadrature(
    order: int,
    max_frequency: float,
    r_max: float,
    tolerance: float,
    max_degree: int = 0,
) -> None:
    """Raise ValueError if the grid cannot integrate phases up to ω_max·r_max.

    Args:
        order: Lebedev order p.
        max_frequency: ω_max, rad/Å.
        r_max: largest pair distance handled, Å.
        tolerance: allowed ε_{p,l} (module note).
        max_degree: highest output degree l (0: invariant output only); the
            bound grows with l, so the tensor outputs need finer grids.
    """
    lebedev_grid(order)  # valid order
    phase = max_frequency * r_max
    bound = quadrature_error_bound(order, phase, max_degree)
    if bound <= tolerance:
        return
    allowed = max_phase_for_order(order, tolerance, max_degree)
    need = next(
        (
            p
            for p in sorted(LEBEDEV_POINTS)
            if quadrature_error_bound(p, phase, max_degree) <= tolerance
        ),
        None,
    )
    hint = (
        f"use lebedev_order ≥ {need} ({LEBEDEV_POINTS[need]} points)"
        if need is not None
        else "no available grid is fine enough"
    )
    raise ValueError(
        f"Lebedev order {order} ({LEBEDEV_POINTS[order]} points) is too coarse for "
        f"max_frequency·r_max = {max_frequency:g} rad/Å × {r_max:g} Å = "
        f"{phase / math.pi:.3g}π rad at output degree l ≤ {max_degree}: quadrature "
        f"error bound {bound:.2e} > tolerance {tolerance:.1e} (this grid allows "
        f"≤ {allowed / math.pi:.3g}π at l = {max_degree}); lower max_frequency or "
        f"r_max, or {hint}"
    )


def rope_frequencies(num_pairs: int, max_frequency: float) -> torch.Tensor:
    """ω_k = linspace(0, ω_max, D_qk/2), rad/Å, float64 (one pair: ω_max)."""
    if num_pairs == 1:
        return torch.tensor([max_frequency], dtype=torch.float64)
    return torch.linspace(0.0, max_frequency, num_pairs, dtype=torch.float64)
