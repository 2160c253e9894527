"""Long-range pair terms in chunks of pairs give the one-chunk results exactly.

Every test forces chunks of a few pairs (``chunk_bytes`` of k pairs, k chosen so
that the last chunk is partial) and compares with one chunk in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from ase.build import molecule

from equiforce.data.graph import AtomicGraph
from equiforce.energy import deformed
from equiforce.models.longrange import Dispersion, Electrostatics, PeriodicCoulomb
from equiforce.models.longrange.pair_chunks import (
    VALUES_PER_PAIR,
    chunk_size,
    pair_energy_sum,
    pair_energy_sums,
)
from equiforce.models.registry import build_model
from equiforce.testing import TINY_SO3KRATES

DT = torch.float64
ONE_CHUNK = 2**60


def pairs_bytes(k: int, dtype: torch.dtype = DT) -> int:
    """A chunk budget of exactly ``k`` pairs."""
    return k * VALUES_PER_PAIR * dtype.itemsize


def water(n_side: int = 2, spacing: float = 3.1, seed: int = 0, lr: float = 6.0):
    """A periodic box of n_side³ jiggled, randomly turned waters (float64 graph)."""
    rng = np.random.default_rng(seed)
    w = molecule("H2O")
    grid = np.stack(np.meshgrid(*[np.arange(n_side)] * 3, indexing="ij"), -1)
    grid = grid.reshape(-1, 3)
    rot, _ = np.linalg.qr(rng.normal(size=(len(grid), 3, 3)))
    pos = np.einsum("mij,aj->mai", rot, w.positions) + spacing * (grid[:, None] + 0.5)
    pos = pos.reshape(-1, 3) + rng.normal(0, 0.05, (len(grid) * 3, 3))
    z = np.tile(w.numbers, len(grid))
    cell = np.eye(3) * spacing * n_side
    return AtomicGraph.from_arrays(
        pos, z, 4.5, cell=cell, pbc=np.ones(3, bool), dtype=DT, lr_cutoff=lr
    )


def cluster(n_side: int = 2, seed: int = 1) -> AtomicGraph:
    """The same waters without the cell (open structure)."""
    g = water(n_side, seed=seed)
    return AtomicGraph.from_arrays(
        g.positions.numpy(), g.atomic_numbers.numpy(), 4.5, dtype=DT, lr_cutoff=6.0
    )


def outputs(term, graph: AtomicGraph, x: torch.Tensor):
    """Per-atom energies, forces, virial and d E/d x of ``term(graph, None, x)``."""
    pos = graph.positions.detach().clone().requires_grad_(True)
    strain = torch.zeros_like(graph.cell, requires_grad=True)
    x = x.detach().clone().requires_grad_(True)
    e = term(deformed(graph, pos, strain), None, x)  # (n_atoms,)
    grads = torch.autograd.grad(e.sum(), [pos, strain, x])
    return e.detach(), -grads[0], grads[1], grads[2]


def test_every_pair_counted_once_at_every_chunk_size():
    """Per-atom sums of 1 per pair are the neighbour counts, whatever the chunking.

    Catches a chunk boundary that drops or repeats pairs (an off-by-one in the
    slices, a last partial chunk lost) and a chunk that scatters to the wrong atoms.
    """
    g = water()
    n = g.lr_edge_index.shape[1]
    counts = torch.bincount(g.lr_edge_index[0], minlength=g.num_nodes).to(DT)

    def one(i, j, d):
        return torch.ones_like(d)

    for k in (1, 2, 7, n // 3, n - 1, n, n + 1):
        got = pair_energy_sum(one, g, g.lr_edge_index, g.lr_edge_shifts, None,
                              pairs_bytes(k))  # fmt: skip
        assert torch.equal(got, counts), k
    assert chunk_size(pairs_bytes(7), DT) == 7


@pytest.mark.parametrize("graph", ["periodic", "open"])
def test_chunked_dispersion_equals_one_chunk(graph):
    """Energies, forces, stress and d E/d h of chunked dispersion = one chunk.

    Catches a chunk whose gradient is lost or counted twice in the backward pass
    (checkpoint recomputation), and wrong image shifts in the per-chunk vectors.
    """
    g = water() if graph == "periodic" else cluster()
    h = torch.linspace(0.7, 1.1, g.num_nodes, dtype=DT)
    term = Dispersion(1.2, 6.0, 2.0).double()
    n = g.lr_edge_index.shape[1]
    ref = outputs(term, g, h)
    term.chunk_bytes = pairs_bytes(n // 5 + 3)  # 5 chunks, the last one partial
    got = outputs(term, g, h)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    # the per-chunk vectors are the ones of the whole list
    given = term(g, g.lr_edge_vectors(), h)
    torch.testing.assert_close(given, ref[0], rtol=1e-12, atol=1e-14)


def test_chunked_shifted_coulomb_equals_one_chunk():
    """The shifted-kernel electrostatics of an open cluster, chunked = one chunk."""
    g = cluster()
    q = torch.where(g.atomic_numbers == 8, -0.8, 0.4).to(DT)
    q = q + 0.01 * torch.arange(g.num_nodes, dtype=DT)
    term = Electrostatics(4.0, 6.0)
    ref = outputs(term, g, q)
    term.chunk_bytes = pairs_bytes(11)
    got = outputs(term, g, q)
    for a, b in zip(got, ref, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_mixed_batch_with_real_space_pairs():
    """A batch of a periodic box (point-charge PME, real-space pairs) and an
    open cluster (shifted kernel): chunking and the pair selection per kind of
    structure give the one-chunk energies and forces, and each structure alone.
    """
    box, open_ = water(), cluster()
    batch = AtomicGraph.collate([box, open_])
    q = torch.where(batch.atomic_numbers == 8, -0.8, 0.4).to(DT)
    term = Electrostatics(4.0, 6.0, PeriodicCoulomb(0.0, "ewald", real_cutoff=6.0))
    term = term.double()
    assert term.periodic.needs_pairs
    ref = outputs(term, batch, q)
    term.chunk_bytes = pairs_bytes(13)
    got = outputs(term, batch, q)
    for a, b in zip(got[:2] + got[3:], ref[:2] + ref[3:], strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    n_box = box.num_nodes
    alone = outputs(term, open_, q[n_box:])
    torch.testing.assert_close(got[0][n_box:], alone[0], rtol=1e-12, atol=1e-14)


def test_gradients_match_finite_differences():
    """Chunked dispersion + shifted Coulomb: analytic gradients (positions,
    Hirshfeld ratios, charges) = central finite differences (float64 gradcheck).

    Catches a backward pass through the chunks that differs from the energy
    the forward pass computes (e.g. a stale recomputation).
    """
    g = cluster(n_side=1)
    g = AtomicGraph.from_arrays(
        np.concatenate([g.positions.numpy(), g.positions.numpy() + [2.9, 0.4, 0.3]]),
        np.tile(g.atomic_numbers.numpy(), 2), 4.5, dtype=DT, lr_cutoff=6.0,
    )  # fmt: skip
    disp = Dispersion(1.2, 6.0, 2.0).double()
    coul = Electrostatics(4.0, 6.0)
    n = g.lr_edge_index.shape[1]
    assert n > 6
    disp.chunk_bytes = coul.chunk_bytes = pairs_bytes(n // 3 + 1)

    def energy(pos, h, q):
        moved = deformed(g, pos, None)
        return disp(moved, None, h).sum() + coul(moved, None, q).sum()

    pos = g.positions.clone().requires_grad_(True)
    h = torch.tensor([0.9, 1.05, 0.8, 1.0, 0.95, 1.1], dtype=DT, requires_grad=True)
    q = torch.tensor([-0.7, 0.4, 0.3, -0.8, 0.35, 0.45], dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(energy, (pos, h, q))
    assert torch.autograd.gradgradcheck(energy, (pos, h, q))


def test_so3lr_chunked_equals_one_chunk_with_weight_gradients():
    """A tiny SO3LR on a periodic water box (PME): chunked = one chunk in
    energy, forces and stress, and in the weight gradient of a force loss
    (the double backward of training through the checkpointed chunks)."""
    torch.manual_seed(0)
    model = build_model("so3lr", **TINY_SO3KRATES, lr_cutoff=6.0).double()
    g = water()

    def run(chunk_bytes):
        model.pair_chunk_bytes = chunk_bytes
        model.zero_grad()
        out = model(g, compute_stress=True, create_graph=True)
        (out["forces"] ** 2).sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        keep = ("energy", "forces", "stress", "energy:dispersion")
        return [out[k].detach() for k in keep], grads

    ref, ref_grads = run(ONE_CHUNK)
    got, got_grads = run(pairs_bytes(g.lr_edge_index.shape[1] // 4 + 1))
    assert model.pair_chunk_bytes == pairs_bytes(g.lr_edge_index.shape[1] // 4 + 1)
    for a, b in zip(got + got_grads, ref + ref_grads, strict=True):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="pair_chunk_bytes"):
        model.pair_chunk_bytes = 0


def test_long_range_shifts_are_built_in_the_graph_dtype():
    """The 12 Å pairs' shifts come straight in the float dtype (no int64 copy)
    and equal the integer image multiples of the same neighbour list."""
    from equiforce.data.neighbors import neighbor_list

    g = water()
    index, shifts = neighbor_list(
        g.positions.numpy(), 6.0, g.cell[0].numpy(), np.ones(3, bool)
    )
    assert g.lr_edge_shifts.dtype == DT and g.lr_edge_index.dtype == torch.long
    assert np.array_equal(g.lr_edge_index.numpy(), index)
    assert np.array_equal(g.lr_edge_shifts.numpy(), shifts.astype(np.float64))
    assert np.abs(shifts).max() >= 1  # the box is smaller than the cutoff


def test_first_half_both_ways_counts_every_directed_pair():
    """The first half of a paired list, each pair to both atoms (``both_ways``),
    gives the per-atom counts of the whole directed list at every chunk size,
    and two terms in one pass each get their own sum.

    Catches a chunk boundary that drops or repeats a pair of the half list, a
    reverse pair that misses its atom j, and terms of one pass mixed up.
    """
    g = water()
    assert g.edges_paired
    half = g.lr_edge_index.shape[1] // 2
    index, shifts = g.lr_edge_index[:, :half], g.lr_edge_shifts[:half]
    counts = torch.bincount(g.lr_edge_index[0], minlength=g.num_nodes).to(DT)

    def one(i, j, d):
        return torch.ones_like(d)

    def two(i, j, d):
        return 2.0 * torch.ones_like(d)

    for k in (1, 7, half // 3, half - 1, half, half + 1):
        a, b = pair_energy_sums(
            [one, two], g, index, shifts, None, 2 * pairs_bytes(k), both_ways=True
        )
        assert torch.equal(a, counts) and torch.equal(b, 2.0 * counts), k


def test_so3lr_open_cluster_one_pass_chunked_paired_equals_full_list():
    """A tiny SO3LR on an open water cluster (both long-range terms in one
    chunked pass over the first half of the paired pairs) = one chunk, and =
    every directed pair (``edges_paired=False``), in energies, forces and the
    weight gradients of a force loss.

    Catches a shared pass that hands one term's sums to the other, a
    half-list chunk whose reverse-pair energy is lost or doubled, and wrong
    checkpointed gradients of the shared distances.
    """
    from dataclasses import replace

    torch.manual_seed(0)
    model = build_model("so3lr", **TINY_SO3KRATES, lr_cutoff=6.0).double()
    g = cluster()
    assert g.edges_paired

    def run(graph, chunk_bytes):
        model.pair_chunk_bytes = chunk_bytes
        model.zero_grad()
        out = model(graph, create_graph=True)
        (out["forces"] ** 2).sum().backward()
        grads = [p.grad.clone() for p in model.parameters() if p.grad is not None]
        keep = ("forces", "energy:dispersion", "energy:electrostatics")
        return [out[k].detach() for k in keep], grads

    ref, ref_grads = run(g, ONE_CHUNK)
    assert abs(float(ref[2].sum())) > 1e-6  # charges and Coulomb are non-zero
    for graph, chunk in ((g, pairs_bytes(2 * (g.lr_edge_index.shape[1] // 10 + 1))),
                         (replace(g, edges_paired=False), pairs_bytes(40))):  # fmt: skip
        got, got_grads = run(graph, chunk)
        for a, b in zip(got + got_grads, ref + ref_grads, strict=True):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
