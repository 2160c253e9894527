"""Stability study: N seeds × temperatures of MD, summarised in a table.

Per md-protocol.md §3.1 a seed fixes (a) the initial frame, drawn from the given
structures (e.g. the test split), (b) the Maxwell–Boltzmann velocities and (c) the
thermostat noise. Each run stops at the first unstable frame
(:class:`equiforce.md.observers.StabilityMonitor`); its time to failure is the
simulated time then (the full length if none). Finished runs are skipped when the
study is restarted, so an interrupted study resumes where it stopped.

Runs MD with :func:`equiforce.md.runner.run_md`, then judges every run and writes
the tables with :mod:`equiforce.analysis.stability`. Outputs in ``out_dir``: one
sub-folder per run, ``runs.csv`` (one row per run) and ``summary.csv`` (per
temperature: runs, stable fraction, mean / median / min time to failure, mean
h(r) MAE against the reference trajectory when one is given).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equiforce.analysis.stability import (
    judge_run,
    reference_h_of_r,
    run_finished,
    write_tables,
)
from equiforce.md.config import MDConfig
from equiforce.md.runner import run_md


def _one_run(
    model,
    structures: list,
    config: MDConfig,
    run_dir: Path,
    h_ref: np.ndarray | None,
    progress: bool,
) -> dict:
    """Run (or resume) one MD run unless it already ended, then judge it."""
    if not run_finished(run_dir):
        run_md(
            model,
            [structures[config.frame]],
            config,
            run_dir,
            resume=True,
            progress=progress,
        )
    return judge_run(
        run_dir,
        temperature=config.temperature,
        seed=config.seed,
        frame=config.frame,
        total_ps=config.n_steps * config.timestep / 1000.0,
        h_ref=h_ref,
    )


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
    return write_tables(out_dir, rows)
