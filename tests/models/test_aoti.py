"""The AOTInductor backend: one library for every size, equal to eager, rebuilt on
weight changes, kept on disk, and torch.compile when it cannot serve a call."""

import os

import pytest
import torch
from ase import Atoms
from ase.build import molecule

import equiforce
from equiforce.accel import aoti
from equiforce.accel.compiled import CompiledPotential
from equiforce.data.graph import AtomicGraph
from equiforce.testing import TINY_SO3KRATES


@pytest.fixture
def cache(tmp_path, monkeypatch):
    folder = tmp_path / "aoti"
    monkeypatch.setenv("EQUIFORCE_AOTI_CACHE", str(folder))
    return folder


def model64():
    model = equiforce.build_model("so3krates", dtype=torch.float64, **TINY_SO3KRATES)
    return model.eval()


def graphs() -> list[AtomicGraph]:
    mols = [
        AtomicGraph.from_atoms(molecule(name), 5.0, dtype=torch.float64)
        for name in ("CH3CH2OH", "C6H6")
    ]
    return [*mols, AtomicGraph.collate([mols[0], mols[1], mols[0]])]


def assert_matches_eager(out, model, g, rtol=1e-10):
    ref = model(g)
    scale = ref["forces"].abs().max().item()
    assert scale > 1e-3, "forces vanish: the comparison would prove nothing"
    assert (out["forces"] - ref["forces"]).abs().max().item() <= rtol * scale
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=0, atol=rtol * scale)


def test_one_library_serves_every_size_and_is_reloaded_from_disk(cache):
    """float64: the library equals the autograd path (no tables in float64) for
    molecules of other sizes than the traced one and for a batch of three; a second
    wrapper finds the library on disk and gives the same numbers bit for bit."""
    model = model64()
    fast = CompiledPotential(model, backend="aoti")
    assert fast.backend == "aoti"
    outs = [fast(g) for g in graphs()]
    for g, out in zip(graphs(), outs, strict=True):
        assert_matches_eager(out, model, g)
    lib = fast.aoti[True]
    assert lib.n_builds == 1, "a new size rebuilt the library"
    assert not lib.loaded_from_cache
    assert len(list(cache.glob("*.pt2"))) == 1
    assert not list(cache.glob(".*")), "a partial package was left behind"

    again = CompiledPotential(model, backend="aoti")
    out = again(graphs()[2])
    assert again.aoti[True].loaded_from_cache
    torch.testing.assert_close(out["forces"], outs[2]["forces"], rtol=0, atol=0)
    assert fast.backend == "aoti" and again.backend == "aoti"  # no fallback


@pytest.fixture
def traced_only(monkeypatch):
    """The library replaced by the traced ATen graph it would be compiled from
    (seconds instead of a minute per build): what is traced, with which constants,
    and when it is rebuilt, without the C++ compiler."""
    built = {}

    def build(gm, example, dims, path):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"traced")
        built[path] = gm

    monkeypatch.setattr(aoti, "build", build)
    monkeypatch.setattr(aoti, "load", lambda path: built[path])
    return built


def check_weight_changes_rebuild(model, fast, g):
    before = fast(g)["forces"]
    with torch.no_grad():
        model.get_parameter("layers.0.q1.weight").mul_(1.3)
    after = fast(g)
    assert (after["forces"] - before).abs().max().item() > 1e-4
    assert_matches_eager(after, model, g)
    assert fast.aoti[True].n_builds == 2

    model.get_parameter("readout.0.weight").data.mul_(0.7)  # no version bump
    model.clear_inference_caches()
    assert_matches_eager(fast(g), model, g)
    assert fast.aoti[True].n_builds == 3
    fast(g)
    assert fast.aoti[True].n_builds == 3, "rebuilt without a change"
    return fast


def test_a_weight_change_retraces_with_the_new_constants(cache, traced_only):
    """Weights are constants of the library: an in-place update, and a ``.data``
    write followed by ``clear_inference_caches()``, give the new model's forces."""
    model = model64()
    fast = CompiledPotential(model, backend="aoti")
    g = graphs()[0]
    check_weight_changes_rebuild(model, fast, g)
    assert len(traced_only) == 3
    # weights that keep changing: torch.compile (here its eager original)
    fast._fn = fast._energy_and_forces
    with torch.no_grad():
        model.get_parameter("layers.1.q1.weight").mul_(0.9)
    with pytest.warns(RuntimeWarning, match="changed after 3 builds"):
        out = fast(g)
    assert fast.backend == "inductor"
    assert_matches_eager(out, model, g)


