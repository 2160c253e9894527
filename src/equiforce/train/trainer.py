"""The training loop: a plain PyTorch loop with exact resume.

Public entry points::

    train(config, run_dir) -> Path            # best.pt of a fresh run
    resume(run_dir, overrides=()) -> Path     # continue a run exactly

Data order is a pure function of (seed, epoch): epoch e shuffles the training
split with ``numpy.random.default_rng([seed, e])``, and step s takes batch
``s mod steps_per_epoch`` of epoch ``s // steps_per_epoch``. With the optimiser,
schedule, EMA and RNG state in ``last.pt`` this makes a resumed run follow the
uninterrupted one step for step.
"""

from __future__ import annotations

import contextlib
import math
import signal
import threading
import time
from pathlib import Path

import numpy as np
import torch
import yaml

from equiforce.atomic import atomic_write_text
from equiforce.config import EquiforceConfig, apply_override, validate_config
from equiforce.models.checkpoint import load_checkpoint
from equiforce.train import distributed
from equiforce.train.compiled_step import CompiledTrainStep, assign_gradients
from equiforce.train.distributed import Group
from equiforce.train.ema import EMA
from equiforce.train.loss import WeightedLoss
from equiforce.train.metrics import predict
from equiforce.train.progress import Reporter, metrics_table
from equiforce.train.rundir import RunDir, rng_state, set_rng_state
from equiforce.train.schedules import Schedule
from equiforce.train.setup import (
    PreparedData,
    build_training_model,
    eval_batches,
    prepare_data,
)


