"""Error metrics and the validation loss.

Energy MAE/RMSE (total and per atom, meV), force MAE/RMSE per component
(meV/Å), per-element force errors; for models with charge heads (SO3LR) and
data with such labels, dipole MAE/RMSE per component (me·Å, milli e·Å) and
Hirshfeld-ratio MAE/RMSE per atom (×1000).

:class:`ErrorAccumulator` collects predictions batch by batch and computes the
metrics once at the end, so metrics over many batches equal metrics over one.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.train.loss import WeightedLoss

MEV = 1000.0

#: (accumulator prefix, output/target key) of the property labels.
PROPERTIES = (("mu", keys.DIPOLE), ("h", keys.HIRSHFELD_RATIOS))


def _mae_rmse(err: np.ndarray) -> tuple[float, float]:
    err = err[np.isfinite(err)]
    if not err.size:
        return float("nan"), float("nan")
    return float(np.abs(err).mean()), float(np.sqrt((err**2).mean()))


class ErrorAccumulator:
    """Collects predictions and labels of many batches (numpy, float64)."""

    def __init__(self) -> None:
        self._parts: dict[str, list[np.ndarray]] = {
            k: []
            for k in ("e_pred", "e_ref", "n_atoms", "f_pred", "f_ref", "z", "graph")
            + tuple(f"{p}_{s}" for p, _ in PROPERTIES for s in ("pred", "ref"))
        }
        self._n_graphs = 0

    def add(self, out: dict[str, torch.Tensor], batch: AtomicGraph) -> None:
        """Add one batch's model outputs and its labels."""
        p = self._parts
        p["e_pred"].append(out[keys.ENERGY].detach().cpu().double().numpy())
        p["e_ref"].append(batch.targets[keys.ENERGY].detach().cpu().double().numpy())
        p["n_atoms"].append(batch.n_atoms.cpu().numpy())
        p["z"].append(batch.atomic_numbers.cpu().numpy())
        p["graph"].append(batch.graph_index.cpu().numpy() + self._n_graphs)
        self._n_graphs += batch.n_graphs
        if keys.FORCES in batch.targets and keys.FORCES in out:
            p["f_pred"].append(out[keys.FORCES].detach().cpu().double().numpy())
            p["f_ref"].append(
                batch.targets[keys.FORCES].detach().cpu().double().numpy()
            )
        for prefix, key in PROPERTIES:
            if key in batch.targets and key in out:
                p[f"{prefix}_pred"].append(out[key].detach().cpu().double().numpy())
                p[f"{prefix}_ref"].append(
                    batch.targets[key].detach().cpu().double().numpy()
                )

    def arrays(self) -> dict[str, np.ndarray]:
        """Concatenated predictions and labels (eV, eV/Å)."""
        return {k: np.concatenate(v) for k, v in self._parts.items() if v}

    def metrics(self) -> dict[str, float | int | dict]:
        """Energy and force errors in meV and meV/Å (see module docstring)."""
        a = self.arrays()
        if "e_pred" not in a:
            raise ValueError("no batches were added")
        de = a["e_pred"] - a["e_ref"]  # (n_graphs,)
        out: dict[str, float | int | dict] = {"n_structures": int(len(de))}
        mae, rmse = _mae_rmse(de)
        out["energy_mae"], out["energy_rmse"] = mae * MEV, rmse * MEV
        mae, rmse = _mae_rmse(de / a["n_atoms"])
        out["energy_per_atom_mae"], out["energy_per_atom_rmse"] = mae * MEV, rmse * MEV
        if "f_pred" in a:
            df = a["f_pred"] - a["f_ref"]  # (n_atoms, 3)
            mae, rmse = _mae_rmse(df.ravel())
            out["forces_mae"], out["forces_rmse"] = mae * MEV, rmse * MEV
            out["forces_per_element"] = per_element_force_errors(df, a["z"])
        for prefix, key in PROPERTIES:  # dipole_mae (me·Å), hirshfeld_ratios_mae
            if f"{prefix}_pred" in a:
                mae, rmse = _mae_rmse(
                    (a[f"{prefix}_pred"] - a[f"{prefix}_ref"]).ravel()
                )
                out[f"{key}_mae"], out[f"{key}_rmse"] = mae * MEV, rmse * MEV
        return out

    def loss(self, loss_fn: WeightedLoss) -> float:
        """The training loss evaluated on all collected structures at once."""
        a = self.arrays()
        t = {k: torch.as_tensor(v) for k, v in a.items()}
        out = {keys.ENERGY: t["e_pred"]}
        batch_targets = {keys.ENERGY: t["e_ref"]}
        if "f_pred" in t:
            out[keys.FORCES] = t["f_pred"]
            batch_targets[keys.FORCES] = t["f_ref"]
        for prefix, key in PROPERTIES:
            if f"{prefix}_pred" in t:
                out[key] = t[f"{prefix}_pred"]
                batch_targets[key] = t[f"{prefix}_ref"]
        n = len(a["n_atoms"])
        proxy = AtomicGraph(
            positions=torch.zeros(len(a["z"]), 3, dtype=torch.float64),
            atomic_numbers=t["z"],
            graph_index=t["graph"],
            edge_index=torch.zeros(2, 0, dtype=torch.long),
            edge_shifts=torch.zeros(0, 3, dtype=torch.float64),
            cell=torch.zeros(n, 3, 3, dtype=torch.float64),
            pbc=torch.zeros(n, 3, dtype=torch.bool),
            n_atoms=t["n_atoms"],
            targets=batch_targets,
        )
        no_stress = dataclasses.replace(loss_fn, stress_weight=0.0)
        return float(no_stress(out, proxy)[0])


def per_element_force_errors(
    df: np.ndarray, z: np.ndarray
) -> dict[str, dict[str, float]]:
    """Force MAE/RMSE per component (meV/Å) for each element.

    Args:
        df: (n_atoms, 3) force errors, eV/Å.
        z: (n_atoms,) atomic numbers.

    Returns:
        ``{symbol: {"mae", "rmse", "n_atoms"}}``.
    """
    from ase.data import chemical_symbols

    out = {}
    for el in np.unique(z):
        mae, rmse = _mae_rmse(df[z == el].ravel())
        out[chemical_symbols[int(el)]] = {
            "mae": mae * MEV,
            "rmse": rmse * MEV,
            "n_atoms": int((z == el).sum()),
        }
    return out


@torch.no_grad()
def predict(
    model: torch.nn.Module, batches, device: str = "cpu", progress=None
) -> ErrorAccumulator:
    """Run ``model`` over ``batches`` (iterable of AtomicGraph), collecting errors."""
    acc = ErrorAccumulator()
    dtype = next(model.parameters()).dtype
    outputs = getattr(model, "property_outputs", ())
    for batch in batches:
        batch = batch.to(device=device, dtype=dtype)
        # models with charge heads add dipoles etc. where the data have labels
        extra = {"properties": True} if set(outputs) & set(batch.targets) else {}
        with torch.enable_grad():
            out = model(batch, compute_forces=True, create_graph=False, **extra)
        acc.add(out, batch)
        if progress is not None:
            progress(batch.n_graphs)
    return acc
