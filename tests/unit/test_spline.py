"""Cubic Hermite tables: exact for cubics, fourth-order accurate, clamped outside."""

import math

import pytest
import torch

from equiforce.accel.spline import CubicHermiteTable


def _value_and_derivative(fn, s):
    return torch.func.jvp(fn, (s,), (torch.ones_like(s),))


def cubic(s):
    return torch.stack([s**3 - 2 * s, 0.5 * s**2 + 1.0, -(s**3)], dim=1)


def test_table_reproduces_cubics_exactly():
    table = CubicHermiteTable(cubic, -1.0, 2.0, 7, dtype=torch.float64)
    s = torch.linspace(-1.0, 2.0, 101, dtype=torch.float64)
    y, dy = _value_and_derivative(table, s)
    y_ref, dy_ref = _value_and_derivative(cubic, s)
    torch.testing.assert_close(y, y_ref, rtol=0, atol=1e-12)
    torch.testing.assert_close(dy, dy_ref, rtol=0, atol=1e-11)
    assert table.width == 3
    # reverse mode (the eager autograd.Function) and the compiled expression agree
    weights = torch.tensor([0.3, -1.2, 2.0], dtype=torch.float64)
    s_leaf = s.clone().requires_grad_(True)
    (table(s_leaf) @ weights).sum().backward()
    torch.testing.assert_close(s_leaf.grad, dy_ref @ weights, rtol=0, atol=1e-10)
    compiled = torch.compile(lambda x: table(x) @ weights, dynamic=True)
    torch.testing.assert_close(compiled(s), y_ref @ weights, rtol=0, atol=1e-11)


def test_inputs_outside_the_range_are_clamped():
    table = CubicHermiteTable(cubic, -1.0, 2.0, 7, dtype=torch.float64)
    s = torch.tensor([-3.0, 5.0], dtype=torch.float64)
    y, dy = _value_and_derivative(table, s)
    ends = cubic(torch.tensor([-1.0, 2.0], dtype=torch.float64))
    torch.testing.assert_close(y, ends)
    assert torch.all(dy == 0)


def test_error_falls_with_the_fourth_power_of_the_spacing():
    def fn(s):
        return torch.stack([torch.sin(3 * s), torch.exp(-(s**2))], dim=1)

    s = torch.rand(
        2000, dtype=torch.float64, generator=torch.Generator().manual_seed(0)
    )
    s = 3.0 * s
    exact = fn(s)
    errors = []
    for n in (20, 40, 80):
        table = CubicHermiteTable(fn, 0.0, 3.0, n, dtype=torch.float64)
        errors.append((table(s) - exact).abs().max().item())
    for coarse, fine in zip(errors, errors[1:], strict=False):
        assert 12 < coarse / fine < 20, errors


def test_float32_table_from_a_float64_build():
    def fn(s):
        return torch.sin(s)[:, None]

    table = CubicHermiteTable(fn, 0.0, math.pi, 500, dtype=torch.float32)
    s = torch.linspace(0.0, math.pi, 50, dtype=torch.float32)
    out = table(s)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, fn(s.double()).float(), rtol=0, atol=2e-7)


def test_function_must_return_one_row_per_input():
    with pytest.raises(ValueError, match=r"fn must map \(m,\) to \(m, C\)"):
        CubicHermiteTable(torch.sin, 0.0, 1.0, 4)


@pytest.mark.parametrize(
    ("lo", "hi", "n"), [(1.0, 1.0, 4), (2.0, 1.0, 4), (0.0, 1.0, 0)]
)
def test_bad_range_is_an_error(lo, hi, n):
    with pytest.raises(ValueError, match="need hi > lo"):
        CubicHermiteTable(cubic, lo, hi, n)
