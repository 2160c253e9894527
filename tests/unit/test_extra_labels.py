"""Reading total charge, spin, dipoles and Hirshfeld ratios (extxyz and npz).

Each field is read from its default key, an alias and a configured key, carried
through FrameStore into the graphs, and each bad value is a DataError naming
file, frame and field.
"""

import ase.io
import numpy as np
import pytest
import torch
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.units import Debye

from equiforce import keys
from equiforce.data.dataset import FrameStore, GraphDataset
from equiforce.data.graph import AtomicGraph
from equiforce.data.io import DataError, label_summary, read


def _water(k: int) -> Atoms:
    a = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0.1 * k]])
    a.calc = SinglePointCalculator(a, energy=-1.0 - k, forces=np.zeros((3, 3)))
    return a


def _frames(n: int = 3) -> list[Atoms]:
    out = []
    for k in range(n):
        a = _water(k)
        a.info["charge"] = k - 1
        a.info["spin"] = 0.5 * k
        a.info["dipole"] = [0.1, 0.2, 0.3 * k]
        a.arrays["hirshfeld_ratios"] = np.array([0.8, 0.6, 0.6 + 0.01 * k])
        out.append(a)
    return out


def test_extxyz_fields_reach_the_graphs(tmp_path):
    """Catches a field dropped between the file, FrameStore, subset and the graph."""
    path = tmp_path / "w.extxyz"
    ase.io.write(path, _frames())
    frames = read(path)
    assert frames[2].info[keys.CHARGE] == 1.0 and frames[2].info[keys.SPIN] == 1.0
    np.testing.assert_allclose(frames[2].info[keys.DIPOLE], [0.1, 0.2, 0.6])
    summary = label_summary(path, frames)
    assert "dipole 3/3" in summary and "charge 3/3" in summary
    store = FrameStore.from_atoms(frames).subset([2, 0])
    assert store.labelled()[keys.DIPOLE] == 2
    assert store.labelled()[keys.HIRSHFELD_RATIOS] == 2
    data = GraphDataset(store, 3.0, torch.float64, lr_cutoff=6.0)
    batch = data.batch([0, 1])
    assert batch.charge.tolist() == [1.0, -1.0] and batch.spin.tolist() == [1.0, 0.0]
    assert batch.lr_edge_index is not None  # SO3LR's long-range pairs
    torch.testing.assert_close(
        batch.targets[keys.DIPOLE],
        torch.tensor([[0.1, 0.2, 0.6], [0.1, 0.2, 0.0]], dtype=torch.float64),
    )
    assert batch.targets[keys.HIRSHFELD_RATIOS].shape == (6,)
    assert float(batch.targets[keys.HIRSHFELD_RATIOS][2]) == pytest.approx(0.62)
    # split keeps per-structure and per-atom labels with their structure
    parts = batch.split()
    assert parts[1].targets[keys.DIPOLE].shape == (1, 3)
    assert float(parts[1].targets[keys.HIRSHFELD_RATIOS][2]) == pytest.approx(0.60)


def test_aliases_configured_keys_and_debye(tmp_path):
    """total_charge is an alias; configured keys win; Debye is converted to e·Å."""
    frames = _frames(2)
    for a in frames:
        a.info["total_charge"] = a.info.pop("charge")
        a.info["mu"] = np.array([1.0, 0.0, 0.0])
        a.arrays["h_vol"] = a.arrays.pop("hirshfeld_ratios")
    path = tmp_path / "w.extxyz"
    ase.io.write(path, frames)
    out = read(path, dipole_key="mu", hirshfeld_key="h_vol", dipole_unit="Debye")
    assert out[0].info[keys.CHARGE] == -1.0
    np.testing.assert_allclose(out[1].info[keys.DIPOLE], [Debye, 0, 0])
    assert out[0].arrays[keys.HIRSHFELD_RATIOS].tolist() == [0.8, 0.6, 0.6]


