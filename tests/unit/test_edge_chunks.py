"""Chunk plans of the in-place edge chunks: every edge once, on local atom rows."""

import numpy as np
import pytest
import torch

from equiforce.data.graph import AtomicGraph
from equiforce.models.edge_chunks import directions, plan_chunks
from equiforce.testing import random_molecule


@pytest.mark.parametrize("paired", [True, False])
@pytest.mark.parametrize("chunk", [7, 50, 10**6])
def test_chunk_plans_cover_every_edge_once_with_local_indices(paired, chunk):
    pos, z = random_molecule(np.random.default_rng(1), n_atoms=30, box=6.0)
    g = AtomicGraph.from_arrays(pos, z, 3.0)
    g.edges_paired = paired
    n_dir = 2 if paired else 1
    idx_i, idx_j = g.edge_index
    plans = plan_chunks(idx_i, idx_j, chunk, n_dir)
    covered = torch.cat([torch.arange(idx_i.shape[0] // n_dir)[p.pairs] for p in plans])
    assert torch.equal(covered, torch.arange(idx_i.shape[0] // n_dir))
    for p in plans:
        assert torch.all(p.atoms[1:] > p.atoms[:-1])  # sorted, unique
        assert torch.equal(p.atoms[p.i_local], directions(idx_i, p.pairs, n_dir))
        assert torch.equal(p.atoms[p.j_local], directions(idx_j, p.pairs, n_dir))
    if chunk < 50:  # small chunks see only part of the atoms
        assert all(p.atoms.shape[0] < g.num_nodes for p in plans)


def test_chunk_plan_is_shared_while_its_indices_live():
    pos, z = random_molecule(np.random.default_rng(2), n_atoms=20, box=5.0)
    g = AtomicGraph.from_arrays(pos, z, 3.0)
    idx_i, idx_j = g.edge_index
    first = plan_chunks(idx_i, idx_j, 10, 2)
    assert plan_chunks(idx_i, idx_j, 10, 2) is first  # the next layer reuses it
    assert plan_chunks(idx_i, idx_j, 12, 2) is not first  # another chunk size
    copied = idx_i.clone()
    other = plan_chunks(copied, idx_j, 12, 2)
    assert other is not first and len(other) == len(plan_chunks(idx_i, idx_j, 12, 2))
