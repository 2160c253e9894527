"""The run directory: every file a training run writes, written atomically.

::

    RUN_DIR/
      config.resolved.yaml   validated config with defaults and model fields
      splits.json            train/valid frame indices into the training file
      statistics.json        E0, average neighbours, force RMS of the training split
      metrics.csv            one row per log interval (+ validation columns)
      tb/                    TensorBoard events
      best.pt                EMA weights, lowest validation loss (records its step)
      last.pt                EMA weights at the last checkpoint + full training state
      final_metrics.json     validation errors of best.pt at the end
      init.pt                starting weights of a fine-tuning run (model.init_from)

``last.pt`` is a model checkpoint (loadable with ``equiforce.load_model``) plus a
``training_state`` entry: raw weights, optimiser, schedule, EMA, RNG, step,
elapsed time and early-stopping counters.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import torch

from equiforce.atomic import atomic_torch_save, atomic_write_text
from equiforce.errors import writing
from equiforce.models.checkpoint import load_checkpoint, model_payload

METRIC_COLUMNS = (
    "step",
    "epoch",
    "elapsed_s",
    "lr",
    "train_loss",
    "train_loss_energy",
    "train_loss_forces",
    "valid_loss",
    "valid_energy_mae",
    "valid_energy_rmse",
    "valid_energy_per_atom_mae",
    "valid_forces_mae",
    "valid_forces_rmse",
)

#: Columns of the dipole and Hirshfeld losses and errors, added to a new
#: metrics.csv when its first row has any of them (runs training on them).
PROPERTY_COLUMNS = (
    ("train_loss_dipole", "valid_dipole_mae", "valid_dipole_rmse"),
    (
        "train_loss_hirshfeld",
        "valid_hirshfeld_ratios_mae",
        "valid_hirshfeld_ratios_rmse",
    ),
)


class RunDir:
    """Paths and atomic writers of one training run."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.config = self.path / "config.resolved.yaml"
        self.splits = self.path / "splits.json"
        self.statistics = self.path / "statistics.json"
        self.metrics = self.path / "metrics.csv"
        self.tensorboard = self.path / "tb"
        self.best = self.path / "best.pt"
        self.last = self.path / "last.pt"
        self.final_metrics = self.path / "final_metrics.json"

    def write_json(self, path: Path, obj) -> None:
        """Atomic JSON write."""
        atomic_write_text(path, json.dumps(obj, indent=1) + "\n")

    def read_json(self, path: Path):
        """Read a JSON file of this run."""
        return json.loads(path.read_text())

    # --------------------------------------------------------------- metrics
    def truncate_metrics(self, after_step: int) -> None:
        """Drop metric rows logged after ``after_step`` (work lost by a crash)."""
        if not self.metrics.exists():
            return
        reader = csv.DictReader(self.metrics.open())
        rows = list(reader)
        keep = [r for r in rows if int(r["step"]) <= after_step]
        buf = io.StringIO()
        writer = csv.DictWriter(buf, reader.fieldnames or METRIC_COLUMNS)
        writer.writeheader()
        writer.writerows(keep)
        atomic_write_text(self.metrics, buf.getvalue())

    def append_metrics(self, row: dict) -> None:
        """Append one row (creating the file with a header); flushed at once."""
        new = not self.metrics.exists()
        columns = self._columns(row)
        with writing(self.metrics), self.metrics.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, columns, extrasaction="ignore")
            if new:
                writer.writeheader()
            writer.writerow({k: _fmt(row.get(k)) for k in columns})
            fh.flush()

    def _columns(self, row: dict) -> tuple[str, ...]:
        """The existing file's header, or those of a new file whose first row is ``row``."""
        if self.metrics.exists():
            with self.metrics.open() as fh:
                header = fh.readline().strip()
            if header:
                return tuple(header.split(","))
        extra = [c for cols in PROPERTY_COLUMNS if set(cols) & set(row) for c in cols]
        return METRIC_COLUMNS + tuple(extra)

    # ----------------------------------------------------------- checkpoints
    def save_model(
        self,
        path: Path,
        model,
        state_dict: dict,
        statistics: dict,
        train_config: dict,
        extra: dict | None = None,
    ) -> None:
        """Write ``model`` with weights ``state_dict`` (e.g. the EMA) atomically."""
        payload = model_payload(model, statistics, train_config)
        payload["state_dict"] = {
            k: v.detach().cpu().clone() for k, v in state_dict.items()
        }
        payload.update(extra or {})
        atomic_torch_save(payload, path)

    def load_training_state(self) -> dict:
        """The ``training_state`` entry of ``last.pt``."""
        payload = load_checkpoint(self.last)
        if "training_state" not in payload:
            raise ValueError(
                f"{self.last}: no training state (not written by equiforce train)"
            )
        return payload["training_state"]


def _fmt(value) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.8g}"
    return str(value)


def rng_state() -> dict:
    """The torch CPU random state (as a tensor)."""
    return {"torch": torch.get_rng_state()}


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"])
