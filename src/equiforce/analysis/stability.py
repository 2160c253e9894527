"""Stability studies: N seeds × temperatures of MD, summarised in a table.

Per md-protocol.md §3.1 a seed fixes (a) the initial frame, drawn from the given
structures (e.g. the test split), (b) the Maxwell–Boltzmann velocities and (c) the
thermostat noise. Each run stops at the first unstable frame
(:class:`equiforce.md.observers.StabilityMonitor`); its time to failure is the
simulated time then (the full length if none). Finished runs are skipped when the
study is restarted, so an interrupted study resumes where it stopped.

Outputs in ``out_dir``: ``runs.csv`` (one row per run) and ``summary.csv`` (per
temperature: runs, stable fraction, mean / median / min time to failure, mean
h(r) MAE against the reference trajectory when one is given).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from equiforce.analysis.rdf import h_of_r, hr_mae
from equiforce.atomic import atomic_path
from equiforce.md.config import MDConfig

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
    from equiforce.md.trajectory import H5_SUFFIXES, read_trajectory

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


def _one_run(
    model, structures, config: MDConfig, run_dir: Path, h_ref, progress
) -> dict:
    from equiforce.md.runner import run_md
    from equiforce.md.trajectory import read_trajectory

    done = run_dir / "result.json"
    if not (done.exists() and not json.loads(done.read_text())["interrupted"]):
        run_md(
            model,
            [structures[config.frame]],
            config,
            run_dir,
            resume=True,
            progress=progress,
        )
    result = json.loads(done.read_text())
    events = result["events"]
    total_ps = config.n_steps * config.timestep / 1000.0
    row = {
        "temperature_K": config.temperature,
        "seed": config.seed,
        "frame": config.frame,
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


def run_stability_study(
    model,
    structures: list,
    base: MDConfig,
    temperatures: list[float],
    seeds: list[int],
    out_dir: str | Path,
    reference: str | Path | None = None,
    progress: bool = True,
) -> list[dict]:
    """Run every (temperature, seed) and write ``runs.csv`` and ``summary.csv``.

    Args:
        model: potential model or force provider.
        structures: candidate initial frames; a seed picks one.
        base: MD settings shared by all runs (ensemble, dt, length, stability).
        temperatures: K.
        seeds: integers; the same seeds should be used for every model compared.
        out_dir: study folder (one sub-folder per run).
        reference: reference trajectory for the h(r) error (optional).
        progress: progress bars.

    Returns:
        The summary rows.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    h_ref = None if reference is None else reference_h_of_r(reference)
    rows = []
    for temp in temperatures:
        for seed in seeds:
            frame = int(np.random.default_rng(seed).integers(len(structures)))
            cfg = base.model_copy(
                update={"temperature": temp, "seed": seed, "frame": frame}
            )
            run_dir = out_dir / f"T{temp:g}_seed{seed}"
            rows.append(_one_run(model, structures, cfg, run_dir, h_ref, progress))
    _write_csv(out_dir / "runs.csv", RUN_COLUMNS, rows)
    summary = summarize(rows)
    _write_csv(out_dir / "summary.csv", SUMMARY_COLUMNS, summary)
    return summary


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


def _write_csv(path: Path, columns, rows: list[dict]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=list(columns))
        writer.writeheader()
        writer.writerows(rows)
