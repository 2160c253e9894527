"""So3krates: the shared contract suite plus So3krates-specific reference values."""

import functools
import math

import numpy as np
import pytest
import torch

from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model
from equiforce.models.so3krates import DegreeContraction
from equiforce.nn.radial import PhysNetBasis, cosine_cutoff, phys_cutoff
from equiforce.nn.spherical import SphericalHarmonics
from equiforce.testing import (
    TINY_SO3KRATES,
    ModelContractTests,
    random_molecule,
    random_orthogonal,
)

SMALL = TINY_SO3KRATES


class TestSo3krates(ModelContractTests):
    model_name = "so3krates"
    overrides = SMALL


class TestSo3kratesInvariant(ModelContractTests):
    model_name = "so3krates"
    overrides = {**SMALL, "use_euclidean_variables": False}


class TestSo3kratesSO3LRLike(ModelContractTests):
    """LayerNorms, residual MLPs, Bernstein basis, phys cutoff, SiLU readout, per-Z scale."""

    model_name = "so3krates"
    overrides = {
        **SMALL,
        "layer_norm_1": True,
        "layer_norm_2": True,
        "residual_mlp_1": True,
        "radial_basis": "bernstein",
        "cutoff_fn": "phys",
        "readout_activation": "silu",
        "per_element_scale_shift": True,
        "qk_activation": "silu",
        "cutoff": 4.5,
    }


@pytest.mark.parametrize(
    ("preset", "count"),
    [
        ("default", 208_425),
        ("invariant", 130_945),
        ("paper", 321_721),
        ("deep", 397_309),
        ("deep-small", 111_645),
    ],
)
def test_parameter_counts_match_reference(preset, count):
    assert build_model("so3krates", preset).num_parameters() == count


def test_deep_presets_are_three_normalised_layers():
    for preset, width in (("deep", 128), ("deep-small", 64)):
        model = build_model("so3krates", preset)
        cfg = model.config
        assert (cfg.num_layers, cfg.num_features) == (3, width), preset
        assert cfg.layer_norm_1 and cfg.layer_norm_2 and cfg.residual_mlp_1, preset
        norms = [m for m in model.modules() if isinstance(m, torch.nn.LayerNorm)]
        assert len(norms) == 2 * 3, preset  # one after each update, in every layer


def test_so3lr_like_parameter_count():
    model = build_model(
        "so3krates",
        num_layers=3,
        cutoff=4.5,
        radial_basis="bernstein",
        layer_norm_1=True,
        layer_norm_2=True,
        residual_mlp_1=True,
        readout_activation="silu",
    )
    assert model.num_parameters() == 397_309


def test_zero_initialised_readout_returns_only_e0():
    model = build_model(
        "so3krates", "small", dtype=torch.float64, e0={1: -1.0, 6: -2.0, 8: -3.0}
    )
    pos, z = random_molecule(np.random.default_rng(0))
    out = model(AtomicGraph.from_arrays(pos, z, model.cutoff))
    expected = sum({1: -1.0, 6: -2.0, 8: -3.0}[int(a)] for a in z)
    assert out["energy"].item() == pytest.approx(expected, abs=1e-12)
    assert out["forces"].abs().max().item() == 0.0


def test_contraction_of_spherical_harmonics_closed_form():
    degrees = (1, 2, 3, 4)
    y = SphericalHarmonics(degrees)(torch.randn(5, 3, dtype=torch.float64))
    c = DegreeContraction(degrees).to(torch.float64)(y)
    expected = torch.tensor(
        [math.sqrt(2 * l + 1) / (4 * math.pi) for l in degrees], dtype=torch.float64
    )
    torch.testing.assert_close(c, expected.expand(5, 4))
    assert expected[0].item() == pytest.approx(0.137832, abs=1e-6)


def test_physnet_basis_and_cutoffs_reference_values():
    basis = PhysNetBasis(32, 5.0)
    assert basis.mu[0].item() == pytest.approx(0.0067379, abs=1e-7)
    assert basis.mu[-1].item() == 1.0
    assert basis.beta == pytest.approx(259.485, abs=1e-3)
    d = torch.tensor([2.5, 5.0, 6.0], dtype=torch.float64)
    assert cosine_cutoff(d, 5.0).tolist() == pytest.approx([0.5, 0.0, 0.0])
    assert phys_cutoff(d, 5.0).tolist() == pytest.approx([0.5, 0.0, 0.0])


