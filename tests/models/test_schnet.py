"""SchNet (and its PhysNet-style option): the shared contract suite plus specifics."""

import math

import numpy as np
import pytest
import torch

from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model
from equiforce.models.schnet import SchNetConfig, shifted_softplus
from equiforce.testing import ModelContractTests, random_molecule

SMALL = {"num_features": 16, "num_interactions": 2, "num_radial": 12}


class TestSchNet(ModelContractTests):
    model_name = "schnet"
    overrides = SMALL


class TestSchNetPhysNet(ModelContractTests):
    model_name = "schnet"
    overrides = {
        **SMALL,
        "interaction": "physnet",
        "radial_basis": "physnet",
        "cutoff_fn": "phys",
        "num_residual_interaction": 1,
        "num_residual_atomic": 1,
    }


def test_shifted_softplus_values():
    x = torch.tensor([0.0, 1.0, -30.0, 30.0], dtype=torch.float64)
    expected = [0.0, math.log(0.5 * math.e + 0.5), -math.log(2.0), 30.0 - math.log(2.0)]
    assert shifted_softplus(x).tolist() == pytest.approx(expected, abs=1e-12)


def test_default_config_follows_the_paper():
    cfg = SchNetConfig()
    assert (cfg.num_features, cfg.num_interactions, cfg.cutoff) == (64, 3, 5.0)
    assert cfg.cutoff_fn == "cosine" and cfg.radial_basis == "gaussian"
    with pytest.raises(ValueError, match="Extra inputs"):
        SchNetConfig(num_feature=3)


def test_parameter_count_of_default_schnet():
    # embedding 119·F; per interaction: in2f F², filter K·F+F and F²+F, f2out F²+F,
    # out F²+F; readout F·F/2+F/2 + F/2+1
    F, K, T = 64, 51, 3
    per = F * F + (K * F + F) + (F * F + F) + (F * F + F) + (F * F + F)
    expected = 119 * F + T * per + (F * (F // 2) + F // 2) + (F // 2 + 1)
    assert build_model("schnet").num_parameters() == expected


def test_energy_depends_only_on_neighbours_within_cutoff():
    """A pair farther apart than r_c has exactly the energy of two isolated atoms."""
    model = build_model("schnet", dtype=torch.float64, **SMALL)
    z = np.array([6, 8])
    far = model.cutoff + 0.01
    e_pair = model(
        AtomicGraph.from_arrays(np.array([[0, 0, 0], [far, 0, 0.0]]), z, 8.0),
        compute_forces=False,
    )["energy"].item()
    e_single = sum(
        model(
            AtomicGraph.from_arrays(np.zeros((1, 3)), z[k : k + 1], 8.0),
            compute_forces=False,
        )["energy"].item()
        for k in range(2)
    )
    assert e_pair == pytest.approx(e_single, abs=1e-12)
    near = model(
        AtomicGraph.from_arrays(np.array([[0, 0, 0], [1.2, 0, 0.0]]), z, 8.0),
        compute_forces=False,
    )["energy"].item()
    assert abs(near - e_single) > 1e-6


def test_zero_initialised_readout_returns_only_e0():
    e0 = {1: -1.0, 6: -2.0, 8: -3.0}
    model = build_model(
        "schnet", dtype=torch.float64, e0=e0, zero_init_readout=True, **SMALL
    )
    pos, z = random_molecule(np.random.default_rng(0))
    out = model(AtomicGraph.from_arrays(pos, z, model.cutoff))
    assert out["energy"].item() == pytest.approx(sum(e0[int(a)] for a in z), abs=1e-12)
    assert out["forces"].abs().max().item() == 0.0
