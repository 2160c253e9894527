"""The analysis of benchmarks/uncertainty_study.py on synthetic per-frame numbers.

The study itself (training committees) is a benchmark; these check the parts
that turn per-frame errors and stds into its threshold and false-alarm numbers,
and the extxyz splitting that makes its held-out 300 K file.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "uncertainty_study.py"


def _load():
    spec = importlib.util.spec_from_file_location("uncertainty_study", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _frames(std, err):
    return {"frame_std": np.asarray(std, float), "frame_err": np.asarray(err, float)}


def test_threshold_catches_every_bad_frame_and_counts_false_alarms():
    study = _load()
    frames = {
        # 300 K: all under the limit; the one at std 0.30 is a false alarm
        "300K": _frames([0.01, 0.02, 0.03, 0.30], [0.02, 0.03, 0.04, 0.05]),
        # 600 K: one bad frame at std 0.20 (the least certain-looking bad one)
        "600K": _frames([0.05, 0.20, 0.10, 0.04], [0.05, 0.15, 0.08, 0.06]),
        "1200K": _frames([0.40, 0.50, 0.25, 0.60], [0.30, 0.40, 0.20, 0.50]),
    }
    t = study.threshold_summary(frames, limit=0.1)
    # the largest threshold that still flags every frame with error > 0.1:
    # the smallest std among them (a wrong choice would miss or over-flag)
    assert t["threshold_eV_A"] == pytest.approx(0.20)
    assert t["n_bad_frames"] == 5
    assert t["flagged_300K"] == pytest.approx(0.25)
    assert t["false_alarm_300K"] == pytest.approx(0.25)
    assert t["flagged_600K"] == pytest.approx(0.25)
    assert t["flagged_1200K"] == pytest.approx(1.0)
    # flagged: 1 (300 K) + 1 (600 K) + 4 (1200 K), of which 5 are bad
    assert t["precision"] == pytest.approx(5 / 6)
    # hot frames: std and error rank identically except the 600 K 0.05/0.04 pair
    assert 0.9 < t["spearman_hot"] < 1.0


def test_no_bad_frame_gives_no_threshold():
    study = _load()
    t = study.threshold_summary({"300K": _frames([0.1, 0.2, 0.3], [0.01, 0.02, 0.03])})
    assert t["threshold_eV_A"] is None and "false_alarm_300K" not in t


def test_split_frames_keeps_each_extxyz_frame_whole(tmp_path):
    study = _load()
    frame = "2\nenergy=-1.0\nH 0 0 0\nH 0 0 0.74\n"
    frames = study.split_frames(frame + frame.replace("-1.0", "-2.0"))
    assert frames == [frame, frame.replace("-1.0", "-2.0")]
