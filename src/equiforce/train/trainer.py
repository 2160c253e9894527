"""The training loop: a plain PyTorch loop with exact resume.

:class:`Trainer` owns the steps, validation, checkpoints and stop rules of one
run; how a run is started (a new run directory, one process, several, under
``torchrun``, resumed) is :mod:`equiforce.train.launch`, whose
``train(config, run_dir)`` and ``resume(run_dir)`` are the entry points.

Data order is a pure function of (seed, epoch): epoch e shuffles the training
split with ``numpy.random.default_rng([seed, e])``, and step s takes batch
``s mod steps_per_epoch`` of epoch ``s // steps_per_epoch``. With the optimiser,
schedule, EMA and RNG state in ``last.pt`` this makes a resumed run follow the
uninterrupted one step for step.
"""

from __future__ import annotations

import math
import time
from pathlib import Path

import numpy as np
import torch

from equiforce.config import EquiforceConfig
from equiforce.errors import EquiforceError
from equiforce.models.checkpoint import load_checkpoint
from equiforce.train import distributed
from equiforce.train.compiled_step import CompiledTrainStep, assign_gradients
from equiforce.train.distributed import Group
from equiforce.train.ema import EMA
from equiforce.train.loss import WeightedLoss
from equiforce.train.metrics import predict
from equiforce.train.optimizer import make_optimizer, upgrade_optimizer_state
from equiforce.train.progress import Reporter, metrics_table
from equiforce.train.rundir import RunDir, rng_state, set_rng_state
from equiforce.train.schedules import Schedule
from equiforce.train.setup import PreparedData, eval_batches


class DivergedError(EquiforceError):
    """The loss stayed non-finite for ``training.nonfinite_patience`` steps."""


