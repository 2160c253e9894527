"""Chunk plans of the in-place edge chunks: every edge once, on local atom rows."""

import numpy as np
import pytest
import torch

from equiforce.accel.edge_chunks import directions, plan_chunks
from equiforce.data.graph import AtomicGraph
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


def test_map_in_order_keeps_order_thread_settings_and_grad_mode():
    """Results in item order, each call on a pool thread with one torch thread and
    the caller's grad mode; the caller's thread count comes back afterwards."""
    import threading

    from equiforce.accel.edge_chunks import map_in_order
    from equiforce.nn import scatter

    before = torch.get_num_threads()
    main = threading.get_ident()
    seen = []

    def call(k):
        seen.append(
            (threading.get_ident(), torch.get_num_threads(), torch.is_grad_enabled())
        )
        assert not scatter._extern_enabled  # Inductor's row ops, set by the caller
        return k * k

    with torch.no_grad():
        out = list(map_in_order(call, range(9), workers=2))
    assert out == [k * k for k in range(9)]
    assert all(t != main and n == 1 and not grad for t, n, grad in seen)
    assert torch.get_num_threads() == before
    serial = []
    assert list(map_in_order(lambda k: serial.append(k) or -k, range(3), 1)) == [
        0,
        -1,
        -2,
    ]
    assert torch.get_num_threads() == before


def test_map_in_order_passes_errors_and_restores_settings():
    from equiforce.accel.edge_chunks import map_in_order

    before = torch.get_num_threads()

    def call(k):
        if k == 3:
            raise RuntimeError("kernel failed")
        return k

    results = map_in_order(call, range(8), workers=2)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(RuntimeError, match="kernel failed"):
        next(results)
    assert torch.get_num_threads() == before


@pytest.mark.parametrize("workers", [2, 3])
def test_threaded_compiled_chunks_equal_one_chunk_at_a_time(workers):
    """Chunks on several threads give exactly the numbers of one after another
    (sums in chunk order on the caller's thread) and run on pool threads."""
    import threading

    from equiforce.accel import edge_chunks
    from equiforce.models.registry import build_model
    from equiforce.testing import TINY_SO3KRATES

    model = build_model("so3krates", dtype=torch.float64, **TINY_SO3KRATES).eval()
    pos, z = random_molecule(np.random.default_rng(3), n_atoms=14, box=4.5)
    g = AtomicGraph.from_arrays(pos, z, model.cutoff)
    model.edge_chunk_size = 23
    model.chunk_workers = 1
    ref = model(g)
    threads = set()
    real = edge_chunks.local_args

    def spy(*args):
        threads.add(threading.get_ident())
        return real(*args)

    model.chunk_workers = workers
    try:
        edge_chunks.local_args = spy
        out = model(g)
    finally:
        edge_chunks.local_args = real
    assert threading.get_ident() not in threads and len(threads) >= 2
    for key in ("energy", "forces"):
        assert torch.equal(out[key], ref[key]), key
    model.chunk_workers = 0
    with pytest.raises(ValueError, match="chunk_workers"):
        model(g)
