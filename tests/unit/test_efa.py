"""Euclidean fast attention maths (equiforce.nn.efa) and its configuration."""

import math

import numpy as np
import pytest
import torch
from pydantic import ValidationError
from scipy.special import spherical_jn

from equiforce.data.graph import AtomicGraph
from equiforce.models.global_attention import GlobalAttentionConfig
from equiforce.models.registry import build_model
from equiforce.nn import efa
from equiforce.nn.efa import (
    EuclideanFastAttention,
    GlobalAttentionInputError,
    check_structures,
    euclidean_rope_attention,
    lebedev_grid,
    quadrature_error_bound,
    rope_frequencies,
)
from equiforce.testing import TINY_SO3KRATES, random_orthogonal

F64 = torch.float64


def closed_form(q, k, v, pos, graph_index, freqs):
    """O(N²) reference: y_i = Σ_{j∈g(i)} Σ_k (q_i^(k)·k_j^(k)) j₀(ω_k r_ij) v_j / √D."""
    q, k, v, pos = (t.numpy() for t in (q, k, v, pos))
    g, w = graph_index.numpy(), freqs.numpy()
    n, d = q.shape
    out = np.zeros((n, v.shape[1]))
    for i in range(n):
        for j in range(n):
            if g[i] != g[j]:
                continue
            r = np.linalg.norm(pos[i] - pos[j])
            dots = (q[i].reshape(-1, 2) * k[j].reshape(-1, 2)).sum(1)  # (D/2,)
            out[i] += (dots * spherical_jn(0, w * r)).sum() * v[j]
    return out / math.sqrt(d)


def random_inputs(rng, sizes, d_qk=8, d_v=3, extent=9.0):
    n = sum(sizes)
    pos = [rng.uniform(-0.5, 0.5, size=(m, 3)) * extent / math.sqrt(3) for m in sizes]
    pos = torch.tensor(np.concatenate(pos), dtype=F64)
    q, k, v = (
        torch.tensor(rng.normal(size=(n, d)), dtype=F64) for d in (d_qk, d_qk, d_v)
    )
    graph_index = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    return q, k, v, pos, graph_index, torch.tensor(sizes)


@pytest.mark.parametrize(
    "sizes", [(9,), (5, 4), (3, 4, 2, 5, 3, 4)], ids=["1", "2", "6"]
)
def test_invariant_output_equals_closed_form(sizes):
    """The quadrature equals the j₀ pair kernel within each structure, and no
    structure sees another (fails on a wrong RoPE sign/pairing, weights not
    averaging, or sums over the whole batch). 6 structures take the eager
    slice-by-slice path, 1-2 the one-product path."""
    rng = np.random.default_rng(0)
    q, k, v, pos, gi, n_atoms = random_inputs(rng, sizes)
    r_max = 10.0
    freqs = rope_frequencies(4, 1.3 * math.pi / r_max)  # order 11 allows 1.36π
    u, w = lebedev_grid(11)
    y = euclidean_rope_attention(q, k, v, pos, gi, n_atoms, freqs, u, w)
    ref = closed_form(q, k, v, pos, gi, freqs)
    scale = np.abs(ref).max()
    assert np.abs(y.numpy() - ref).max() < 1e-4 * scale


def test_one_product_path_equals_slices(monkeypatch):
    """The traced (one-product) and eager (slices) per-structure sums agree."""
    q, k, v, pos, gi, n_atoms = random_inputs(np.random.default_rng(1), (3, 4, 2, 5, 6))
    args = (q, k, v, pos, gi, n_atoms, rope_frequencies(4, 0.3), *lebedev_grid(11))
    slices = euclidean_rope_attention(*args)
    monkeypatch.setattr(efa, "ONE_PRODUCT_MAX_GRAPHS", 100)
    torch.testing.assert_close(euclidean_rope_attention(*args), slices)


