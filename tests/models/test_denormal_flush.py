"""Flushing subnormals to zero (the CPU default of every command) leaves forces unchanged.

Each family on the contract structures (ethanol; a small triclinic periodic cell) in
float32: energies and forces with IEEE subnormals and with flushing agree to 1e-6
relative. So3krates (PhysNet radial basis) and SchNet (Gaussian basis) produce
subnormals on these structures (checked below), so for them the two runs differ
in what is computed; PaiNN and NequIP produce none here and must agree exactly.
"""

import numpy as np
import pytest
import torch
from ase.build import molecule

from equiforce import keys
from equiforce.accel.denormals import SubnormalCensus, flush_active, flush_denormals
from equiforce.testing import (
    TINY_SO3KRATES,
    ModelContractTests,
    assert_close,
    energy_forces,
    random_crystal,
)

pytestmark = pytest.mark.skipif(
    not torch.set_flush_denormal(False), reason="no flush-to-zero mode on this CPU"
)

#: family -> (small overrides, produces subnormals on ethanol)
FAMILIES = {
    # num_radial 32 (the default): β of the PhysNet basis grows with K², and its
    # exp(−β(e^{−d} − μ)²) underflows through the subnormal range
    "so3krates": ({**TINY_SO3KRATES, "num_radial": 32}, True),
    "schnet": ({"num_features": 16, "num_interactions": 2}, True),
    "painn": (
        {"num_features": 16, "num_interactions": 2, "zero_init_readout": False},
        False,
    ),
    "nequip": ({"num_features": 4, "num_layers": 2, "num_species_channels": 2}, False),
}


class _Family(ModelContractTests):
    """The contract suite's model and graph helpers (not collected: no Test prefix)."""


def structures(model, family: _Family):
    ethanol = molecule("CH3CH2OH")
    pos, z, cell = random_crystal(np.random.default_rng(3), n_atoms=6)
    dtype = torch.float32
    return {
        "ethanol": family.graph(ethanol.positions, ethanol.numbers, model, dtype),
        "periodic": family.graph(pos, z, model, dtype, cell, np.ones(3, bool)),
    }


@pytest.fixture
def ieee_afterwards():
    yield
    flush_denormals(False)


def forces_both_ways(model, graph, create_graph: bool):
    """((energy, forces) with IEEE subnormals, same flushed), [{operator: subnormals}]."""
    results, produced = [], []
    for flush in (False, True):
        assert flush_denormals(flush) == flush and flush_active() == flush
        if create_graph:  # the training path (second derivatives kept)
            with SubnormalCensus() as census:
                results.append(energy_forces_graph(model, graph))
            produced.append({k: v for k, v in census.counts.items() if v})
        else:  # inference (So3krates: spline filter tables)
            results.append(energy_forces(model, graph))
    return results, produced


def energy_forces_graph(model, graph):
    out = model(graph, compute_forces=True, create_graph=True)
    return out[keys.ENERGY].detach().double().numpy(), out[
        keys.FORCES
    ].detach().double().numpy()


@pytest.mark.parametrize("name", list(FAMILIES))
def test_flushing_changes_forces_below_1e6(name, ieee_afterwards):
    overrides, makes_subnormals = FAMILIES[name]
    family = _Family()
    family.model_name, family.overrides = name, overrides
    model = family.make_model(torch.float32)
    for label, graph in structures(model, family).items():
        for create_graph in (False, True):
            what = f"{name} {label} {'training' if create_graph else 'inference'}"
            ((e_ieee, f_ieee), (e_flush, f_flush)), produced = forces_both_ways(
                model, graph, create_graph
            )
            if create_graph:
                # flushed, no operator may return a subnormal (catches an operator
                # or a thread that the flush does not reach), except exp: ATen's
                # vectorised exp writes the result's exponent bits itself, which
                # FTZ does not see; DAZ then makes its consumers read them as 0
                assert set(produced[1]) <= {"exp"}, (what, produced)
                if label == "ethanol" and makes_subnormals:
                    assert produced[0], f"{what}: nothing to flush, nothing tested"
            assert np.abs(f_ieee).max() > 1e-3, what  # non-trivial forces
            # catches a model whose outputs depend on values below 1e-38 (a
            # division by a tiny norm, a log of an underflowed exponential)
            assert_close(f_flush, f_ieee, 1e-6, f"{what} forces")
            assert_close(e_flush, e_ieee, 1e-6, f"{what} energy")


def test_potential_leaves_the_floating_point_mode_alone(monkeypatch, ieee_afterwards):
    """A Potential built from Python flushes only when asked (fails if it flushes by default).

    The mode is process-wide: a library must not change a host program's
    arithmetic behind its back. ``flush_denormals=True`` and
    ``EQUIFORCE_FLUSH_DENORMALS=1`` opt in.
    """
    from equiforce.models.registry import build_model
    from equiforce.potential import Potential

    model = build_model("so3krates", **TINY_SO3KRATES)
    monkeypatch.delenv("EQUIFORCE_FLUSH_DENORMALS", raising=False)
    flush_denormals(False)
    Potential(model, compile=False)
    assert not flush_active()
    Potential(model, compile=False, flush_denormals=True)
    assert flush_active()
    flush_denormals(False)
    monkeypatch.setenv("EQUIFORCE_FLUSH_DENORMALS", "1")
    Potential(model, compile=False)
    assert flush_active()
