import numpy as np
import pytest

from equiforce.data import neighbors
from equiforce.data.neighbors import (
    brute_force_neighbors,
    neighbor_list,
    neighbor_lists,
)


def as_set(edges, shifts):
    return set(map(tuple, np.concatenate([edges.T, shifts], axis=1).tolist()))


@pytest.mark.parametrize(
    "pbc", [(True, True, True), (True, False, True), (False, False, False)]
)
@pytest.mark.parametrize("cutoff", [2.05, 5.05])
def test_vesin_matches_brute_force_triclinic(pbc, cutoff):
    rng = np.random.default_rng(0)
    cell = np.array([[3.0, 0.0, 0.0], [0.5, 3.2, 0.0], [0.3, 0.2, 2.9]])
    pos = rng.random((6, 3)) @ cell
    pbc = np.array(pbc)
    ref = as_set(*brute_force_neighbors(pos, cutoff, cell, pbc))
    got = as_set(*neighbor_list(pos, cutoff, cell, pbc))
    assert got == ref
    assert len(ref) > 0


def test_cell_smaller_than_twice_cutoff_has_self_images():
    cell = np.eye(3) * 2.0
    edges, shifts = neighbor_list(np.zeros((1, 3)), 2.5, cell, np.ones(3, bool))
    # one atom, six face neighbours at 2.0 Å and twelve edge neighbours at 2.83 Å > 2.5
    assert edges.shape[1] == 6
    assert (edges == 0).all()
    assert np.abs(shifts).sum(axis=1).tolist() == [1] * 6


def test_pairs_are_symmetric():
    rng = np.random.default_rng(1)
    pos = rng.random((20, 3)) * 6
    edges, _ = neighbor_list(pos, 3.0)
    pairs = set(map(tuple, edges.T.tolist()))
    assert pairs == {(j, i) for i, j in pairs}


def test_open_system_spread_far_beyond_the_cutoff_is_exact():
    # an atom 2e8 Å away (a damaged file) made vesin's cell list crash the process
    # (SIGFPE); such inputs take the k-d tree path and still give the exact pairs
    rng = np.random.default_rng(3)
    pos = rng.random((30, 3)) * 3.0
    pos[5, 0] = -2.1e8
    edges, shifts = neighbor_list(pos, 1.2)
    ref, _ = brute_force_neighbors(pos, 1.2)
    assert edges.shape[1] == ref.shape[1] and not shifts.any()
    got = sorted(map(tuple, edges.T.tolist()))
    assert got == sorted(map(tuple, ref.T.tolist()))
    half = edges.shape[1] // 2  # paired: edge half + k reverses edge k
    assert (edges[:, half:] == edges[::-1, :half]).all()


@pytest.mark.parametrize("shared", [True, False], ids=["one-search", "two-searches"])
@pytest.mark.parametrize("pbc", [(True, True, True), (False, False, False)])
def test_both_lists_match_brute_force(pbc, shared, monkeypatch):
    """neighbor_lists: the short and long lists exact and paired, whichever way.

    Fails if the short pairs derived from the long search (small systems) miss or
    add a pair, or lose the pairing of their halves.
    """
    monkeypatch.setattr(neighbors, "SHARED_SEARCH_MAX_ATOMS", 10**9 if shared else 0)
    rng = np.random.default_rng(4)
    cell = np.array([[3.0, 0.0, 0.0], [0.5, 3.2, 0.0], [0.3, 0.2, 2.9]])
    pos = rng.random((6, 3)) @ cell
    pbc = np.array(pbc)
    lists = neighbor_lists(pos, 2.05, 5.05, cell, pbc)
    for cutoff, (edges, shifts) in zip((2.05, 5.05), lists, strict=True):
        assert as_set(edges, shifts) == as_set(
            *brute_force_neighbors(pos, cutoff, cell, pbc)
        )
        half = edges.shape[1] // 2
        assert half > 0 and (edges[:, half:] == edges[::-1, :half]).all()
        assert (shifts[half:] == -shifts[:half]).all()
