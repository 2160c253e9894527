"""EFA tensor integration (l = 1, 2 outputs): closed form, quadrature rule, symmetry."""

import math

import numpy as np
import pytest
import torch
from e3nn import o3
from pydantic import ValidationError
from scipy.special import spherical_jn

from equiforce.data.graph import AtomicGraph
from equiforce.models.global_attention import GlobalAttentionConfig
from equiforce.models.registry import build_model
from equiforce.nn import efa
from equiforce.nn.efa import (
    EuclideanFastAttention,
    euclidean_rope_integrals,
    rope_frequencies,
)
from equiforce.nn.efa_grid import (
    integration_weights,
    lebedev_grid,
    max_phase_for_order,
    normalized_harmonics,
    quadrature_error_bound,
)
from equiforce.testing import TINY_SO3KRATES, random_orthogonal

F64 = torch.float64
DEGREES = (0, 1, 2)
#: component slices of each degree in the (C = 9) outputs
BLOCKS = {0: slice(0, 1), 1: slice(1, 4), 2: slice(4, 9)}


def closed_form(q, k, v, pos, graph_index, freqs, degrees=DEGREES):
    """O(N²) reference (module note of equiforce.nn.efa), written independently:

    y_i^(l) = Σ_{j∈g(i)} Σ_k κ_l j_l(ω_k r_ij) Ŷ_l(r̂_ij) v_j / √D, r_ij = r_j − r_i,
    κ_l = Re(i^l) q·k + Im(i^l) (q₁k₀ − q₀k₁), Ŷ_l e3nn "component" harmonics.
    """
    q, k, v, pos = (t.numpy() for t in (q, k, v, pos))
    g, w = graph_index.numpy(), freqs.numpy()
    n, d = q.shape
    n_comp = sum(2 * l + 1 for l in degrees)
    out = np.zeros((n, n_comp, v.shape[1]))
    for i in range(n):
        for j in range(n):
            if g[i] != g[j]:
                continue
            r = pos[j] - pos[i]
            dist = np.linalg.norm(r)
            qi, kj = q[i].reshape(-1, 2), k[j].reshape(-1, 2)
            dot = (qi * kj).sum(1)  # (D/2,)
            wedge = qi[:, 1] * kj[:, 0] - qi[:, 0] * kj[:, 1]
            col = 0
            for l in degrees:
                m = 2 * l + 1
                if dist > 0 or l == 0:
                    phase = 1j**l
                    kappa = phase.real * dot + phase.imag * wedge
                    radial = (kappa * spherical_jn(l, w * dist)).sum()
                    unit = r / dist if dist > 0 else np.array([0.0, 0.0, 1.0])
                    sh = o3.spherical_harmonics(
                        l, torch.tensor(unit), False, normalization="component"
                    ).numpy()
                    out[i, col : col + m] += radial * sh[:, None] * v[j][None, :]
                col += m
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
def test_tensor_outputs_equal_closed_form(sizes):
    """Each degree's quadrature output equals its j_l(ωr) Ŷ_l(r̂) pair kernel within
    every structure, to quadrature accuracy, and no structure sees another.
    Fails on a wrong phase (κ₁ = q∧k, κ₂ = −q·k), a wrong harmonic basis or
    normalisation, r_ij pointing the wrong way (odd l changes sign) or sums over
    the whole batch. 6 structures take the eager slice path, 1-2 one product."""
    rng = np.random.default_rng(0)
    q, k, v, pos, gi, n_atoms = random_inputs(rng, sizes)
    r_max, order = 10.0, 15  # order 15 allows 1.67π at l = 2
    freqs = rope_frequencies(4, 1.6 * math.pi / r_max)
    u, _ = lebedev_grid(order)
    y = euclidean_rope_integrals(
        q, k, v, pos, gi, n_atoms, freqs, u, integration_weights(order, DEGREES)
    ).numpy()
    ref = closed_form(q, k, v, pos, gi, freqs)
    for l, cols in BLOCKS.items():
        scale = np.abs(ref[:, cols]).max()
        assert scale > 0.1, f"degree {l}: reference vanishes, nothing is tested"
        err = np.abs(y[:, cols] - ref[:, cols]).max()
        assert err < 1e-4 * scale, f"degree {l}: {err:.2e} vs scale {scale:.2e}"