def test_quadrature_bound_holds_and_is_not_slack():
    """ε_p bounds the measured j₀ error over random directions, and the error
    past the allowed phase is large (the config rule is neither wrong nor vacuous)."""
    rng = np.random.default_rng(2)
    dirs = rng.normal(size=(300, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    for order, phase in ((11, math.pi), (19, 3 * math.pi), (11, 3 * math.pi)):
        u, w = (t.numpy() for t in lebedev_grid(order))
        err = 0.0
        for b in np.linspace(0.1, phase, 20):
            quad = (w * np.cos(b * dirs @ u.T)).sum(1)
            err = max(err, np.abs(quad - spherical_jn(0, b)).max())
        bound = quadrature_error_bound(order, phase)
        assert err <= bound
        if phase == 3 * math.pi and order == 11:
            assert err > 1e-3  # the too-coarse grid is visibly wrong


def block_output(block, pos, n=12):
    feats = torch.tensor(np.random.default_rng(3).normal(size=(n, 16)), dtype=F64)
    gi = torch.zeros(n, dtype=torch.long)
    return block(feats, pos, gi, torch.tensor([n]))[0]


@pytest.mark.parametrize("reflect", [False, True])
def test_block_invariance_within_and_past_the_grid(reflect):
    """O(3), translation and permutation invariance of the block's output within
    the grid's phase limit, and a measurable invariance error past it (the
    reason a coarse grid is a config error)."""
    torch.manual_seed(0)
    rng = np.random.default_rng(4)
    pos = torch.tensor(rng.uniform(-4, 4, size=(12, 3)), dtype=F64)
    rot = torch.tensor(random_orthogonal(rng, reflect), dtype=F64)
    shift = torch.tensor([3.0, -7.0, 11.0], dtype=F64)
    perm = torch.tensor(rng.permutation(12))
    errors = {}
    for omega in (math.pi / 15, 4 * math.pi / 15):  # b_max π (fine), 4π (past 1.36π)
        block = EuclideanFastAttention(16, 8, 8, 15.0, 1e-3, 11, zero_init=False)
        block.frequencies = rope_frequencies(4, omega)  # bypass the config check
        block = block.double()
        y = block_output(block, pos)
        y_moved = block_output(block, pos @ rot.T + shift)
        errors[omega] = (y_moved - y).abs().max().item() / y.abs().max().item()
        if omega < 1:
            feats = torch.tensor(
                np.random.default_rng(3).normal(size=(12, 16)), dtype=F64
            )
            gi, na = torch.zeros(12, dtype=torch.long), torch.tensor([12])
            y_perm = block(feats[perm], pos[perm], gi, na)[0]
            torch.testing.assert_close(y_perm, y[perm])
    assert errors[math.pi / 15] < 1e-6
    assert errors[4 * math.pi / 15] > 1e-4


def test_coarse_grid_is_a_config_error():
    """ω_max·r_max = 2π needs ≥ order 15; order 11 (50 points) is rejected with
    the bound and a suggested order, through the model config as well."""
    with pytest.raises(ValidationError, match=r"too coarse.*lebedev_order ≥ 15"):
        GlobalAttentionConfig(r_max=10.0, max_frequency=2 * math.pi / 10.0)
    GlobalAttentionConfig(
        r_max=10.0, max_frequency=2 * math.pi / 10.0, lebedev_order=15
    )
    with pytest.raises(ValidationError, match="global_attention"):
        build_model(
            "so3krates",
            **TINY_SO3KRATES,
            global_attention={"r_max": 20.0, "max_frequency": 0.5},
        )
    with pytest.raises(ValidationError, match="lebedev_order=12 is not available"):
        GlobalAttentionConfig(lebedev_order=12)
    with pytest.raises(ValidationError, match="must exceed the cutoff"):
        build_model("so3krates", **TINY_SO3KRATES, global_attention={"r_max": 4.0})


def test_structure_checks():
    """Periodic and too-extended structures are errors naming the structure; the
    exact O(N²) check clears a structure the centroid bound cannot (many atoms at
    one end: 2·R_centroid > r_max > diameter)."""
    r_max = 10.0
    lopsided = np.zeros((10, 3))
    lopsided[:9, 0] = np.linspace(0, 0.1, 9)
    lopsided[9, 0] = 9.0  # diameter 9 Å, centroid bound ≈ 2·8.1 Å
    long = np.array([[0.0, 0, 0], [10.5, 0, 0]])
    graphs = [
        AtomicGraph.from_arrays(p, np.full(len(p), 6), 5.0) for p in (lopsided, long)
    ]
    batch = AtomicGraph.collate(graphs)
    args = (batch.positions, batch.graph_index, batch.n_atoms)
    assert efa.structure_extents(*args[:2], 2)[0] > r_max
    check_structures(*args, torch.zeros(2, 3, dtype=torch.bool), 10.6)
    with pytest.raises(GlobalAttentionInputError, match=r"structure 1 .*10\.500 Å"):
        check_structures(*args, torch.zeros(2, 3, dtype=torch.bool), r_max)
    pbc = torch.tensor([[False] * 3, [True, False, False]])
    with pytest.raises(
        GlobalAttentionInputError, match=r"\[1\] \(graph index\) are periodic"
    ):
        check_structures(*args, pbc, 20.0)


def test_zero_initialised_branch_equals_local_model():
    """At initialisation So3krates + EFA equals the same-seed local model exactly
    (energies and forces), and the branch's output weights still get gradients."""
    rng = np.random.default_rng(5)
    pos = rng.uniform(-2.5, 2.5, size=(8, 3))
    z = rng.choice([1, 6, 8], size=8)
    local = build_model("so3krates", dtype=F64, seed=3, **TINY_SO3KRATES)
    glob = build_model(
        "so3krates", dtype=F64, seed=3, **TINY_SO3KRATES, global_attention={}
    )
    g = AtomicGraph.from_arrays(pos, z, local.cutoff, dtype=F64)
    a, b = local(g), glob(g)
    assert torch.equal(a["energy"], b["energy"]) and torch.equal(
        a["forces"], b["forces"]
    )
    glob(g, create_graph=True)["energy"].sum().backward()
    assert glob.global_attention["0"].out.weight.grad.abs().max() > 0
