"""Buffers that are exact constants of a module's configuration.

Fixed coefficients (spherical-harmonic polynomials, 1/√(2l+1) contractions) are
functions of the hyperparameters, not learned values. Stored as ordinary
buffers, they take the rounding of whatever dtype they last passed through: a
model built or saved in float32 and then cast (or loaded) in float64 keeps
float32-rounded constants, which breaks rotation invariance at ~1e-9 relative.
A :class:`ExactConstants` module recomputes them, in float64 and then in the
buffer's own dtype and device, after every ``.to()``/``.double()`` and after
every ``load_state_dict``, so a file's stored copy never overrides them.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


class ExactConstants(nn.Module):
    """Base for modules whose named buffers are exact constants (see module doc)."""

    def exact_constants(self) -> dict[str, torch.Tensor]:
        """Buffer name -> its exact float64 value; overridden by subclasses."""
        return {}

    @torch.no_grad()
    def refresh_constants(self) -> None:
        """Overwrite each constant buffer with its exact value in the buffer's dtype."""
        for name, value in self.exact_constants().items():
            buf = getattr(self, name)
            if buf.device.type == "meta":
                continue
            buf.copy_(value.to(device=buf.device, dtype=buf.dtype))

    def _apply(self, fn: Any, recurse: bool = True) -> ExactConstants:
        out = super()._apply(fn, recurse)
        self.refresh_constants()
        return out

    def _load_from_state_dict(self, *args: Any, **kwargs: Any) -> None:
        super()._load_from_state_dict(*args, **kwargs)
        self.refresh_constants()