def test_one_product_path_equals_slices(monkeypatch):
    """The traced (one-product) and eager (slices) per-structure sums agree for
    all nine components (their row layouts differ: atom-major vs block-major)."""
    q, k, v, pos, gi, n_atoms = random_inputs(np.random.default_rng(1), (3, 4, 2, 5, 6))
    u, _ = lebedev_grid(15)
    args = (q, k, v, pos, gi, n_atoms, rope_frequencies(4, 0.3), u)
    weights = integration_weights(15, DEGREES)
    slices = euclidean_rope_integrals(*args, weights)
    monkeypatch.setattr(efa, "ONE_PRODUCT_MAX_GRAPHS", 100)
    torch.testing.assert_close(euclidean_rope_integrals(*args, weights), slices)


@pytest.mark.parametrize("degree", [1, 2])
def test_quadrature_bound_per_degree(degree):
    """ε_{p,l} bounds the measured error of ⟨Ŷ_l(u) e^{ib u·r̂}⟩ = i^l j_l(b) Ŷ_l(r̂)
    over random directions; at a grid's l = 0 phase limit the degree-l bound
    exceeds the tolerance, and the measured l = 2 error does too
    on the 50-point grid (fails if the bound ignored the degree or were wrong)."""
    rng = np.random.default_rng(2)
    dirs = rng.normal(size=(300, 3))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    y_r = normalized_harmonics((degree,), torch.tensor(dirs)).numpy()  # (D, 2l+1)
    for order in (11, 19):
        u, w = (t.numpy() for t in lebedev_grid(order))
        y_u = normalized_harmonics((degree,), torch.tensor(u)).numpy()  # (M, 2l+1)
        phase = max_phase_for_order(order, 1e-4, 0)  # the l = 0 limit
        bound = quadrature_error_bound(order, phase, degree)
        assert bound > 1e-4, "the degree-l rule takes the l = 0 limit"
        err = 0.0
        for b in np.linspace(0.1, phase, 25):
            quad = (np.exp(1j * b * dirs @ u.T) * w) @ y_u
            exact = (1j**degree) * spherical_jn(degree, b) * y_r
            err = max(err, np.abs(quad - exact).max())
        assert err <= bound
        if degree == 2 and order == 11:
            assert err > 1e-4, f"l = 2 error {err:.1e} at the l = 0 limit"


def test_grid_rule_counts_the_output_degree():
    """The default grid (order 11, b_max = π) takes l = 0 but not l ≤ 2, and the
    error names the order that does; degrees are validated, and tensor degrees
    must be Euclidean variables of the So3krates model."""
    GlobalAttentionConfig()
    with pytest.raises(ValidationError, match=r"l ≤ 2.*lebedev_order ≥ 13"):
        GlobalAttentionConfig(degrees=(0, 1, 2))
    GlobalAttentionConfig(degrees=(0, 1, 2), lebedev_order=13)
    for bad in ((1, 2), (0, 2, 1), (0, 3), ()):
        with pytest.raises(ValidationError, match="degrees must be sorted"):
            GlobalAttentionConfig(degrees=bad, lebedev_order=23)
    efa_cfg = {"degrees": (0, 1, 2), "lebedev_order": 15}
    tiny = {**TINY_SO3KRATES, "global_attention": efa_cfg}
    with pytest.raises(ValidationError, match=r"Euclidean variables.*degrees \[2\]"):
        build_model("so3krates", **{**tiny, "degrees": (2,)})
    with pytest.raises(ValidationError, match="use_euclidean_variables=False"):
        build_model("so3krates", **{**tiny, "use_euclidean_variables": False})
    build_model("so3krates", **{**tiny, "degrees": (1, 2, 3, 4)})


def block_outputs(block, pos, feats):
    n = pos.shape[0]
    gi = torch.zeros(n, dtype=torch.long)
    return block(feats, pos, gi, torch.tensor([n]))[:2]


