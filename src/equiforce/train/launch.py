"""Starting a training run: a new run directory, resume, one or several processes.

Public entry points::

    train(config, run_dir) -> Path            # best.pt of a fresh run
    resume(run_dir, overrides=()) -> Path     # continue a run exactly

Both train in this process, in ``training.processes`` processes they spawn, or,
under ``torchrun`` (any launcher setting ``RANK``/``WORLD_SIZE``), as one of the
launched processes (:mod:`equiforce.train.distributed`). Every process builds
its :class:`~equiforce.train.trainer.Trainer` from what the run directory
records (config, splits, statistics), so a fresh run and a resumed one start the
same way. Ctrl-C becomes a stop request between two steps.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import torch
import yaml

from equiforce.atomic import atomic_write_text
from equiforce.config import EquiforceConfig, apply_override, validate_config
from equiforce.errors import EquiforceError
from equiforce.models.checkpoint import load_checkpoint, save_model
from equiforce.train import distributed, finetune
from equiforce.train.distributed import Group
from equiforce.train.progress import Reporter
from equiforce.train.rundir import RunDir
from equiforce.train.setup import build_training_model, prepare_data
from equiforce.train.trainer import Trainer


class RunDirError(EquiforceError):
    """The run directory cannot be used (exists already, or is not a run)."""


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
    from equiforce.accel.denormals import flush_denormals
    from equiforce.accel.runtime import tune_allocator

    tune_allocator()
    flush_denormals()
    run = RunDir(run_dir)
    if distributed.launched_world() > 1:
        return _train_launched(config, run, progress)
    report = Reporter(progress)
    _set_threads(config, group=None)
    config, data, model = _new_run(config, run, report)
    if config.training.processes > 1:
        return _spawn(run, config, (), fresh=True, progress=progress)
    model = finetune.freeze(model, config.model.freeze, report)
    return _fit(Trainer(config, run, data, model, report), start=None)


def resume(
    run_dir: str | Path,
    overrides: Sequence[str] = (),
    progress: bool = True,
) -> Path:
    """Continue the run in ``run_dir`` exactly where its last.pt stopped.

    Args:
        run_dir: a run directory written by :func:`train`.
        overrides: ``section.key=value`` changes (e.g. a larger ``training.max_steps``).
        progress: show progress.

    Returns:
        Path of ``best.pt``.

    Raises:
        RunDirError: ``run_dir`` is not a resumable run.
    """
    from equiforce.accel.denormals import flush_denormals

    flush_denormals()
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
    return _fit(trainer, start=run.load_training_state())


# ------------------------------------------------------------- run directory
def _new_run(config: EquiforceConfig, run: RunDir, report: Reporter):
    """Prepare data and model; write config, splits and statistics into ``run``.

    Returns:
        (the config with the model fields the data filled in, data, model).

    Raises:
        RunDirError: ``run`` holds a run already.
    """
    if run.last.exists() or run.config.exists():
        raise RunDirError(
            f"{run.path}: holds a run already; resume it with --resume or "
            "choose another --run-dir"
        )
    data = prepare_data(config, config.model.resolved.cutoff, report)
    if config.model.init_from is not None:  # fine-tuning: the file's weights
        model, data.statistics = finetune.initial_model(config, data, report)
    else:
        model, config = build_training_model(config, data.statistics)
    finetune.check_freeze(model, config.model.freeze)  # before anything is written
    run.path.mkdir(parents=True, exist_ok=True)
    if config.model.init_from is not None:  # before the config marks a run as started
        save_model(model, _init_file(run), data.statistics)
    atomic_write_text(run.config, config.to_yaml())
    run.write_json(run.splits, data.splits)
    run.write_json(run.statistics, data.statistics)
    return config, data, model


def _run_config(run: RunDir, overrides: Sequence[str]) -> EquiforceConfig:
    """The run's resolved config with ``overrides`` applied (validated)."""
    raw = yaml.safe_load(run.config.read_text())
    for item in overrides:
        apply_override(raw, item)
    return validate_config(raw, run.path, source=str(run.config), init_from=False)


def _trainer_from_run(
    run: RunDir, config: EquiforceConfig, report: Reporter, group: Group | None
) -> Trainer:
    """A trainer over the data, splits and statistics recorded in ``run``."""
    _set_threads(config, group)
    stats = run.read_json(run.statistics)
    splits = run.read_json(run.splits)
    data = prepare_data(config, config.model.resolved.cutoff, report, splits, stats)
    model, config = build_training_model(config, stats)
    if _init_file(run).exists():  # a fine-tuning run's starting weights
        model.load_state_dict(load_checkpoint(_init_file(run))["state_dict"])
    elif config.model.init_from is not None:
        raise RunDirError(
            f"{_init_file(run)}: missing; this fine-tuning run (model.init_from) "
            "cannot start from random weights: start a new run"
        )
    model = finetune.freeze(model, config.model.freeze, report)
    return Trainer(config, run, data, model, report, group)


def _init_file(run: RunDir) -> Path:
    """Starting weights of a fine-tuning run (``model.init_from``, E0, elements)."""
    return run.path / "init.pt"


def _set_threads(config: EquiforceConfig, group: Group | None) -> None:
    """``training.threads``; default: the free cores (split over the processes)."""
    from equiforce.accel.runtime import free_cores

    threads = config.training.threads
    if group is not None:
        threads = distributed.threads_per_process(threads, group.world)
    torch.set_num_threads(threads or free_cores())


def _fit(trainer: Trainer, start: dict | None) -> Path:
    """:meth:`Trainer.fit` with Ctrl-C turned into a stop request."""
    with _stop_on_sigint(trainer):
        return trainer.fit(start)


@contextlib.contextmanager
def _stop_on_sigint(trainer: Trainer) -> Iterator[None]:
    """Turn Ctrl-C into a stop request between steps (the state stays consistent).

    A second Ctrl-C stops hard. Signal handlers belong to the main thread: in
    any other this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        if trainer.stop_requested:  # second Ctrl-C: stop hard
            raise KeyboardInterrupt
        trainer.request_stop()

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


# ---------------------------------------------------------- several processes
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
    run: RunDir,
    overrides: Sequence[str],
    start: dict | None,
    progress: bool,
    group: Group,
) -> Path:
    """Train from ``run`` (fresh when ``start`` is None) as one of ``group``."""
    config = _run_config(run, overrides)
    report = Reporter(progress and group.main)
    best = _fit(_trainer_from_run(run, config, report, group), start=start)
    torch.distributed.barrier()  # every command returns once process 0 has written
    return best


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
    from equiforce.accel.denormals import flush_denormals
    from equiforce.accel.runtime import tune_allocator

    tune_allocator()
    flush_denormals()  # a spawned process starts with IEEE subnormals
    group = distributed.join(rank, world, port, device_type)
    try:
        run = RunDir(run_dir)
        start = None if fresh else run.load_training_state()
        _launched_run(run, overrides, start, progress, group)
    finally:
        distributed.leave()
