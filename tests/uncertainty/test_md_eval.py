"""The MD uncertainty stop and the evaluation's calibration outputs."""

import json

import pytest
from _ensemble_helpers import distorted, labelled_frames
from ase.calculators.singlepoint import SinglePointCalculator
from ase.io import write as ase_write

from equiforce import keys
from equiforce.md.config import MDConfig
from equiforce.md.runner import run_md, thermo_table
from equiforce.md.uncertainty import UncertaintyConfig
from equiforce.potential import Potential
from equiforce.train.evaluate import evaluate
from equiforce.uncertainty import Committee, EnsembleError


def _threshold(committee, near, far) -> float:
    """Geometric mean of the largest force std near and far from the data."""
    pot = Potential(committee, compile=False, skin=0.0)
    s = [
        float(pot.compute(a.positions, a.numbers)[keys.FORCES_STD_MAX][0])
        for a in (near, far)
    ]
    assert s[1] > 2 * s[0]
    return (s[0] * s[1]) ** 0.5


def _config(limit: float, action: str = "stop") -> MDConfig:
    # a short, cold NVE run: the tiny fitted members are accurate only very
    # close to their training frames
    return MDConfig(
        ensemble="nve",
        temperature=0.0,
        timestep=0.1,
        steps=20,
        output_interval=5,
        compile=False,
        uncertainty={"max_force_std": limit, "action": action},
    )


def test_md_stops_far_from_the_data_and_not_near_it(committee_models, tmp_path):
    # fails if the threshold is not checked, compared the wrong way, or stops
    # training-like runs
    near = labelled_frames(1, 0.05, seed=11)[0]
    far = distorted(near, 0.6)
    committee = Committee(committee_models)
    limit = _threshold(committee, near, far)
    ok = run_md(committee, [near], _config(limit), tmp_path / "near", progress=False)
    assert ok.stop_reason is None and ok.steps_done == 20
    rows = thermo_table(tmp_path / "near" / "uncertainty.csv")
    assert len(rows["step"]) == 5  # frames 0, 5, ..., 20
    assert rows["max_force_std_eV_A"].max() <= limit
    res = run_md(committee, [far], _config(limit), tmp_path / "far", progress=False)
    assert res.steps_done == 0 and "max_force_std" in res.stop_reason
    saved = json.loads((tmp_path / "far" / "result.json").read_text())
    assert saved["stop_reason"] == res.stop_reason
    assert saved["uncertainty_events"][0]["max_force_std"] > limit
    assert (tmp_path / "far" / "trajectory.xyz").exists()  # the frame it stopped at


def test_md_flag_carries_on(committee_models, tmp_path, monkeypatch):
    # fails if flagging stops the run, or if a long flagged run lists every frame
    # in result.json (unbounded) or stops counting the frames it does not list
    from equiforce.md import uncertainty

    monkeypatch.setattr(uncertainty, "MAX_EVENTS", 2)
    far = distorted(labelled_frames(1, 0.05, seed=11)[0], 0.75)
    cfg = _config(1e-6, action="flag")
    res = run_md(Committee(committee_models), [far], cfg, tmp_path, progress=False)
    assert res.stop_reason is None and res.steps_done == 20
    assert len(res.uncertainty_events) == 2 and res.uncertainty_events_total == 5
    saved = json.loads((tmp_path / "result.json").read_text())
    assert saved["uncertainty_events_total"] == 5
    assert [e["step"] for e in saved["uncertainty_events"]] == [0, 5]


def test_md_threshold_needs_an_ensemble(committee_models):
    near = labelled_frames(1, 0.05, seed=11)[0]
    with pytest.raises(EnsembleError, match="ensemble"):
        run_md(committee_models[0], [near], _config(1.0), None, progress=False)
    # asking to record the spread of a plain model is refused too (it recorded
    # nothing, silently)
    record = _config(None).model_copy(
        update={"uncertainty": UncertaintyConfig(record=True)}
    )
    with pytest.raises(EnsembleError, match="record"):
        run_md(committee_models[0], [near], record, None, progress=False)


def test_eval_writes_calibration_and_spearman(committee_models, tmp_path):
    # near and far labelled frames: the largest errors should rank with the std
    frames = labelled_frames(6, 0.05, seed=21) + labelled_frames(6, 0.25, seed=22)
    for a in frames:
        e, f = a.info.pop("energy"), a.arrays.pop("forces_ref")
        a.calc = SinglePointCalculator(a, energy=e, forces=f)
    ase_write(tmp_path / "test.xyz", frames)
    for k, m in enumerate(committee_models):
        (tmp_path / f"c/member_{k}").mkdir(parents=True)
        m.save(tmp_path / f"c/member_{k}/best.pt")
    metrics = evaluate(
        tmp_path / "c", tmp_path / "test.xyz", tmp_path / "out", progress=False
    )
    assert (tmp_path / "out" / "calibration.png").stat().st_size > 0
    scores = json.loads((tmp_path / "out" / "uncertainty.json").read_text())
    assert -1 <= scores["spearman_max_force"] <= 1
    assert metrics["spearman_max_force"] == scores["spearman_max_force"]
    assert scores["spearman_max_force"] > 0.5  # larger errors where members disagree
    assert len(scores["forces_binned"]["rms_std"]) == 10


def test_spearman_of_known_rankings():
    import numpy as np

    from equiforce.train.calibration import spearman, threshold_for

    x = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(x, x**3) == pytest.approx(1.0)
    assert spearman(x, -x) == pytest.approx(-1.0)
    assert spearman(x, np.array([1.0, 1.0, 2.0, 2.0, 3.0])) == pytest.approx(
        0.948683, abs=1e-6
    )  # scipy
    t = threshold_for(x, np.array([0.0, 0.05, 0.2, 0.01, 0.3]), 0.1)
    assert t["threshold_eV_A"] == 3.0 and t["flagged_fraction"] == pytest.approx(0.6)
