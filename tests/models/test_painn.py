"""PaiNN: the shared contract suite plus PaiNN-specific checks."""

import numpy as np
import pytest
import torch

from equiforce.data.graph import AtomicGraph
from equiforce.models.painn import PaiNNConfig
from equiforce.models.registry import build_model
from equiforce.testing import ModelContractTests, random_molecule

# random (non-zero) readout: the contract suite needs non-trivial energies
SMALL = {
    "num_features": 16,
    "num_interactions": 2,
    "num_radial": 8,
    "zero_init_readout": False,
}


class TestPaiNN(ModelContractTests):
    model_name = "painn"
    overrides = SMALL


class TestPaiNNSharedFilters(ModelContractTests):
    model_name = "painn"
    overrides = {**SMALL, "shared_filters": True, "cutoff_fn": "phys"}


def test_default_config_follows_the_paper():
    cfg = PaiNNConfig()
    assert (cfg.num_features, cfg.num_interactions, cfg.num_radial, cfg.cutoff) == (
        128,
        3,
        20,
        5.0,
    )
    assert cfg.radial_basis == "fourier" and cfg.cutoff_fn == "cosine"


def test_parameter_count_of_default_painn():
    # embedding 119F; filter K·3TF + 3TF; per block: message φ (F²+F)+(3F²+3F),
    # update U,V 2F², a (2F²+F)+(3F²+3F); readout (F·F/2+F/2)+(F/2+1)
    F, K, T = 128, 20, 3
    per = (
        (F * F + F)
        + (3 * F * F + 3 * F)
        + 2 * F * F
        + (2 * F * F + F)
        + (3 * F * F + 3 * F)
    )
    expected = (
        119 * F + (K + 1) * 3 * T * F + T * per + (F * (F // 2) + F // 2) + F // 2 + 1
    )
    assert build_model("painn").num_parameters() == expected


def test_vector_features_carry_angular_information():
    """With r_c below the H–H distance, a one-block invariant model sees the same
    neighbour distances in a bent and a linear H2O; PaiNN's vector features tell the
    angles apart, and zeroing the vector path (U = V = 0) removes the difference."""
    model = build_model(
        "painn",
        dtype=torch.float64,
        num_features=16,
        num_interactions=1,
        cutoff=1.2,
        zero_init_readout=False,
    )
    z = np.array([8, 1, 1])

    def energy(angle):
        a = np.deg2rad(angle)
        pos = np.array(
            [[0, 0, 0], [0.96, 0, 0], [0.96 * np.cos(a), 0.96 * np.sin(a), 0]]
        )
        return model(AtomicGraph.from_arrays(pos, z, 1.2), compute_forces=False)[
            "energy"
        ].item()

    assert abs(energy(104.5) - energy(180.0)) > 1e-6
    with torch.no_grad():
        model.updates[0].mix_u.weight.zero_()
        model.updates[0].mix_v.weight.zero_()
    assert energy(104.5) == pytest.approx(energy(180.0), abs=1e-12)


def test_zero_initialised_readout_returns_only_e0():
    e0 = {1: -1.0, 6: -2.0, 8: -3.0}
    model = build_model(
        "painn", dtype=torch.float64, e0=e0, **{**SMALL, "zero_init_readout": True}
    )
    pos, z = random_molecule(np.random.default_rng(0))
    out = model(AtomicGraph.from_arrays(pos, z, model.cutoff))
    assert out["energy"].item() == pytest.approx(sum(e0[int(a)] for a in z), abs=1e-12)
    assert out["forces"].abs().max().item() == 0.0
