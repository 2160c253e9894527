"""Compute an analysis of a trajectory and write it as CSV + PNG (used by the CLI)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from equiforce.analysis.rdf import h_of_r, rdf
from equiforce.analysis.spectrum import find_peaks_cm, power_spectrum
from equiforce.analysis.vacf import vacf
from equiforce.data.trajectory import Trajectory


def _plot(path: Path, x, ys: dict, xlabel: str, ylabel: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=120)
    for label, y in ys.items():
        ax.plot(x, y, lw=1, label=label)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if len(ys) > 1:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def _write_csv(
    path: Path, header: list[str], columns: list[np.ndarray], comments=()
) -> None:
    lines = "".join(f"# {c}\n" for c in comments)
    data = np.column_stack(columns)
    with open(path, "w") as fh:
        fh.write(lines)
        np.savetxt(
            fh, data, delimiter=",", header=",".join(header), comments="", fmt="%.8g"
        )


def vacf_report(
    traj: Trajectory,
    stem: Path,
    kind: str = "spectrum",
    max_lag_fs: float = 2000.0,
    mass_weighted: bool = True,
    skip_fs: float = 0.0,
    pad: int = 4,
    max_cm: float = 4000.0,
) -> list[Path]:
    """VACF (kind="vacf") or power spectrum (kind="spectrum") files; returns paths."""
    if traj.velocities is None:
        raise ValueError("trajectory has no velocities")
    dt = traj.dt_fs
    start = int(round(skip_fs / dt))
    vel, pos = traj.velocities[start:], traj.positions[start:]
    max_lag = min(int(round(max_lag_fs / dt)), len(vel) - 1)
    molecule = not np.any(traj.pbc)
    c = vacf(
        vel,
        traj.masses,
        max_lag=max_lag,
        mass_weighted=mass_weighted,
        positions=pos if molecule else None,
    )
    tau = np.arange(len(c)) * dt
    if kind == "vacf":
        csv, png = (
            stem.with_name(stem.name + "_vacf.csv"),
            stem.with_name(stem.name + "_vacf.png"),
        )
        _write_csv(
            csv,
            ["lag_fs", "vacf"],
            [tau, c],
            [f"mass_weighted={mass_weighted}", "unbiased FFT estimate, C(0)=1"],
        )
        _plot(png, tau, {"C": c}, "lag (fs)", "C(τ)/C(0)", "velocity autocorrelation")
        return [csv, png]
    spec = power_spectrum(c, dt, pad=pad)
    peaks = find_peaks_cm(spec, smooth_cm=spec.resolution_cm)
    notes = [
        f"dt={dt:g} fs, tau_max={spec.max_lag_fs:g} fs, window=cos2, pad={pad}",
        f"resolution={spec.resolution_cm:.1f} cm-1, nyquist={spec.nyquist_cm:.0f} cm-1",
        "peaks_cm-1=" + " ".join(f"{p:.0f}" for p, _ in peaks),
    ]
    csv, png = (
        stem.with_name(stem.name + "_spectrum.csv"),
        stem.with_name(stem.name + "_spectrum.png"),
    )
    _write_csv(
        csv, ["wavenumber_cm-1", "intensity"], [spec.wavenumber, spec.intensity], notes
    )
    sel = spec.wavenumber <= max_cm
    _plot(
        png,
        spec.wavenumber[sel],
        {"I": spec.intensity[sel]},
        "wavenumber (cm⁻¹)",
        "intensity (a.u.)",
        f"power spectrum (resolution {spec.resolution_cm:.0f} cm⁻¹)",
    )
    for line in notes:
        print(line)
    return [csv, png]


def rdf_report(
    traj: Trajectory, stem: Path, r_max: float | None, bins: int | None
) -> list[Path]:
    """h(r) always, and g(r) for periodic trajectories; returns written paths."""
    paths = []
    r, h = h_of_r(traj.positions, traj.cell, traj.pbc, r_max or 10.0, bins or 500)
    csv, png = (
        stem.with_name(stem.name + "_hr.csv"),
        stem.with_name(stem.name + "_hr.png"),
    )
    _write_csv(
        csv, ["r_A", "h"], [r, h], ["h(r): histogram of all pair distances, sum(h)=1"]
    )
    _plot(png, r, {"h": h}, "r (Å)", "h(r)", "pair-distance histogram")
    paths += [csv, png]
    if np.all(traj.pbc):
        r, g = rdf(
            traj.positions,
            traj.cell,
            traj.pbc,
            traj.atomic_numbers,
            None,
            r_max or 6.0,
            bins or 300,
        )
        csv, png = (
            stem.with_name(stem.name + "_rdf.csv"),
            stem.with_name(stem.name + "_rdf.png"),
        )
        _write_csv(
            csv, ["r_A", "g"], [r, g], ["g(r) = <n(r)>/(rho 4 pi r^2 dr), all pairs"]
        )
        _plot(png, r, {"g": g}, "r (Å)", "g(r)", "radial distribution function")
        paths += [csv, png]
    return paths