def test_invariant_ablation_has_no_euclidean_path():
    model = build_model("so3krates", "invariant")
    names = [n for n, _ in model.named_parameters()]
    assert not any(k in n for n in names for k in ("filter_s", "filter_r2", "q2", "k2"))
    assert model.sph is None and model.m_tot == 0


def test_euclidean_variables_change_the_energy():
    """The EV branch is live: its weights influence the energy (not a dead path)."""
    model = build_model("so3krates", dtype=torch.float64, **SMALL)
    pos, z = random_molecule(np.random.default_rng(3))
    g = AtomicGraph.from_arrays(pos, z, model.cutoff)
    e1 = model(g, compute_forces=False)["energy"].item()
    with torch.no_grad():
        model.layers[0].filter_r2[-1].bias.add_(0.5)
    e2 = model(g, compute_forces=False)["energy"].item()
    assert abs(e1 - e2) > 1e-8


@pytest.mark.parametrize("degrees", [(1,), (1, 2, 3), (1, 2, 3, 4), (2, 4)])
def test_polynomial_spherical_harmonics_equal_e3nn(degrees):
    from equiforce.nn.spherical import e3nn_spherical_harmonics

    vec = torch.randn(500, 3, dtype=torch.float64) * 3
    ours = SphericalHarmonics(degrees).to(torch.float64)(vec)
    ref = e3nn_spherical_harmonics(degrees, vec / vec.norm(dim=1, keepdim=True))
    torch.testing.assert_close(ours, ref, atol=1e-13, rtol=0)


