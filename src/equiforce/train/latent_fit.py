"""Fit a training run's latent uncertainty from the data the run recorded.

``equiforce uncertainty fit RUN_DIR`` reads the run's model (``best.pt``), its
resolved config and its split (``splits.json``), computes the final features
of every training structure, fits the Gaussian mixture on them and the error
map on the validation structures
(:func:`equiforce.uncertainty.latent.fit_latent`), and writes ``latent.pt``
beside the model, plus ``latent.json`` with the summary.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml

from equiforce.atomic import atomic_write_text
from equiforce.config import validate_config
from equiforce.errors import EquiforceError
from equiforce.models.registry import load_model
from equiforce.train.progress import Reporter
from equiforce.train.rundir import RunDir
from equiforce.train.setup import eval_batches, prepare_data
from equiforce.uncertainty.latent import (
    DEFAULT_DIMS,
    LATENT_FILE,
    fit_latent,
    save_latent,
)

#: the summary written beside ``latent.pt``
SUMMARY_FILE = "latent.json"


class LatentFitError(EquiforceError):
    """A run directory a latent uncertainty cannot be fitted from."""


def fit_run(
    run_dir: str | Path,
    n_components: int = 8,
    batch_size: int = 20,
    model_file: str = "best.pt",
    seed: int = 0,
    progress: bool = True,
    n_dims: int | None = DEFAULT_DIMS,
) -> Path:
    """Fit and write ``RUN_DIR/latent.pt``; return its path.

    Args:
        run_dir: a finished (or stopped) training run directory.
        n_components: Gaussian components of the mixture.
        batch_size: structures per feature call.
        model_file: the model file of the run to fit (``best.pt``).
        seed: initialisation of the mixture.
        progress: print progress and the summary.
        n_dims: principal components the mixture is fitted on, at most the
            feature width (None: all).

    Raises:
        LatentFitError: not a run directory, or its model file is missing.
    """
    run = RunDir(run_dir)
    model_path = run.path / model_file
    for need in (run.config, run.splits, model_path):
        if not need.is_file():
            raise LatentFitError(
                f"{run.path}: no {need.name}; give the directory of an equiforce "
                "training run (equiforce train), not a model file"
            )
    report = Reporter(progress)
    raw = yaml.safe_load(run.config.read_text())
    config = validate_config(raw, run.path, source=str(run.config), init_from=False)
    model = load_model(model_path).eval()
    stats = run.read_json(run.statistics) if run.statistics.is_file() else None
    data = prepare_data(
        config, model.cutoff, report, splits=run.read_json(run.splits), stats=stats
    )
    torch.manual_seed(seed)
    with report.status(f"fitting a {n_components}-component mixture"):
        latent, summary = fit_latent(
            model,
            eval_batches(data.train, batch_size)(),
            eval_batches(data.valid, batch_size)(),
            n_components=n_components,
            seed=seed,
            n_dims=n_dims,
        )
    out = run.path / LATENT_FILE
    save_latent(latent, out, model_file=model_file)
    summary = {"model_file": model_file, **summary}
    atomic_write_text(run.path / SUMMARY_FILE, json.dumps(summary, indent=1) + "\n")
    report.print(
        f"latent uncertainty: {summary['n_train_atoms']} training atoms, "
        f"{summary['n_components']} components over {summary['n_dims']} of "
        f"{summary['n_features']} feature axes; σ = "
        f"{summary['prefactor_eV_A']:.3g} eV/Å · u^{summary['exponent']:.2f} "
        f"(validation force RMSE {summary['valid_force_rmse_eV_A']:.3g} eV/Å)"
    )
    return out
