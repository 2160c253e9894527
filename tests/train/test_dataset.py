import time

import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

from equiforce import keys, read
from equiforce.data.dataset import (
    FrameStore,
    GraphDataset,
    e0_from_isolated_atoms,
    e0_least_squares,
    frame_filter_mask,
    random_split,
    statistics,
)
from equiforce.data.neighbors import brute_force_neighbors

E0_TRUE = {1: -13.6, 6: -1025.3, 8: -2035.6}


def _molecules(n, seed=0, noise=0.0):
    """Random small molecules with energy = sum of E0 + small noise."""
    rng = np.random.default_rng(seed)
    frames = []
    for _ in range(n):
        z = rng.choice([1, 6, 8], size=rng.integers(2, 7))
        pos = rng.uniform(0, 3.0, size=(len(z), 3)) + np.arange(len(z))[:, None] * 1.2
        atoms = Atoms(numbers=z, positions=pos)
        energy = sum(E0_TRUE[int(k)] for k in z) + noise * rng.normal()
        forces = rng.normal(size=(len(z), 3))
        atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
        frames.append(atoms)
    return frames


def test_framestore_roundtrip_and_subset():
    frames = _molecules(20)
    store = FrameStore.from_atoms(frames)
    assert len(store) == 20
    sub = store.subset([7, 2, 19])
    for k, src in enumerate([7, 2, 19]):
        sl = slice(sub.offsets[k], sub.offsets[k + 1])
        np.testing.assert_array_equal(sub.numbers[sl], frames[src].numbers)
        np.testing.assert_allclose(sub.positions[sl], frames[src].positions)
        np.testing.assert_allclose(sub.forces[sl], frames[src].calc.results["forces"])
        assert sub.energy[k] == frames[src].calc.results["energy"]
    g = GraphDataset(sub, cutoff=2.0, dtype=torch.float64)[1]
    np.testing.assert_allclose(
        g.targets[keys.FORCES].numpy(), frames[2].calc.results["forces"]
    )
    assert g.targets[keys.ENERGY].dtype == torch.float64


def test_graph_dataset_caches_and_batches():
    ds = GraphDataset(FrameStore.from_atoms(_molecules(6)), cutoff=2.5)
    assert ds[3] is ds[3]
    batch = ds.batch([0, 3, 5])
    assert batch.n_graphs == 3
    assert batch.num_nodes == sum(ds[k].num_nodes for k in (0, 3, 5))


def test_random_split_is_seeded_disjoint_and_nested():
    a = random_split(100, 30, 10, seed=3)
    b = random_split(100, 30, 10, seed=3)
    np.testing.assert_array_equal(a["train"], b["train"])
    assert not set(a["train"]) & set(a["valid"])
    assert len(a["train"]) == 30 and len(a["valid"]) == 10
    bigger = random_split(100, 60, 10, seed=3)
    np.testing.assert_array_equal(bigger["valid"], a["valid"])  # same validation set
    assert set(a["train"]) <= set(bigger["train"])  # nested training sets
    assert not np.array_equal(random_split(100, 30, 10, seed=4)["valid"], a["valid"])
    with pytest.raises(ValueError, match="requested"):
        random_split(20, 15, 10, seed=0)


def test_e0_least_squares_recovers_reference_energies():
    store = FrameStore.from_atoms(_molecules(50, noise=1e-4))
    e0 = e0_least_squares(store)
    for z, v in E0_TRUE.items():
        assert e0[z] == pytest.approx(v, abs=1e-3)


def test_e0_from_isolated_atoms_file(isolated_atoms):
    e0 = e0_from_isolated_atoms(read(isolated_atoms))
    assert set(e0) == {1, 6, 7, 8}
    assert e0[1] == pytest.approx(-13.568422383046626)


def test_filters_drop_close_atoms_and_large_forces():
    frames = _molecules(5)
    frames[1].positions[1] = frames[1].positions[0] + [0.5, 0.0, 0.0]  # 0.5 Å apart
    frames[3].calc.results["forces"][0, 2] = -30.0
    store = FrameStore.from_atoms(frames)
    keep, dropped = frame_filter_mask(store, min_distance=0.75, max_force=25.0)
    assert keep.tolist() == [True, False, True, False, True]
    assert dropped == {"min_distance": 1, "max_force": 1}
    keep, _ = frame_filter_mask(store, min_distance=None, max_force=None)
    assert keep.all()


def test_statistics_match_brute_force():
    frames = _molecules(10)
    ds = GraphDataset(FrameStore.from_atoms(frames), cutoff=2.5)
    stats = statistics(ds, E0_TRUE)
    n_edges = sum(brute_force_neighbors(a.positions, 2.5)[0].shape[1] for a in frames)
    assert stats["avg_num_neighbors"] == pytest.approx(
        n_edges / sum(len(a) for a in frames)
    )
    f = np.concatenate([a.calc.results["forces"] for a in frames])
    assert stats["force_rms"] == pytest.approx(np.sqrt((f**2).mean()))
    assert stats["energy_residual_mean_per_atom"] == pytest.approx(0.0, abs=1e-9)
    with pytest.raises(ValueError, match="no E0 for elements"):
        statistics(ds, {1: 0.0})


@pytest.mark.slow
def test_loading_many_structures_is_linear():
    """Packing, subsetting and statistics of 100k structures scale linearly."""

    def cost(n):
        frames = _molecules(n, seed=1)
        t0 = time.perf_counter()
        store = FrameStore.from_atoms(frames)
        sub = store.subset(np.arange(0, n, 2))
        e0_least_squares(sub)
        frame_filter_mask(store, 0.75, 25.0)
        return time.perf_counter() - t0

    small, large = cost(25_000), cost(100_000)
    # 4x the data: linear ~4x, quadratic ~16x; the bound leaves room for noise
    assert large / small < 8.0