def test_prune_keeps_the_most_recently_used(tmp_path):
    for i in range(5):
        lib = tmp_path / f"{i}.pt2"
        lib.write_bytes(b"x")
        os.utime(lib, (1000 + i, 1000 + i))
    os.utime(tmp_path / "0.pt2", (2000, 2000))  # used again
    aoti.prune(tmp_path, keep=3)
    assert sorted(p.name for p in tmp_path.glob("*.pt2")) == ["0.pt2", "3.pt2", "4.pt2"]


@pytest.mark.slow
def test_a_weight_change_rebuilds_the_compiled_library(cache):
    """The same with the C++ compiler (three builds, a few minutes)."""
    model = model64()
    fast = CompiledPotential(model, backend="aoti")
    check_weight_changes_rebuild(model, fast, graphs()[0])
    assert len(list(cache.glob("*.pt2"))) == 3


def test_tiny_graphs_never_reach_the_library():
    """Export specialises sizes 0 and 1: such graphs go to torch.compile."""
    model = model64()
    fast = CompiledPotential(model, backend="aoti")
    lone = AtomicGraph.from_atoms(Atoms("H", positions=[[0, 0, 0]]), 5.0, torch.float64)
    h2 = AtomicGraph.from_atoms(molecule("H2"), 5.0, torch.float64)
    for g in (lone, h2):
        assert g.n_edges < aoti.MIN_EDGES
        assert fast._run_aoti(g, ()) is None
    assert fast.aoti == {}, "a tiny graph started a build"


def test_a_failed_build_falls_back_to_torch_compile(cache, monkeypatch):
    """A failing build warns once and later calls run the torch.compile function
    (here its eager original, to skip a compilation that test_compiled.py tests)."""
    model = model64()
    fast = CompiledPotential(model, backend="aoti")
    fast._fn = fast._energy_and_forces

    def broken(*args, **kwargs):
        raise RuntimeError("no compiler here")

    monkeypatch.setattr(aoti, "build", broken)
    g = graphs()[0]
    with pytest.warns(RuntimeWarning, match="AOTInductor failed.*no compiler here"):
        out = fast(g)
    assert fast.backend == "inductor" and fast.aoti is None
    assert_matches_eager(out, model, g)
    assert_matches_eager(fast(graphs()[1]), model, graphs()[1])  # no second warning
    assert not list(cache.glob("*.pt2"))


def test_backend_choice(monkeypatch):
    model = equiforce.build_model("so3krates", **TINY_SO3KRATES).eval()
    monkeypatch.delenv("EQUIFORCE_COMPILE_BACKEND", raising=False)
    assert CompiledPotential(model).backend == "aoti"
    assert CompiledPotential(model, backend="inductor").backend == "inductor"
    assert CompiledPotential(model, compile=False).backend == "eager"
    # static shapes (the CUDA graph setting) are not served by the library
    assert CompiledPotential(model, dynamic=False).backend == "inductor"
    with pytest.raises(ValueError, match="aoti backend needs"):
        CompiledPotential(model, dynamic=False, backend="aoti")
    with pytest.raises(ValueError, match="backend must be one of"):
        CompiledPotential(model, backend="jit")
    monkeypatch.setenv("EQUIFORCE_COMPILE_BACKEND", "inductor")
    assert CompiledPotential(model).backend == "inductor"
    monkeypatch.setenv("EQUIFORCE_COMPILE_BACKEND", "aot")
    with pytest.raises(ValueError, match="EQUIFORCE_COMPILE_BACKEND must be one of"):
        CompiledPotential(model)


def test_graph_hash_sees_constants_and_code():
    """The disk cache key changes with a constant's value and with the code."""
    w = torch.ones(3)
    x = torch.randn(4, 3)
    h1 = aoti.graph_hash(aoti.trace(lambda x: x * w, [x]), [x])
    assert h1 == aoti.graph_hash(aoti.trace(lambda x: x * w, [x]), [x])
    w2 = w.clone()
    w2[1] = 2.0
    assert h1 != aoti.graph_hash(aoti.trace(lambda x: x * w2, [x]), [x])
    assert h1 != aoti.graph_hash(aoti.trace(lambda x: x + w, [x]), [x])


def test_cache_dir_setting(monkeypatch, tmp_path):
    monkeypatch.setenv("EQUIFORCE_AOTI_CACHE", "0")
    assert aoti.cache_dir() is None
    monkeypatch.setenv("EQUIFORCE_AOTI_CACHE", str(tmp_path))
    assert aoti.cache_dir() == tmp_path
    monkeypatch.delenv("EQUIFORCE_AOTI_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert aoti.cache_dir() == tmp_path / "xdg" / "equiforce" / "aoti"
