import numpy as np
import pytest
import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph


def make(n, seed, periodic=False):
    rng = np.random.default_rng(seed)
    pos = rng.random((n, 3)) * (4 if periodic else 3)
    cell = np.eye(3) * 4 if periodic else None
    pbc = np.ones(3, bool) if periodic else None
    targets = {keys.ENERGY: rng.normal(), keys.FORCES: rng.normal(size=(n, 3))}
    return AtomicGraph.from_arrays(pos, rng.integers(1, 9, n), 2.5, cell, pbc, targets)


def test_collate_then_split_round_trips():
    graphs = [make(3, 0), make(5, 1, periodic=True), make(4, 2)]
    batch = AtomicGraph.collate(graphs)
    assert batch.n_graphs == 3 and batch.num_nodes == 12
    assert batch.graph_index.tolist() == [0] * 3 + [1] * 5 + [2] * 4
    for a, b in zip(graphs, batch.split(), strict=True):
        assert torch.equal(a.positions, b.positions)
        assert torch.equal(a.edge_index, b.edge_index)
        assert torch.equal(a.edge_shifts, b.edge_shifts)
        assert torch.equal(a.targets[keys.FORCES], b.targets[keys.FORCES])
        assert torch.equal(a.targets[keys.ENERGY], b.targets[keys.ENERGY])


def test_edge_vectors_use_image_shifts():
    g = make(5, 3, periodic=True)
    vec = g.edge_vectors()
    assert (vec.norm(dim=1) < 2.5).all()
    i, j = g.edge_index
    direct = g.positions[j] - g.positions[i]
    shifted = g.edge_shifts.abs().sum(1) > 0
    assert shifted.any()
    assert not torch.allclose(vec[shifted], direct[shifted])


def test_to_casts_floats_but_keeps_energy_float64():
    g = make(4, 4).to(dtype=torch.float32)
    assert g.positions.dtype == torch.float32
    assert g.targets[keys.FORCES].dtype == torch.float32
    assert g.targets[keys.ENERGY].dtype == torch.float64
    assert g.atomic_numbers.dtype == torch.long


def assert_paired(g: AtomicGraph) -> None:
    """Edge P + k is edge k reversed (i, j swapped, shift negated, vector negated)."""
    assert g.edges_paired and g.n_edges % 2 == 0
    p = g.n_edges // 2
    assert torch.equal(g.edge_index[:, p:], g.edge_index.flip(0)[:, :p])
    assert torch.equal(g.edge_shifts[p:], -g.edge_shifts[:p])
    vec = g.edge_vectors()
    torch.testing.assert_close(vec[p:], -vec[:p], rtol=0, atol=1e-12)


def test_neighbour_graphs_are_paired_and_stay_paired_through_collate_and_split():
    # a periodic cell smaller than 2 cutoffs: self-image pairs (i, i, ±S) included
    small = AtomicGraph.from_arrays(
        np.array([[0.0, 0.0, 0.0], [0.9, 0.8, 0.7]]),
        [1, 8],
        2.5,
        np.eye(3) * 2.0,
        np.ones(3, bool),
    )
    assert (small.edge_index[0] == small.edge_index[1]).any()
    graphs = [make(3, 0), small, make(5, 1, periodic=True), make(4, 2)]
    for g in graphs:
        assert_paired(g)
    batch = AtomicGraph.collate(graphs)
    assert_paired(batch)
    for g in batch.split():
        assert_paired(g)
    # an unpaired member makes the whole batch unpaired (models then use every edge)
    loose = make(3, 5)
    loose.edges_paired = False
    assert not AtomicGraph.collate([graphs[0], loose]).edges_paired


def test_paired_graph_needs_an_even_edge_count():
    g = make(4, 6)
    with pytest.raises(ValueError, match="even number of edges"):
        AtomicGraph(
            **{
                **{
                    f: getattr(g, f)
                    for f in ("positions", "atomic_numbers", "graph_index")
                },
                "edge_index": g.edge_index[:, :-1],
                "edge_shifts": g.edge_shifts[:-1],
                "cell": g.cell,
                "pbc": g.pbc,
                "n_atoms": g.n_atoms,
                "edges_paired": True,
            }
        )
