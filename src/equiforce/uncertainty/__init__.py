"""Models that say when they are unsure: committees and multi-head ensembles.

- :class:`Committee`: K independently trained models (``equiforce train
  config.yaml --committee K``); their mean is the potential, their spread the
  uncertainty.
- :class:`HeadEnsemble`: the readout heads of one model trained with
  ``readout_heads: K`` (So3krates), a shallow ensemble at almost the cost of one
  model.
- :class:`LatentUncertainty`: one model and a Gaussian mixture over its
  training features (``equiforce uncertainty fit RUN_DIR``); a predicted force
  error at a few percent of the model's cost.
- :func:`load_ensemble`: any of them from files.

Both are :class:`~equiforce.models.base.PotentialModel` subclasses: the
calculator, the MD engine and ``equiforce eval`` take them like any model and
pass on ``energy_std`` (eV), ``forces_std`` (per atom, eV/Å) and
``forces_std_max`` (per structure, eV/Å) (:mod:`equiforce.keys`). See
``docs/uncertainty.md``.
"""

from equiforce.uncertainty.committee import Committee
from equiforce.uncertainty.ensemble import EnsembleError, EnsembleModel, summarize
from equiforce.uncertainty.heads import HeadEnsemble
from equiforce.uncertainty.latent import (
    LatentUncertainty,
    fit_latent,
    load_latent,
    save_latent,
)
from equiforce.uncertainty.load import committee_members, has_uncertainty, load_ensemble

__all__ = [
    "Committee",
    "EnsembleError",
    "EnsembleModel",
    "HeadEnsemble",
    "LatentUncertainty",
    "committee_members",
    "fit_latent",
    "has_uncertainty",
    "load_ensemble",
    "load_latent",
    "save_latent",
    "summarize",
]
