"""Real spherical harmonics, per-degree contractions and safe norms.

Spherical harmonics are evaluated as homogeneous polynomials: Y_l(r̂) is a
linear combination of the monomials x^a y^b z^c with a + b + c = l. The
coefficients are fitted once per process (float64 least squares, exact to
round-off) against e3nn's real spherical harmonics, so equiforce uses e3nn's
basis and normalisation while the forward pass is one gather-multiply of powers
and one small matmul: far fewer kernels (and autograd nodes) than e3nn's
generated code, which dominates the cost of small molecules.
"""

from __future__ import annotations

from functools import cache

import torch
from e3nn import o3

from equiforce.nn.exact import ExactConstants


def safe_norm(vec: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """|v| along the last axis with a finite gradient at v = 0. (..., 3) -> (...)."""
    sq = (vec * vec).sum(-1)
    safe = torch.where(sq > eps, sq, torch.ones_like(sq))
    return torch.where(sq > eps, torch.sqrt(safe), torch.zeros_like(sq))


def e3nn_spherical_harmonics(
    degrees: tuple[int, ...], unit: torch.Tensor
) -> torch.Tensor:
    """Reference: e3nn real SH, ``integral`` normalisation, (n, 3) unit -> (n, m_tot)."""
    return o3.spherical_harmonics(
        list(degrees), unit, normalize=False, normalization="integral"
    )


def _monomials(degrees: tuple[int, ...]) -> torch.Tensor:
    """(n_mono, 3) exponents (a, b, c) with a + b + c = l, for each l in ``degrees``."""
    rows = [
        (a, b, l - a - b)
        for l in degrees
        for a in range(l, -1, -1)
        for b in range(l - a, -1, -1)
    ]
    return torch.tensor(rows, dtype=torch.long).reshape(-1, 3)


def _monomial_features(
    unit: torch.Tensor, exps: torch.Tensor, lmax: int
) -> torch.Tensor:
    """x^a y^b z^c for every exponent row: (n, 3) -> (n, n_mono)."""
    powers = [torch.ones_like(unit)]
    for _ in range(lmax):
        powers.append(powers[-1] * unit)
    p = torch.stack(powers, dim=-1)  # (n, 3, lmax+1)
    return (
        p[:, 0].index_select(1, exps[:, 0])
        * p[:, 1].index_select(1, exps[:, 1])
        * p[:, 2].index_select(1, exps[:, 2])
    )


@cache
def _fit_coefficients(degrees: tuple[int, ...]) -> torch.Tensor:
    """(n_mono, m_tot) float64 matrix with monomials @ C = e3nn SH on the sphere."""
    exps = _monomials(degrees)
    gen = torch.Generator().manual_seed(0)
    v = torch.randn(4 * len(exps) + 64, 3, generator=gen, dtype=torch.float64)
    v = v / v.norm(dim=1, keepdim=True)
    feats = _monomial_features(v, exps, max(degrees))
    target = e3nn_spherical_harmonics(degrees, v)
    # Monomials of different degrees are dependent on the sphere (x²+y²+z² = 1), so
    # each Y_l is fitted on the degree-l monomials only (where it is exact).
    coeff = torch.zeros(len(exps), target.shape[1], dtype=torch.float64)
    row = col = 0
    for l in degrees:
        nm, nc = (l + 1) * (l + 2) // 2, 2 * l + 1
        sol = torch.linalg.lstsq(feats[:, row : row + nm], target[:, col : col + nc])
        coeff[row : row + nm, col : col + nc] = sol.solution
        row, col = row + nm, col + nc
    coeff[coeff.abs() < 1e-12] = 0.0
    return coeff


class SphericalHarmonics(ExactConstants):
    """Y_l(r̂) for l in ``degrees``, concatenated: (n, 3) -> (n, Σ(2l+1)).

    Real, orthonormal ("integral" normalisation: Σ_m Y_lm² = (2l+1)/4π), in
    e3nn's basis; input vectors need not be normalised (zero vectors give finite
    values and gradients).
    """

    def __init__(self, degrees: tuple[int, ...]) -> None:
        super().__init__()
        self.degrees = tuple(degrees)
        self.lmax = max(self.degrees, default=0)
        self.register_buffer("exps", _monomials(self.degrees), persistent=False)
        coeff = (
            _fit_coefficients(self.degrees).clone()
            if self.degrees
            else torch.zeros(0, 0)
        )
        self.register_buffer("coeff", coeff, persistent=False)  # (n_mono, m_tot)

    def exact_constants(self) -> dict[str, torch.Tensor]:
        """The fitted polynomial coefficients, recomputed after any dtype cast."""
        return {"coeff": _fit_coefficients(self.degrees)} if self.degrees else {}

    def forward(self, vec: torch.Tensor) -> torch.Tensor:
        """(n, 3) -> (n, m_tot)."""
        norm = safe_norm(vec)[:, None]
        unit = vec / torch.where(norm > 0, norm, torch.ones_like(norm))
        feats = _monomial_features(unit, self.exps, self.lmax)  # (n, n_mono)
        return feats @ self.coeff.to(unit.dtype)
