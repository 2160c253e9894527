"""Radial bases K(d) and cutoff functions φ(d) (so3krates-spec.md §2.2-2.3).

All functions take distances ``d`` of shape (n_edges,) in Å and are smooth in d.

Each basis also names the coordinate s(d) in which it is smoothest
(``to_table``/``from_table``): functions of the basis are tabulated uniformly in
s for inference (:mod:`equiforce.accel.spline`). The PhysNet basis is a set of
Gaussians in e^{−d}, narrow in d near d = 0 and wide at the cutoff: 500 knots
uniform in e^{−d} interpolate a trained filter 20× more accurately than 1,000
knots uniform in d.
"""

from __future__ import annotations

import math

import torch
from torch import nn


# ----------------------------------------------------------------- cutoffs
def cosine_cutoff(d: torch.Tensor, r_c: float) -> torch.Tensor:
    """½(cos(πd/r_c) + 1) for d < r_c, else 0. Shape as ``d``."""
    x = d / r_c
    return torch.where(
        x < 1.0, 0.5 * (torch.cos(math.pi * x) + 1.0), torch.zeros_like(d)
    )


def phys_cutoff(d: torch.Tensor, r_c: float) -> torch.Tensor:
    """PhysNet polynomial 1 − 6x⁵ + 15x⁴ − 10x³ (value, 1st and 2nd derivative vanish)."""
    x = d / r_c
    poly = 1.0 - 6.0 * x**5 + 15.0 * x**4 - 10.0 * x**3
    return torch.where(x < 1.0, poly, torch.zeros_like(d))


def exponential_cutoff(d: torch.Tensor, r_c: float) -> torch.Tensor:
    """SpookyNet cutoff exp(−d²/((r_c − d)(r_c + d))): all derivatives vanish at r_c."""
    inside = d < r_c
    safe = torch.where(inside, d, torch.zeros_like(d))
    val = torch.exp(-(safe**2) / ((r_c - safe) * (r_c + safe)))
    return torch.where(inside, val, torch.zeros_like(d))


CUTOFFS = {
    "cosine": cosine_cutoff,
    "phys": phys_cutoff,
    "exponential": exponential_cutoff,
}


class Cutoff(nn.Module):
    """Module wrapper of a named cutoff function."""

    def __init__(self, name: str, r_c: float) -> None:
        super().__init__()
        if name not in CUTOFFS:
            raise ValueError(f"unknown cutoff {name!r}; known: {sorted(CUTOFFS)}")
        self.name, self.r_c = name, float(r_c)
        self.fn = CUTOFFS[name]

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """(n_edges,) -> (n_edges,)."""
        return self.fn(d, self.r_c)


# ------------------------------------------------------------------ bases
class DistanceCoordinate:
    """Tabulation coordinate s = d (bases that are smooth on one scale in d)."""

    def to_table(self, d: torch.Tensor) -> torch.Tensor:
        """Coordinate s(d) in which the basis is smooth (monotonic in d)."""
        return d

    def from_table(self, s: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`to_table`."""
        return s


class ExponentialCoordinate:
    """Tabulation coordinate s = e^{−γd} (bases built on e^{−γd})."""

    gamma: float = 1.0

    def to_table(self, d: torch.Tensor) -> torch.Tensor:
        """Coordinate s = e^{−γd}."""
        return torch.exp(-self.gamma * d)

    def from_table(self, s: torch.Tensor) -> torch.Tensor:
        """Distance d = −log(s)/γ."""
        return -torch.log(s) / self.gamma


class PhysNetBasis(ExponentialCoordinate, nn.Module):
    """exp(−β(e^{−d} − μ_k)²), μ_k = linspace(e^{−r_c}, 1, K), β = ((2/K)(1 − e^{−r_c}))^{−2}."""

    def __init__(self, num: int, r_c: float) -> None:
        super().__init__()
        self.register_buffer(
            "mu", torch.linspace(math.exp(-r_c), 1.0, num, dtype=torch.float64)
        )
        self.beta = ((2.0 / num) * (1.0 - math.exp(-r_c))) ** -2

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """(n_edges,) -> (n_edges, K)."""
        return torch.exp(-self.beta * (torch.exp(-d)[:, None] - self.mu) ** 2)


class BernsteinBasis(ExponentialCoordinate, nn.Module):
    """Exponential Bernstein polynomials b_k(u), u = e^{−γd}, γ = 0.5 bohr⁻¹."""

    def __init__(self, num: int, r_c: float, gamma: float = 0.9448630629) -> None:
        super().__init__()
        k = torch.arange(num, dtype=torch.float64)
        n = num - 1
        log_binom = (
            torch.lgamma(torch.tensor(n + 1.0))
            - torch.lgamma(k + 1)
            - torch.lgamma(n - k + 1)
        )
        self.register_buffer("k", k)
        self.register_buffer("log_binom", log_binom)
        self.n, self.gamma = n, gamma

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """(n_edges,) -> (n_edges, K)."""
        log_u = -self.gamma * d[:, None]  # log e^{-γd}
        log_1mu = torch.log1p(-torch.exp(log_u).clamp(max=1.0 - 1e-12))
        return torch.exp(self.log_binom + self.k * log_u + (self.n - self.k) * log_1mu)


class FourierBasis(DistanceCoordinate, nn.Module):
    """sin(kπd/r_c)/d, k = 1..K (a.k.a. Bessel basis up to a constant)."""

    def __init__(self, num: int, r_c: float) -> None:
        super().__init__()
        self.register_buffer(
            "freq", torch.arange(1, num + 1, dtype=torch.float64) * math.pi / r_c
        )

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """(n_edges,) -> (n_edges, K)."""
        d = d[:, None].clamp(min=1e-9)
        return torch.sin(self.freq * d) / d


class GaussianBasis(DistanceCoordinate, nn.Module):
    """Gaussians exp(−(d − μ_k)²/(2σ²)) on a uniform grid in [0, r_c], σ = grid spacing."""

    def __init__(self, num: int, r_c: float) -> None:
        super().__init__()
        self.register_buffer("mu", torch.linspace(0.0, r_c, num, dtype=torch.float64))
        self.inv = 1.0 / (2.0 * (r_c / max(num - 1, 1)) ** 2)

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """(n_edges,) -> (n_edges, K)."""
        return torch.exp(-self.inv * (d[:, None] - self.mu) ** 2)


BASES = {
    "physnet": PhysNetBasis,
    "bernstein": BernsteinBasis,
    "fourier": FourierBasis,
    "gaussian": GaussianBasis,
}


def make_basis(name: str, num: int, r_c: float) -> nn.Module:
    """Build a radial basis by name."""
    if name not in BASES:
        raise ValueError(f"unknown radial basis {name!r}; known: {sorted(BASES)}")
    return BASES[name](num, r_c)
