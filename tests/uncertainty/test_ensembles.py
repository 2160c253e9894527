"""Committee and multi-head ensembles: mean, spread, and where the spread grows."""

import copy

import numpy as np
import pytest
import torch
from _ensemble_helpers import distorted, labelled_frames, tiny
from ase.build import molecule

from equiforce import keys
from equiforce.calculator import EquiforceCalculator
from equiforce.potential import Potential
from equiforce.train.loss import WeightedLoss
from equiforce.uncertainty import (
    Committee,
    EnsembleError,
    HeadEnsemble,
    load_ensemble,
)


def _compute(model, atoms):
    return Potential(model, compile=False, skin=0.0).compute(
        atoms.positions, atoms.numbers
    )


def test_identical_members_have_zero_spread():
    # catches a spread computed against the wrong mean or with a stray offset
    m = tiny(3)
    out = _compute(
        Committee([m, copy.deepcopy(m), copy.deepcopy(m)]), molecule("CH3CH2OH")
    )
    assert float(out[keys.ENERGY_STD][0]) == pytest.approx(0.0, abs=1e-12)
    assert float(out[keys.FORCES_STD].abs().max()) == pytest.approx(0.0, abs=1e-12)
    single = _compute(m, molecule("CH3CH2OH"))
    torch.testing.assert_close(out[keys.FORCES], single[keys.FORCES])


def test_committee_mean_and_std_match_the_members():
    # the definition: mean over members, std = sqrt(mean_k |F_k − F̄|²) per atom
    atoms = molecule("CH3CH2OH")
    members = [tiny(s, zero_init_readout=False) for s in range(3)]
    out = _compute(Committee(members), atoms)
    each = [_compute(m, atoms) for m in members]
    e = torch.stack([o[keys.ENERGY] for o in each])  # (3, 1)
    f = torch.stack([o[keys.FORCES] for o in each])  # (3, 9, 3)
    torch.testing.assert_close(out[keys.ENERGY], e.mean(0))
    torch.testing.assert_close(out[keys.FORCES], f.mean(0))
    torch.testing.assert_close(out[keys.ENERGY_STD], e.std(0, unbiased=False))
    per_atom = (f - f.mean(0)).square().sum(-1).mean(0).sqrt()
    torch.testing.assert_close(out[keys.FORCES_STD], per_atom)
    assert float(out[keys.FORCES_STD_MAX][0]) == pytest.approx(float(per_atom.max()))
    assert float(out[keys.FORCES_STD_MAX][0]) > 0


def test_committee_spread_grows_away_from_the_data(committee_models):
    # members fitted from different seeds agree near the data, not far from it;
    # fails if the spread ignores the members or the structure
    near = labelled_frames(1, 0.05, seed=11)[0]
    far = distorted(near, 0.75)
    c = Committee(committee_models)
    s_near = float(_compute(c, near)[keys.FORCES_STD_MAX][0])
    s_far = float(_compute(c, far)[keys.FORCES_STD_MAX][0])
    assert s_far > 2.0 * s_near
    e_near = float(_compute(c, near)[keys.ENERGY_STD][0])
    e_far = float(_compute(c, far)[keys.ENERGY_STD][0])
    assert e_far > 2.0 * e_near


def test_heads_spread_grows_away_from_the_data(heads_model):
    near = labelled_frames(1, 0.05, seed=11)[0]
    far = distorted(near, 0.75)
    h = HeadEnsemble(heads_model)
    s_near = float(_compute(h, near)[keys.FORCES_STD_MAX][0])
    s_far = float(_compute(h, far)[keys.FORCES_STD_MAX][0])
    assert s_far > 2.0 * s_near


def test_identical_heads_have_zero_std():
    # every head a copy of head 0: the ensemble collapses to one model
    m = tiny(0, readout_heads=3, zero_init_readout=False)
    with torch.no_grad():
        r = m.readout
        w = r.first.weight.unflatten(0, (3, -1))
        b = r.first.bias.unflatten(0, (3, -1))
        w[1:] = w[0]
        b[1:] = b[0]
        r.last_weight[1:] = r.last_weight[0]
        r.last_bias[1:] = r.last_bias[0]
    out = _compute(HeadEnsemble(m), molecule("CH3CH2OH"))
    assert float(out[keys.ENERGY_STD][0]) == pytest.approx(0.0, abs=1e-10)
    assert float(out[keys.FORCES_STD].max()) == pytest.approx(0.0, abs=1e-10)


def test_head_forces_are_each_heads_gradient():
    # the batched backward must give head k's own −∂E_k/∂r (checked against a
    # model whose readout is head k alone) and the mean the plain model's forces
    atoms = molecule("CH3CH2OH")
    m = tiny(0, readout_heads=3, zero_init_readout=False)
    out = _compute(HeadEnsemble(m), atoms)
    plain = _compute(m, atoms)
    torch.testing.assert_close(out[keys.FORCES], plain[keys.FORCES])
    torch.testing.assert_close(out[keys.ENERGY], plain[keys.ENERGY])
    pos = torch.tensor(atoms.positions, requires_grad=True)
    g = Potential(m, compile=False).graph_for(atoms.positions, atoms.numbers)
    g.positions = pos
    for k in range(3):
        e_k = m.head_atomic_energies(g, g.edge_vectors(), True)[:, k].sum()
        (grad,) = torch.autograd.grad(e_k, pos)
        torch.testing.assert_close(out[keys.FORCES_MEMBERS][k], -grad)


