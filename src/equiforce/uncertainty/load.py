"""Load an ensemble from model files, a committee run directory or a multi-head model."""

from __future__ import annotations

import json
import warnings
from collections.abc import Sequence
from pathlib import Path

import torch

from equiforce.models.base import PotentialModel
from equiforce.uncertainty.committee import Committee
from equiforce.uncertainty.ensemble import EnsembleError, EnsembleModel
from equiforce.uncertainty.heads import HeadEnsemble
from equiforce.uncertainty.latent import (
    LATENT_FILE,
    LatentUncertainty,
    load_latent,
    read_latent,
)

#: the model file of a training run directory
BEST = "best.pt"
#: written by ``equiforce train --committee K`` (train/committee.py), and the
#: file a finished run writes last (train/rundir.py)
COMMITTEE_FILE = "committee.json"
FINAL_METRICS = "final_metrics.json"


def committee_members(path: str | Path) -> list[Path]:
    """Model files of a committee directory: ``member_<k>/best.pt`` in k order.

    Also accepts a run directory or model file (one member) for uniform handling.
    """
    path = Path(path)
    if path.name == LATENT_FILE and path.is_file():  # the model it was fitted to
        return [path.parent / read_latent(path)["config"]["model_file"]]
    if not path.is_dir():  # a file (load_model names what is wrong with it)
        return [path]
    if (path / COMMITTEE_FILE).is_file():
        return _finished_members(path)
    members = sorted(path.glob("member_*/" + BEST), key=_member_number)
    if members:
        return members
    if (path / BEST).is_file():
        return [path / BEST]
    raise EnsembleError(
        f"{path}: neither a model file, nor a run directory with {BEST}, nor a "
        f"committee directory with member_<k>/{BEST}"
    )


def _finished_members(path: Path) -> list[Path]:
    """The members ``committee.json`` lists, each required to have finished.

    An interrupted member already has a ``best.pt`` (its best so far): using it
    would mix partly trained members into the spread without a word.
    """
    record = json.loads((path / COMMITTEE_FILE).read_text())
    members = [path / m for m in record.get("members", [])]
    for best in members:
        final = best.parent / FINAL_METRICS
        stop = json.loads(final.read_text()).get("stop") if final.is_file() else None
        if not best.is_file() or stop in (None, "interrupted"):
            raise EnsembleError(
                f"{path}: committee member {best.parent.name} has not finished "
                f"training; run the same `equiforce train ... --committee "
                f"{len(members)}` again to complete it"
            )
    return members


def _member_number(p: Path) -> int:
    tail = p.parent.name.removeprefix("member_")
    return int(tail) if tail.isdigit() else 1 << 30


def load_ensemble(
    paths: str | Path | Sequence[str | Path],
    device: str | torch.device = "cpu",
    dtype: torch.dtype | None = None,
    forces_std: bool = True,
    latent: bool = True,
) -> PotentialModel:
    """A model with an uncertainty when the files make one, else the plain model.

    Args:
        paths: one or several model files or run directories (or one string
            of comma-separated ones); a committee directory (``member_<k>/best.pt``, from ``equiforce train --committee
            K``) counts as its members.
        device: torch device.
        dtype: compute dtype (default: each file's).
        forces_std: for a multi-head model, compute every head's forces
            (:class:`HeadEnsemble`).
        latent: use a ``latent.pt`` beside a single model file
            (``equiforce uncertainty fit``); a path naming ``latent.pt`` itself
            means the model file beside it that it was fitted to. A
            ``latent.pt`` found beside the model but fitted to other weights
            (the run resumed since) is skipped with a warning; named, it is an
            error.

    Returns:
        a :class:`Committee` of two or more model files; for one model file, a
        :class:`LatentUncertainty` when ``latent.pt`` lies beside it, else a
        :class:`HeadEnsemble` of a model with readout heads; otherwise the one
        plain model.
    """
    from equiforce.models.registry import load_model

    if isinstance(paths, (str, Path)):
        text = str(paths)
        many = "," in text and not Path(text).exists()
        paths = [p for p in text.split(",") if p] if many else [paths]
    named = len(paths) == 1 and Path(paths[0]).name == LATENT_FILE
    files = [f for p in paths for f in committee_members(p)]
    models = [load_model(f, device=device, dtype=dtype) for f in files]
    if len(models) > 1:
        return Committee(models)
    model = models[0]
    scorer = Path(files[0]).parent / LATENT_FILE
    if latent and scorer.is_file():  # fitted to this file (not, say, last.pt)?
        try:
            if read_latent(scorer)["config"]["model_file"] == Path(files[0]).name:
                return load_latent(scorer, model)
        except EnsembleError as err:
            if named:
                raise
            warnings.warn(f"{err}; using the model without it", stacklevel=2)
    if getattr(model, "n_heads", 1) > 1:
        return HeadEnsemble(model, forces_std=forces_std)
    return model


def has_uncertainty(model: PotentialModel) -> bool:
    """Whether ``model``'s outputs carry ``forces_std`` (an ensemble: and ``energy_std``)."""
    return isinstance(model, (EnsembleModel, LatentUncertainty))
