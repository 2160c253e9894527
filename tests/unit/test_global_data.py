"""The shipped global-interaction reference data (data/global) and its generator."""

import functools
import hashlib
import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from equiforce.data.io import read

ROOT = Path(__file__).resolve().parents[2]
DIR = ROOT / "data" / "global"
DATA = DIR / "cumulene_c9h4_twist.extxyz"

#: name: (frames, atoms, total charge, scan key, scan range)
SETS = {
    "cumulene_c9h4_twist": (300, 13, 0, "twist_deg", (0.0, 90.0)),
    "cumulene_c17h4_twist": (200, 21, 0, "twist_deg", (0.0, 90.0)),
    "nh4_nh4_scan": (300, 10, 2, "distance_A", (3.0, 25.0)),
    "cyanine_c11_twist": (150, 28, 1, "twist_deg", (0.0, 90.0)),
}


def generator():
    spec = importlib.util.spec_from_file_location(
        "generate_global", ROOT / "examples" / "global" / "generate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.cache
def scan(name: str) -> tuple[list, np.ndarray, np.ndarray]:
    """(frames, scan variable, energies) of a shipped set (read once; do not modify)."""
    frames = read(DIR / f"{name}.extxyz", require=("energy", "forces"))
    x = np.array([a.info[SETS[name][3]] for a in frames])
    e = np.array([a.get_potential_energy() for a in frames])
    return frames, x, e


def test_shipped_cumulene_scan_reads_with_labels_and_charge():
    """300 labelled C9H4 frames with total charge, covering the twist range; the
    energy falls with the twist (odd chain): catches a wrong, truncated or
    unlabelled file."""
    frames = read(DATA, require=("energy", "forces"))
    assert len(frames) == 300
    assert all(list(a.numbers).count(6) == 9 and len(a) == 13 for a in frames)
    assert all(a.info["charge"] == 0 for a in frames)
    twist = np.array([a.info["twist_deg"] for a in frames])
    energy = np.array([a.get_potential_energy() for a in frames])
    assert twist.min() < 5 and twist.max() > 85
    assert energy[twist > 75].mean() - energy[twist < 15].mean() < -0.4
    meta = json.loads(DATA.with_suffix(".json").read_text())
    assert meta["settings"]["method"] == "GFN2-xTB" and meta["tblite_version"]


@pytest.mark.parametrize("name", sorted(SETS))
def test_shipped_set_reads_with_labels_charge_and_metadata(name):
    """Every set: frame and atom counts, total charge in every frame, finite
    forces of the right shape, the scan variable spanning its range, and the
    JSON header naming the generator settings (equal to the script's) and the
    file's SHA-256: catches a truncated, unlabelled, mislabelled or stale file."""
    n_frames, n_atoms, charge, key, (lo, hi) = SETS[name]
    frames, x, e = scan(name)
    assert len(frames) == n_frames
    assert all(len(a) == n_atoms and a.info["charge"] == charge for a in frames)
    assert all(a.info["uhf"] == 0 for a in frames)
    assert all(np.isfinite(a.get_forces()).all() for a in frames)
    assert np.isfinite(e).all()
    span = hi - lo
    assert x.min() < lo + 0.05 * span and x.max() > hi - 0.05 * span
    path = DIR / f"{name}.extxyz"
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert meta["settings"] == json.loads(json.dumps(generator().DATASETS[name]))
    assert meta["settings"]["charge"] == charge and meta["tblite_version"]


@pytest.mark.parametrize("name", sorted(SETS))
def test_split_files_hold_out_the_test_range(name):
    """train/valid/test are disjoint, cover every frame, and test is exactly the
    held-out range of the scan variable (catches a split that leaks test frames
    into training)."""
    key, ranges = generator().SPLITS[name]
    split = json.loads((DIR / f"{name}.split.json").read_text())
    _, x, _ = scan(name)
    parts = [set(split[k]) for k in ("train", "valid", "test")]
    assert sum(map(len, parts)) == len(x) == len(set.union(*parts))
    inside = np.zeros(len(x), bool)
    for a, b in ranges:
        inside |= (x > a) & (x < b)
    assert parts[2] == set(np.nonzero(inside)[0].tolist()) and parts[2]


def test_profiles_have_the_expected_physics():
    """Long odd cumulene: perpendicular ends lower (≈ −0.3 eV, rigid −0.43 eV);
    ion pair: like charges repel with the Coulomb tail (E(10) − E(20) ≈ 14.4·(1/10
    − 1/20) = 0.72 eV, GFN2-xTB 0.71 eV); cyanine: twisting the NH₂ out of
    conjugation costs energy. Catches a wrong charge, geometry or sign."""
    _, twist, e = scan("cumulene_c17h4_twist")
    assert -0.45 < e[twist > 80].mean() - e[twist < 10].mean() < -0.2
    _, d, e = scan("nh4_nh4_scan")
    near, far = np.abs(d - 10) < 1, np.abs(d - 20) < 1
    coulomb = 14.3996 * (1 / d[near].mean() - 1 / d[far].mean())
    assert e[near].mean() - e[far].mean() == pytest.approx(coulomb, rel=0.1)
    _, twist, e = scan("cyanine_c11_twist")
    assert e[twist > 80].mean() - e[twist < 10].mean() > 0.5


def test_regenerated_frame_equals_shipped():
    """The generator reproduces a shipped frame (geometry and GFN2-xTB labels)."""
    pytest.importorskip("tblite")
    shipped = read(DATA, index=7)[0]
    fresh = generator().labelled_frame(7)
    np.testing.assert_allclose(fresh.positions, shipped.positions, atol=1e-7)
    assert fresh.get_potential_energy() == pytest.approx(
        shipped.get_potential_energy(), abs=1e-6
    )
    np.testing.assert_allclose(fresh.get_forces(), shipped.get_forces(), atol=1e-6)


@pytest.mark.parametrize(
    "name", ["cumulene_c17h4_twist", "nh4_nh4_scan", "cyanine_c11_twist"]
)
def test_regenerated_frame_equals_shipped_for_new_sets(name):
    """Same reproduction check for the other sets, including the total charge
    passed to tblite (a neutral recomputation of the +2 pair differs by eV)."""
    pytest.importorskip("tblite")
    gen = generator()
    shipped = read(DIR / f"{name}.extxyz", index=3)[0]
    fresh = gen.labelled_frame(3, gen.DATASETS[name])
    np.testing.assert_allclose(fresh.positions, shipped.positions, atol=1e-7)
    assert {k: shipped.info[k] for k in fresh.info} == fresh.info
    assert fresh.get_potential_energy() == pytest.approx(
        shipped.get_potential_energy(), abs=1e-6
    )
    np.testing.assert_allclose(fresh.get_forces(), shipped.get_forces(), atol=1e-6)
