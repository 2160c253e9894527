"""The compiled energy+forces path agrees with eager and does not recompile per size."""

import numpy as np
import pytest
import torch
from ase.build import molecule

import equiforce
from equiforce.accel.compiled import CompiledPotential
from equiforce.data.graph import AtomicGraph
from equiforce.nn import scatter
from equiforce.testing import TINY_SO3KRATES, random_crystal, record_threads

SMALL = TINY_SO3KRATES


def graphs(dtype):
    out = [
        AtomicGraph.from_atoms(molecule(name), 5.0, dtype=dtype)
        for name in ("CH3CH2OH", "C6H6", "H2O")
    ]
    pos, z, cell = random_crystal(np.random.default_rng(0))
    out.append(
        AtomicGraph.from_arrays(pos, z, 5.0, cell, np.ones(3, bool), dtype=dtype)
    )
    out.append(AtomicGraph.collate(out[:2]))
    return out


@pytest.mark.parametrize(
    ("compile", "extern_rows"),
    [(False, 1024), (True, 1024), (True, 0)],
    ids=["functional-eager", "compiled", "compiled-aten-gathers"],
)
def test_functional_path_matches_autograd_path(compile, extern_rows, monkeypatch):
    """extern_rows=0: every gather/scatter through the ATen custom-op path."""
    monkeypatch.setattr(scatter, "EXTERN_MIN_ROWS", extern_rows)
    model = equiforce.build_model("so3krates", dtype=torch.float32, **SMALL).eval()
    fast = CompiledPotential(model, compile=compile)
    for g in graphs(torch.float32):
        ref = model(g)
        out = fast(g)
        scale = ref["forces"].abs().max().item()
        assert scale > 1e-3
        assert (out["forces"] - ref["forces"]).abs().max().item() <= 1e-5 * scale
        assert torch.allclose(out["energy"], ref["energy"], rtol=0, atol=1e-5 * scale)
    if compile:
        assert fast.compiled, "compilation fell back to eager"
        assert fast.n_compiles <= 2, f"recompiled {fast.n_compiles} times for new sizes"


def test_chunked_graphs_take_the_autograd_path():
    """torch.func cannot differentiate through checkpointed edge chunks."""
    model = equiforce.build_model("so3krates", dtype=torch.float64, **SMALL).eval()
    g = graphs(torch.float64)[1]  # benzene
    ref = model(g)
    model.edge_chunk_size = 50
    assert model.chunks_edges(g.n_edges, differentiable=True)
    out = CompiledPotential(model, compile=False)(g)
    torch.testing.assert_close(out["forces"], ref["forces"], rtol=1e-10, atol=1e-12)


def test_lazy_compile_policy(monkeypatch):
    """True: at once; None: after ``compile_after`` eager calls, then the same
    wrapper; False: never (the policy of :class:`equiforce.Potential`)."""
    from equiforce.accel import compiled
    from equiforce.potential import Potential

    made = []
    monkeypatch.setattr(
        compiled.CompiledPotential,
        "for_device",
        classmethod(lambda cls, m: made.append(m) or m),
    )
    model = equiforce.build_model("so3krates", **SMALL)

    def backends(potential: Potential, calls: int) -> list[bool]:
        seen = []
        for _ in range(calls):
            seen.append(potential._backend() is None)
            potential.n_calls += 1
        return seen

    assert Potential(model, compile=True)._backend() is model
    assert backends(Potential(model, compile=False, compile_after=0), 5) == [True] * 5
    lazy = Potential(model, compile=None, compile_after=3)
    assert backends(lazy, 5) == [True, True, True, False, False]
    assert len(made) == 2  # one wrapper per policy that compiled, made once


def test_for_device_picks_dynamic_shapes_on_the_cpu():
    """CPU: one dynamic graph, no padding; CUDA graphs only for CUDA models."""
    model = equiforce.build_model("so3krates", **SMALL)
    fast = CompiledPotential.for_device(model)
    assert not fast.pad and not fast.cudagraphs


