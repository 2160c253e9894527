"""Neighbour lists for open and periodic (triclinic) cells.

The production path uses vesin (a fast C++ cell list); :func:`brute_force_neighbors`
is an O(N²·images) reference used by the tests. Both return directed pairs with
row 0 = centre i (receiver) and row 1 = neighbour j (sender), and the integer
image shift S such that r_ij = r_j - r_i + S @ cell.

:func:`neighbor_list` returns its pairs *paired*: with P = n_edges / 2, edge
P + k is the reverse of edge k (i and j swapped, S negated). Models whose edge
filters are symmetric in (i, j) (So3krates) compute them once per unordered pair
on the first half (see ``AtomicGraph.edges_paired``).
"""

from __future__ import annotations

import itertools

import numpy as np
from vesin import NeighborList


def neighbor_list(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | None = None,
    shift_dtype: np.dtype | type = np.int64,
) -> tuple[np.ndarray, np.ndarray]:
    """Directed neighbour pairs within ``cutoff``.

    Args:
        positions: (n_atoms, 3) Cartesian positions, Å.
        cutoff: cutoff radius, Å.
        cell: (3, 3) lattice vectors as rows, or None/zeros for an open system.
        pbc: (3,) periodic flags.
        shift_dtype: dtype of the returned shifts (the graph's float dtype
            saves an integer copy of the largest array: 10⁸ pairs for the 12 Å
            pairs of 100,000 atoms).

    Returns:
        edge_index: (2, n_edges) int64, row 0 = i (centre), row 1 = j (neighbour);
            edges ``[n_edges/2:]`` are the reverses of edges ``[:n_edges/2]``.
        shifts: (n_edges, 3) image multiples S with r_ij = r_j - r_i + S @ cell,
            integers in ``shift_dtype``.
    """
    positions, cell, pbc = _inputs(positions, cell, pbc)
    return _paired(*_half_pairs(positions, cutoff, cell, pbc)[:3], shift_dtype)


