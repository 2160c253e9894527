"""Cubic Hermite tables of smooth functions of one variable (inference only).

A vector function g: [a, b] -> R^C of one scalar (for So3krates: the radial part
of every filter, a function of the pair distance alone) is replaced by a piecewise
cubic that matches g and g' exactly at ``n + 1`` uniform knots. Evaluating it costs
one row gather and three multiply-adds per output instead of the MLP's
matrix products; the interpolant is C¹, so forces (its derivative) are
continuous and energy is conserved in MD. The interpolation error is
≤ h⁴/384 · max|g''''| (h = (b − a)/n). This is how ML-PACE evaluates its
radial functions in LAMMPS.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


class CubicHermiteTable(nn.Module):
    """Piecewise cubic g(s) ≈ c0 + c1 t + c2 t² + c3 t³ on each of ``n`` intervals.

    Args:
        fn: the function, (m,) float64 -> (m, C); differentiable in its input
            (its exact derivative at the knots is taken with forward-mode AD).
        lo, hi: the tabulated range; inputs are clamped to it (the derivative is
            zero outside).
        n: number of intervals.
        dtype: dtype of the stored coefficients (the evaluation dtype).
    """

    def __init__(
        self,
        fn: Callable[[torch.Tensor], torch.Tensor],
        lo: float,
        hi: float,
        n: int,
        dtype: torch.dtype = torch.float32,
        device: torch.device | str | None = None,
    ) -> None:
        super().__init__()
        if not hi > lo or n < 1:
            raise ValueError(f"need hi > lo and n >= 1, got lo={lo}, hi={hi}, n={n}")
        self.lo, self.hi, self.n = float(lo), float(hi), int(n)
        self.h = (self.hi - self.lo) / self.n
        s = torch.linspace(
            self.lo, self.hi, self.n + 1, dtype=torch.float64, device=device
        )
        with torch.no_grad():
            y, dy = torch.func.jvp(fn, (s,), (torch.ones_like(s),))  # (n+1, C) each
        if y.ndim != 2 or y.shape[0] != s.shape[0]:
            raise ValueError(
                f"fn must map (m,) to (m, C); got {tuple(s.shape)} -> {tuple(y.shape)}"
            )
        m = dy * self.h  # derivative per unit t
        y0, y1, m0, m1 = y[:-1], y[1:], m[:-1], m[1:]
        coef = torch.stack(
            [y0, m0, 3 * (y1 - y0) - 2 * m0 - m1, 2 * (y0 - y1) + m0 + m1], dim=1
        )  # (n, 4, C)
        self.register_buffer("coef", coef.to(dtype))

    @property
    def width(self) -> int:
        """Number of outputs C."""
        return self.coef.shape[-1]

    def forward(self, s: torch.Tensor) -> torch.Tensor:
        """(m,) -> (m, C), in the table's dtype; differentiable in ``s``."""
        x = (s.clamp(self.lo, self.hi) - self.lo) * (1.0 / self.h)  # (m,)
        if torch.compiler.is_compiling():
            # Inductor fuses the gather, the polynomial and (backward) the
            # reduction over C into single passes
            k = x.detach().floor().clamp(0, self.n - 1)
            t = (x - k).to(self.coef.dtype)[:, None]  # (m, 1)
            c = self.coef.index_select(0, k.long())  # (m, 4, C)
            return c[:, 0] + t * (c[:, 1] + t * (c[:, 2] + t * c[:, 3]))
        return _HermiteEval.apply(x, self.coef)[0]


class _HermiteEval(torch.autograd.Function):
    """Eager evaluation: value and dy/dx in one pass, only dy/dx saved.

    Autograd through the polynomial would keep every intermediate (m, C) product
    and the gathered (m, 4, C) coefficients for the backward: at 83k pairs per
    layer that was slower than the two Dense layers it replaces.
    """

    @staticmethod
    def forward(
        x: torch.Tensor, coef: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        n = coef.shape[0]
        k = x.floor().clamp(0, n - 1)
        t = (x - k).to(coef.dtype)[:, None]  # (m, 1)
        c0, c1, c2, c3 = coef.index_select(0, k.long()).unbind(1)  # (m, C) each
        y = torch.addcmul(c2, c3, t).mul_(t).add_(c1).mul_(t).add_(c0)
        dy = torch.addcmul(c2, c3, t, value=1.5).mul_(t).mul_(2).add_(c1)
        return y, dy

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.mark_non_differentiable(output[1])
        ctx.save_for_backward(output[1])
        ctx.save_for_forward(output[1])
        ctx.x_dtype = inputs[0].dtype

    @staticmethod
    def jvp(ctx, x_t: torch.Tensor, _coef_t: torch.Tensor | None):
        (dy,) = ctx.saved_tensors
        return x_t.to(dy.dtype)[:, None] * dy, None

    @staticmethod
    def backward(ctx, grad_y: torch.Tensor, _grad_dy: torch.Tensor):
        (dy,) = ctx.saved_tensors
        return (grad_y * dy).sum(-1).to(ctx.x_dtype), None
