"""The model registry: one literal dict name -> (config class, model class).

Building a model (:func:`build_model`) and rebuilding one from a checkpoint file
(:func:`load_model`) both go through it.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from equiforce.models.base import PotentialModel
from equiforce.models.checkpoint import CheckpointError, load_checkpoint
from equiforce.models.nequip import PRESETS as NEQUIP_PRESETS
from equiforce.models.nequip import NequIP, NequIPConfig
from equiforce.models.painn import PRESETS as PAINN_PRESETS
from equiforce.models.painn import PaiNN, PaiNNConfig
from equiforce.models.schnet import PRESETS as SCHNET_PRESETS
from equiforce.models.schnet import SchNet, SchNetConfig
from equiforce.models.so3krates import PRESETS as SO3KRATES_PRESETS
from equiforce.models.so3krates import So3krates, So3kratesConfig
from equiforce.models.so3lr import PRESETS as SO3LR_PRESETS
from equiforce.models.so3lr import SO3LR, SO3LRConfig

MODELS: dict[str, tuple[type[BaseModel], type[PotentialModel]]] = {
    "so3krates": (So3kratesConfig, So3krates),
    "schnet": (SchNetConfig, SchNet),
    "painn": (PaiNNConfig, PaiNN),
    "nequip": (NequIPConfig, NequIP),
    "so3lr": (SO3LRConfig, SO3LR),
}

PRESETS: dict[str, dict[str, dict]] = {
    "so3krates": SO3KRATES_PRESETS,
    "schnet": SCHNET_PRESETS,
    "painn": PAINN_PRESETS,
    "nequip": NEQUIP_PRESETS,
    "so3lr": SO3LR_PRESETS,
}

#: Pretrained model files shipped with equiforce: ``load_model(name)`` takes the
#: name instead of a path (licences beside them in ``equiforce/pretrained/``).
PRETRAINED: dict[str, str] = {"so3lr": "so3lr.pt"}


def pretrained_path(name: str) -> Path:
    """Path of the shipped pretrained model ``name`` (see :data:`PRETRAINED`)."""
    from importlib.resources import files

    return Path(str(files("equiforce") / "pretrained" / PRETRAINED[name]))


def _unknown(kind: str, name: str, known) -> ValueError:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ValueError(
        f"unknown {kind} {name!r}{hint}; available: {', '.join(sorted(known))}"
    )


def make_config(name: str, preset: str | None = None, **overrides) -> BaseModel:
    """Validated config of model ``name`` from a preset plus overrides."""
    if name not in MODELS:
        raise _unknown("model", name, MODELS)
    config_cls, _ = MODELS[name]
    params: dict = {}
    if preset is not None:
        presets = PRESETS.get(name, {})
        if preset not in presets:
            raise _unknown(f"preset of {name}", preset, presets)
        params.update(presets[preset])
    params.update(overrides)
    return config_cls(**params)


def build_model(
    name: str,
    preset: str | None = None,
    dtype: torch.dtype = torch.float32,
    seed: int = 0,
    e0: torch.Tensor | dict[int, float] | None = None,
    **overrides,
) -> PotentialModel:
    """Build a model from the registry, seeded and in ``dtype``.

    Args:
        name: registry key, e.g. ``"so3krates"``.
        preset: named hyperparameter set (e.g. ``"default"``, ``"paper"``).
        dtype: float dtype of the parameters.
        seed: initialisation seed (a local generator state; global RNG restored).
        e0: per-element reference energies, a (119,) tensor or {Z: eV}.
        **overrides: config fields overriding the preset.
    """
    config = make_config(name, preset, **overrides)
    _, model_cls = MODELS[name]
    if isinstance(e0, dict):
        table = torch.zeros(119, dtype=torch.float64)
        for z, v in e0.items():
            table[int(z)] = float(v)
        e0 = table
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = model_cls(config, e0=e0)
    model.model_name = name
    return model.to(dtype)


def model_from_payload(
    payload: dict[str, Any],
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> PotentialModel:
    """Rebuild a model through the registry from a checkpoint dict."""
    name = payload["model_name"]
    if name not in MODELS:
        raise CheckpointError(
            f"checkpoint model {name!r} is not in this equiforce ({sorted(MODELS)})"
        )
    try:
        config = make_config(name, **payload["model_config"])
    except (ValueError, TypeError) as err:  # pydantic ValidationError, bad preset
        raise CheckpointError(f"model_config: {err}") from None
    state = payload["state_dict"]
    model = MODELS[name][1](config, e0=state.get("e0"))
    model.model_name = name
    stored = getattr(torch, payload.get("dtype", "float32"))
    model = model.to(stored)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise CheckpointError(
            f"state_dict does not fit the {name} config: {err}"
        ) from None
    return model.to(device=device, dtype=dtype or stored).eval()


def load_model(
    path: str | Path,
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
) -> PotentialModel:
    """Load a model saved by :func:`save_model` (or a training run's best/last.pt).

    ``path`` may also name a shipped pretrained model (:data:`PRETRAINED`, e.g.
    ``"so3lr"``) when no such file exists.
    """
    if str(path) in PRETRAINED and not Path(path).exists():  # also Path("so3lr")
        path = pretrained_path(str(path))
    try:
        return model_from_payload(load_checkpoint(path), device=device, dtype=dtype)
    except CheckpointError as err:
        msg = str(err)
        raise CheckpointError(
            msg if msg.startswith(str(path)) else f"{path}: {msg}"
        ) from None
