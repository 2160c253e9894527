"""Per-atom sums of pair energies over the long-range pairs, chunk by chunk.

The long-range terms (dispersion, the shifted Coulomb kernel) are sums over the
12 Å pairs: ≈ 720 per atom in water, 7·10⁷ for 100,000 atoms. Evaluated on all
pairs at once, their per-pair intermediates (pair vectors, distances, gathered
per-atom values, every power and quotient the autograd engine keeps for the
backward pass) cost hundreds of bytes per pair: tens of GiB. Here the pairs are
taken in slices of ``chunk_size`` pairs; each slice computes its vectors from
the positions and the integer image shifts, its pair energies and their sum to
the centre atoms, and only that per-atom sum outlives it:

- with gradients enabled each slice runs under
  :func:`torch.utils.checkpoint.checkpoint` (non-reentrant): autograd keeps no
  per-pair tensor but the slice's indices (views of the pair list), and the
  backward pass recomputes one slice at a time. Exact (the recomputation
  repeats the same operations) and differentiable twice (training with forces);
- without gradients the slices simply run one after another.

Several terms on the same pairs (SO3LR's dispersion and shifted Coulomb) share
one pass (:func:`pair_energy_sums`): each slice's distances are computed once
for all of them. With ``both_ways`` the pairs are the first half of a paired
list (``AtomicGraph.edges_paired``: pair P + k reverses pair k), each standing
for itself and its reverse: its energy goes to both atoms (half the pair work).

Memory is O(n_atoms + chunk) beyond the pair list itself. A pair list that fits
in one chunk, a traced (compiled) call and ``torch.func`` transforms (which do
not support checkpointing) take the single-slice path: the same operations as
before, no overhead for molecules.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch.utils.checkpoint import checkpoint

from equiforce.data.graph import AtomicGraph, _pair_vectors
from equiforce.models.longrange.switch import pair_sum
from equiforce.nn.efa import is_tracing

#: Default memory budget of one chunk's per-pair intermediates, bytes.
DEFAULT_CHUNK_BYTES: int = 256 * 2**20
#: Per-pair values of the model dtype that one chunk holds at once (vectors,
#: distance, gathered per-atom values, dispersion's powers and quotients, their
#: gradients): an estimate from counting dispersion's operations (≈ 40), not a
#: measurement; 256 MiB is then ≈ 10⁶ float32 pairs.
VALUES_PER_PAIR: int = 64

#: (i, j, d) of a slice of pairs, each (n,) -> pair energies (n,) eV, the whole
#: energy of the directed pair i←j that goes to atom i (½ of the i–j pair).
PairEnergy = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def chunk_size(chunk_bytes: int, dtype: torch.dtype) -> int:
    """Pairs per chunk for a budget of ``chunk_bytes`` in ``dtype`` (≥ 1)."""
    return max(1, int(chunk_bytes) // (VALUES_PER_PAIR * dtype.itemsize))


def pair_vectors(
    index: torch.Tensor,  # (2, n)
    shifts: torch.Tensor,  # (n, 3)
    graph_index: torch.Tensor,  # (n_atoms,)
    positions: torch.Tensor,  # (n_atoms, 3)
    cell: torch.Tensor,  # (n_graphs, 3, 3)
) -> torch.Tensor:
    """r_ij = r_j − r_i + S_ij · cell (n, 3), without a per-pair cell for one structure.

    Several structures: :func:`equiforce.data.graph._pair_vectors` (which must
    not branch on shapes: it runs in traced graphs).
    """
    if cell.shape[0] != 1:
        return _pair_vectors(index, shifts, graph_index, positions, cell)
    i, j = index[0], index[1]
    vec = positions.index_select(0, j) - positions.index_select(0, i)
    return vec + shifts.to(vec.dtype) @ cell[0]  # one cell, no (n, 3, 3) gather


def _transformed() -> bool:
    """Whether a ``torch.func`` transform (grad, vmap) is running."""
    return bool(torch._C._are_functorch_transforms_active())


def pair_energy_sum(
    pair_energy: PairEnergy,
    graph: AtomicGraph,
    index: torch.Tensor,  # (2, n)
    shifts: torch.Tensor | None,  # (n, 3)
    vectors: torch.Tensor | None = None,  # (n, 3)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    both_ways: bool = False,
) -> torch.Tensor:
    """Σ_j pair_energy(i, j, d_ij) to every centre i: (n_atoms,) eV.

    One term of :func:`pair_energy_sums` (arguments as there).
    """
    return pair_energy_sums(
        [pair_energy], graph, index, shifts, vectors, chunk_bytes, both_ways
    )[0]


def pair_energy_sums(
    pair_energies: Sequence[PairEnergy],
    graph: AtomicGraph,
    index: torch.Tensor | None,  # (2, n)
    shifts: torch.Tensor | None,  # (n, 3)
    vectors: torch.Tensor | None = None,  # (n, 3)
    chunk_bytes: int = DEFAULT_CHUNK_BYTES,
    both_ways: bool = False,
) -> list[torch.Tensor]:
    """Per-atom sums (n_atoms,) eV of each term's pair energies, one pass.

    Args:
        pair_energies: the terms' directed pair energies of a slice
            (:data:`PairEnergy`); each slice's distances are computed once
            and handed to all of them.
        graph: the structures (positions, cells, atoms' structure index),
            possibly strained (forces and stress differentiate through it).
        index: the pairs, row 0 the centres i.
        shifts: their image multiples S (needed when ``vectors`` is None).
        vectors: their pair vectors, if already computed; None: computed from
            ``graph.positions``, ``graph.cell`` and ``shifts`` slice by slice
            (the memory-saving path).
        chunk_bytes: memory budget of one slice (:func:`chunk_size`) for all
            terms together.
        both_ways: each pair stands for itself and its reverse (the first
            half of a paired list): its energy goes to i and to j. Else to i
            only (the reverse is listed apart).

    Raises:
        ValueError: no pairs given (a graph built without ``lr_cutoff``).
    """
    if index is None:
        raise ValueError(
            "long-range terms need the long-range pairs: build the graph with "
            "lr_cutoff (AtomicGraph.from_atoms(..., lr_cutoff=...))"
        )
    n_atoms, n_pairs = graph.num_nodes, index.shape[1]
    positions = graph.positions

    def run(start: int, stop: int) -> tuple[torch.Tensor, ...]:
        idx = index[:, start:stop]
        if vectors is None:
            vec = pair_vectors(
                idx, shifts[start:stop], graph.graph_index, positions, graph.cell
            )
        else:
            vec = vectors[start:stop]
        d = torch.linalg.vector_norm(vec, dim=-1)  # (n,)
        return tuple(
            pair_sum(f(idx[0], idx[1], d), idx, n_atoms, both_ways)
            for f in pair_energies
        )

    # the budget is for every term's intermediates together
    step = chunk_size(chunk_bytes // max(1, len(pair_energies)), positions.dtype)
    if n_pairs <= step or is_tracing() or _transformed():
        return list(run(0, n_pairs))
    grad = torch.is_grad_enabled()
    totals = None
    for start in range(0, n_pairs, step):
        stop = min(start + step, n_pairs)
        if grad:
            parts = checkpoint(
                run, start, stop, use_reentrant=False, preserve_rng_state=False
            )
        else:
            parts = run(start, stop)
        if totals is None:
            totals = list(parts)
        else:
            totals = [t + p for t, p in zip(totals, parts, strict=True)]
    return totals
