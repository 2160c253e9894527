"""The optimiser of a training run, and loading its saved state.

:func:`make_optimizer` builds Adam, AdamW or AMSGrad from the training section;
:func:`upgrade_optimizer_state` maps a state saved by an older layout of the
parameter groups onto today's, so such runs still resume.
"""

from __future__ import annotations

import torch

from equiforce.config import TrainingConfig


def _split_for_decay(items, params) -> tuple[list, list]:
    """``items`` (parameters or their saved ids) of matrices, then of vectors."""
    pairs = list(zip(items, params, strict=True))
    return [i for i, p in pairs if p.ndim >= 2], [i for i, p in pairs if p.ndim < 2]


def make_optimizer(
    model: torch.nn.Module, cfg: TrainingConfig
) -> torch.optim.Optimizer:
    """Adam, AdamW or AMSGrad from the training section.

    The fused implementation (one kernel over all parameters) where torch has one
    for the device, else the multi-tensor one; torch's default on a CPU is a loop
    over the parameters, several times slower for So3krates' 51 weight tensors.
    Gradients must have their parameter's strides (see
    :func:`equiforce.train.compiled_step.assign_gradients`).

    Weight decay acts on weight matrices and tensors only (``ndim >= 2``): biases
    and per-element scales and shifts (vectors) are left alone, as is usual, since
    pulling a learned energy scale or shift towards zero is no regulariser.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.weight_decay > 0:
        matrices, vectors = _split_for_decay(params, params)
        params = [{"params": matrices}, {"params": vectors, "weight_decay": 0.0}]
    if cfg.optimizer == "amsgrad":
        kwargs["amsgrad"] = True
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # no fused kernel for this device/dtype
        return cls(params, foreach=True, **kwargs)


def upgrade_optimizer_state(
    saved: dict, model: torch.nn.Module, optimizer: torch.optim.Optimizer
) -> dict:
    """Map an optimiser state saved before weight decay spared vectors onto two groups.

    Checkpoints written before that change hold one parameter group even with
    ``weight_decay > 0``; :func:`make_optimizer` now builds two (matrices decayed,
    vectors not), and torch refuses to load one group into two. The saved ids
    number the trainable parameters in model order, so they are split by the
    same ``ndim`` rule; moments and step counts carry over unchanged. Any other
    state is returned as it is.
    """
    groups = saved["param_groups"]
    if len(groups) != 1 or len(optimizer.param_groups) != 2:
        return saved
    params = [p for p in model.parameters() if p.requires_grad]
    ids = groups[0]["params"]
    if len(ids) != len(params):
        return saved  # not the old layout of this model: let torch report it
    matrices, vectors = _split_for_decay(ids, params)
    return {
        "state": saved["state"],
        "param_groups": [
            {**groups[0], "params": matrices},
            {**groups[0], "params": vectors, "weight_decay": 0.0},
        ],
    }
