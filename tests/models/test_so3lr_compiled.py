"""SO3LR through the compiled backends: the eager model's numbers, term by term.

The compiled function rebuilds the graph from its tensor arguments; SO3LR also
needs the long-range pairs, the total charge and the spin. These tests give the
compiled path charged and open-shell structures and compare every output
(energy, per-atom energies, forces, each named term) with the eager model, so a
field dropped on the way (a neutral, closed-shell or long-range-free model
instead) fails them.

Default suite: the ``torch.func`` function uncompiled (the same code that is
traced) on the pretrained model, one Inductor build of a tiny SO3LR. Slow: the
pretrained model compiled by Inductor (float32, float64), by AOTInductor, and
through :class:`~equiforce.potential.Potential`.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from equiforce import keys
from equiforce.accel.compiled import CompiledPotential
from equiforce.accel.padding import pad_to_buckets
from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model, load_model
from equiforce.potential import Potential
from equiforce.structures import acetate
from equiforce.testing import TINY_SO3KRATES, TOLERANCES, assert_close

TERMS = ("local", "zbl", "electrostatics", "dispersion", "e0")
TINY = {**TINY_SO3KRATES, "lr_cutoff": 6.0, "head_hidden": 16}


def charged_batch(model, dtype: torch.dtype) -> AtomicGraph:
    """Acetate (Q = −1), the methyl radical (S = ½) and ethanol, distorted."""
    rng = np.random.default_rng(5)
    mols = [acetate(), molecule("CH3"), molecule("CH3CH2OH")]
    graphs = []
    for atoms, q, s in zip(mols, (-1.0, 0.0, 0.0), (0.0, 0.5, 0.0), strict=True):
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
        graphs.append(
            AtomicGraph.from_atoms(
                atoms, model.cutoff, dtype=dtype, lr_cutoff=model.lr_cutoff
            )
        )
        graphs[-1].charge = torch.tensor([q], dtype=dtype)
        graphs[-1].spin = torch.tensor([s], dtype=dtype)
    return AtomicGraph.collate(graphs)


def assert_same_outputs(out: dict, ref: dict, rtol: float) -> None:
    """Every eager output present and equal (per-term ones included)."""
    assert set(out) == set(ref)
    for term in TERMS:
        assert keys.term_energy(term) in out, term
    for key, value in ref.items():
        assert_close(out[key], value, rtol, key)


@pytest.fixture(scope="module")
def pretrained64() -> torch.nn.Module:
    return load_model("so3lr", dtype=torch.float64)


def test_traced_function_equals_eager_with_charge_and_spin(pretrained64):
    """The function that gets compiled, run eagerly, equals the model (float64).

    Catches a graph field lost between the graph and the traced function: the
    charge, the spin or the long-range pairs each change some term by ≫ 1e-10.
    """
    model = pretrained64
    batch = charged_batch(model, torch.float64)
    fast = CompiledPotential(model, compile=False)
    assert fast.compiled_inputs == ("lr_edge_index", "lr_edge_shifts", "charge", "spin")
    out = fast(batch)
    assert_same_outputs(out, model(batch), TOLERANCES[torch.float64])
    # the inputs matter: neutral closed-shell input changes acetate and radical
    closed = AtomicGraph.collate(batch.split())
    closed.charge = closed.spin = None
    de = (fast(closed)[keys.ENERGY] - out[keys.ENERGY]).abs()
    assert float(de[0]) > 1e-3 and float(de[1]) > 1e-3 and float(de[2]) < 1e-9


def test_missing_long_range_pairs_is_a_clear_error(pretrained64):
    atoms = molecule("CH3CH2OH")
    g = AtomicGraph.from_atoms(atoms, pretrained64.cutoff, dtype=torch.float64)
    with pytest.raises(ValueError, match="lr_cutoff"):
        CompiledPotential(pretrained64, compile=False)(g)


def test_padding_keeps_charge_and_long_range_pairs(pretrained64):
    """Static-shape (CUDA) padding: a ghost structure with zero charge and spin,
    long-range pairs padded to a bucket; the real structures' outputs unchanged."""
    model = pretrained64
    batch = charged_batch(model, torch.float64)
    padded = pad_to_buckets(batch, model.cutoff, min_edges=batch.n_edges + 10)
    assert padded.lr_edge_index.shape[1] > batch.lr_edge_index.shape[1]
    assert padded.charge.tolist() == [-1.0, 0.0, 0.0, 0.0]
    ref, out = model(batch), model(padded)
    n, g = batch.num_nodes, batch.n_graphs
    for key, value in ref.items():
        rows = g if key.startswith(keys.ENERGY) else n
        assert_close(out[key][:rows], value, TOLERANCES[torch.float64], key)


def test_compiled_tiny_so3lr_equals_eager_with_charge():
    """One Inductor build (tiny SO3LR, float64): compiled = eager for every term,
    for a charged and an open-shell structure (stress: the contract suite)."""
    model = build_model("so3lr", dtype=torch.float64, **TINY)
    batch = charged_batch(model, torch.float64)
    fast = CompiledPotential(model, backend="inductor", cpp_wrapper=False)
    assert_same_outputs(fast(batch), model(batch), 10 * TOLERANCES[torch.float64])
    assert fast.backend == "inductor" and fast.compiled, "fell back to eager"


@pytest.mark.slow
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_compiled_pretrained_equals_eager(dtype):
    """The released model compiled by Inductor: ~1e-10 (float64), ~1e-5 (float32)."""
    model = load_model("so3lr", dtype=dtype)
    batch = charged_batch(model, dtype)
    fast = CompiledPotential(model, backend="inductor")
    rtol = 1e-10 if dtype == torch.float64 else 1e-5
    assert_same_outputs(fast(batch), model(batch), rtol)
    assert fast.compiled


@pytest.mark.slow
def test_aoti_pretrained_equals_eager(tmp_path, monkeypatch):
    """The CPU default backend (AOTInductor library, a few minutes to build);
    one library for a new size and a different charge."""
    monkeypatch.setenv("EQUIFORCE_AOTI_CACHE", str(tmp_path))
    model = load_model("so3lr", dtype=torch.float32)
    batch = charged_batch(model, torch.float32)
    fast = CompiledPotential(model, backend="aoti")
    assert_same_outputs(fast(batch), model(batch), 1e-5)
    single = batch.split()[0]  # acetate alone: other atom, pair and structure counts
    single.charge = torch.tensor([1.0])
    assert_same_outputs(fast(single), model(single), 1e-5)
    assert fast.backend == "aoti" and fast.aoti[single.edges_paired].n_builds == 1


@pytest.mark.slow
def test_potential_compiles_so3lr_and_passes_charge():
    """Potential switches SO3LR to the compiled backend; charge reaches it."""
    atoms = acetate()
    eager = Potential("so3lr", dtype=torch.float64, compile=False)
    fast = Potential("so3lr", dtype=torch.float64, compile=True)
    for charge in (-1, 0):
        ref = eager.compute(atoms.positions, atoms.numbers, charge=charge)
        out = fast.compute(atoms.positions, atoms.numbers, charge=charge)
        assert_same_outputs(out, ref, 1e-10)
    assert fast.compiled is not None and fast.compiled.compiled
