"""Real spherical harmonics, per-degree contractions and safe norms."""

from __future__ import annotations

import torch
from e3nn import o3


def safe_norm(vec: torch.Tensor, eps: float = 1e-12) -> torch.Tensor:
    """|v| along the last axis with a finite gradient at v = 0. (..., 3) -> (...)."""
    sq = (vec * vec).sum(-1)
    safe = torch.where(sq > eps, sq, torch.ones_like(sq))
    return torch.where(sq > eps, torch.sqrt(safe), torch.zeros_like(sq))


class SphericalHarmonics(torch.nn.Module):
    """Y_l(r̂) for l in ``degrees``, concatenated: (n, 3) -> (n, Σ(2l+1)).

    Real, orthonormal ("integral" normalisation: Σ_m Y_lm² = (2l+1)/4π), computed by
    e3nn; input vectors need not be normalised (zero vectors give finite values).
    """

    def __init__(self, degrees: tuple[int, ...]) -> None:
        super().__init__()
        self.degrees = tuple(degrees)
        self.irreps = o3.Irreps([(1, (l, (-1) ** l)) for l in self.degrees])

    def forward(self, vec: torch.Tensor) -> torch.Tensor:
        """(n, 3) -> (n, m_tot)."""
        norm = safe_norm(vec)[:, None]
        unit = vec / torch.where(norm > 0, norm, torch.ones_like(norm))
        return o3.spherical_harmonics(
            list(self.degrees), unit, normalize=False, normalization="integral"
        )


def degree_index(degrees: tuple[int, ...], device=None) -> torch.Tensor:
    """Index of the degree block for every component: (m_tot,) int64 in 0..|L|-1."""
    return torch.cat(
        [torch.full((2 * l + 1,), k, dtype=torch.long) for k, l in enumerate(degrees)]
    ).to(device)
