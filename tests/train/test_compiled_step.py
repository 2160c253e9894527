"""The compiled training step gives the autograd loss and weight gradients."""

import numpy as np
import pytest
import torch
from _train_helpers import TINY_SO3LR

import equiforce
from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.testing import TINY_SO3KRATES, random_molecule, record_threads
from equiforce.train.compiled_step import CompiledTrainStep
from equiforce.train.loss import WeightedLoss

TINY = {
    "so3krates": TINY_SO3KRATES,
    "painn": {
        "num_features": 16,
        "num_interactions": 2,
        "num_radial": 8,
        "zero_init_readout": False,
    },
}


def labelled_batch(
    n_graphs: int, n_atoms: int, dtype, seed: int, lr_cutoff: float | None = None
) -> AtomicGraph:
    rng = np.random.default_rng(seed)
    graphs = []
    for _ in range(n_graphs):
        pos, z = random_molecule(rng, n_atoms=n_atoms, box=3.5)
        g = AtomicGraph.from_arrays(pos, z, 5.0, dtype=dtype, lr_cutoff=lr_cutoff)
        g.targets = {
            keys.ENERGY: torch.tensor([rng.normal()], dtype=torch.float64),
            keys.FORCES: torch.tensor(rng.normal(size=(n_atoms, 3)), dtype=dtype),
        }
        graphs.append(g)
    return AtomicGraph.collate(graphs)


