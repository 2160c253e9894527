"""Training SO3LR on charges: dipole and Hirshfeld losses, metrics, config checks.

Synthetic data: water (Q = 0), hydroxide (−1) and hydronium (+1) with EMT
energies and forces, dipoles Σ q_i r_i of fixed per-element charges shifted to
the total charge (the form of SO3LR's charge head, so learnable) and
per-element Hirshfeld ratios.
"""

import json

import ase.io
import numpy as np
import pytest
import torch
from _train_helpers import TINY_SO3LR
from ase import Atoms
from ase.calculators.emt import EMT

from equiforce import keys
from equiforce.config import ConfigError, DataSource, validate_config
from equiforce.data.graph import AtomicGraph
from equiforce.data.io import DataError, read
from equiforce.models.registry import build_model
from equiforce.train.evaluate import evaluate
from equiforce.train.launch import train
from equiforce.train.loss import WeightedLoss, dipole_loss, hirshfeld_loss

Q0 = {1: 0.4, 8: -0.8}  # e
H0 = {1: 0.6, 8: 0.9}
MOLECULES = {
    0: ("OH2", [[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]]),
    -1: ("OH", [[0, 0, 0], [0.97, 0, 0]]),
    1: ("OH3", [[0, 0, 0.1], [0.97, 0, 0], [-0.48, 0.84, 0], [-0.48, -0.84, 0]]),
}


def charged_frames(n: int, seed: int = 0, labels: bool = True) -> list[Atoms]:
    rng = np.random.default_rng(seed)
    out = []
    for k in range(n):
        charge = (0, -1, 1)[k % 3]
        symbols, pos = MOLECULES[charge]
        a = Atoms(symbols, positions=pos)
        a.positions += rng.normal(0, 0.04, a.positions.shape) + rng.normal(0, 1, 3)
        a.calc = EMT()
        a.info["ref_energy"] = a.get_potential_energy()
        a.arrays["ref_forces"] = a.get_forces()
        a.calc = None
        a.info["charge"] = charge
        if labels:
            q0 = np.array([Q0[z] for z in a.numbers])
            q = q0 + (charge - q0.sum()) / len(a)
            a.info["dipole"] = (q[:, None] * a.positions).sum(0)
            a.arrays["hirshfeld_ratios"] = np.array([H0[z] for z in a.numbers])
        out.append(a)
    return out


def raw_config(path, **training) -> dict:
    train = {
        "batch_size": 6,
        "max_steps": 30,
        "max_epochs": None,
        "valid_interval": 10,
        "log_interval": 5,
        "threads": 1,
        "lr": 3e-3,
        "energy_weight": 0.01,
        "forces_weight": 0.1,
        "dipole_weight": 1.0,
        "hirshfeld_weight": 1.0,
    } | training
    return {
        "data": {
            "train": {
                "path": str(path),
                "energy_key": "ref_energy",
                "forces_key": "ref_forces",
            },
            "n_valid": 6,
            "max_force": None,
        },
        "model": {"name": "so3lr", "preset": "small", "overrides": TINY_SO3LR},
        "training": train,
    }


@pytest.fixture(scope="module")
def data_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("charged") / "charged.extxyz"
    ase.io.write(path, charged_frames(24))
    return path


@pytest.fixture(scope="module")
def trained(data_file):
    torch.set_num_threads(1)
    run = data_file.parent / "run"
    best = train(validate_config(raw_config(data_file), run.parent), run, False)
    return run, best


def _column(run, name: str) -> list[float]:
    import csv

    rows = list(csv.DictReader((run / "metrics.csv").open()))
    return [float(r[name]) for r in rows if r.get(name)]


def test_dipole_and_hirshfeld_losses_decrease(trained):
    """Catches property losses that do not reach the weights (no gradient)."""
    run, _ = trained
    dipole = _column(run, "train_loss_dipole")
    hirshfeld = _column(run, "train_loss_hirshfeld")
    assert len(dipole) == 6 and len(hirshfeld) == 6
    assert dipole[-1] < 0.3 * dipole[0]
    assert hirshfeld[-1] < 0.3 * hirshfeld[0]
    final = json.loads((run / "final_metrics.json").read_text())
    assert np.isfinite(final["dipole_mae"]) and np.isfinite(
        final["hirshfeld_ratios_mae"]
    )
    assert _column(run, "valid_dipole_mae")  # the validation columns are logged