def wigner_d(rot: torch.Tensor) -> torch.Tensor:
    """D(Q) of Ŷ_1 ⊕ Ŷ_2 (8, 8) in float64, from Ŷ(Qx) = D Ŷ(x) by least squares
    (e3nn's ``D_from_matrix`` works in float32: ~4e-7 errors)."""
    x = torch.tensor(np.random.default_rng(0).normal(size=(64, 3)), dtype=F64)
    y0, y1 = normalized_harmonics((1, 2), x), normalized_harmonics((1, 2), x @ rot.T)
    d_mat = torch.linalg.lstsq(y0, y1).solution.T
    assert (y0 @ d_mat.T - y1).abs().max() < 1e-12
    return d_mat


@pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
@pytest.mark.parametrize(
    ("order", "within", "past"), [(11, 0.89, 3.0), (19, 2.5, 6.0)], ids=["50", "146"]
)
def test_tensor_outputs_are_equivariant_within_the_grid_and_not_past_it(
    reflect, order, within, past
):
    """Under x → Qx + t (Q with and without reflection) the l = 1, 2 outputs
    transform with D(Q) of "1o + 2e" (and the invariant output stays), to < 1e-5
    relative on the table's 50- and 146-point grids at the phase (×π) the config
    allows for l = 2; past the table (3π on 50 points, 6π on 146) the error is
    measurable (> 1e-4). Fails on a wrong parity or basis, or a vacuous check."""
    torch.manual_seed(0)
    rng = np.random.default_rng(4)
    x = rng.normal(size=(12, 3))
    pos = x / np.linalg.norm(x, axis=1, keepdims=True) * rng.uniform(3, 7, (12, 1))
    pos = torch.tensor(pos, dtype=F64)  # pairs up to 11.5 Å apart, r_max 15 Å
    feats = torch.tensor(rng.normal(size=(12, 16)), dtype=F64)
    rot = torch.tensor(random_orthogonal(rng, reflect), dtype=F64)
    shift = torch.tensor([3.0, -7.0, 11.0], dtype=F64)
    d_mat = wigner_d(rot)
    r_max, errors = 15.0, {}
    for b_max in (within, past):
        block = EuclideanFastAttention(
            16, 8, 8, r_max, 1e-3, order, zero_init=False, degrees=DEGREES
        )
        block.frequencies = rope_frequencies(4, b_max * math.pi / r_max)  # no check
        block = block.double()
        f0, t0 = block_outputs(block, pos, feats)
        f1, t1 = block_outputs(block, pos @ rot.T + shift, feats)
        assert t0.abs().max() > 1e-3, "tensor outputs vanish: nothing is tested"
        errors[b_max] = max(
            ((t1 - t0 @ d_mat.T).abs().max() / t0.abs().max()).item(),
            ((f1 - f0).abs().max() / f0.abs().max()).item(),
        )
        if b_max == within:  # permutation: atoms carry their outputs
            perm = torch.tensor(rng.permutation(12))
            fp, tp = block_outputs(block, pos[perm], feats[perm])
            torch.testing.assert_close(tp, t0[perm])
            torch.testing.assert_close(fp, f0[perm])
    assert errors[within] < 1e-5, errors
    assert errors[past] > 1e-4, errors


def test_block_batched_equals_single(monkeypatch):
    """A block's outputs for a batch equal per-structure calls on both summation
    paths (no cross-talk between structures in any component)."""
    torch.manual_seed(1)
    rng = np.random.default_rng(5)
    block = EuclideanFastAttention(
        16, 8, 8, 10.0, 0.1, 15, zero_init=False, degrees=DEGREES
    ).double()
    sizes = (3, 5, 4, 2, 6)
    pos = [torch.tensor(rng.uniform(-3, 3, size=(m, 3)), dtype=F64) for m in sizes]
    feats = [torch.tensor(rng.normal(size=(m, 16)), dtype=F64) for m in sizes]
    single = [block_outputs(block, p, f) for p, f in zip(pos, feats, strict=True)]
    gi = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    args = (torch.cat(feats), torch.cat(pos), gi, torch.tensor(sizes))
    for max_graphs in (4, 100):  # slices, one product
        monkeypatch.setattr(efa, "ONE_PRODUCT_MAX_GRAPHS", max_graphs)
        d_f, d_t, _ = block(*args)
        torch.testing.assert_close(d_f, torch.cat([s[0] for s in single]))
        torch.testing.assert_close(d_t, torch.cat([s[1] for s in single]))


