import math

import numpy as np
import pytest
import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.train.loss import WeightedLoss, energy_loss, forces_loss, stress_loss


def _two_graph_batch(forces_ref, energy_ref):
    """A 1-atom graph and a 3-atom graph (far apart: no edges needed)."""
    g1 = AtomicGraph.from_arrays(np.zeros((1, 3)), [1], cutoff=1.0)
    g2 = AtomicGraph.from_arrays(
        np.arange(9.0).reshape(3, 3) * 10, [1, 1, 8], cutoff=1.0
    )
    batch = AtomicGraph.collate([g1, g2])
    batch.targets[keys.FORCES] = torch.tensor(forces_ref, dtype=torch.float64)
    batch.targets[keys.ENERGY] = torch.tensor(energy_ref, dtype=torch.float64)
    return batch


def test_energy_loss_total_and_per_atom():
    pred = torch.tensor([1.0, 5.0], dtype=torch.float64)
    ref = torch.tensor([0.0, 2.0], dtype=torch.float64)
    n = torch.tensor([1, 3])
    # total: mean(1², 3²) = 5; per atom: mean(1², 1²) = 1
    assert energy_loss(pred, ref, n).item() == pytest.approx(5.0)
    assert energy_loss(pred, ref, n, per_atom=True).item() == pytest.approx(1.0)
    # a missing label does not count
    ref_nan = torch.tensor([math.nan, 2.0], dtype=torch.float64)
    assert energy_loss(pred, ref_nan, n).item() == pytest.approx(9.0)


def test_forces_loss_weights_every_structure_equally():
    # graph 0: one atom, error (1, 0, 0) -> mean over 3 components = 1/3
    # graph 1: three atoms, error 2 on one component only -> 4 / 9
    pred = torch.zeros(4, 3)
    ref = torch.zeros(4, 3)
    ref[0, 0] = 1.0
    ref[2, 1] = -2.0
    gi = torch.tensor([0, 1, 1, 1])
    expected = 0.5 * (1 / 3 + 4 / 9)
    assert forces_loss(pred, ref, gi, 2).item() == pytest.approx(expected)
    # plain per-component mean would give (1 + 4) / 12: a different number
    assert expected != pytest.approx(5 / 12)
    # NaN components are masked: graph 1 now averages over 8 components
    ref[3, 2] = math.nan
    assert forces_loss(pred, ref, gi, 2).item() == pytest.approx(0.5 * (1 / 3 + 4 / 8))


def test_stress_loss_masks_missing():
    pred = torch.zeros(2, 3, 3)
    ref = torch.full((2, 3, 3), 3.0)
    ref[1] = math.nan
    assert stress_loss(pred, ref).item() == pytest.approx(9.0)


def test_weighted_loss_combines_terms():
    batch = _two_graph_batch(np.zeros((4, 3)), [0.0, 0.0])
    out = {
        keys.ENERGY: torch.tensor([2.0, -1.0], dtype=torch.float64),
        keys.FORCES: torch.ones(4, 3),
    }
    loss, parts = WeightedLoss(0.01, 0.99)(out, batch)
    # L_E = (4 + 1) / 2 = 2.5 ; L_F = 1
    assert parts["loss_energy"] == pytest.approx(2.5)
    assert parts["loss_forces"] == pytest.approx(1.0)
    assert loss.item() == pytest.approx(0.01 * 2.5 + 0.99 * 1.0)
    assert loss.dtype == torch.float64
    loss_pa, parts_pa = WeightedLoss(1.0, 0.0, energy_per_atom=True)(out, batch)
    # per atom: (2/1)², (-1/3)² -> mean = (4 + 1/9) / 2
    assert loss_pa.item() == pytest.approx((4 + 1 / 9) / 2)
    assert "loss_forces" not in parts_pa
    # part_names lists what terms() reports for a fully labelled batch
    assert set(WeightedLoss(0.01, 0.99).part_names) == set(parts)
    assert set(WeightedLoss(1.0, 0.0).part_names) == set(parts_pa)


def test_loss_is_differentiable():
    batch = _two_graph_batch(np.zeros((4, 3)), [0.0, 0.0])
    f = torch.zeros(4, 3, requires_grad=True)
    e = torch.zeros(2, dtype=torch.float64, requires_grad=True)
    loss, _ = WeightedLoss()({keys.ENERGY: e + 1.0, keys.FORCES: f + 1.0}, batch)
    loss.backward()
    # dL/dE_g = 0.01 * 2 * 1 / 2 ; dL/dF on graph 0 = 0.99 * 0.5 * 2 / 3
    assert e.grad[0].item() == pytest.approx(0.01)
    assert f.grad[0, 0].item() == pytest.approx(0.99 / 3)
    assert f.grad[1, 0].item() == pytest.approx(0.99 / 9)