class RunDirError(ValueError):
    """The run directory cannot be used (exists already, or is not a run)."""


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.Optimizer:
    """Adam, AdamW or AMSGrad from the training section.

    The fused implementation (one kernel over all parameters) where torch has one
    for the device, else the multi-tensor one; torch's default on a CPU is a loop
    over the parameters, several times slower for So3krates' 51 weight tensors.
    Gradients must have their parameter's strides (see
    :func:`equiforce.train.compiled_step.assign_gradients`).
    """
    params = [p for p in model.parameters() if p.requires_grad]
    cls = torch.optim.AdamW if cfg.optimizer == "adamw" else torch.optim.Adam
    kwargs = {"lr": cfg.lr, "weight_decay": cfg.weight_decay}
    if cfg.optimizer == "amsgrad":
        kwargs["amsgrad"] = True
    try:
        return cls(params, fused=True, **kwargs)
    except (RuntimeError, ValueError):  # no fused kernel for this device/dtype
        return cls(params, foreach=True, **kwargs)


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
        model,
        report: Reporter,
        group: Group | None = None,
    ) -> None:
        t = self.cfg = config.training
        self.config, self.run, self.data, self.report = config, run, data, report
        self.group = group
        self.device = group.device if group is not None else torch.device(t.device)
        self.model = model.to(self.device)
        self.loss_fn = WeightedLoss(
            t.energy_weight, t.forces_weight, t.stress_weight, t.energy_per_atom
        )
        self.optimizer = make_optimizer(self.model, t)
        self.compiled_step = (
            CompiledTrainStep(self.model, self.loss_fn) if t.compile else None
        )
        self.steps_per_epoch = math.ceil(len(data.train) / t.batch_size)
        limits = [t.max_steps, t.max_epochs and t.max_epochs * self.steps_per_epoch]
        self.total_steps = min((x for x in limits if x), default=None)
        self.schedule = Schedule(t, self.total_steps)
        self.ema = EMA(self.model, t.ema_decay) if t.ema_decay is not None else None
        self.step, self.elapsed = 0, 0.0
        self.best_loss, self.best_step, self.bad_validations = math.inf, -1, 0
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
        self.optimizer.load_state_dict(state["optimizer"])
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
            out = self.model(
                batch,
                compute_forces=True,
                compute_stress=self.loss_fn.needs_stress,
                create_graph=True,
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
        if self.cfg.clip_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(
                self.model.parameters(), self.cfg.clip_grad_norm
            )
        if lr is None:
            lr = self.schedule.lr(self.step, self.elapsed)
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
        with (
            self.report.training(self.total_steps, self.step) as bar,
            _sigint_flag(self),
        ):
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
        if not self.main:
            return reason
        if self.last_valid_step != self.step:
            self.log(
                {"lr": self.schedule.lr(max(self.step - 1, 0), self.elapsed)}
                | _valid_row(self.validate())
            )
        self.save_last()
        return reason

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


@contextlib.contextmanager
def _sigint_flag(trainer: Trainer):
    """Turn Ctrl-C into a stop request between steps (the state stays consistent)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer._stop_requested:  # second Ctrl-C: stop hard
            raise KeyboardInterrupt
        trainer._stop_requested = True

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ------------------------------------------------------------------ entry
def train(config: EquiforceConfig, run_dir: str | Path, progress: bool = True) -> Path:
    """Train a model from a validated config into a new run directory.

    With ``training.processes > 1`` this process writes the run directory (config,
    splits, statistics) and then spawns the training processes
    (:mod:`equiforce.train.distributed`), which read it back as :func:`resume` does.

    Args:
        config: from :func:`equiforce.config.load_config`.
        run_dir: output folder; must not hold a previous run (use :func:`resume`).
        progress: show progress bars and the final table.

    Returns:
        Path of ``best.pt`` (EMA weights with the lowest validation loss).

    Raises:
        RunDirError: ``run_dir`` already holds a run.
    """
    from equiforce.runtime import tune_allocator

    tune_allocator()
    run = RunDir(run_dir)
    if distributed.launched_world() > 1:
        return _train_launched(config, run, progress)
    report = Reporter(progress)
    _set_threads(config, group=None)
    config, data, model = _new_run(config, run, report)
    if config.training.processes > 1:
        return _spawn(run, config, (), fresh=True, progress=progress)
    return _execute(Trainer(config, run, data, model, report), start=None)


def _new_run(config: EquiforceConfig, run: RunDir, report: Reporter):
    """Prepare data and model; write config, splits and statistics into ``run``.

    Returns:
        (the config with the model fields the data filled in, data, model).
    """
    if run.last.exists() or run.config.exists():
        raise RunDirError(
            f"{run.path}: holds a run already; resume it with --resume or "
            "choose another --run-dir"
        )
    data = prepare_data(config, config.model.resolved.cutoff, report)
    model, config = build_training_model(config, data.statistics)
    run.path.mkdir(parents=True, exist_ok=True)
    atomic_write_text(run.config, config.to_yaml())
    run.write_json(run.splits, data.splits)
    run.write_json(run.statistics, data.statistics)
    return config, data, model


def _train_launched(config: EquiforceConfig, run: RunDir, progress: bool) -> Path:
    """:func:`train` in one of the processes a launcher (``torchrun``) started."""
    t = config.training
    group = distributed.join_launched(torch.device(t.device).type, t.processes)
    try:
        error = None
        if group.main:  # process 0 writes the run directory, the others wait
            try:
                _new_run(config, run, Reporter(progress))
            except Exception as err:  # noqa: BLE001 - re-raised below, after telling
                error = err
        if not distributed.agree(error is None, group):
            if error is not None:
                raise error
            raise RunDirError(f"{run.path}: process 0 could not set up the run")
        return _launched_run(run, (), None, progress, group)
    finally:
        distributed.leave()


def _launched_run(
    run: RunDir, overrides, start: dict | None, progress: bool, group: Group
) -> Path:
    """Train from ``run`` (fresh when ``start`` is None) as one of ``group``."""
    config = _run_config(run, overrides)
    report = Reporter(progress and group.main)
    best = _execute(_trainer_from_run(run, config, report, group), start=start)
    torch.distributed.barrier()  # every command returns once process 0 has written
    return best


def resume(
    run_dir: str | Path,
    overrides: list[str] | tuple[str, ...] = (),
    progress: bool = True,
) -> Path:
    """Continue the run in ``run_dir`` exactly where its last.pt stopped.

    Args:
        run_dir: a run directory written by :func:`train`.
        overrides: ``section.key=value`` changes (e.g. a larger ``training.max_steps``).
        progress: show progress.
    """
    run = RunDir(run_dir)
    if not run.config.exists() or not run.last.exists():
        raise RunDirError(
            f"{run.path}: not a resumable run (needs config.resolved.yaml and last.pt)"
        )
    config = _run_config(run, overrides)
    if distributed.launched_world() > 1:
        t = config.training
        group = distributed.join_launched(torch.device(t.device).type, t.processes)
        try:
            state = run.load_training_state()
            return _launched_run(run, overrides, state, progress, group)
        finally:
            distributed.leave()
    if config.training.processes > 1:
        return _spawn(run, config, tuple(overrides), fresh=False, progress=progress)
    trainer = _trainer_from_run(run, config, Reporter(progress), group=None)
    return _execute(trainer, start=run.load_training_state())


def _run_config(run: RunDir, overrides) -> EquiforceConfig:
    """The run's resolved config with ``overrides`` applied (validated)."""
    raw = yaml.safe_load(run.config.read_text())
    for item in overrides:
        apply_override(raw, item)
    return validate_config(raw, run.path, source=str(run.config))


def _set_threads(config: EquiforceConfig, group: Group | None) -> None:
    threads = config.training.threads
    if group is not None:
        threads = distributed.threads_per_process(threads, group.world)
    if threads:
        torch.set_num_threads(threads)


def _trainer_from_run(
    run: RunDir, config: EquiforceConfig, report: Reporter, group: Group | None
) -> Trainer:
    """A trainer over the data, splits and statistics recorded in ``run``."""
    _set_threads(config, group)
    stats = run.read_json(run.statistics)
    splits = run.read_json(run.splits)
    data = prepare_data(config, config.model.resolved.cutoff, report, splits, stats)
    model, config = build_training_model(config, stats)
    return Trainer(config, run, data, model, report, group)


def _spawn(
    run: RunDir, config: EquiforceConfig, overrides: tuple, fresh: bool, progress: bool
) -> Path:
    """Train in ``training.processes`` spawned processes; best.pt's path."""
    t = config.training
    device_type = torch.device(t.device).type
    distributed.spawn(
        t.processes,
        _worker,
        (str(run.path), overrides, fresh, progress, device_type),
        device_type,
    )
    return run.best


def _worker(
    rank: int,
    world: int,
    port: int,
    run_dir: str,
    overrides: tuple,
    fresh: bool,
    progress: bool,
    device_type: str,
) -> None:
    """One spawned training process (see :func:`_spawn`)."""
    from equiforce.runtime import tune_allocator

    tune_allocator()
    group = distributed.join(rank, world, port, device_type)
    try:
        run = RunDir(run_dir)
        start = None if fresh else run.load_training_state()
        _launched_run(run, overrides, start, progress, group)
    finally:
        distributed.leave()


def _execute(trainer: Trainer, start: dict | None) -> Path:
    from torch.utils.tensorboard import SummaryWriter

    run = trainer.run
    if start is not None:
        trainer.load_state_dict(start)
    if trainer.group is not None:
        trainer.group.broadcast_module(trainer.model)
    if not trainer.main:
        trainer.run_loop()
        return run.best
    if start is not None:
        run.truncate_metrics(trainer.step)
        trainer.report.print(f"resuming {run.path} at step {trainer.step}")
    trainer.writer = SummaryWriter(
        str(run.tensorboard), purge_step=trainer.step or None
    )
    try:
        reason = trainer.run_loop()
    finally:
        trainer.writer.close()
    best = load_checkpoint(run.best)
    final = trainer.evaluate_valid(best["state_dict"])
    final |= {
        "best_step": int(best["best_step"]),
        "final_step": trainer.step,
        "stop": reason,
    }
    run.write_json(run.final_metrics, _plain(final) | {"stop": reason})
    trainer.report.print(
        f"stopped at step {trainer.step}: {reason}; best.pt from step "
        f"{final['best_step']}"
    )
    trainer.report.print(
        metrics_table(final, f"validation errors of best.pt ({run.best})")
    )
    return run.best