class Trainer:
    """One training run over prepared data (see module docstring).

    Args:
        config: resolved config.
        run: the run directory.
        data: datasets, splits and statistics.
        model: freshly built model (weights replaced on resume).
        report: progress output.
        group: this process's place when several processes train together
            (:mod:`equiforce.train.distributed`); None: training alone.
    """

    def __init__(
        self,
        config: EquiforceConfig,
        run: RunDir,
        data: PreparedData,
        model: torch.nn.Module,
        report: Reporter,
        group: Group | None = None,
    ) -> None:
        t = self.cfg = config.training
        self.config, self.run, self.data, self.report = config, run, data, report
        self.group = group
        self.device = group.device if group is not None else torch.device(t.device)
        self.model = model.to(self.device)
        self.loss_fn = WeightedLoss(
            t.energy_weight, t.forces_weight, t.stress_weight, t.energy_per_atom,
            t.dipole_weight, t.hirshfeld_weight,
        )  # fmt: skip
        self.optimizer = make_optimizer(self.model, t)
        self.compiled_step = (
            CompiledTrainStep(self.model, self.loss_fn, log=report.print)
            if t.compile
            else None
        )
        self.steps_per_epoch = math.ceil(len(data.train) / t.batch_size)
        limits = [t.max_steps, t.max_epochs and t.max_epochs * self.steps_per_epoch]
        self.total_steps = min((x for x in limits if x), default=None)
        self.schedule = Schedule(t, self.total_steps)
        self.ema = EMA(self.model, t.ema_decay) if t.ema_decay is not None else None
        self.step, self.elapsed = 0, 0.0
        self.best_loss, self.best_step, self.bad_validations = math.inf, -1, 0
        self.nonfinite_steps, self.first_nonfinite = 0, None
        self.last_valid_step = -1
        self._stop_requested = False
        self._perm: tuple[int, np.ndarray] | None = None  # (epoch, its permutation)

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict:
        """Everything needed to continue exactly (goes into last.pt)."""
        return {
            "step": self.step,
            "elapsed": self.elapsed,
            "best_loss": self.best_loss,
            "best_step": self.best_step,
            "bad_validations": self.bad_validations,
            "last_valid_step": self.last_valid_step,
            "model": {
                k: v.detach().cpu().clone() for k, v in self.model.state_dict().items()
            },
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "ema": self.ema.state_dict() if self.ema else None,
            "rng": rng_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict`."""
        self.step, self.elapsed = int(state["step"]), float(state["elapsed"])
        self.best_loss, self.best_step = (
            float(state["best_loss"]),
            int(state["best_step"]),
        )
        self.bad_validations = int(state["bad_validations"])
        self.last_valid_step = int(state["last_valid_step"])
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(
            upgrade_optimizer_state(state["optimizer"], self.model, self.optimizer)
        )
        self.schedule.load_state_dict(state["schedule"])
        if self.ema and state["ema"] is not None:
            self.ema.load_state_dict(state["ema"])
        set_rng_state(state["rng"])

    def averaged_weights(self) -> dict[str, torch.Tensor]:
        """EMA weights (or the raw weights when EMA is off)."""
        return self.ema.shadow if self.ema else self.model.state_dict()

    # -------------------------------------------------------------- pieces
    def batch_indices(self, step: int) -> np.ndarray:
        """Training-split indices of the batch of ``step`` (pure function of step)."""
        epoch, pos = divmod(step, self.steps_per_epoch)
        if self._perm is None or self._perm[0] != epoch:
            rng = np.random.default_rng([self.cfg.seed, epoch])
            self._perm = (epoch, rng.permutation(len(self.data.train)))
        perm = self._perm[1]
        bs = self.cfg.batch_size
        return perm[pos * bs : (pos + 1) * bs]

    def _gradients(self, indices: np.ndarray) -> dict[str, float]:
        """Set ``p.grad`` to the loss gradient of the batch ``indices``; loss parts."""
        batch = self.data.train.batch(indices).to(self.device)
        if self.compiled_step is not None:
            parts, grads = self.compiled_step(batch)
            assign_gradients(self.model, grads)
        else:
            extra = {"properties": True} if self.loss_fn.needs_properties else {}
            out = self.model(
                batch,
                compute_forces=True,
                compute_stress=self.loss_fn.needs_stress,
                create_graph=True,
                **extra,  # dipoles, Hirshfeld ratios (SO3LR)
            )
            loss, parts = self.loss_fn(out, batch)
            loss.backward()
        for p in self.model.parameters():
            if p.grad is not None:  # NaN gradients are zeroed (spec §5.1)
                torch.nan_to_num_(p.grad, nan=0.0, posinf=0.0, neginf=0.0)
        return parts

    def train_step(self, lr: float | None = None) -> tuple[dict[str, float], int]:
        """One optimiser step; returns the loss parts and the batch size.

        Args:
            lr: learning rate of this step; default: the schedule's (several
                processes pass process 0's, see :meth:`run_loop`).
        """
        indices = self.batch_indices(self.step)
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        if self.group is None:
            parts = self._gradients(indices)
        else:
            mine = self.group.shard(indices)  # may be empty in a short last batch
            got = self._gradients(mine) if len(mine) else {}
            # the same names on every process (one all-reduce carries them)
            parts = {k: got.get(k, 0.0) for k in self.loss_fn.part_names}
            params = list(self.model.parameters())
            parts = self.group.sum_gradients(params, len(mine) / len(indices), parts)
        if lr is None:
            lr = self.schedule.lr(self.step, self.elapsed)
        # a non-finite loss (the same on every process: parts are summed) leaves
        # the weights, the optimiser moments and the EMA as they were
        finite = math.isfinite(parts.get("loss", 0.0))
        self.nonfinite_steps = 0 if finite else self.nonfinite_steps + 1
        if not finite and self.first_nonfinite is None:
            self.first_nonfinite = self.step
        if finite:
            self.first_nonfinite = None
            if self.cfg.clip_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(
                    self.model.parameters(), self.cfg.clip_grad_norm
                )
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            self.optimizer.step()
            if self.ema:
                self.ema.update(self.model)
        self.step += 1
        parts["lr"] = lr
        return parts, len(indices)

    def evaluate_valid(self, weights: dict | None = None) -> dict:
        """Validation metrics (meV, meV/Å) and loss, with ``weights`` (default: EMA)."""
        saved = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
        self.model.load_state_dict(
            weights if weights is not None else self.averaged_weights()
        )
        self.model.eval()
        try:
            batches = eval_batches(self.data.valid, self.cfg.valid_batch_size)()
            acc = predict(self.model, batches, device=self.cfg.device)
        finally:
            self.model.load_state_dict(saved)
        metrics = acc.metrics()
        metrics["loss"] = acc.loss(self.loss_fn)
        return metrics

    def validate(self) -> dict:
        """Validate, update best.pt, the schedule and early stopping."""
        metrics = self.evaluate_valid()
        self.last_valid_step = self.step
        self.schedule.on_validation(metrics["loss"])
        loss = metrics["loss"]
        # early stopping counts validations without a relative improvement of 1e-4
        significant = loss < self.best_loss * (1 - 1e-4)
        self.bad_validations = 0 if significant else self.bad_validations + 1
        if loss < self.best_loss:
            self.best_loss, self.best_step = loss, self.step
            extra = {"best_step": self.step, "valid_metrics": _plain(metrics)}
            self.save(self.run.best, extra)
        return metrics

    def save(self, path: Path, extra: dict) -> None:
        """Write a checkpoint with the averaged weights."""
        self.run.save_model(
            path,
            self.model,
            self.averaged_weights(),
            self.data.statistics,
            self.config.model_dump(mode="json"),
            extra,
        )

    def save_last(self) -> None:
        """Write last.pt with the full training state."""
        self.save(
            self.run.last, {"training_state": self.state_dict(), "step": self.step}
        )

    # ---------------------------------------------------------------- loop
    def should_stop(self) -> str | None:
        """Why training stops now, or None."""
        c = self.cfg
        if self._stop_requested:
            return distributed.INTERRUPTED
        if self.total_steps is not None and self.step >= self.total_steps:
            return distributed.MAX_STEPS
        if c.max_minutes is not None and self.elapsed >= 60 * c.max_minutes:
            return distributed.MAX_MINUTES
        if (
            c.early_stopping_patience
            and self.bad_validations >= c.early_stopping_patience
        ):
            return distributed.EARLY_STOPPING
        if self.nonfinite_steps >= c.nonfinite_patience:
            return distributed.DIVERGED
        return None

    def eta(self, seconds_per_step: float) -> float | None:
        """Seconds left under the step and time limits."""
        out = []
        if self.total_steps is not None:
            out.append((self.total_steps - self.step) * seconds_per_step)
        if self.cfg.max_minutes is not None:
            out.append(60 * self.cfg.max_minutes - self.elapsed)
        return min(out) if out else None

    def run_loop(self) -> str:
        """Train until a stop condition; returns the reason."""
        c = self.cfg
        ckpt_every = c.checkpoint_interval or c.valid_interval
        log_sum: dict[str, float] = {}
        n_logged, val_mae, reason = 0, None, None
        if (
            self.compiled_step is not None
            and self.compiled_step.compile_seconds is None
        ):
            self.report.print(
                "training.compile: the first step compiles the training step "
                "(about 1-2 minutes on a CPU); its time counts in the budget"
            )
        with self.report.training(self.total_steps, self.step) as bar:
            while (decision := self._next_step())[0] is None:
                t0 = time.perf_counter()
                parts, n_struct = self.train_step(decision[1])
                for k, v in parts.items():
                    log_sum[k] = log_sum.get(k, 0.0) + v
                n_logged += 1
                row = None
                if self.step % c.log_interval == 0:
                    row = {f"train_{k}": v / n_logged for k, v in log_sum.items()}
                    row["lr"] = parts["lr"]
                    log_sum, n_logged = {}, 0
                if self.step % c.valid_interval == 0 and self.main:
                    m = self.validate()
                    val_mae = m.get("forces_mae")
                    row = (row or {"lr": parts["lr"]}) | _valid_row(m)
                self.elapsed += time.perf_counter() - t0
                if not self.main:
                    continue
                if row is not None:
                    self.log(row)
                if self.step % ckpt_every == 0:
                    self.save_last()
                sps = self.elapsed / max(self.step, 1)
                bar.update(self.step, parts["loss"], n_struct, self.eta(sps), val_mae)
        reason = decision[0]
        if not self.main or reason == distributed.DIVERGED:
            return reason  # last.pt and best.pt keep their last good weights
        if self.last_valid_step != self.step:
            self.log(
                {"lr": self.schedule.lr(max(self.step - 1, 0), self.elapsed)}
                | _valid_row(self.validate())
            )
        self.save_last()
        return reason

    def request_stop(self) -> None:
        """Stop after the current step (e.g. on Ctrl-C); the state stays consistent."""
        self._stop_requested = True

    @property
    def stop_requested(self) -> bool:
        """Whether :meth:`request_stop` was called."""
        return self._stop_requested

    def fit(self, start: dict | None = None) -> Path:
        """Train to a stop rule, then report best.pt's validation errors.

        Args:
            start: a :meth:`state_dict` to continue from (resume); None: fresh.

        Returns:
            Path of best.pt (the same on every process of a group).
        """
        from torch.utils.tensorboard import SummaryWriter

        run = self.run
        if start is not None:
            self.load_state_dict(start)
        if self.group is not None:
            self.group.broadcast_module(self.model)
        if not self.main:
            self.run_loop()
            return run.best
        if start is not None:
            run.truncate_metrics(self.step)
            self.report.print(f"resuming {run.path} at step {self.step}")
        self.writer = SummaryWriter(str(run.tensorboard), purge_step=self.step or None)
        try:
            reason = self.run_loop()
        finally:
            self.writer.close()
        if reason == distributed.DIVERGED:
            run.write_json(run.final_metrics, {"stop": reason, "final_step": self.step})
            raise DivergedError(self.diverged_message())
        best = load_checkpoint(run.best)
        final = self.evaluate_valid(best["state_dict"])
        final |= {
            "best_step": int(best["best_step"]),
            "final_step": self.step,
            "stop": reason,
        }
        run.write_json(run.final_metrics, _plain(final) | {"stop": reason})
        self.report.print(
            f"stopped at step {self.step}: {reason}; best.pt from step "
            f"{final['best_step']}"
        )
        self.report.print(
            metrics_table(final, f"validation errors of best.pt ({run.best})")
        )
        return run.best

    def diverged_message(self) -> str:
        """What happened, what was kept and what to change."""
        c, run = self.cfg, self.run
        kept = (
            f"best.pt (step {self.best_step}) and last.pt keep the last good weights"
            if run.best.exists()
            else "no checkpoint had been written yet"
        )
        lr = self.schedule.lr(max(self.step - 1, 0), self.elapsed)
        return (
            f"{run.path}: training.lr: the loss was non-finite for "
            f"{self.nonfinite_steps} consecutive steps from step "
            f"{self.first_nonfinite} (learning rate {lr:.3g}); {kept}. Lower "
            f"training.lr (now {c.lr:g}), add training.warmup_steps or "
            "training.clip_grad_norm, then "
            + (
                f"continue with equiforce train --resume {run.path} "
                "--set training.lr=..."
                if run.last.exists()
                else f"start again in a new --run-dir (or delete {run.path})"
            )
        )

    @property
    def main(self) -> bool:
        """Whether this process validates, logs and writes (always, when alone)."""
        return self.group is None or self.group.main

    def _next_step(self) -> tuple[str | None, float]:
        """(why training stops now or None, learning rate of the next step).

        With several processes both are process 0's, and so is the training clock.
        """
        reason = self.should_stop()
        lr = self.schedule.lr(self.step, self.elapsed) if reason is None else 0.0
        if self.group is not None:
            reason, self.elapsed, lr = self.group.follow(reason, self.elapsed, lr)
        return reason, lr

    def log(self, row: dict) -> None:
        """A metrics.csv row and TensorBoard scalars."""
        row = row | {
            "step": self.step,
            "epoch": self.step / self.steps_per_epoch,
            "elapsed_s": round(self.elapsed, 3),
        }
        self.run.append_metrics(row)
        if self.writer is not None:
            for k, v in row.items():
                if k not in ("step",) and v is not None:
                    self.writer.add_scalar(k, v, self.step)

    writer = None


def _valid_row(m: dict) -> dict:
    return {f"valid_{k}": v for k, v in m.items() if isinstance(v, float)}


def _plain(m: dict) -> dict:
    return {k: v for k, v in m.items() if isinstance(v, int | float | dict)}
