"""How well an ensemble's spread predicts its errors (``equiforce eval`` of an ensemble).

For a committee or a multi-head model (:mod:`equiforce.uncertainty`) on a
labelled file, :func:`calibrate` writes

- ``calibration.png``: the root-mean-square error against the predicted std,
  binned by the predicted std (equal-count bins), for per-atom forces (|ΔF_i|
  against ``forces_std`` of atom i, eV/Å) and per-structure energies. A
  calibrated ensemble lies on the diagonal: the std is defined as
  sqrt(mean_k |F_k − F̄|²), the same norm as the error's; points above it mean
  the ensemble is over-confident;
- ``uncertainty.json``: the ranking scores, Spearman's ρ between each frame's
  largest per-atom force error max_i |ΔF_i| and its predicted
  ``forces_std_max`` (the quantity an MD threshold acts on), and between
  |ΔE| and ``energy_std``; the binned curves; and the fraction of frames whose
  largest force error exceeds 0.1 eV/Å that a threshold would catch.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from equiforce import keys
from equiforce.atomic import atomic_path, atomic_write_text
from equiforce.data.dataset import GraphDataset
from equiforce.train.setup import eval_batches

#: number of equal-count bins of the predicted std in the plot and the json
N_BINS = 10


def spearman(x: np.ndarray, y: np.ndarray) -> float:
    """Spearman rank correlation of two 1-D arrays (ties: average ranks); NaN if < 3."""
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if len(x) < 3:
        return float("nan")
    rx, ry = _ranks(x), _ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    ranks = np.empty(len(v))
    ranks[order] = np.arange(len(v), dtype=float)
    _, inverse, counts = np.unique(v, return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, ranks)
    return (sums / counts)[inverse]  # average rank of tied values


def collect(model: torch.nn.Module, dataset: GraphDataset, batch_size: int) -> dict:
    """Per-atom and per-frame errors and predicted stds of ``model`` on ``dataset``."""
    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    rows: dict[str, list[np.ndarray]] = {
        k: [] for k in ("f_err", "f_std", "frame_err", "frame_std", "e_err", "e_std")
    }
    for batch in eval_batches(dataset, batch_size)():
        batch = batch.to(device=device, dtype=dtype)
        with torch.enable_grad():
            out = model(batch, compute_forces=True, create_graph=False)
        tgt, idx = batch.targets, batch.graph_index.cpu().numpy()
        n = batch.n_graphs
        if keys.ENERGY in tgt and keys.ENERGY_STD in out:  # not a latent model's
            err = (out[keys.ENERGY] - tgt[keys.ENERGY].to(torch.float64)).abs()
            rows["e_err"].append(_np(err))
            rows["e_std"].append(_np(out[keys.ENERGY_STD]))
        if keys.FORCES in tgt and keys.FORCES_STD in out:
            f_err = _np((out[keys.FORCES] - tgt[keys.FORCES]).norm(dim=-1))
            f_std = _np(out[keys.FORCES_STD])
            rows["f_err"].append(f_err)
            rows["f_std"].append(f_std)
            worst = np.full(n, np.nan)
            np.fmax.at(worst, idx, f_err)  # NaN labels are skipped
            rows["frame_err"].append(worst)
            rows["frame_std"].append(_np(out[keys.FORCES_STD_MAX]))
    return {k: np.concatenate(v) if v else np.zeros(0) for k, v in rows.items()}


def _np(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def binned(std: np.ndarray, err: np.ndarray, n_bins: int = N_BINS) -> dict:
    """RMS predicted std and RMS error in equal-count bins of the predicted std."""
    ok = np.isfinite(std) & np.isfinite(err)
    std, err = std[ok], err[ok]
    if len(std) == 0:
        return {"rms_std": [], "rms_error": [], "count": []}
    parts = np.array_split(np.argsort(std), min(n_bins, len(std)))
    return {
        "rms_std": [float(np.sqrt(np.mean(std[p] ** 2))) for p in parts],
        "rms_error": [float(np.sqrt(np.mean(err[p] ** 2))) for p in parts],
        "count": [len(p) for p in parts],
    }


def calibration_metrics(data: dict, force_limit: float = 0.1) -> dict:
    """Ranking scores, binned curves and the threshold of ``force_limit`` eV/Å."""
    out = {
        "spearman_max_force": spearman(data["frame_std"], data["frame_err"]),
        # None without an energy std (a latent uncertainty): JSON has no NaN
        "spearman_energy": (
            spearman(data["e_std"], data["e_err"]) if len(data["e_std"]) else None
        ),
        "forces_binned": binned(data["f_std"], data["f_err"]),
        "energy_binned": binned(data["e_std"], data["e_err"]),
    }
    out |= threshold_for(data["frame_std"], data["frame_err"], force_limit)
    return out


def threshold_for(std: np.ndarray, err: np.ndarray, limit: float) -> dict:
    """The largest max-force-std threshold that flags every frame with error > limit.

    Returns ``threshold_eV_A`` (None when no frame exceeds ``limit``), and at it the
    fraction of frames flagged and the fraction of flagged frames that are bad.
    """
    ok = np.isfinite(std) & np.isfinite(err)
    std, err = std[ok], err[ok]
    bad = err > limit
    res = {"error_limit_eV_A": limit, "n_bad_frames": int(bad.sum())}
    if not bad.any():
        return res | {"threshold_eV_A": None}
    thr = float(std[bad].min())  # the smallest std among bad frames: all caught
    flagged = std >= thr
    return res | {
        "threshold_eV_A": thr,
        "flagged_fraction": float(flagged.mean()),
        "precision": float(bad[flagged].mean()),
    }


def calibration_plot(metrics: dict, path: Path, title: str = "") -> None:
    """RMS error against RMS predicted std per bin, forces and energies."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    panels = (
        (axes[0], metrics["forces_binned"], "per-atom force", "eV/Å", "max_force"),
        (axes[1], metrics["energy_binned"], "energy", "eV", "energy"),
    )
    for ax, b, label, unit, score in panels:
        if not b["rms_std"]:
            ax.set_visible(False)
            continue
        ax.plot(b["rms_std"], b["rms_error"], "o-")
        hi = max(max(b["rms_std"]), max(b["rms_error"])) * 1.05
        ax.plot([0, hi], [0, hi], "k--", lw=0.8, label="calibrated")
        ax.set(xlabel=f"predicted {label} std ({unit})", ylabel=f"RMS error ({unit})")
        rho = metrics[f"spearman_{score}"]
        ax.set_title(f"{label}: Spearman ρ {rho:.2f}", fontsize=9)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def calibrate(
    model: torch.nn.Module,
    dataset: GraphDataset,
    out_dir: str | Path,
    batch_size: int = 50,
    title: str = "",
) -> dict:
    """Write ``calibration.png`` and ``uncertainty.json``; return the scores."""
    out = Path(out_dir)
    metrics = calibration_metrics(collect(model, dataset, batch_size))
    atomic_write_text(out / "uncertainty.json", json.dumps(metrics, indent=1) + "\n")
    calibration_plot(metrics, out / "calibration.png", title)
    return {
        k: metrics[k]
        for k in ("spearman_max_force", "spearman_energy", "threshold_eV_A")
        if k in metrics
    }