def neighbor_lists(
    positions: np.ndarray,
    cutoff: float,
    lr_cutoff: float,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | None = None,
    shift_dtype: np.dtype | type = np.int64,
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """:func:`neighbor_list` at ``cutoff`` and at ``lr_cutoff`` ≥ ``cutoff``.

    Up to :data:`SHARED_SEARCH_MAX_ATOMS` atoms the short list is the pairs of the
    long one closer than ``cutoff`` (one search instead of two); above, two
    searches are cheaper (the distances of every long-range pair cost more than a
    search at the short cutoff). Arguments as :func:`neighbor_list`.
    """
    positions, cell, pbc = _inputs(positions, cell, pbc)
    if len(positions) > SHARED_SEARCH_MAX_ATOMS or lr_cutoff < cutoff:
        return (
            neighbor_list(positions, cutoff, cell, pbc, shift_dtype),
            neighbor_list(positions, lr_cutoff, cell, pbc, shift_dtype),
        )
    i, j, s, d = _half_pairs(positions, lr_cutoff, cell, pbc, distances=True)
    near = np.flatnonzero(d < cutoff)
    return (
        _paired(i[near], j[near], s[near], shift_dtype),
        _paired(i, j, s, shift_dtype),
    )


#: Most atoms for which :func:`neighbor_lists` derives the short-range pairs from
#: the long-range search. Both lists of SO3LR (4.5 and 12 Å), one vs two vesin
#: searches, ms: ethanol 0.03 vs 0.05; 999 waters 12-16 vs 11.
SHARED_SEARCH_MAX_ATOMS = 200


def _inputs(
    positions: np.ndarray, cell: np.ndarray | None, pbc: np.ndarray | None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """float64 positions (n, 3), cell (3, 3) and bool pbc (3,) (None: open)."""
    positions = np.ascontiguousarray(positions, dtype=np.float64)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    pbc = np.zeros(3, dtype=bool) if pbc is None else np.asarray(pbc, dtype=bool)
    return positions, cell, pbc


def _half_pairs(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray,
    pbc: np.ndarray,
    distances: bool = False,
) -> tuple[np.ndarray, ...]:
    """Each unordered pair once: i, j (n,), shifts S (n, 3)[, distances d (n,)].

    Integers as the search returns them (not copied); d in Å, None without
    ``distances``.

    A half list, then its reverses (:func:`_paired`): half the work for vesin and
    the pairing that symmetric edge filters rely on.
    """
    if len(positions) == 0:
        empty = np.zeros(0, np.int64)
        return empty, empty, np.zeros((0, 3), np.int64), np.zeros(0)
    periodic = bool(pbc.any())
    if not periodic and _spread(positions) / cutoff > MAX_OPEN_CELLS:
        i, j = _kdtree_pairs(positions, cutoff)
        d = np.linalg.norm(positions[j] - positions[i], axis=1) if distances else None
        return i, j, np.zeros((len(i), 3), np.int32), d
    calc = NeighborList(cutoff=float(cutoff), full_list=False)
    out = calc.compute(
        points=positions,
        box=cell if periodic else np.zeros((3, 3)),
        periodic=[bool(p) for p in pbc] if periodic else False,
        quantities="ijSd" if distances else "ijS",
    )
    # no int64 copies here: _paired writes them once into its outputs
    return out[0], out[1], out[2].reshape(-1, 3), out[3] if distances else None


def _paired(
    i: np.ndarray, j: np.ndarray, s: np.ndarray, shift_dtype: np.dtype | type
) -> tuple[np.ndarray, np.ndarray]:
    """edge_index (2, 2n) int64 and shifts (2n, 3) of half pairs plus reverses.

    The half list (i, j, S) and its reverses are written once into the
    outputs, the shifts in ``shift_dtype``.
    """
    h = len(i)
    edge_index = np.empty((2, 2 * h), np.int64)
    edge_index[0, :h], edge_index[0, h:] = i, j
    edge_index[1, :h], edge_index[1, h:] = j, i
    shifts = np.empty((2 * h, 3), shift_dtype)
    shifts[:h] = s
    np.negative(s, out=shifts[h:], casting="unsafe")
    return edge_index, shifts


#: Largest extent / cutoff of an open system handed to vesin: its cell list
#: divides the bounding box into cutoff-sized cells, and far beyond this (an atom
#: 1e5 Å away with a 0.1 Å cutoff) it crashed the process with SIGFPE
#: (vesin 0.6.2). Such spread-out inputs go to a k-d tree instead.
MAX_OPEN_CELLS = 1e5


def _spread(positions: np.ndarray) -> float:
    """Largest extent of the finite positions along an axis, Å."""
    extent = float((positions.max(0) - positions.min(0)).max())
    if np.isfinite(extent):  # (the common case: no mask, no copy)
        return extent
    finite = positions[np.isfinite(positions).all(1)]
    return float(np.ptp(finite, axis=0).max()) if len(finite) else 0.0


def _kdtree_pairs(positions: np.ndarray, cutoff: float) -> tuple[np.ndarray, ...]:
    """Unordered pairs (i < j) within ``cutoff`` by scipy's k-d tree (open systems)."""
    from scipy.spatial import cKDTree

    pairs = cKDTree(positions).query_pairs(cutoff, output_type="ndarray")
    pairs = pairs.astype(np.int64).reshape(-1, 2)
    return pairs[:, 0], pairs[:, 1]


def brute_force_neighbors(
    positions: np.ndarray,
    cutoff: float,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Reference neighbour list by looping over every periodic image (slow, exact).

    Same arguments and return values as :func:`neighbor_list`; pairs are sorted
    by (i, j, S).
    """
    positions = np.asarray(positions, dtype=np.float64)
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
    pbc = np.zeros(3, bool) if pbc is None else np.asarray(pbc, dtype=bool)
    ranges = []
    for axis in range(3):
        if pbc[axis]:
            # number of images needed along this axis: cutoff / (plane spacing)
            normal = np.cross(cell[(axis + 1) % 3], cell[(axis + 2) % 3])
            spacing = abs(np.dot(cell[axis], normal)) / np.linalg.norm(normal)
            n = int(np.ceil(cutoff / spacing))
            ranges.append(range(-n, n + 1))
        else:
            ranges.append(range(0, 1))
    rows = []
    for shift in itertools.product(*ranges):
        s = np.array(shift, dtype=np.float64)
        d = positions[None, :, :] + s @ cell - positions[:, None, :]
        dist = np.linalg.norm(d, axis=-1)
        mask = dist < cutoff
        if not any(shift):
            np.fill_diagonal(mask, False)
        for i, j in zip(*np.nonzero(mask), strict=True):
            rows.append((i, j, *shift))
    if not rows:
        return np.zeros((2, 0), np.int64), np.zeros((0, 3), np.int64)
    arr = np.array(sorted(rows), dtype=np.int64)
    return arr[:, :2].T.copy(), arr[:, 2:].copy()
