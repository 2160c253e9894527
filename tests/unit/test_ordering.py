"""Morton atom order: a valid permutation, local, and invisible to callers."""

from dataclasses import replace

import numpy as np
import pytest
import torch

import equiforce
from equiforce import keys
from equiforce.accel.compiled import CompiledPotential
from equiforce.data.graph import AtomicGraph
from equiforce.data.ordering import (
    inverse_permutation,
    morton_codes,
    spatial_order,
)
from equiforce.testing import TINY_SO3KRATES


def shuffled_grid(n_side: int, seed: int = 0) -> np.ndarray:
    """Points of a cubic grid (spacing 1.5 Å) listed in random order."""
    g = np.arange(n_side) * 1.5
    pts = np.stack(np.meshgrid(g, g, g, indexing="ij"), -1).reshape(-1, 3)
    return pts[np.random.default_rng(seed).permutation(len(pts))]


def test_morton_codes_interleave_bits():
    pos = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [1, 1, 1.0]])
    # extent 1 -> cell index 1023 on an axis at 1.0 (all ten bits set)
    codes = morton_codes(pos).tolist()
    x_bits = sum(1 << (3 * b) for b in range(10))
    assert codes == [0, x_bits, x_bits << 1, x_bits * 7]
    with pytest.raises(ValueError, match="bits"):
        morton_codes(pos, bits=11)


def test_spatial_order_is_a_local_permutation_within_each_structure():
    pos = torch.tensor(shuffled_grid(8))  # 512 atoms
    n = len(pos)
    graph_index = torch.cat([torch.zeros(200), torch.ones(n - 200)]).long()
    perm = spatial_order(pos, graph_index)
    assert sorted(perm.tolist()) == list(range(n))
    # structures stay contiguous and in order
    assert torch.equal(graph_index[perm], graph_index)
    inv = inverse_permutation(perm)
    assert torch.equal(perm[inv], torch.arange(n))
    # locality: grid neighbours (1.5 Å apart) end up much closer in memory
    one = spatial_order(pos, torch.zeros(n, dtype=torch.long))
    inv1 = inverse_permutation(one)
    d = torch.cdist(pos, pos)
    i, j = torch.nonzero((d > 0) & (d < 1.6), as_tuple=True)
    before = (i - j).abs().double().median()
    after = (inv1[i] - inv1[j]).abs().double().median()
    assert after < before / 4, (before, after)


def test_permuted_graph_keeps_edges_and_targets():
    pos = shuffled_grid(4)
    z = np.random.default_rng(1).choice([1, 8], len(pos))
    forces = np.random.default_rng(2).normal(size=pos.shape)
    g = AtomicGraph.from_arrays(pos, z, 2.0, targets={keys.FORCES: forces})
    perm = spatial_order(g.positions, g.graph_index)
    inv = inverse_permutation(perm)
    p = g.permuted(perm, inv)
    assert p.edges_paired and p.n_edges == g.n_edges
    half = p.n_edges // 2
    # still paired: edge half + k reverses edge k
    assert torch.equal(p.edge_index[:, half:], p.edge_index.flip(0)[:, :half])
    assert torch.equal(p.edge_shifts[half:], -p.edge_shifts[:half])
    # centres in increasing order (first half), the same set of edges
    assert (p.edge_index[0, :half].diff() >= 0).all()

    def edge_set(graph, labels):
        i, j = labels[graph.edge_index[0]], labels[graph.edge_index[1]]
        cols = (i.tolist(), j.tolist(), *graph.edge_shifts.T.tolist())
        return sorted(zip(*cols, strict=True))

    assert edge_set(p, perm) == edge_set(g, torch.arange(g.num_nodes))
    assert torch.allclose(
        p.edge_vectors().norm(dim=1).sort().values,
        g.edge_vectors().norm(dim=1).sort().values,
    )
    assert torch.equal(p.atomic_numbers[inv], g.atomic_numbers)
    assert torch.equal(p.targets[keys.FORCES][inv], g.targets[keys.FORCES])


@pytest.mark.parametrize(
    ("path", "paired"),
    [("autograd", True), ("functional", True), ("autograd", False)],
)
def test_reordered_large_call_equals_plain_call(path, paired):
    """A 512-atom cluster above a lowered size limit, both force paths, float64."""
    model = equiforce.build_model(
        "so3krates", dtype=torch.float64, **TINY_SO3KRATES
    ).eval()
    z = np.random.default_rng(3).choice([1, 6, 8], 512)
    g = AtomicGraph.from_arrays(shuffled_grid(8), z, model.cutoff)
    g = replace(g, edges_paired=paired)
    call = model if path == "autograd" else CompiledPotential(model, compile=False)
    model.spatial_order_min_atoms = None
    ref = call(g)
    model.spatial_order_min_atoms = 500
    assert model.atom_order(g) is not None
    out = call(g)
    scale = ref[keys.FORCES].abs().max()
    assert scale > 1e-4
    assert torch.allclose(out[keys.FORCES], ref[keys.FORCES], atol=1e-10 * scale)
    assert torch.allclose(out[keys.ENERGY], ref[keys.ENERGY], rtol=1e-12, atol=0)
    assert torch.allclose(
        out[keys.ATOMIC_ENERGIES], ref[keys.ATOMIC_ENERGIES], atol=1e-10
    )
    model.spatial_order_min_atoms = 513
    assert model.atom_order(g) is None
