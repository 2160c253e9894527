"""The MD engine's uncertainty monitor: record an ensemble's spread, stop or flag.

With an ensemble model (:mod:`equiforce.uncertainty`: a committee or a
multi-head model) every force call also gives ``energy_std`` and per-atom
``forces_std``. At every output frame :class:`UncertaintyMonitor` appends one
row per system to ``uncertainty.csv`` (step, time, energy std, largest and mean
per-atom force std) and compares the largest per-atom force std with
``uncertainty.max_force_std``; above it, ``action: stop`` ends the run cleanly
at that frame (trajectory, thermo and checkpoint written up to it; the reason in
``result.json``'s ``stop_reason``) and ``action: flag`` records the frame in
``result.json``'s ``uncertainty_events`` and carries on. A long flagged run keeps
the first :data:`MAX_EVENTS` there and counts them all
(``uncertainty_events_total``); ``uncertainty.csv`` has every frame.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from equiforce import keys
from equiforce.md.observers import ThermoWriter

UNCERTAINTY_FILE = "uncertainty.csv"
#: flagged frames kept in result.json and the checkpoint (the rest are counted)
MAX_EVENTS = 1000
COLUMNS = (
    "step",
    "time_fs",
    "system",
    "energy_std_eV",
    "max_force_std_eV_A",
    "mean_force_std_eV_A",
)


class UncertaintyConfig(BaseModel):
    """What the MD engine does with an ensemble's uncertainty (``md.uncertainty``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_force_std: float | None = Field(
        None,
        gt=0,
        description="threshold on the largest per-atom force std of a system, eV/Å "
        "(checked at every output frame; needs an ensemble model); None: no check",
    )
    action: Literal["stop", "flag"] = Field(
        "stop", description="above the threshold: stop the run, or flag the frame"
    )
    record: bool | None = Field(
        None,
        description="write uncertainty.csv; None: whenever the model is an ensemble "
        "(a multi-head model is evaluated as one only when recording or checking)",
    )

    @property
    def wanted(self) -> bool:
        """Whether the run asks for uncertainties (a threshold or ``record``)."""
        return self.max_force_std is not None or bool(self.record)


@dataclass
class UncertaintyEvent:
    """A frame whose largest per-atom force std passed the threshold."""

    system: int
    step: int
    time_fs: float
    max_force_std: float
    atom: int


