"""Radial distribution functions g(r) and the all-pairs histogram h(r).

- :func:`h_of_r` (md-protocol.md §2.1, Fu et al.): histogram of **all** interatomic
  distances of every frame (i < j, minimum image for periodic cells), 500 bins on
  0–10 Å by default, normalised to unit sum (Σ_bins h = 1, a probability per bin;
  Fu et al. report ×10 of this in places). The score between two trajectories is
  the mean absolute difference per bin (:func:`hr_mae`).
- :func:`rdf` (periodic systems): g(r) = ⟨n(r)⟩ / (ρ 4πr² dr) with ρ = N/V,
  averaged over frames; optionally restricted to species pairs.
"""

from __future__ import annotations

import numpy as np

from equiforce.data.neighbors import neighbor_list


def _frame_distances(
    positions: np.ndarray, cell: np.ndarray, pbc: np.ndarray, r_max: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """i, j (i < j) and distances of pairs within ``r_max`` in one frame."""
    if not np.any(pbc):
        i, j = np.triu_indices(len(positions), k=1)
        d = np.linalg.norm(positions[j] - positions[i], axis=1)
        keep = d < r_max
        return i[keep], j[keep], d[keep]
    ei, shifts = neighbor_list(positions, r_max, cell, pbc)
    vec = positions[ei[1]] - positions[ei[0]] + shifts @ cell
    keep = ei[0] < ei[1]
    return ei[0][keep], ei[1][keep], np.linalg.norm(vec[keep], axis=1)


def h_of_r(
    positions: np.ndarray,
    cell: np.ndarray | None = None,
    pbc: np.ndarray | None = None,
    r_max: float = 10.0,
    n_bins: int = 500,
) -> tuple[np.ndarray, np.ndarray]:
    """Normalised histogram of all pair distances over a trajectory.

    Args:
        positions: (n_frames, n_atoms, 3) Å.
        cell: (3, 3) Å (open system by default).
        pbc: (3,) periodic flags.
        r_max: histogram range, Å.
        n_bins: number of bins.

    Returns:
        bin centres (n_bins,) Å and h (n_bins,) with Σ h = 1.
    """
    cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, float)
    pbc = np.zeros(3, bool) if pbc is None else np.asarray(pbc, bool)
    edges = np.linspace(0.0, r_max, n_bins + 1)
    counts = np.zeros(n_bins)
    for frame in np.asarray(positions, float):
        _, _, d = _frame_distances(frame, cell, pbc, r_max)
        counts += np.histogram(d, bins=edges)[0]
    total = counts.sum()
    return 0.5 * (edges[1:] + edges[:-1]), counts / total if total else counts


def hr_mae(h_a: np.ndarray, h_b: np.ndarray) -> float:
    """Mean absolute difference of two h(r) on the same bins."""
    if h_a.shape != h_b.shape:
        raise ValueError(f"h(r) bins differ: {h_a.shape} vs {h_b.shape}")
    return float(np.mean(np.abs(h_a - h_b)))


def rdf(
    positions: np.ndarray,
    cell: np.ndarray,
    pbc: np.ndarray,
    atomic_numbers: np.ndarray | None = None,
    species: tuple[int, int] | None = None,
    r_max: float = 6.0,
    n_bins: int = 300,
) -> tuple[np.ndarray, np.ndarray]:
    """Radial distribution function of a periodic system.

    Args:
        positions: (n_frames, n_atoms, 3) Å.
        cell: (3, 3) Å rows.
        pbc: (3,) periodic flags (must all be True).
        atomic_numbers: (n_atoms,) needed with ``species``.
        species: (Z_a, Z_b) to restrict to a–b pairs (default: all pairs).
        r_max: range, Å (at most half the smallest cell height for exactness).
        n_bins: number of bins.

    Returns:
        bin centres (n_bins,) Å and g(r) (n_bins,).
    """
    cell, pbc = np.asarray(cell, float), np.asarray(pbc, bool)
    if not pbc.all():
        raise ValueError("g(r) needs a fully periodic cell; use h(r) for molecules")
    volume = abs(np.linalg.det(cell))
    n_atoms = positions.shape[1]
    z = np.zeros(n_atoms, int) if atomic_numbers is None else np.asarray(atomic_numbers)
    if species is None:
        n_a = n_b = n_atoms
        same = True
    else:
        n_a, n_b = int(np.sum(z == species[0])), int(np.sum(z == species[1]))
        same = species[0] == species[1]
    edges = np.linspace(0.0, r_max, n_bins + 1)
    counts = np.zeros(n_bins)
    for frame in np.asarray(positions, float):
        i, j, d = _frame_distances(frame, cell, pbc, r_max)
        if species is not None:
            a, b = species
            keep = ((z[i] == a) & (z[j] == b)) | ((z[i] == b) & (z[j] == a))
            d = d[keep]
        counts += np.histogram(d, bins=edges)[0]
    # i<j pairs: each unordered pair once -> ordered pairs ×2 for like species
    pairs_per_frame = n_a * (n_a - 1) / 2 if same else n_a * n_b
    shell = 4.0 / 3.0 * np.pi * (edges[1:] ** 3 - edges[:-1] ** 3)
    ideal = pairs_per_frame * shell / volume * len(positions)
    return 0.5 * (edges[1:] + edges[:-1]), counts / ideal
