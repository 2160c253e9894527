"""The shipped global-interaction reference data (data/global) and its generator."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from equiforce.data.io import read

ROOT = Path(__file__).resolve().parents[2]
DATA = ROOT / "data" / "global" / "cumulene_c9h4_twist.extxyz"


def generator():
    spec = importlib.util.spec_from_file_location(
        "generate_global", ROOT / "examples" / "global" / "generate.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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