class UncertaintyMonitor:
    """Record and check the spread of an ensemble at output frames.

    Args:
        config: the run's ``uncertainty`` section.
        out_dir: folder of ``uncertainty.csv`` (None: no file).
    """

    def __init__(self, config: UncertaintyConfig, out_dir: Path | None) -> None:
        self.config = config
        self.events: list[UncertaintyEvent] = []
        #: all frames × systems over the threshold, including those not kept
        self.n_events = 0
        self.stop_reason: str | None = None
        self.out_dir = out_dir
        self._writer: ThermoWriter | None = None

    def restore(self, events: list[dict], total: int | None = None) -> None:
        """Flagged frames of the segments before a resume (from the checkpoint)."""
        self.events = [UncertaintyEvent(**e) for e in events]
        self.n_events = len(self.events) if total is None else int(total)

    def at_frame(self, force_fn, state, time_fs: float) -> bool:
        """Check the last force call of ``force_fn`` (if it gave a spread) at a frame.

        Returns:
            True when the run must stop.
        """
        out = getattr(force_fn, "last_outputs", None)
        if out is None or keys.FORCES_STD not in out:
            return False
        if self._writer is None and self.out_dir is not None:
            if self.config.record is not False:
                self._writer = ThermoWriter(self.out_dir / UNCERTAINTY_FILE, COLUMNS)
        idx = state.system_idx.cpu().numpy()
        return self.check(out, idx, state.step, time_fs)

    def check(
        self, outputs: dict, graph_index: np.ndarray, step: int, time_fs: float
    ) -> bool:
        """Record the frame; True when the run must stop.

        Args:
            outputs: the force call's outputs at this frame (``energy_std``,
                ``forces_std`` (n_atoms,), ``forces_std_max`` (n_systems,)).
            graph_index: (n_atoms,) system of each atom.
            step: MD step.
            time_fs: simulated time, fs.
        """
        f_std = outputs[keys.FORCES_STD].detach().cpu().double().numpy()  # (n_atoms,)
        worst = outputs[keys.FORCES_STD_MAX].detach().cpu().double().numpy()
        e_std = outputs.get(keys.ENERGY_STD)  # none from a latent uncertainty
        e_std = np.full(len(worst), np.nan) if e_std is None else _np(e_std)
        mean = np.bincount(graph_index, f_std) / np.bincount(graph_index)
        if self._writer is not None:
            values = {
                "energy_std_eV": e_std,
                "max_force_std_eV_A": worst,
                "mean_force_std_eV_A": mean,
                "potential_eV": e_std,  # the writer's row count
            }
            self._writer.write(step, time_fs, values)
        limit = self.config.max_force_std
        if limit is None:
            return False
        over = [s for s in range(len(worst)) if not worst[s] <= limit]  # NaN: over
        for s in over:
            atoms = np.flatnonzero(graph_index == s)
            atom = int(atoms[np.nanargmax(f_std[atoms])]) if atoms.size else -1
            event = UncertaintyEvent(s, step, time_fs, float(worst[s]), atom)
            self.n_events += 1
            if len(self.events) < MAX_EVENTS:
                self.events.append(event)
            if s == over[0]:
                first = event
        if over and self.config.action == "stop":
            e = first
            self.stop_reason = (
                f"uncertainty: max force std {e.max_force_std:.3g} eV/Å (atom "
                f"{e.atom}) above max_force_std={limit:g} eV/Å in system {e.system} "
                f"at step {step} ({time_fs / 1000:.4g} ps)"
            )
            return True
        return False

    def close(self) -> None:
        """Close ``uncertainty.csv``."""
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy()


def require_ensemble(model, config: UncertaintyConfig) -> None:
    """Refuse a threshold or a record for a model without an uncertainty.

    Raises:
        EnsembleError: ``max_force_std`` is set, or ``record`` is true, and
            ``model`` has no uncertainty (a plain model would record nothing).
    """
    from equiforce.uncertainty import EnsembleError, has_uncertainty

    wanted = [
        name
        for name, on in (
            ("uncertainty.max_force_std (--max-force-std)", config.max_force_std),
            ("uncertainty.record: true", config.record),
        )
        if on is not None and on is not False
    ]
    if wanted and not has_uncertainty(model):
        raise EnsembleError(
            f"{' and '.join(wanted)} needs an ensemble model or a latent uncertainty: "
            "a committee directory (equiforce train --committee K), several model "
            "files, a model trained with readout_heads ≥ 2, or a run directory with "
            "a latent.pt (equiforce uncertainty fit RUN_DIR)"
        )


def uncertainty_overrides(args) -> dict:
    """``load_md_config`` overrides from the flags (nothing when none is given)."""
    limit = getattr(args, "max_force_std", None)
    action = getattr(args, "uncertainty_action", None)
    if limit is None and action is None:
        return {}
    section = {"max_force_std": limit, "action": action}
    return {"uncertainty": {k: v for k, v in section.items() if v is not None}}


def load_md_model(path: Path, config, dtype):
    """The model of an MD run; an ensemble where the files make one.

    A committee directory, comma-separated files or a multi-head model become an
    ensemble (a multi-head model only when the run records or checks the
    uncertainty: otherwise its mean alone costs less).
    """
    from equiforce.uncertainty import HeadEnsemble, load_ensemble

    model = load_ensemble(path, device=config.device, dtype=dtype)
    if isinstance(model, HeadEnsemble) and not config.uncertainty.wanted:
        return model.model
    return model
