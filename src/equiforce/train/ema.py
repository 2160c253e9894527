"""Exponential moving average of model weights."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import nn


class EMA:
    """Shadow copy θ̄ ← d·θ̄ + (1 − d)·θ of every floating parameter and buffer.

    The effective decay is min(d, (1 + n) / (10 + n)) after n updates, so the
    average is not dominated by the random initial weights early in training.

    Args:
        model: the trained model.
        decay: d in [0, 1).
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.decay = float(decay)
        self.n_updates = 0
        self.shadow = {k: v.detach().clone() for k, v in model.state_dict().items()}

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        """Blend the current weights into the average."""
        self.n_updates += 1
        d = min(self.decay, (1 + self.n_updates) / (10 + self.n_updates))
        averaged: list[torch.Tensor] = []
        current: list[torch.Tensor] = []
        # frozen parameters (model.freeze) are copied: blending rounds them
        frozen = {k for k, p in model.named_parameters() if not p.requires_grad}
        for k, v in model.state_dict().items():
            if v.is_floating_point() and k not in frozen:
                averaged.append(self.shadow[k])
                current.append(v)
            else:
                self.shadow[k].copy_(v)
        # multi-tensor kernels instead of a Python loop over ~60 tensors per step
        torch._foreach_mul_(averaged, d)
        torch._foreach_add_(averaged, current, alpha=1 - d)

    @contextlib.contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``model``."""
        saved = {k: v.detach().clone() for k, v in model.state_dict().items()}
        model.load_state_dict(self.shadow)
        try:
            yield model
        finally:
            model.load_state_dict(saved)

    def state_dict(self) -> dict:
        """Serializable state (tensors and ints)."""
        return {"decay": self.decay, "n_updates": self.n_updates, "shadow": self.shadow}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.decay = float(state["decay"])
        self.n_updates = int(state["n_updates"])
        for k, v in state["shadow"].items():
            self.shadow[k].copy_(v)
