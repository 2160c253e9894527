"""Stability tables from finished run folders, without running MD."""

import json
import math

from equiforce.analysis.stability import (
    RUN_COLUMNS,
    judge_run,
    run_finished,
    write_tables,
)


def _fake_run(run_dir, events, interrupted=False):
    run_dir.mkdir(parents=True)
    result = {"events": events, "interrupted": interrupted}
    (run_dir / "result.json").write_text(json.dumps(result))
    return run_dir


def test_judge_run_and_tables(tmp_path):
    assert not run_finished(tmp_path / "missing")
    ok = _fake_run(tmp_path / "ok", [])
    bad = _fake_run(tmp_path / "bad", [{"time_fs": 250.0, "reason": "bond"}])
    cut = _fake_run(tmp_path / "cut", [], interrupted=True)
    assert run_finished(ok) and run_finished(bad) and not run_finished(cut)
    kw = {"temperature": 300.0, "frame": 0, "total_ps": 1.0}
    rows = [judge_run(ok, seed=0, **kw), judge_run(bad, seed=1, **kw)]
    assert tuple(rows[0]) == RUN_COLUMNS
    assert rows[0]["stable"] and rows[0]["time_to_failure_ps"] == 1.0
    assert not rows[1]["stable"] and rows[1]["time_to_failure_ps"] == 0.25
    assert rows[1]["reason"] == "bond" and math.isnan(rows[1]["hr_mae"])
    (summary,) = write_tables(tmp_path, rows)
    assert summary["n_runs"] == 2 and summary["stable_fraction"] == 0.5
    assert summary["min_ttf_ps"] == 0.25 and math.isnan(summary["mean_hr_mae"])
    lines = (tmp_path / "runs.csv").read_text().splitlines()
    assert lines[0] == ",".join(RUN_COLUMNS) and len(lines) == 3
    assert (tmp_path / "summary.csv").exists()