def test_frames_without_fields_have_none(tmp_path):
    """A file without the fields reads as before (no charge: None = neutral)."""
    path = tmp_path / "w.extxyz"
    ase.io.write(path, [_water(0), _water(1)])
    store = FrameStore.from_atoms(read(path))
    assert store.charge is None and store.dipole is None and store.hirshfeld is None
    g = store.graph(0, 3.0, torch.float64)
    assert g.charge is None and keys.DIPOLE not in g.targets
    assert "dipole" not in label_summary(path, read(path))


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("dipole", [0.1, np.nan, 0.0], "non-finite dipole"),
        ("dipole", [0.1, 0.2], r"shape \(2,\) does not match \(3,\)"),
        ("charge", np.nan, "non-finite charge"),
        ("spin", -0.5, "negative spin"),
        ("charge", "minus one", "not a number"),
    ],
)
def test_bad_info_values_name_file_frame_field(tmp_path, field, value, match):
    """Catches a bad value accepted silently or reported without frame/field."""
    frames = _frames(3)
    frames[1].info[field] = value
    path = tmp_path / "w.extxyz"
    ase.io.write(path, frames)
    with pytest.raises(DataError, match=rf"w.extxyz: frame 1: {field}: .*{match}"):
        read(path)


@pytest.mark.parametrize(
    ("value", "match"),
    [
        ([0.8, np.nan, 0.6], "non-finite hirshfeld_ratios"),
        ([0.8, -0.1, 0.6], "negative"),
    ],
)
def test_bad_hirshfeld_ratios(tmp_path, value, match):
    frames = _frames(2)
    frames[1].arrays["hirshfeld_ratios"] = np.array(value)
    path = tmp_path / "w.extxyz"
    ase.io.write(path, frames)
    with pytest.raises(DataError, match=f"frame 1: hirshfeld_ratios: {match}"):
        read(path)


def _npz(tmp_path, **extra) -> str:
    rng = np.random.default_rng(0)
    base = np.array([[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    pos = base + rng.normal(0, 0.02, (4, 3, 3))
    path = tmp_path / "d.npz"
    np.savez(
        path,
        positions=pos,
        atomic_numbers=np.array([8, 1, 1]),
        energy=np.arange(4.0),
        forces=np.zeros((4, 3, 3)),
        **extra,
    )
    return path


def test_npz_fields(tmp_path):
    path = _npz(
        tmp_path,
        charge=np.array([0, -1, 1, 0]),
        total_spin=np.array([0, 0.5, 0.5, 0]),
        dipole=np.arange(12.0).reshape(4, 3),
        hirshfeld_ratios=np.full((4, 3), 0.7),
    )
    frames = read(path, index="1:3")
    assert [a.info[keys.CHARGE] for a in frames] == [-1.0, 1.0]
    assert frames[0].info[keys.SPIN] == 0.5
    np.testing.assert_allclose(frames[1].info[keys.DIPOLE], [6.0, 7.0, 8.0])
    store = FrameStore.from_atoms(frames)
    np.testing.assert_allclose(store.hirshfeld, 0.7)


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        ({"charge": np.zeros((4, 1))}, r"charge \(key 'charge'\): shape \(4, 1\)"),
        ({"spin": np.zeros(3)}, r"spin \(key 'spin'\): shape \(3,\) does not fit"),
        ({"dipole": np.zeros((4,))}, r"dipole \(key 'dipole'\): .*expected \(4, 3\)"),
        ({"hirshfeld_ratios": np.zeros((4, 2))}, r"expected \(4, 3\)"),
        ({"dipole": np.full((4, 3), np.nan)}, "frame 0: dipole: non-finite"),
    ],
)
def test_npz_wrong_shapes_are_errors(tmp_path, extra, match):
    """Strict shapes: a reshape would silently misassign values to frames."""
    path = _npz(tmp_path, **extra)
    with pytest.raises(DataError, match=match):
        read(path)


def test_npz_configured_key_missing(tmp_path):
    path = _npz(tmp_path)
    with pytest.raises(DataError, match=r"charge: key 'Q' not in file"):
        read(path, charge_key="Q")


def test_from_arrays_dipole_target_shape():
    g = AtomicGraph.from_arrays(
        np.zeros((1, 3)), np.array([1]), 2.0, targets={keys.DIPOLE: np.ones(3)}
    )
    assert g.targets[keys.DIPOLE].shape == (1, 3)