@pytest.mark.parametrize(
    ("create_graph", "compile_chunks"),
    [(True, False), (False, False), (False, True)],
    ids=["checkpointed", "in-place", "in-place-compiled"],
)
@pytest.mark.parametrize("ev", [True, False], ids=["ev", "no-ev"])
@pytest.mark.parametrize("paired", [True, False])
def test_edge_chunking_gives_identical_energies_and_forces(
    paired, ev, create_graph, compile_chunks
):
    """Every chunked path = all edges at once (and weight grads when kept)."""
    model = build_model(
        "so3krates", dtype=torch.float64, **{**SMALL, "use_euclidean_variables": ev}
    )
    model.compile_chunks = compile_chunks
    pos, z = random_molecule(np.random.default_rng(5), n_atoms=12, box=4.0)
    cell = np.eye(3) * 6.0
    g = AtomicGraph.from_arrays(pos, z, model.cutoff, cell, np.ones(3, bool))
    g.edges_paired = paired

    def run():
        model.zero_grad()
        out = model(g, compute_stress=True, create_graph=create_graph)
        grads = {}
        if create_graph:  # a loss on forces needs the second derivative
            (out["energy"].sum() + (out["forces"] ** 2).sum()).backward()
            grads = {n: p.grad.clone() for n, p in model.named_parameters()}
        return {k: v.detach() for k, v in out.items()}, grads

    ref, ref_grads = run()
    model.edge_chunk_size = 17  # several uneven chunks
    assert model.chunks_edges(g.n_edges, differentiable=True)
    out, grads = run()
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-10, atol=1e-12)
    assert grads.keys() == ref_grads.keys()
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, rtol=1e-9, atol=1e-12, msg=name)


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("failing", ["forward", "vjp"])
def test_compiled_chunk_failure_falls_back_to_eager_chunks(
    failing, workers, monkeypatch
):
    """A compiler error in either chunk kernel warns and gives the eager result,
    also when it comes from a chunk on a pool thread after others succeeded."""
    from equiforce.accel.edge_chunks import ChunkKernels
    from equiforce.models.so3krates import fast as so3krates

    calls = []

    def kernels(model, layer, table, n_dir):
        fn = functools.partial(model.chunk_messages, layer, table, n_dir)

        def broken(*args):
            calls.append(1)
            if len(calls) > 2:  # the first chunks work
                raise RuntimeError("no compiler here")
            return fn(*args[:8]) if failing == "forward" else vjp(*args)

        def vjp(*args):  # the eager vjp the compiled one stands for
            with torch.enable_grad():
                leaves = [t.detach().requires_grad_() for t in args[:6]]
                d_f, d_ev = fn(*leaves, *args[6:8])
                out = (d_f * args[8]).sum() + (d_ev * args[9]).sum()
                return torch.autograd.grad(out, leaves, allow_unused=True)

        return ChunkKernels(
            broken if failing == "forward" else fn,
            broken,
            lambda: setattr(model, "compile_chunks", False),
            workers,
        )

    monkeypatch.setattr(so3krates, "compiled_chunk_kernels", kernels)
    model = build_model("so3krates", dtype=torch.float64, **SMALL).eval()
    pos, z = random_molecule(np.random.default_rng(5), n_atoms=12, box=4.0)
    g = AtomicGraph.from_arrays(pos, z, model.cutoff)
    ref = model(g)
    model.edge_chunk_size = 17
    with pytest.warns(RuntimeWarning, match="compiling the edge chunks failed"):
        out = model(g)
    assert not model.compile_chunks
    torch.testing.assert_close(out["forces"], ref["forces"], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("create_graph", [True, False])
def test_in_place_chunks_only_for_detached_outputs(create_graph, monkeypatch):
    """Weight gradients or a second derivative need the checkpointed path."""
    from equiforce.accel.edge_chunks import ChunkedMessages

    calls = []
    real = ChunkedMessages.apply
    monkeypatch.setattr(
        ChunkedMessages,
        "apply",
        lambda *a: calls.append(1) or real(*a),
    )
    model = build_model("so3krates", dtype=torch.float64, **SMALL)
    pos, z = random_molecule(np.random.default_rng(5), n_atoms=12, box=4.0)
    model.edge_chunk_size = 17
    model(AtomicGraph.from_arrays(pos, z, model.cutoff), create_graph=create_graph)
    assert len(calls) == (0 if create_graph else model.config.num_layers)


def test_automatic_chunking_starts_earlier_for_detached_outputs(monkeypatch):
    """Forces-only calls chunk from ``auto_chunk_edges_detached`` edges, training
    calls from ``auto_chunk_edges``; ``chunks_edges`` (asked outside a call, by the
    compiled path) follows the training limit."""
    from equiforce.models import so3krates

    sizes = []
    real = so3krates.So3krates._edge_chunk

    def spy(self, n_edges, differentiable):
        sizes.append(real(self, n_edges, differentiable))
        return sizes[-1]

    monkeypatch.setattr(so3krates.So3krates, "_edge_chunk", spy)
    model = build_model("so3krates", dtype=torch.float64, **SMALL)
    pos, z = random_molecule(np.random.default_rng(5), n_atoms=12, box=4.0)
    g = AtomicGraph.from_arrays(pos, z, model.cutoff)
    model.auto_chunk_size, model.auto_chunk_size_detached = 17, 19
    model(g, create_graph=False)
    assert sizes[-1] is None  # below both limits
    model.auto_chunk_edges_detached = g.n_edges - 1
    model(g, create_graph=False)
    assert sizes[-1] == 19
    model(g, create_graph=True)
    assert sizes[-1] is None
    assert not model.chunks_edges(g.n_edges, differentiable=True)
    assert model.chunks_edges(g.n_edges, differentiable=False)
    model.auto_chunk_edges = g.n_edges - 1
    model(g, create_graph=True)
    assert sizes[-1] == 17


@pytest.mark.parametrize(
    "overrides", [SMALL, {**SMALL, "use_euclidean_variables": False}]
)
def test_pairwise_filters_equal_per_edge_filters(overrides):
    """Filters computed once per pair (paired edges) = per directed edge, any order."""
    model = build_model("so3krates", dtype=torch.float64, **overrides)
    pos, z = random_molecule(np.random.default_rng(8), n_atoms=10, box=3.5)
    cell = np.eye(3) * 5.0
    g = AtomicGraph.from_arrays(pos, z, model.cutoff, cell, np.ones(3, bool))
    assert g.edges_paired
    ref = model(g, compute_stress=True)
    perm = torch.randperm(g.n_edges, generator=torch.Generator().manual_seed(0))
    shuffled = AtomicGraph(
        positions=g.positions,
        atomic_numbers=g.atomic_numbers,
        graph_index=g.graph_index,
        edge_index=g.edge_index[:, perm],
        edge_shifts=g.edge_shifts[perm],
        cell=g.cell,
        pbc=g.pbc,
        n_atoms=g.n_atoms,
    )
    out = model(shuffled, compute_stress=True)
    for key in ("energy", "forces", "stress"):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-10, atol=1e-12)


# ---------------------------------------------------------------- filter tables
def _count_table_calls(monkeypatch) -> list[int]:
    from equiforce.accel.spline import CubicHermiteTable

    calls: list[int] = []
    real = CubicHermiteTable.forward
    monkeypatch.setattr(
        CubicHermiteTable, "forward", lambda self, s: calls.append(1) or real(self, s)
    )
    return calls


def _periodic_graph(model, dtype=torch.float64, seed=3):
    pos, z = random_molecule(np.random.default_rng(seed), n_atoms=10, box=3.5)
    cell = np.eye(3) * 5.0
    return AtomicGraph.from_arrays(
        pos, z, model.cutoff, cell, np.ones(3, bool), dtype=dtype
    )