def test_zero_initialised_tensor_branch_equals_local_model():
    """At initialisation So3krates + EFA(l ≤ 2) equals the same-seed local model
    exactly, and the tensor projection gets gradients (the branch is wired into
    the Euclidean variables, which feed the energy through the next layer)."""
    rng = np.random.default_rng(6)
    pos = rng.uniform(-2.5, 2.5, size=(8, 3))
    z = rng.choice([1, 6, 8], size=8)
    local = build_model("so3krates", dtype=F64, seed=3, **TINY_SO3KRATES)
    efa_cfg = {"degrees": (0, 1, 2), "lebedev_order": 15}
    glob = build_model(
        "so3krates", dtype=F64, seed=3, **TINY_SO3KRATES, global_attention=efa_cfg
    )
    g = AtomicGraph.from_arrays(pos, z, local.cutoff, dtype=F64)
    a, b = local(g), glob(g)
    assert torch.equal(a["energy"], b["energy"])
    assert torch.equal(a["forces"], b["forces"])
    glob(g, create_graph=True)["energy"].sum().backward()
    # the tensor update joins the layer's messages before the exchange block,
    # so even the last layer's reaches the energy
    for t in ("0", "1"):
        assert glob.global_attention[t].out_tensor.grad.abs().max() > 0, t


@pytest.mark.parametrize("differentiable", [True, False])
def test_edge_chunks_carry_the_tensor_branch(differentiable):
    """Edge-chunked layers (checkpointed and in-place) add the branch's
    Euclidean-variable update as the unchunked layer does."""
    rng = np.random.default_rng(7)
    pos = rng.uniform(-2.5, 2.5, size=(10, 3))
    z = rng.choice([1, 6, 8], size=10)
    efa_cfg = {"degrees": (0, 1, 2), "lebedev_order": 15, "zero_init": False}
    model = build_model(
        "so3krates", dtype=F64, seed=4, **TINY_SO3KRATES, global_attention=efa_cfg
    )
    model.compile_chunks = False
    g = AtomicGraph.from_arrays(pos, z, model.cutoff, dtype=F64)
    ref = model(g, create_graph=differentiable)
    model.edge_chunk_size = 16
    assert g.n_edges > 2 * 16, "one chunk: nothing is tested"
    out = model(g, create_graph=differentiable)
    torch.testing.assert_close(out["energy"], ref["energy"])
    torch.testing.assert_close(out["forces"], ref["forces"])


# ------------------------------------------------- equivariant (Euclidean) values
EV_DEGREES = (1, 2)  # the Euclidean variables' layout: Ŷ_1 ⊕ Ŷ_2, 8 components


def values_block(seed: int = 2) -> EuclideanFastAttention:
    torch.manual_seed(seed)
    return EuclideanFastAttention(
        16, 8, 8, 15.0, 0.2, 11, zero_init=False,
        ev_degrees=EV_DEGREES, equivariant_values=3,
    ).double()  # fmt: skip


def test_carried_euclidean_variables_equal_closed_form():
    """The carried Euclidean variables equal Σ_j κ₀ j₀(ω r_ij) g(h_j) x_j mixed by
    the per-degree weights, to quadrature accuracy (fails if the values are
    carried with a tensor kernel, mixed across components, or mapped with the
    wrong degree's weights)."""
    rng = np.random.default_rng(8)
    n = 10
    pos = torch.tensor(rng.uniform(-4, 4, size=(n, 3)), dtype=F64)
    feats = torch.tensor(rng.normal(size=(n, 16)), dtype=F64)
    ev = torch.tensor(rng.normal(size=(n, 8)), dtype=F64)
    block = values_block()
    gi = torch.zeros(n, dtype=torch.long)
    _, _, d_ev = block(feats, pos, gi, torch.tensor([n]), ev)
    with torch.no_grad():
        q, k, gate = block.q(feats), block.k(feats), block.ev_gate(feats)
        values = (ev[:, :, None] * gate[:, None, :]).flatten(1)  # (n, 8·3)
        carried = closed_form(q, k, values, pos, gi, block.frequencies, (0,))
        carried = torch.tensor(carried[:, 0]).view(n, 8, 3)
        w = block.out_ev.detach()[torch.tensor([0, 0, 0, 1, 1, 1, 1, 1])]
        expected = (carried * w).sum(-1)
    assert expected.abs().max() > 1e-2, "nothing carried: nothing is tested"
    torch.testing.assert_close(d_ev.detach(), expected, atol=1e-6, rtol=1e-5)


