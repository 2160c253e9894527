"""The equivariance study script runs end to end at its --small size (slow)."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "equivariance_study.py"


def _load():
    spec = importlib.util.spec_from_file_location("equivariance_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_fit_exponent_recovers_power_laws():
    study = _load()
    x = np.array([96.0, 384.0, 1029.0, 3000.0])
    assert study.fit_exponent(x, 0.3 * x**1.0) == pytest.approx(1.0)
    assert study.fit_exponent(x, 2.0 * x**2.5) == pytest.approx(2.5)
    assert np.isnan(study.fit_exponent([9.0], [1.0]))


def test_unknown_part_is_rejected(tmp_path, capsys):
    assert _load().main(["--parts", "cost,speed", "--out", str(tmp_path)]) == 2
    assert "speed" in capsys.readouterr().err


@pytest.mark.slow
def test_small_study_runs_end_to_end(tmp_path):
    study = _load()
    assert study.main(["--small", "--out", str(tmp_path), "--threads", "1"]) == 0
    report = (tmp_path / "report.md").read_text()
    for needle in (
        "Last command:",
        "Machine:",
        "Date:",
        "## Cost",
        "## Data efficiency",
        "## Stability",
    ):
        assert needle in report
    runs = json.loads((tmp_path / "commands.json").read_text())
    assert set(runs) == {"cost", "data:ethanol", "stability"}
    assert "--small" in runs["cost"]["command"]
    cost = json.loads((tmp_path / "cost.json").read_text())
    assert {r["model"] for r in cost} == {"schnet", "painn", "nequip", "so3krates"}
    assert all(r["ms"] > 0 and r["n_edges"] > 0 for r in cost)
    assert {r["variant"] for r in cost if r["model"] == "nequip"} >= {
        "l_max=1",
        "l_max=2",
        "l_max=3",
    }
    curves = json.loads((tmp_path / "learning_curves.json").read_text())
    assert set(curves) == {
        f"ethanol/{m}" for m in ("schnet", "painn", "nequip", "so3krates")
    }
    stab = json.loads((tmp_path / "stability.json").read_text())
    assert set(stab) == {"invariant", "euclidean"}
    # equal error: the EV model trains only until it reaches the invariant's error
    # (or the step cap)
    ev = stab["euclidean"]
    assert ev["valid_forces_mae"] <= ev["target_forces_mae"] or ev["train_steps"] >= 8
    assert all(len(v["md"]) == 2 for v in stab.values())
    for name in ("cost.png", "learning_curves.png"):
        assert (tmp_path / name).stat().st_size > 0
    # a re-run skips finished work and still writes the report
    assert study.main(["--small", "--out", str(tmp_path), "--parts", "cost"]) == 0
    assert len(json.loads((tmp_path / "cost.json").read_text())) == len(cost)