def autograd_reference(model, loss_fn, batch):
    model.zero_grad()
    out = model(batch, compute_forces=True, create_graph=True)
    loss, parts = loss_fn(out, batch)
    loss.backward()
    return parts, {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("name", sorted(TINY))
@pytest.mark.parametrize(
    "compile",
    [False, pytest.param(True, marks=pytest.mark.slow)],  # compiling takes minutes
    ids=["functional-eager", "compiled"],
)
def test_compiled_step_matches_autograd(name, compile):
    model = equiforce.build_model(name, dtype=torch.float64, **TINY[name]).train()
    loss_fn = WeightedLoss(energy_weight=0.3, forces_weight=0.7)
    step = CompiledTrainStep(model, loss_fn, compile=compile)
    # small batches stay in Inductor's gathers, the large one (> 1,024 edges) takes
    # the ATen custom ops; varying sizes must not break the single compilation
    for n_graphs, n_atoms, seed in [(2, 6, 0), (3, 7, 1), (3, 20, 2)]:
        batch = labelled_batch(n_graphs, n_atoms, torch.float64, seed)
        assert (batch.n_edges >= 1024) == (n_atoms == 20)
        ref_parts, ref_grads = autograd_reference(model, loss_fn, batch)
        parts, grads = step(batch)
        assert step.compiled == compile
        assert parts.keys() == ref_parts.keys()
        for k, v in ref_parts.items():
            assert parts[k] == pytest.approx(v, rel=1e-10), k
        assert grads.keys() == ref_grads.keys()
        for n, g in ref_grads.items():
            torch.testing.assert_close(grads[n], g, rtol=1e-8, atol=1e-12, msg=n)


def test_compiled_step_refuses_stress_loss():
    model = equiforce.build_model("so3krates", **TINY["so3krates"])
    with pytest.raises(ValueError, match="stress"):
        CompiledTrainStep(model, WeightedLoss(stress_weight=1.0))


def test_small_batches_take_the_step_on_one_thread(monkeypatch):
    """Below ONE_THREAD_MAX_EDGES edges the step runs single-threaded, then restores."""
    from equiforce.train import compiled_step

    model = equiforce.build_model("so3krates", **TINY_SO3KRATES).train()
    step = CompiledTrainStep(model, WeightedLoss(), compile=False)
    seen: list[int] = []
    record_threads(step, seen)
    batch = labelled_batch(2, 6, torch.float32, 0)
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        monkeypatch.setattr(compiled_step, "ONE_THREAD_MAX_EDGES", batch.n_edges + 1)
        step(batch)
        assert torch.get_num_threads() == 2
        monkeypatch.setattr(compiled_step, "ONE_THREAD_MAX_EDGES", batch.n_edges)
        step(batch)
        assert seen == [1, 2]
    finally:
        torch.set_num_threads(before)


def periodic_water_batch(dtype) -> AtomicGraph:
    """Two labelled periodic water boxes (24 atoms each, 6.2 Å cells)."""
    from equiforce.structures import water_box

    rng = np.random.default_rng(4)
    graphs = []
    for seed in (0, 1):
        atoms = water_box(2, seed=seed)
        g = AtomicGraph.from_atoms(atoms, 5.0, dtype=dtype, lr_cutoff=6.0)
        g.targets = {
            keys.ENERGY: torch.tensor([rng.normal()], dtype=torch.float64),
            keys.FORCES: torch.tensor(rng.normal(size=(len(atoms), 3)), dtype=dtype),
        }
        graphs.append(g)
    return AtomicGraph.collate(graphs)


def test_compiled_step_trains_periodic_so3lr_batches_eagerly(monkeypatch):
    """Batches that SO3LR.compiled_accepts refuses take the eager (autograd) step.

    Traced, SO3LR's electrostatics skip the periodic (PME) split and evaluate
    the direct kernel, so a compiled step on 3D-periodic cells trained a
    different energy than the eager one. Dynamo traces here with its cheap
    ``eager`` backend (no Inductor build), which is enough to take the traced
    branch: without the routing the loss differs from the autograd (PME) loss.
    Open batches still take the compiled function; the log line comes once.
    """
    pytest.importorskip("torchpme")
    real_compile = torch.compile
    monkeypatch.setattr(
        torch,
        "compile",
        lambda fn, **kw: real_compile(fn, backend="eager", dynamic=True),
    )
    torch.manual_seed(0)
    model = equiforce.build_model(
        "so3lr", dtype=torch.float64, cutoff=5.0, **TINY_SO3LR
    ).train()
    assert model.terms["electrostatics"].periodic is not None  # PME by default
    loss_fn = WeightedLoss(energy_weight=0.3, forces_weight=0.7)
    logged: list[str] = []
    step = CompiledTrainStep(model, loss_fn, compile=True, log=logged.append)
    batch = periodic_water_batch(torch.float64)
    assert not model.compiled_accepts(batch)
    for _ in range(2):
        ref_parts, ref_grads = autograd_reference(model, loss_fn, batch)
        parts, grads = step(batch)
        for k, v in ref_parts.items():
            assert parts[k] == pytest.approx(v, rel=1e-12), k
        for n, g in ref_grads.items():
            torch.testing.assert_close(grads[n], g, rtol=1e-10, atol=1e-14, msg=n)
    assert step.n_eager == 2 and len(logged) == 1 and "compiled_accepts" in logged[0]
    # open batches still take the compiled function (recorded here, run
    # uncompiled: tracing the step takes ~30 s on a loaded 2-core machine)
    calls = []

    def recording(*args):
        calls.append(args[2].n_graphs)
        return step._loss_and_grads(*args)

    step._fn = recording
    open_batch = labelled_batch(2, 6, torch.float64, 0, lr_cutoff=6.0)
    ref_parts, _ = autograd_reference(model, loss_fn, open_batch)
    parts, _ = step(open_batch)
    assert calls == [2] and step.n_eager == 2
    assert parts["loss"] == pytest.approx(ref_parts["loss"], rel=1e-10)


def test_failed_compile_falls_back_to_the_autograd_step():
    """A compiler error: warned once, then the trainer's autograd step, same numbers."""
    model = equiforce.build_model(
        "so3krates", dtype=torch.float64, **TINY_SO3KRATES
    ).train()
    loss_fn = WeightedLoss(energy_weight=0.3, forces_weight=0.7)
    step = CompiledTrainStep(model, loss_fn, compile=False)
    calls = []

    def broken(*args):
        calls.append(1)
        raise RuntimeError("Inductor exploded")

    step._fn, step.compiled = broken, True  # as if torch.compile had wrapped it
    for seed in (0, 1):
        batch = labelled_batch(2, 6, torch.float64, seed)
        ref_parts, ref_grads = autograd_reference(model, loss_fn, batch)
        if seed == 0:
            with pytest.warns(RuntimeWarning, match="Inductor exploded"):
                parts, grads = step(batch)
        else:
            parts, grads = step(batch)
        assert not step.compiled and step._autograd_fallback
        for k, v in ref_parts.items():
            assert parts[k] == pytest.approx(v, rel=1e-12), k
        assert grads.keys() == ref_grads.keys()
        for n, g in ref_grads.items():
            torch.testing.assert_close(grads[n], g, rtol=1e-10, atol=1e-14, msg=n)
    assert calls == [1]  # the broken function is not tried again