def test_compile_failure_falls_back_to_the_autograd_path(monkeypatch):
    """A compiler error warns once and later calls use model(graph) (not torch.func)."""
    model = equiforce.build_model("so3krates", dtype=torch.float64, **SMALL).eval()
    fast = CompiledPotential(model, compile=False)
    fast.compiled = True  # pretend: the next call "fails to compile"

    def broken(*args):
        raise RuntimeError("Dynamo internal assert")

    fast._fn = broken
    g = graphs(torch.float64)[0]
    with pytest.warns(RuntimeWarning, match="using eager mode"):
        out = fast(g)
    assert not fast.compiled
    torch.testing.assert_close(out["forces"], model(g)["forces"], rtol=0, atol=1e-12)
    out2 = fast(g)  # no second warning, no call of the broken function
    torch.testing.assert_close(out2["energy"], out["energy"], rtol=0, atol=0)


def test_small_graphs_run_on_one_thread(monkeypatch):
    """Below COMPILED_ONE_THREAD_MAX_EDGES edges the call runs single-threaded,
    then restores the caller's setting."""
    from equiforce.accel import runtime

    model = equiforce.build_model("so3krates", dtype=torch.float32, **SMALL).eval()
    fast = CompiledPotential(model, compile=False)
    seen: list[int] = []
    record_threads(fast, seen)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        small = graphs(torch.float32)[0]  # ethanol, 72 edges
        monkeypatch.setattr(runtime, "COMPILED_ONE_THREAD_MAX_EDGES", small.n_edges + 1)
        ref = model(small)
        out = fast(small)
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(runtime, "COMPILED_ONE_THREAD_MAX_EDGES", small.n_edges)
        fast(small)
        assert seen == [1, 2]
        scale = ref["forces"].abs().max()
        assert (out["forces"] - ref["forces"]).abs().max() <= 1e-5 * scale
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize(
    "weight",
    ["layers.0.filter_r1.0.weight", "layers.1.q1.weight", "embedding.weight"],
    ids=["filter-table", "node-projection", "first-layer-maps"],
)
def test_compiled_path_follows_a_weight_change_through_its_caches(weight):
    """float32 calls read So3krates' filter table, node projections and first-layer
    per-element maps from caches; a weight updated in place after compilation gives
    the new model's forces, not the old caches'."""
    model = equiforce.build_model("so3krates", dtype=torch.float32, **SMALL).eval()
    assert model.filter_table == "auto"
    fast = CompiledPotential(model)
    g = graphs(torch.float32)[0]
    before = fast(g)["forces"]
    with torch.no_grad():
        model.get_parameter(weight).mul_(1.3)
    after = fast(g)["forces"]
    model.filter_table = "off"
    exact = model(g, create_graph=True)["forces"].detach()  # no caches
    scale = exact.abs().max().item()
    assert (after - before).abs().max().item() > 1e-3 * scale
    assert (after - exact).abs().max().item() <= 1e-5 * scale
    assert fast.compiled


@pytest.mark.parametrize(
    "extern_rows", [None, 1024], ids=["inductor-rows", "aten-rows"]
)
def test_large_graphs_compile_at_two_threads(extern_rows, monkeypatch):
    """A graph above 1,024 edges compiles (no eager fallback) and matches eager
    when the kernels run on two threads."""
    from equiforce.accel import runtime
    from equiforce.bench import make_system

    if extern_rows is not None:
        monkeypatch.setattr(scatter, "EXTERN_MIN_ROWS", extern_rows)
    monkeypatch.setattr(runtime, "COMPILED_ONE_THREAD_MAX_EDGES", 0)
    model = equiforce.build_model("so3krates", dtype=torch.float32, **SMALL).eval()
    g = AtomicGraph.from_atoms(make_system("water96"), model.cutoff, torch.float32)
    assert g.n_edges > 1024
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        fast = CompiledPotential(model)
        out = fast(g)
    finally:
        torch.set_num_threads(before)
    assert fast.compiled, "compilation fell back to eager"
    ref = model(g)
    scale = ref["forces"].abs().max().item()
    assert (out["forces"] - ref["forces"]).abs().max().item() <= 1e-5 * scale
