"""Learning-rate schedules: exponential decay, reduce-on-plateau, warm-up + cosine.

A schedule gives ``lr(step, elapsed)``; the trainer writes it into the optimiser
before every step. Stateless schedules depend on the step only, so resuming
restores them exactly (except a cosine on the time clock, which follows the
training seconds recorded in the run and so differs from run to run); the plateau schedule keeps a small state (best loss, bad count,
current factor) in :meth:`state_dict`.
"""

from __future__ import annotations

import math

from equiforce.config import TrainingConfig


class Schedule:
    """lr(step) = peak · warm-up(step) · shape(step).

    Args:
        cfg: the training section (schedule, lr, decay_*, warmup_steps, min_lr,
            plateau_*).
        total_steps: length of the run in steps (needed by ``cosine`` on the step
            clock).
    """

    def __init__(self, cfg: TrainingConfig, total_steps: int | None = None) -> None:
        self.cfg = cfg
        self.total_steps = total_steps
        if (
            cfg.schedule == "cosine"
            and cfg.schedule_clock == "steps"
            and not total_steps
        ):
            raise ValueError("cosine schedule needs the number of steps")
        self.factor = 1.0  # plateau multiplier
        self.best = math.inf
        self.bad = 0

    def lr(self, step: int, elapsed: float = 0.0) -> float:
        """Learning rate for optimiser step ``step`` (0-based).

        Args:
            step: optimiser step.
            elapsed: training seconds so far (used by the cosine's time clock).
        """
        c = self.cfg
        warm = min(1.0, (step + 1) / c.warmup_steps) if c.warmup_steps else 1.0
        if c.schedule == "exponential":
            shape = c.decay_rate ** (step / c.decay_steps)
        elif c.schedule == "cosine":
            if c.schedule_clock == "time":
                t = min(elapsed / (60.0 * c.max_minutes), 1.0)
            else:
                span = max(self.total_steps - c.warmup_steps, 1)
                t = min(max(step - c.warmup_steps, 0) / span, 1.0)
            floor = c.min_lr / c.lr
            shape = floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * t))
        elif c.schedule == "plateau":
            shape = self.factor
        else:
            shape = 1.0
        return c.lr * warm * shape

    def on_validation(self, loss: float) -> None:
        """Reduce-on-plateau bookkeeping (no-op for other schedules)."""
        if self.cfg.schedule != "plateau":
            return
        if loss < self.best * (1 - 1e-4):
            self.best, self.bad = loss, 0
            return
        self.bad += 1
        if self.bad > self.cfg.plateau_patience:
            floor = self.cfg.min_lr / self.cfg.lr
            self.factor = max(self.factor * self.cfg.plateau_factor, floor)
            self.bad = 0

    def state_dict(self) -> dict:
        """Mutable state (plateau only)."""
        return {"factor": self.factor, "best": self.best, "bad": self.bad}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.factor = float(state["factor"])
        self.best = float(state["best"])
        self.bad = int(state["bad"])
