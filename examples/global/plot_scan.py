"""Energy of trained models against a scan variable, beside the reference.

Used by ``make demo-global``: reads a ``data/global`` scan, its split file
(``test``: the held-out range) and one or more checkpoints, and writes
``NAME_energy.png`` (model and reference energy vs the scan variable, the held-out
range shaded) and ``NAME_errors.json`` (energy MAE/RMSE on the train and test
frames, std of the reference on the test frames)::

    PYTHONPATH=src python examples/global/plot_scan.py --data SCAN.extxyz
        --model local=runs/local/best.pt --model efa=runs/efa/best.pt --out DIR
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.data.io import read
from equiforce.models.registry import load_model

SCAN_KEYS = ("twist_deg", "distance_A")


def predict_energies(model, frames: list, batch: int = 32) -> np.ndarray:
    """Energies (eV, float64) of ``frames`` from ``model``, ``batch`` frames a call."""
    dtype = next(model.parameters()).dtype
    out = []
    for start in range(0, len(frames), batch):
        graphs = [
            AtomicGraph.from_atoms(a, model.cutoff, dtype, with_targets=False)
            for a in frames[start : start + batch]
        ]
        res = model.eval()(AtomicGraph.collate(graphs), compute_forces=False)
        out.append(res[keys.ENERGY].detach().double().numpy())
    return np.concatenate(out)


def errors(pred: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """Energy MAE and RMSE (eV)."""
    diff = pred - ref
    return {
        "mae": float(np.abs(diff).mean()),
        "rmse": float(np.sqrt(diff @ diff / len(diff))),
    }


def main(argv: list[str] | None = None) -> int:
    """Predict, score and plot every model on the scan."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, required=True)
    p.add_argument("--split", type=Path, help="default: DATA with .split.json")
    p.add_argument("--model", action="append", required=True, help="LABEL=checkpoint")
    p.add_argument("--out", type=Path, default=Path("demo_out/global"))
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    frames = read(args.data, require=("energy",))
    key = next(k for k in SCAN_KEYS if k in frames[0].info)
    x = np.array([a.info[key] for a in frames])
    ref = np.array([a.get_potential_energy() for a in frames])
    split = json.loads((args.split or args.data.with_suffix(".split.json")).read_text())
    test = np.array(split["test"])
    train = np.array(split["train"])
    result = {
        "data": str(args.data),
        "scan": key,
        "split_rule": split.get("rule"),
        "test_std_eV": float(ref[test].std()),
        "models": {},
    }
    preds = {}
    for item in args.model:
        label, path = item.split("=", 1)
        pred = predict_energies(load_model(path), frames)
        preds[label] = pred
        result["models"][label] = {
            "checkpoint": path,
            "test": errors(pred[test], ref[test]),
            "train": errors(pred[train], ref[train]),
        }
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.data.stem
    (args.out / f"{stem}_errors.json").write_text(json.dumps(result, indent=1) + "\n")
    plot(x, ref, preds, test, key, args.out / f"{stem}_energy.png", result)
    for label, m in result["models"].items():
        print(
            f"{label:>8}: test MAE {m['test']['mae']:.3f} eV  RMSE "
            f"{m['test']['rmse']:.3f} eV  (train MAE {m['train']['mae']:.3f} eV); "
            f"test std {result['test_std_eV']:.3f} eV"
        )
    print(f"wrote {args.out / f'{stem}_energy.png'} and {stem}_errors.json")
    return 0


def plot(x, ref, preds, test, key, path: Path, result: dict) -> None:
    """Energy relative to the reference mean against the scan variable."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shift = ref.mean()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    if len(test):
        ax.axvspan(x[test].min(), x[test].max(), color="0.9", label="held out (test)")
    ax.plot(x, ref - shift, "o", ms=3, color="k", label="GFN2-xTB")
    for (label, pred), c in zip(preds.items(), ("C3", "C0", "C2", "C1"), strict=False):
        mae = result["models"][label]["test"]["mae"]
        ax.plot(
            x,
            pred - shift,
            ".",
            ms=4,
            color=c,
            label=f"{label} (test MAE {mae:.3f} eV)",
        )
    ax.set_xlabel(
        {"twist_deg": "twist angle (°)", "distance_A": "N–N distance (Å)"}[key]
    )
    ax.set_ylabel("E − ⟨E_ref⟩ (eV)")
    ax.set_title(path.stem.replace("_energy", ""))
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