@pytest.mark.parametrize("basis", ["physnet", "bernstein", "fourier", "gaussian"])
@pytest.mark.parametrize("ev", [True, False], ids=["ev", "no-ev"])
@pytest.mark.parametrize("chunked", [False, True], ids=["all-edges", "chunks"])
def test_filter_table_matches_exact_filters(basis, ev, chunked, monkeypatch):
    """Tabulated radial filters give the exact model's energies, forces and stress
    to ~1e-8 relative (float64), through both edge paths."""
    overrides = {
        **SMALL,
        "radial_basis": basis,
        "use_euclidean_variables": ev,
    }
    model = build_model("so3krates", dtype=torch.float64, **overrides).eval()
    g = _periodic_graph(model)
    if chunked:
        model.edge_chunk_size = 17
        model.compile_chunks = basis == "physnet"  # compiled chunks once, eager else
    calls = _count_table_calls(monkeypatch)
    model.filter_table = "off"
    ref = model(g, compute_stress=True)
    assert not calls
    model.filter_table = "on"
    out = model(g, compute_stress=True)
    assert calls, "the table was not used"
    for key in ("energy", "forces", "stress"):
        scale = ref[key].abs().max().item()
        assert scale > 1e-6
        diff = (out[key] - ref[key]).abs().max().item()
        assert diff <= 1e-7 * scale, (key, diff / scale)
    assert (out["forces"] - ref["forces"]).abs().max() > 0  # an approximation


def test_tabulated_forces_are_the_gradient_of_the_tabulated_energy():
    """The table is C¹: forces = −dE/dr of its own energy (central differences)."""
    model = build_model("so3krates", dtype=torch.float64, **SMALL).eval()
    model.filter_table = "on"
    model.filter_table_intervals = 40  # coarse: a wrong derivative would show
    g = _periodic_graph(model)
    forces = model(g)["forces"]
    h = 1e-5
    for atom, axis in [(0, 0), (3, 1), (7, 2)]:
        energies = []
        for sign in (1, -1):
            pos = g.positions.clone()
            pos[atom, axis] += sign * h
            g_h = AtomicGraph(**{**g.__dict__, "positions": pos})
            energies.append(model(g_h)["energy"].item())
        fd = -(energies[0] - energies[1]) / (2 * h)
        assert fd == pytest.approx(forces[atom, axis].item(), rel=1e-6, abs=1e-8)


def test_filter_table_only_where_nothing_differentiates_the_weights(monkeypatch):
    """Training calls (create_graph) compute the filters; forces-only and
    energy-only calls (outputs detached) read the table."""
    model = build_model("so3krates", dtype=torch.float64, **SMALL)
    model.filter_table = "on"
    g = _periodic_graph(model)
    calls = _count_table_calls(monkeypatch)
    out = model.train()(g)  # create_graph=True
    (out["forces"] ** 2).sum().backward()
    assert not calls
    w = model.layers[0].filter_r1[0].weight
    assert w.grad is not None and w.grad.abs().max() > 0
    model.eval()
    layers = model.config.num_layers  # one table per layer
    assert not model(g, compute_forces=False)["energy"].requires_grad
    assert len(calls) == layers
    model(g)  # forces only
    assert len(calls) == 2 * layers


def test_filter_table_auto_is_float32_only_and_settings_are_checked(monkeypatch):
    calls = _count_table_calls(monkeypatch)
    model = build_model("so3krates", dtype=torch.float64, **SMALL).eval()
    g = _periodic_graph(model)
    model(g)
    assert not calls
    model.float()
    model(_periodic_graph(model, torch.float32))
    assert calls
    model.filter_table = "sometimes"
    with pytest.raises(ValueError, match="filter_table must be 'auto', 'on' or 'off'"):
        model(_periodic_graph(model, torch.float32))


def test_filter_table_follows_weight_changes_and_is_not_saved():
    """A weight updated in place, a loaded state_dict or a dtype change rebuilds the
    table; the table never enters the checkpoint."""
    model = build_model("so3krates", dtype=torch.float64, **SMALL).eval()
    model.filter_table = "on"
    keys = set(model.state_dict())
    g = _periodic_graph(model)
    first = model(g)["forces"]
    assert set(model.state_dict()) == keys
    with torch.no_grad():
        model.layers[1].filter_r2[2].weight.mul_(1.5)
    after = model(g)["forces"]
    model.filter_table = "off"
    exact = model(g)["forces"]
    scale = exact.abs().max().item()
    assert (after - first).abs().max() > 1e-4 * scale
    torch.testing.assert_close(after, exact, rtol=0, atol=1e-7 * scale)
    other = build_model("so3krates", dtype=torch.float64, **SMALL, seed=1).eval()
    model.load_state_dict(other.state_dict())
    model.filter_table = "on"
    expected = other(g)["forces"]
    atol = 1e-7 * expected.abs().max().item()
    torch.testing.assert_close(model(g)["forces"], expected, rtol=0, atol=atol)