def test_head_energy_loss_is_the_mean_of_each_heads_loss(train_frames):
    # loss_energy = (1/K) Σ_k (E_k − E_ref)²: catches a wrong spread term
    from _ensemble_helpers import batch_of

    m = tiny(0, readout_heads=3, zero_init_readout=False).train()
    batch = batch_of(train_frames)
    out = m(batch, compute_forces=True, create_graph=True)
    heads = out[keys.ENERGY_HEADS]  # (3, n_graphs)
    assert heads.shape == (3, len(train_frames))
    torch.testing.assert_close(heads.mean(0), out[keys.ENERGY])
    _, parts = WeightedLoss(energy_weight=1.0, forces_weight=1.0)(out, batch)
    ref = batch.targets[keys.ENERGY]
    expected = (heads - ref).square().mean(0).mean()
    assert parts["loss_energy"] == pytest.approx(float(expected.detach()), rel=1e-12)
    assert keys.ENERGY_HEADS not in m.eval()(batch)  # inference: the mean only


def test_calculator_reports_the_spread():
    atoms = molecule("CH3CH2OH")
    atoms.calc = EquiforceCalculator(
        Committee([tiny(s, zero_init_readout=False) for s in range(2)]), compile=False
    )
    atoms.get_forces()
    res = atoms.calc.results
    assert res["forces_std"].shape == (9,)
    assert res["energy_std"] > 0
    assert res["forces_std_max"] == pytest.approx(float(np.max(res["forces_std"])))


def test_plain_model_results_have_no_spread():
    atoms = molecule("CH3CH2OH")
    atoms.calc = EquiforceCalculator(tiny(0), compile=False)
    atoms.get_forces()
    assert "forces_std" not in atoms.calc.results


def test_load_ensemble_from_files(tmp_path):
    # a committee directory, comma-separated files and a multi-head file
    for k in range(2):
        (tmp_path / f"c/member_{k}").mkdir(parents=True)
        tiny(k).save(tmp_path / f"c/member_{k}/best.pt")
    c = load_ensemble(tmp_path / "c")
    assert isinstance(c, Committee) and c.n_members == 2
    files = f"{tmp_path}/c/member_0/best.pt,{tmp_path}/c/member_1/best.pt"
    assert isinstance(load_ensemble(files), Committee)
    tiny(0, readout_heads=3).save(tmp_path / "h.pt")
    h = load_ensemble(tmp_path / "h.pt")
    assert isinstance(h, HeadEnsemble) and h.n_members == 3
    assert not isinstance(load_ensemble(tmp_path / "c/member_0/best.pt"), Committee)


def test_committee_refuses_mixed_cutoffs_and_single_members():
    with pytest.raises(EnsembleError, match="cutoff"):
        Committee([tiny(0), tiny(1, cutoff=5.0)])
    with pytest.raises(EnsembleError, match="at least 2"):
        Committee([tiny(0)])
    with pytest.raises(EnsembleError, match="readout_heads"):
        HeadEnsemble(tiny(0))


def test_committee_of_so3lr_models_gets_long_range_pairs_and_charge():
    """An SO3LR committee must carry its members' long-range cutoff and charge input:
    without them Potential builds no long-range pairs (the members refuse the graph)
    and a total charge never reaches them. Fails if the committee drops either."""
    from equiforce.models.registry import build_model

    tiny = {"num_features": 16, "num_layers": 1, "degrees": (1, 2), "num_heads": 2}
    members = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        members.append(build_model("so3lr", "small", dtype=torch.float64, **tiny))
    committee = Committee(members)
    assert committee.lr_cutoff == members[0].lr_cutoff
    assert keys.CHARGE in committee.graph_inputs

    atoms = molecule("HCOOH")  # the charge only has to reach the members
    pot = Potential(committee, dtype=torch.float64, compile=False)
    out = {
        q: pot.compute(atoms.positions, atoms.numbers, charge=q) for q in (0.0, -1.0)
    }
    assert abs(out[-1.0][keys.ENERGY].item() - out[0.0][keys.ENERGY].item()) > 1e-6
    singles = [
        Potential(m, dtype=torch.float64, compile=False)
        .compute(atoms.positions, atoms.numbers, charge=-1.0)[keys.ENERGY]
        .item()
        for m in members
    ]
    assert out[-1.0][keys.ENERGY].item() == pytest.approx(np.mean(singles), abs=1e-9)
    assert out[-1.0][keys.ENERGY_STD].item() == pytest.approx(np.std(singles), abs=1e-9)


def test_so3lr_refuses_readout_heads():
    """SO3LR's charge and dispersion terms read one feature set: several heads would
    crash the head ensemble with a bare TypeError, so the config refuses them."""
    from equiforce.models.registry import build_model

    with pytest.raises(ValueError, match="readout_heads must be 1"):
        build_model("so3lr", "small", readout_heads=4)


def test_an_unfinished_committee_member_is_refused(tmp_path):
    """An interrupted member already has a best.pt (its best so far); loading the
    committee must name it instead of mixing a partly trained member into the spread."""
    import json

    from equiforce.uncertainty import EnsembleError, load_ensemble

    names = ["member_0", "member_1"]
    (tmp_path / "committee.json").write_text(
        json.dumps(
            {"n_members": 2, "seed": 0, "members": [f"{n}/best.pt" for n in names]}
        )
    )
    for name, stop in zip(names, ("max_steps", "interrupted"), strict=True):
        (tmp_path / name).mkdir()
        (tmp_path / name / "best.pt").write_bytes(b"")
        (tmp_path / name / "final_metrics.json").write_text(json.dumps({"stop": stop}))
    with pytest.raises(EnsembleError, match="member_1 has not finished"):
        load_ensemble(tmp_path)
