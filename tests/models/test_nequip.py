"""NequIP-like model: the shared contract suite (l_max 1..3, both parity modes)."""

import numpy as np
import pytest
import torch
from e3nn import o3

from equiforce.data.graph import AtomicGraph
from equiforce.models.nequip import BesselEnvelope, NequIPConfig, hidden_irreps
from equiforce.models.registry import build_model
from equiforce.testing import ModelContractTests, random_molecule

TINY = {
    "num_features": 4,
    "num_layers": 2,
    "radial_hidden": 8,
    "num_bessel": 4,
    "num_species_channels": 2,
}


class TestNequIP(ModelContractTests):
    model_name = "nequip"
    overrides = {**TINY, "l_max": 2}


class TestNequIPLmax1Restricted(ModelContractTests):
    model_name = "nequip"
    overrides = {
        **TINY,
        "l_max": 1,
        "parity": "restricted",
        "resnet": True,
        "avg_num_neighbors": 5.0,
    }


class TestNequIPLmax3(ModelContractTests):
    model_name = "nequip"
    overrides = {**TINY, "l_max": 3, "num_layers": 2}


def test_hidden_irreps_parities():
    full = hidden_irreps(NequIPConfig(num_features=2, l_max=2))
    assert full == o3.Irreps("2x0e+2x0o+2x1o+2x1e+2x2e+2x2o")
    restricted = hidden_irreps(
        NequIPConfig(num_features=2, l_max=3, parity="restricted")
    )
    assert restricted == o3.Irreps("2x0e+2x1o+2x2e+2x3o")
    with pytest.raises(ValueError):
        NequIPConfig(l_max=4)


def test_first_layer_reaches_only_natural_parity():
    """From 0e inputs, 0e ⊗ Y^l gives only p = (−1)^l; layer 2 adds 1e and 2o (from
    1o ⊗ 1o and 2e ⊗ 1o); odd scalars 0o need 1e ⊗ 1o, so they appear in layer 3."""
    model = build_model("nequip", **{**TINY, "num_layers": 4}, l_max=2)
    irs = [{ir for _, ir in layer.irreps_out} for layer in model.layers]
    assert irs[3] == {o3.Irrep("0e")}  # last block: only what the readout reads
    assert irs[0] == {o3.Irrep(s) for s in ("0e", "1o", "2e")}
    assert irs[1] == {o3.Irrep(s) for s in ("0e", "1o", "1e", "2o", "2e")}
    assert irs[2] == {ir for _, ir in hidden_irreps(model.config)}


def test_polynomial_envelope_is_smooth_at_the_cutoff():
    basis = BesselEnvelope(8, 4.0, 6, trainable=False).double()
    d = torch.tensor(
        [0.0, 2.0, 4.0 - 1e-4, 4.0, 5.0], dtype=torch.float64, requires_grad=True
    )
    u = basis.envelope(d)
    (grad,) = torch.autograd.grad(u.sum(), d)
    assert u[0].item() == 1.0 and u[3].item() == 0.0 and u[4].item() == 0.0
    # u ~ (r_c − d)³ near r_c: value and slope vanish (δ = 1e-4 Å)
    assert abs(u[2].item()) < 1e-10 and abs(grad[2].item()) < 1e-6
    b = basis(d)
    assert torch.isfinite(b).all() and b[3:].abs().max().item() == 0.0


def test_odd_features_are_live_and_change_sign_under_reflection():
    """Pseudo-scalar (0o) channels exist and flip sign under a mirror: the energy
    stays invariant only because it reads 0e scalars (checked by the contract suite)."""
    model = build_model(
        "nequip", dtype=torch.float64, **{**TINY, "num_layers": 4}, l_max=2
    ).eval()
    pos, z = random_molecule(np.random.default_rng(1))
    feats = []
    for p in (pos, pos * np.array([1.0, 1.0, -1.0])):
        g = AtomicGraph.from_arrays(p, z, model.cutoff)
        vec = g.edge_vectors()
        idx_i, idx_j = g.edge_index
        x = model.embedding(g.atomic_numbers)
        attrs = model.species_attrs(g.atomic_numbers)
        sph = model.sph(vec) * model.sph_scale
        bessel = model.radial(vec.norm(dim=1))
        for layer in model.layers[:3]:
            x = layer(x, attrs, sph, bessel, idx_i, idx_j)
        feats.append(x)
    irreps = model.layers[2].irreps_out
    odd = torch.cat(
        [
            feats[0][:, s]
            for (_, ir), s in zip(irreps, irreps.slices(), strict=True)
            if ir == o3.Irrep("0o")
        ],
        1,
    )
    odd_m = torch.cat(
        [
            feats[1][:, s]
            for (_, ir), s in zip(irreps, irreps.slices(), strict=True)
            if ir == o3.Irrep("0o")
        ],
        1,
    )
    assert odd.abs().max() > 1e-6
    torch.testing.assert_close(odd_m, -odd)