@pytest.mark.parametrize("reflect", [False, True])
def test_carried_euclidean_variables_are_equivariant(reflect):
    """Rotating (or reflecting) the structure and its Euclidean variables rotates
    the carried ones by the same D(Q); translation and permutation carry them
    along (fails on any invariant-kernel or component-order mistake)."""
    rng = np.random.default_rng(9)
    n = 12
    pos = torch.tensor(rng.uniform(-4, 4, size=(n, 3)), dtype=F64)
    feats = torch.tensor(rng.normal(size=(n, 16)), dtype=F64)
    ev = torch.tensor(rng.normal(size=(n, 8)), dtype=F64)
    rot = torch.tensor(random_orthogonal(rng, reflect), dtype=F64)
    d_mat = wigner_d(rot)
    block = values_block()
    gi, na = torch.zeros(n, dtype=torch.long), torch.tensor([n])
    f0, _, e0 = block(feats, pos, gi, na, ev)
    shift = torch.tensor([2.0, -1.0, 5.0], dtype=F64)
    f1, _, e1 = block(feats, pos @ rot.T + shift, gi, na, ev @ d_mat.T)
    torch.testing.assert_close(e1, e0 @ d_mat.T, atol=1e-7, rtol=1e-6)
    torch.testing.assert_close(f1, f0, atol=1e-7, rtol=1e-6)
    perm = torch.tensor(rng.permutation(n))
    _, _, ep = block(feats[perm], pos[perm], gi, na, ev[perm])
    torch.testing.assert_close(ep, e0[perm])


def test_model_with_carried_values_is_invariant_and_starts_local():
    """So3krates with equivariant EFA values: zero-initialised it equals the local
    model; trained-like (random) weights keep the energy O(3) invariant and the
    forces equivariant, and the carried-value weights reach the energy."""
    rng = np.random.default_rng(10)
    pos = rng.uniform(-2.5, 2.5, size=(8, 3))
    z = rng.choice([1, 6, 8], size=8)
    efa_cfg = {"equivariant_values": 2, "max_frequency": 0.2}
    local = build_model("so3krates", dtype=F64, seed=3, **TINY_SO3KRATES)
    glob = build_model(
        "so3krates", dtype=F64, seed=3, **TINY_SO3KRATES, global_attention=efa_cfg
    )
    g = AtomicGraph.from_arrays(pos, z, local.cutoff, dtype=F64)
    assert torch.equal(local(g)["energy"], glob(g)["energy"])
    glob(g, create_graph=True)["energy"].sum().backward()
    # layer 0's Euclidean variables are still zero: only layer 1 carries any
    assert glob.global_attention["1"].out_ev.grad.abs().max() > 0
    active = build_model(
        "so3krates", dtype=F64, seed=3, **TINY_SO3KRATES,
        global_attention=efa_cfg | {"zero_init": False},
    )  # fmt: skip
    rot = random_orthogonal(rng, True)
    a = active(g)
    b = active(AtomicGraph.from_arrays(pos @ rot.T, z, local.cutoff, dtype=F64))
    gap = float((a["energy"] - glob(g)["energy"]).detach())
    assert abs(gap) > 1e-6, "branch inactive"
    torch.testing.assert_close(b["energy"], a["energy"])
    torch.testing.assert_close(b["forces"], a["forces"] @ torch.tensor(rot).T)


def test_carried_values_need_euclidean_variables():
    with pytest.raises(ValueError, match="equivariant_values"):
        build_model(
            "so3krates", **TINY_SO3KRATES, use_euclidean_variables=False,
            global_attention={"equivariant_values": 2},
        )  # fmt: skip