def test_weights_written_through_data_need_clear_inference_caches():
    """``p.data`` writes bump no version counter the caches can see; after
    ``clear_inference_caches`` the forces-only call equals the exact path again."""
    model = build_model("so3krates", dtype=torch.float64, **SMALL).eval()
    model.filter_table = "on"
    g = _periodic_graph(model)
    before = model(g)["energy"]
    model.layers[0].filter_r1[2].weight.data.mul_(1.5)
    model.layers[1].q1.weight.data.add_(0.05)
    model.clear_inference_caches()
    after = model(g)["energy"]
    exact = model(g, create_graph=True)["energy"].detach()
    assert (after - before).abs().max() > 1e-6
    torch.testing.assert_close(after, exact, rtol=0, atol=1e-7)


@pytest.mark.parametrize("chunked", [False, True], ids=["all-edges", "chunks"])
@pytest.mark.parametrize("ev", [True, False], ids=["ev", "no-ev"])
def test_inference_caches_follow_weight_changes(ev, chunked):
    """Detached calls read the node projections and the first layer's per-element
    maps from a cache and skip the first layer's c(x_j − x_i) (Euclidean variables
    are still zero there): they equal the differentiable path, which computes all
    of it from the weights, before and after in-place weight updates."""
    model = build_model(
        "so3krates", dtype=torch.float64, **{**SMALL, "use_euclidean_variables": ev}
    ).eval()
    model.filter_table = "off"  # the caches alone
    if chunked:
        model.edge_chunk_size = 17
    g = _periodic_graph(model)

    def both() -> torch.Tensor:
        fast = model(g)
        full = model(g, create_graph=True)
        for key in ("energy", "forces"):
            torch.testing.assert_close(
                fast[key], full[key].detach(), rtol=0, atol=1e-12
            )
        return fast["energy"]

    energy = both()
    changed = [
        model.layers[0].q1.weight,
        model.layers[1].v1.weight,
        model.embedding.weight,
    ]
    if ev:
        changed += [model.layers[0].k2.weight, model.layers[0].filter_s2[2].bias]
    for weight in changed:
        with torch.no_grad():
            weight.add_(0.05)  # (biases start at zero)
        new = both()
        assert (new - energy).abs().max() > 1e-8, "the change did not reach the cache"
        energy = new


def test_fixed_constants_are_exact_after_a_float32_to_float64_cast():
    """A float32 model cast (or its weights loaded) in float64 must not keep
    float32-rounded SH coefficients and 1/√(2l+1): that broke rotation
    invariance at ~1e-9 relative. Fails if the buffers only follow the cast."""
    from equiforce.nn.spherical import _fit_coefficients

    cfg = {**TINY_SO3KRATES, "degrees": (1, 2, 3), "num_features": 24}
    m32 = build_model("so3krates", **cfg, dtype=torch.float32)
    exact_coeff = _fit_coefficients((1, 2, 3))
    exact_mat = DegreeContraction((1, 2, 3)).mat
    assert not torch.equal(m32.sph.coeff.double(), exact_coeff)  # rounded in float32

    cast = m32.double()
    assert torch.equal(cast.sph.coeff, exact_coeff)
    assert torch.equal(cast.contract.mat, exact_mat)

    m64 = build_model("so3krates", **cfg, dtype=torch.float64)
    m32 = build_model("so3krates", **cfg, dtype=torch.float32)
    m64.load_state_dict(m32.state_dict())  # the file's stored copy of `mat` is rounded
    assert torch.equal(m64.contract.mat, exact_mat)

    rng = np.random.default_rng(3)
    pos, z = random_molecule(rng)
    rot = random_orthogonal(rng, reflect=False)
    e = [
        m64(AtomicGraph.from_arrays(p, z, m64.cutoff), compute_forces=False)[
            "energy"
        ].item()
        for p in (pos, pos @ rot.T)
    ]
    assert abs(e[0] - e[1]) <= 1e-13 * max(1.0, abs(e[0]))
