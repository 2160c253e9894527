"""Dense layers with reference (Flax-like) initialisation, MLPs and residual MLPs."""

from __future__ import annotations

import math

import torch
from torch import nn


def lecun_normal_(weight: torch.Tensor, fan_in: int) -> torch.Tensor:
    """Truncated-normal init with variance 1/fan_in (Flax ``lecun_normal``)."""
    # std of a standard normal truncated to [-2, 2] is 0.87962566103423978
    std = math.sqrt(1.0 / fan_in) / 0.87962566103423978
    with torch.no_grad():
        return nn.init.trunc_normal_(weight, 0.0, std, -2 * std, 2 * std)


class Dense(nn.Linear):
    """``nn.Linear`` with LeCun-normal weights and zero bias (or zero weights)."""

    def __init__(
        self, n_in: int, n_out: int, bias: bool = True, zero_init: bool = False
    ) -> None:
        super().__init__(n_in, n_out, bias=bias)
        if zero_init:
            nn.init.zeros_(self.weight)
        else:
            lecun_normal_(self.weight, n_in)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


ACTIVATIONS = {"silu": nn.SiLU, "identity": nn.Identity}


class MLP(nn.Sequential):
    """Dense → act → Dense → … (no activation after the last layer)."""

    def __init__(
        self,
        sizes: list[int],
        activation: str = "silu",
        bias: bool = True,
        zero_init_last: bool = False,
    ) -> None:
        layers: list[nn.Module] = []
        for k, (a, b) in enumerate(zip(sizes[:-1], sizes[1:], strict=True)):
            last = k == len(sizes) - 2
            layers.append(Dense(a, b, bias=bias, zero_init=last and zero_init_last))
            if not last:
                layers.append(ACTIVATIONS[activation]())
        super().__init__(*layers)


class ResidualMLP(nn.Module):
    """f ← f + Dense(SiLU(Dense(SiLU(f)))) (so3krates-spec §2.7 step 8)."""

    def __init__(self, width: int, zero_init: bool = False) -> None:
        super().__init__()
        self.dense1 = Dense(width, width)
        self.dense2 = Dense(width, width, zero_init=zero_init)
        self.act = nn.SiLU()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """(n, width) -> (n, width)."""
        return f + self.dense2(self.act(self.dense1(self.act(f))))


class HeadwiseLinear(nn.Module):
    """Independent square maps per head, no bias: (n, H·d) -> (n, H, d)."""

    def __init__(self, num_heads: int, head_size: int, zero_init: bool = False) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_heads, head_size, head_size))
        if zero_init:
            nn.init.zeros_(self.weight)
        else:
            lecun_normal_(self.weight, head_size)
        self.num_heads, self.head_size = num_heads, head_size

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        """(n, H·d) -> (n, H, d)."""
        f = f.view(-1, self.num_heads, self.head_size)
        return torch.einsum("nhd,hde->nhe", f, self.weight)

    def block_diag(self) -> torch.Tensor:
        """The equivalent (H·d, H·d) block-diagonal matrix for ``x @ W``."""
        return torch.block_diag(*self.weight.unbind(0))
