"""Checkpoints: config + state_dict + statistics, loadable with ``weights_only=True``.

A checkpoint is a plain dict of tensors and Python builtins::

    {format_version, equiforce_version, model_name, model_config, dtype,
     state_dict, statistics, train_config}

Modules are never pickled, so loading a file cannot execute code. Writes are
atomic (temporary file in the same folder + ``os.replace``). This module is the
file format only; :func:`equiforce.models.registry.load_model` rebuilds a model
from a file through the registry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from equiforce.atomic import atomic_torch_save
from equiforce.errors import EquiforceError
from equiforce.version import __version__

if TYPE_CHECKING:
    from equiforce.models.base import PotentialModel

FORMAT_VERSION = 1
_REQUIRED = ("format_version", "model_name", "model_config", "state_dict")


class CheckpointError(EquiforceError):
    """The file is not a valid equiforce checkpoint."""


def model_payload(
    model: PotentialModel,
    statistics: dict | None = None,
    train_config: dict | None = None,
) -> dict[str, Any]:
    """The checkpoint dict of ``model`` (see module docstring)."""
    if not model.model_name or model.config is None:
        raise CheckpointError(
            "model has no registry name/config; build it with build_model()"
        )
    dtype = next(iter(model.parameters())).dtype
    return {
        "format_version": FORMAT_VERSION,
        "equiforce_version": __version__,
        "model_name": model.model_name,
        "model_config": model.config.model_dump(mode="json"),
        "dtype": str(dtype).removeprefix("torch."),
        "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "statistics": dict(statistics or {}),
        "train_config": dict(train_config or {}),
    }


def save_model(
    model: PotentialModel,
    path: str | Path,
    statistics: dict | None = None,
    train_config: dict | None = None,
) -> None:
    """Write ``model`` to ``path`` atomically."""
    atomic_torch_save(model_payload(model, statistics, train_config), path)


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    """Read and check a checkpoint dict with ``torch.load(weights_only=True)``.

    Raises:
        CheckpointError: missing, truncated, foreign or newer-format file.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint file does not exist")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - torch raises many kinds here
        first = (str(err).splitlines() or [""])[0][:200]
        size = path.stat().st_size
        raise CheckpointError(
            f"{path}: not a readable equiforce checkpoint ("
            + ("empty file" if size == 0 else "truncated, corrupt or not a torch file")
            + f"; {type(err).__name__}: {first})"
        ) from None
    if not isinstance(payload, dict) or any(k not in payload for k in _REQUIRED):
        raise CheckpointError(
            f"{path}: not an equiforce checkpoint (expected a dict with keys {_REQUIRED})"
        )
    _check_header(path, payload)
    return payload


#: checkpoint dtypes a model can be stored in
DTYPES = ("float32", "float64")


def _check_header(path: Path, payload: dict[str, Any]) -> None:
    """Raise :class:`CheckpointError` naming the first malformed header field."""

    def bad(field: str, expected: str) -> CheckpointError:
        value = repr(payload[field])[:80]
        return CheckpointError(f"{path}: {field}: expected {expected}, got {value}")

    version = payload["format_version"]
    if isinstance(version, bool) or not isinstance(version, int) or version < 1:
        raise bad("format_version", "a positive integer")
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version} is newer than this "
            f"equiforce ({FORMAT_VERSION}); upgrade equiforce"
        )
    if not isinstance(payload["model_name"], str):
        raise bad("model_name", "a model family name")
    if not isinstance(payload["model_config"], dict):
        raise bad("model_config", "a mapping of config fields")
    state = payload["state_dict"]
    if not isinstance(state, dict) or not all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in state.items()
    ):
        raise bad("state_dict", "a mapping of names to tensors")
    if payload.get("dtype", "float32") not in DTYPES:
        raise bad("dtype", f"one of {DTYPES}")
