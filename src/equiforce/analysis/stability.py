"""Stability tables: judge finished MD runs and summarise them per temperature.

This module only reads what a run left on disk (``result.json`` and its
trajectory); running the MD is the job of
:mod:`equiforce.workflows.stability`. A run's time to failure is the simulated
time of its first stability event (the full length if none), its h(r) error is
the MAE of the stable part against a reference trajectory when one is given.

Tables: ``runs.csv`` (one row per run, :data:`RUN_COLUMNS`) and ``summary.csv``
(per temperature: runs, stable fraction, mean / median / min time to failure,
mean h(r) MAE; :data:`SUMMARY_COLUMNS`).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from equiforce.analysis.rdf import h_of_r, hr_mae
from equiforce.atomic import atomic_path
from equiforce.data.trajectory import H5_SUFFIXES, read_trajectory

RUN_COLUMNS = (
    "temperature_K",
    "seed",
    "frame",
    "stable",
    "time_to_failure_ps",
    "reason",
    "hr_mae",
)
SUMMARY_COLUMNS = (
    "temperature_K",
    "n_runs",
    "stable_fraction",
    "mean_ttf_ps",
    "median_ttf_ps",
    "min_ttf_ps",
    "mean_hr_mae",
)


def reference_h_of_r(
    path: str | Path, r_max: float = 10.0, n_bins: int = 500
) -> np.ndarray:
    """h(r) of a reference trajectory (equiforce trajectory or any readable file)."""
    path = Path(path)
    if path.suffix in H5_SUFFIXES:
        traj = read_trajectory(path)
        pos, cell, pbc = traj.positions, traj.cell, traj.pbc
    else:
        from equiforce.data.io import read

        frames = read(path)
        pos = np.stack([a.get_positions() for a in frames])
        cell, pbc = np.asarray(frames[0].get_cell()), frames[0].get_pbc()
    return h_of_r(pos, cell, pbc, r_max, n_bins)[1]


def run_finished(run_dir: str | Path) -> bool:
    """Whether ``run_dir`` holds a run that ended (``result.json``, not interrupted)."""
    done = Path(run_dir) / "result.json"
    return done.exists() and not json.loads(done.read_text())["interrupted"]


def judge_run(
    run_dir: str | Path,
    *,
    temperature: float,
    seed: int,
    frame: int,
    total_ps: float,
    h_ref: np.ndarray | None = None,
) -> dict:
    """One ``runs.csv`` row from a finished run folder.

    Args:
        run_dir: folder with ``result.json`` and ``trajectory.*`` of one run.
        temperature: K, copied into the row.
        seed: copied into the row.
        frame: initial frame index, copied into the row.
        total_ps: simulated length of the run, the time to failure of a stable run.
        h_ref: reference h(r) (:func:`reference_h_of_r`); ``hr_mae`` is NaN without.

    Returns:
        A dict with the keys of :data:`RUN_COLUMNS`.
    """
    run_dir = Path(run_dir)
    result = json.loads((run_dir / "result.json").read_text())
    events = result["events"]
    row = {
        "temperature_K": temperature,
        "seed": seed,
        "frame": frame,
        "stable": not events and not result["interrupted"],
        "time_to_failure_ps": events[0]["time_fs"] / 1000.0 if events else total_ps,
        "reason": events[0]["reason"] if events else "",
        "hr_mae": np.nan,
    }
    if h_ref is not None:
        traj = read_trajectory(next(run_dir.glob("trajectory.*")))
        n_ok = len(traj) - 1 if events else len(traj)  # stable part only
        h = h_of_r(traj.positions[: max(n_ok, 1)], traj.cell, traj.pbc)[1]
        row["hr_mae"] = hr_mae(h, h_ref)
    return row


def summarize(rows: list[dict]) -> list[dict]:
    """Per-temperature stable fraction and time-to-failure statistics."""
    out = []
    for temp in sorted({r["temperature_K"] for r in rows}):
        sel = [r for r in rows if r["temperature_K"] == temp]
        ttf = np.array([r["time_to_failure_ps"] for r in sel])
        hr = np.array([r["hr_mae"] for r in sel], float)
        out.append(
            {
                "temperature_K": temp,
                "n_runs": len(sel),
                "stable_fraction": float(np.mean([r["stable"] for r in sel])),
                "mean_ttf_ps": float(ttf.mean()),
                "median_ttf_ps": float(np.median(ttf)),
                "min_ttf_ps": float(ttf.min()),
                "mean_hr_mae": float(np.nanmean(hr))
                if np.isfinite(hr).any()
                else np.nan,
            }
        )
    return out


def write_tables(out_dir: str | Path, rows: list[dict]) -> list[dict]:
    """Write ``runs.csv`` and ``summary.csv`` into ``out_dir``; return the summary."""
    out_dir = Path(out_dir)
    _write_csv(out_dir / "runs.csv", RUN_COLUMNS, rows)
    summary = summarize(rows)
    _write_csv(out_dir / "summary.csv", SUMMARY_COLUMNS, summary)
    return summary


def _write_csv(path: Path, columns: Sequence[str], rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
