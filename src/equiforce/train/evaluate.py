"""Evaluate a trained model on a labelled file.

Writes metrics.json (with per-element force errors), a parity plot and the
predictions.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from equiforce.atomic import atomic_path, atomic_write_text
from equiforce.config import DataSource
from equiforce.data.dataset import GraphDataset
from equiforce.train.metrics import predict
from equiforce.train.progress import Reporter, metrics_table
from equiforce.train.setup import eval_batches, read_source


def _as_source(data: str | Path | DataSource | dict) -> DataSource:
    if isinstance(data, DataSource):
        return data
    if isinstance(data, dict):
        return DataSource(**data)
    return DataSource(path=str(data))


def evaluate(
    model_path: str | Path,
    data: str | Path | DataSource | dict,
    out_dir: str | Path,
    batch_size: int = 50,
    device: str = "cpu",
    progress: bool = True,
) -> dict:
    """Errors of a checkpoint on a labelled file.

    Args:
        model_path: ``best.pt``/``last.pt`` or any equiforce checkpoint.
        data: file path, or a :class:`~equiforce.config.DataSource` (keys, units).
        out_dir: folder for ``metrics.json``, ``parity.png`` and ``predictions.npz``.
        batch_size: structures per forward pass.
        device: torch device.
        progress: show progress and the result table.

    Returns:
        The metrics dict written to ``metrics.json`` (meV, meV/Å).
    """
    from equiforce.uncertainty import has_uncertainty, load_ensemble

    source = _as_source(data)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Reporter(progress)
    model = load_ensemble(model_path, device=device)  # a committee, heads or one
    dtype = next(model.parameters()).dtype
    store = read_source(source, report)
    dataset = GraphDataset(
        store, model.cutoff, dtype, getattr(model, "lr_cutoff", None)
    )
    with report.bar("evaluating", len(dataset)) as advance:
        acc = predict(model, eval_batches(dataset, batch_size)(), device, advance)
    metrics = acc.metrics()
    metrics |= {
        "model": str(Path(model_path).resolve()),
        "data": source.path,
        "n_frames": len(store),
        "n_labelled": store.labelled(),  # errors average over these frames only
    }
    if has_uncertainty(model):  # calibration.png, uncertainty.json
        from equiforce.train.calibration import calibrate

        metrics |= calibrate(model, dataset, out, batch_size, Path(source.path).name)
    atomic_write_text(out / "metrics.json", json.dumps(metrics, indent=1) + "\n")
    arrays = acc.arrays()
    _save_npz(out / "predictions.npz", arrays)
    parity_plot(arrays, out / "parity.png", title=Path(source.path).name)
    report.print(metrics_table(metrics, f"errors on {source.path}"))
    return metrics


def _save_npz(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, **arrays)


def parity_plot(arrays: dict[str, np.ndarray], path: Path, title: str = "") -> None:
    """Predicted vs reference energies (per atom, shifted) and force components."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(9, 4.2))
    e_ref = arrays["e_ref"] / arrays["n_atoms"]
    e_pred = arrays["e_pred"] / arrays["n_atoms"]
    shift = np.nanmean(e_ref)
    panels = [(axes[0], e_ref - shift, e_pred - shift, "energy per atom − mean (eV)")]
    if "f_ref" in arrays:
        panels.append(
            (axes[1], arrays["f_ref"].ravel(), arrays["f_pred"].ravel(), "force (eV/Å)")
        )
    else:
        axes[1].set_visible(False)
    for ax, ref, pred, label in panels:
        ax.scatter(ref, pred, s=2, alpha=0.4, rasterized=True)
        lo, hi = np.nanmin([ref.min(), pred.min()]), np.nanmax([ref.max(), pred.max()])
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
        mae = np.nanmean(np.abs(pred - ref))
        ax.set(xlabel=f"reference {label}", ylabel=f"predicted {label}")
        ax.set_title(
            f"MAE {1000 * mae:.2f} m{label.split('(')[1].rstrip(')')}", fontsize=9
        )
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def evaluate_model(
    model: torch.nn.Module, dataset: GraphDataset, batch_size: int = 50
) -> dict:
    """Metrics of an in-memory model on a :class:`GraphDataset` (no files)."""
    device = next(model.parameters()).device
    return predict(
        model.eval(), eval_batches(dataset, batch_size)(), str(device)
    ).metrics()
