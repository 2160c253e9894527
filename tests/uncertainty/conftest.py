"""Tiny ensembles fitted in seconds to EMT-labelled ethanol frames near equilibrium.

The uncertainty tests need ensembles whose members agree where they saw data
and disagree away from it, so the members are actually fitted (a few hundred
Adam steps on 8 rattled frames) rather than left at their random initialisation.
"""

import pytest
from _ensemble_helpers import fit, labelled_frames, tiny


@pytest.fixture(scope="session")
def train_frames():
    return labelled_frames(4, 0.05, seed=0)


@pytest.fixture(scope="session")
def committee_models(train_frames):
    """Three members fitted from seeds 0, 1, 2."""
    return [fit(tiny(seed), train_frames) for seed in range(3)]


@pytest.fixture(scope="session")
def heads_model(train_frames):
    """One model with four readout heads, fitted with the per-head energy loss."""
    return fit(tiny(0, readout_heads=4), train_frames)
