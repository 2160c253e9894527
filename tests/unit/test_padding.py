"""Bucketed padding for static shapes: bucket sizes and the ghost structure."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from ase.build import molecule

import equiforce
from equiforce.accel.compiled import CompiledPotential
from equiforce.accel.padding import MIN_GHOSTS, bucket, pad_to_buckets
from equiforce.data.graph import AtomicGraph
from equiforce.testing import TINY_SO3KRATES, random_crystal


def test_bucket_bounds_and_count():
    sizes = [bucket(n, 64) for n in range(1, 20_000)]
    n = np.arange(1, 20_000)
    assert (np.array(sizes) >= n).all()
    big = n >= 64
    assert (np.array(sizes)[big] <= 1.125 * n[big]).all()
    assert (np.diff(sizes) >= 0).all()  # monotonic
    assert bucket(1, 64) == 64 and bucket(64, 64) == 64 and bucket(65, 64) == 72
    assert len(set(sizes[1024:2047])) == 8  # 1,025..2,047 edges: 8 shapes


def _graphs():
    eth = AtomicGraph.from_atoms(molecule("CH3CH2OH"), 5.0)
    pos, z, cell = random_crystal(np.random.default_rng(0))
    crystal = AtomicGraph.from_arrays(pos, z, 5.0, cell, np.ones(3, bool))
    unpaired = replace(eth, edges_paired=False)
    return [eth, AtomicGraph.collate([eth, crystal]), unpaired]


@pytest.mark.parametrize("index", [0, 1, 2], ids=["molecule", "batch", "unpaired"])
def test_ghost_structure_layout(index):
    g = _graphs()[index]
    p = pad_to_buckets(g, 5.0)
    n, e = g.num_nodes, g.n_edges
    assert p.num_nodes == bucket(n + MIN_GHOSTS, 16)
    assert p.n_edges >= bucket(e, 64) and p.edges_paired == g.edges_paired
    torch.testing.assert_close(p.positions[:n], g.positions, rtol=0, atol=0)
    assert torch.equal(p.graph_index[n:], torch.full((p.num_nodes - n,), g.n_graphs))
    assert p.n_graphs == g.n_graphs + 1 and not p.pbc[-1].any()
    # real edges are unchanged (as a set, with their shifts); padded ones join ghosts
    real = p.edge_index < n
    assert (real[0] == real[1]).all(), "an edge joins a real atom to a ghost"
    keep = real[0]
    assert keep.sum() == e
    assert torch.equal(p.edge_index[:, keep], g.edge_index) or g.edges_paired
    pairs = {tuple(c) for c in p.edge_index[:, keep].T.tolist()}
    assert pairs == {tuple(c) for c in g.edge_index.T.tolist()}
    if g.edges_paired:  # edge P+k reverses edge k, padded pairs included
        half = p.n_edges // 2
        assert torch.equal(p.edge_index[:, :half], p.edge_index[:, half:].flip(0))
        torch.testing.assert_close(
            p.edge_shifts[:half], -p.edge_shifts[half:], rtol=0, atol=0
        )
    ghosts = p.positions[n:]
    gap = torch.cdist(ghosts, ghosts) + 1e9 * torch.eye(len(ghosts), dtype=ghosts.dtype)
    assert gap.min() >= 2 * 5.0 - 1e-9  # ghosts never within the cutoff


def test_static_compiled_path_replays_across_neighbour_changes():
    """MD-like calls: edge counts change inside a bucket, one compilation serves all.

    The CUDA-graph mode runs too (on the CPU Inductor skips the graphs, but the
    wrapper's step marking and output copies are exercised).
    """
    model = equiforce.build_model(
        "so3krates", dtype=torch.float32, seed=1, cutoff=3.0, **TINY_SO3KRATES
    ).eval()
    fast = CompiledPotential(model, dynamic=False, mode="reduce-overhead")
    assert fast.pad and fast.cudagraphs
    rng = np.random.default_rng(3)
    atoms = molecule("C6H6")
    counts = set()
    for _ in range(4):
        moved = atoms.copy()
        moved.positions += rng.normal(scale=0.15, size=moved.positions.shape)
        g = AtomicGraph.from_atoms(moved, model.cutoff, dtype=torch.float32)
        counts.add(g.n_edges)
        ref, out = model(g), fast(g)
        scale = ref["forces"].abs().max()
        assert (out["forces"] - ref["forces"]).abs().max() <= 1e-5 * scale
        torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-6, atol=1e-5)
    assert len(counts) > 1, "the edge count never changed: nothing is tested"
    assert fast.compiled and fast.n_compiles == 1


def test_padded_topology_is_reused_with_new_positions():
    """MD reuses one graph with new positions: the cached padding must take them."""
    model = equiforce.build_model(
        "so3krates", dtype=torch.float64, seed=2, **TINY_SO3KRATES
    ).eval()
    fast = CompiledPotential(model, compile=False, pad=True)
    g = AtomicGraph.from_atoms(molecule("CH3CH2OH"), model.cutoff)
    first = fast(g)["forces"].clone()
    g.positions = g.positions + 0.05 * torch.randn(
        g.positions.shape,
        generator=torch.Generator().manual_seed(0),
        dtype=torch.float64,
    )
    out = fast(g)
    assert fast._pad_cache[0] is g.edge_index  # the cache was used
    torch.testing.assert_close(out["forces"], model(g)["forces"], rtol=0, atol=1e-12)
    assert (out["forces"] - first).abs().max() > 1e-4


def test_padded_topology_is_reused_with_a_new_cell():
    """NPT strains the cell while the list stays valid: the cached padding takes
    the new cell too (it kept the old one: stale energies and stress)."""
    model = equiforce.build_model(
        "so3krates", dtype=torch.float64, seed=2, **TINY_SO3KRATES
    ).eval()
    fast = CompiledPotential(model, compile=False, pad=True)
    pos, z, cell = random_crystal(np.random.default_rng(5), n_atoms=6)
    g = AtomicGraph.from_arrays(
        pos, z, model.cutoff, dtype=torch.float64, cell=cell, pbc=np.ones(3, bool)
    )
    fast(g, stress=True)
    strain = torch.eye(3, dtype=torch.float64) * 1.002
    g.positions = g.positions @ strain
    g.cell = g.cell @ strain
    out = fast(g, stress=True)
    assert fast._pad_cache[0] is g.edge_index  # the cache was used
    ref = model(g, compute_stress=True)
    torch.testing.assert_close(out["energy"], ref["energy"], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(out["stress"], ref["stress"], rtol=1e-10, atol=1e-12)
