"""Cache keys of weights: what tells a cache that a weight changed."""

from __future__ import annotations

import torch


def weight_state_key(tensors: list[torch.Tensor]) -> tuple:
    """Changes when any of ``tensors`` is updated in place or moved (cache keys).

    Writes through ``.data`` are not seen (see ``clear_inference_caches``).
    """
    return (*[t._version for t in tensors], *[t.data_ptr() for t in tensors])