def test_eval_reports_property_errors(trained, data_file, tmp_path):
    """equiforce eval: dipole and Hirshfeld rows when the data have labels."""
    _, best = trained
    metrics = evaluate(
        best,
        DataSource(
            path=str(data_file), energy_key="ref_energy", forces_key="ref_forces"
        ),
        tmp_path,
        progress=False,
    )
    assert metrics["n_labelled"][keys.DIPOLE] == 24
    # dipoles of the trained model: better than predicting zero dipoles
    frames = read(data_file)
    zero_mae = 1000 * np.mean([np.abs(a.info[keys.DIPOLE]).mean() for a in frames])
    assert metrics["dipole_mae"] < 0.5 * zero_mae
    assert metrics["hirshfeld_ratios_mae"] > 0


def test_forward_properties_equal_atomic_properties():
    """One backbone pass: forward(properties=True) gives atomic_properties' values,
    differentiable in the weights; catches charges taken from the wrong features."""
    torch.manual_seed(0)
    model = build_model("so3lr", "small", dtype=torch.float64, **TINY_SO3LR)
    frames = charged_frames(3, labels=False)
    graphs = [
        AtomicGraph.from_atoms(a, model.cutoff, lr_cutoff=model.lr_cutoff)
        for a in frames
    ]
    batch = AtomicGraph.collate(graphs)
    out = model(batch, create_graph=True, properties=True)
    ref = model.atomic_properties(batch)
    for key in (keys.CHARGES, keys.HIRSHFELD_RATIOS, keys.DIPOLE):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-12, atol=1e-12)
    # partial charges sum to each structure's total charge (0, -1, +1)
    totals = torch.zeros(3, dtype=torch.float64).index_add_(
        0, batch.graph_index, out[keys.CHARGES]
    )
    torch.testing.assert_close(
        totals, torch.tensor([0.0, -1.0, 1.0], dtype=torch.float64)
    )
    out[keys.DIPOLE].pow(2).sum().backward()
    assert model.charge_head.bias.weight.grad.abs().sum() > 0
    assert model._captured is None  # nothing left behind for the next call


def test_loss_terms_by_hand():
    """Masked means: a NaN label drops its structure; per-graph atom averages."""
    pred = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]])
    ref = torch.tensor([[0.0, 0.0, 0.0], [float("nan")] * 3])
    assert float(dipole_loss(pred, ref)) == pytest.approx(1 / 3)
    h_pred = torch.tensor([1.0, 1.0, 1.0])
    h_ref = torch.tensor([0.0, 1.0, 1.0])
    gi = torch.tensor([0, 0, 1])
    # graph 0: mean(1, 0) = 0.5; graph 1: 0 -> 0.25
    assert float(hirshfeld_loss(h_pred, h_ref, gi, 2)) == pytest.approx(0.25)
    loss = WeightedLoss(0.0, 0.0, dipole_weight=2.0, hirshfeld_weight=4.0)
    assert loss.part_names == ("loss", "loss_dipole", "loss_hirshfeld")
    batch = AtomicGraph(
        positions=torch.zeros(3, 3),
        atomic_numbers=torch.ones(3, dtype=torch.long),
        graph_index=gi,
        edge_index=torch.zeros(2, 0, dtype=torch.long),
        edge_shifts=torch.zeros(0, 3),
        cell=torch.zeros(2, 3, 3),
        pbc=torch.zeros(2, 3, dtype=torch.bool),
        n_atoms=torch.tensor([2, 1]),
        targets={keys.DIPOLE: ref, keys.HIRSHFELD_RATIOS: h_ref},
    )
    total, parts = loss({keys.DIPOLE: pred, keys.HIRSHFELD_RATIOS: h_pred}, batch)
    assert float(total) == pytest.approx(2 / 3 + 1.0)


def test_weight_on_a_model_without_charges_is_a_config_error(data_file):
    raw = raw_config(data_file)
    raw["model"] = {"name": "so3krates", "overrides": {"num_features": 16}}
    with pytest.raises(ConfigError, match="training.dipole_weight: model 'so3krates'"):
        validate_config(raw, data_file.parent)
    raw = raw_config(data_file, compile=True)
    with pytest.raises(ConfigError, match="compiled step does not train on dipoles"):
        validate_config(raw, data_file.parent)


def test_missing_weighted_label_names_the_weight(tmp_path):
    """A weighted dipole missing from a frame is a DataError naming the weight."""
    frames = charged_frames(12)
    del frames[4].info["dipole"]
    path = tmp_path / "d.extxyz"
    ase.io.write(path, frames)
    config = validate_config(raw_config(path, hirshfeld_weight=0.0), tmp_path)
    with pytest.raises(
        DataError, match=r"frame 4: dipole: missing in 1 of 12 .*training.dipole_weight"
    ):
        train(config, tmp_path / "run", False)
    raw = raw_config(path, hirshfeld_weight=0.0, max_steps=2)
    raw["data"]["optional_labels"] = ["dipole"]  # accepted: trains where present
    train(validate_config(raw, tmp_path), tmp_path / "run2", False)
