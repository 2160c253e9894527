"""``mace_run_train`` under a hard wall-clock training budget (peers venv only).

Run by ``benchmarks/rmd17_cpu.py`` with ``.venv-peers/bin/python``; everything
after ``--`` goes to MACE's own command line unchanged::

    python benchmarks/_mace_train.py --budget-s 3600 --threads 1 \
        --summary run/train_summary.json -- --name=mace --train_file=...

The budget clock starts when MACE's training loop starts (data loading,
statistics and model construction are not counted, as for equiforce) and covers
the training steps and the per-epoch validations. Before every step the loop
checks the clock; once the budget is spent the epoch in progress ends early, is
validated as usual (so its checkpoint can be kept), and the loop stops. MACE
then writes its best-validation (EMA) model exactly as after a normal run.
``--max_num_epochs`` should be large enough never to bind.

Stage Two (MACE's ``--swa``: energy weight 1000, forces 100, lr 1e-3, as in the
MACE README's rMD17 command, there from epoch 1200 of 1500) starts at the first
epoch boundary after ``--stage-two`` (default 0.8) of the budget, or earlier if
one more epoch would not fit. MACE then saves ``<name>_stagetwo.model``; if the
budget ran out before a Stage Two epoch was validated, the Stage One checkpoint
is copied as the Stage Two one (``stage_two_steps`` is then 0 in the summary).

``--flush-denormals`` flushes subnormal floats to zero on every thread, as
equiforce's commands do by default; without it MACE runs as its users run it.

The first Ctrl-C does the same as a spent budget; a second one stops hard.

``--patience auto`` sets ReduceLROnPlateau's patience after the first epoch to
1/40 of the epochs that fit (2 to 50): MACE's default (50) is meant for runs of
thousands of epochs and would never lower the learning rate in a short budget.
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import sys
import time
import warnings
from pathlib import Path

import torch


class _BudgetSpentError(Exception):
    """Raised at the start of an epoch once the budget is spent."""


class Budget:
    """Wraps MACE's ``train``/``train_one_epoch`` with a wall-clock stop."""

    def __init__(self, seconds: float, patience: str, stage_two: float) -> None:
        self.seconds, self.patience, self.stage_two = seconds, patience, stage_two
        self.stage_two_epoch: int | None = None
        self.stage_two_step: int | None = None
        self.t0 = self.deadline = 0.0
        self.steps, self.epochs, self.steps_per_epoch = 0, 0, 0
        self.first_epoch_s: float | None = None
        self.used_patience: int | None = None
        self.train_seconds: float | None = None
        self.reason = "max_num_epochs reached"
        self.final_lr: float | None = None
        self._scheduler = self._swa = self._checkpoints = None

    def spent(self) -> bool:
        return time.perf_counter() >= self.deadline

    def stop(self, reason: str) -> None:
        self.reason, self.deadline = reason, 0.0

    def _batches(self, loader):
        self.steps_per_epoch = len(loader)
        for batch in loader:
            if self.spent():
                if self.reason == "max_num_epochs reached":
                    self.reason = "budget spent"
                return
            self.steps += 1
            yield batch

    def wrap_epoch(self, original):
        def train_one_epoch(**kw):
            if self.spent():
                if self.reason == "max_num_epochs reached":
                    self.reason = "budget spent"
                raise _BudgetSpentError
            kw["data_loader"] = self._batches(kw["data_loader"])
            original(**kw)
            self.epochs += 1
            self.final_lr = float(kw["optimizer"].param_groups[0]["lr"])
            elapsed = time.perf_counter() - self.t0
            if self.first_epoch_s is None:
                self.first_epoch_s = elapsed
                self._set_patience(self.seconds / max(elapsed, 1e-9))
            self._maybe_stage_two(kw["epoch"] + 1, elapsed)
            left = max(self.seconds - elapsed, 0.0)
            print(
                f"[budget] epoch {self.epochs}: {self.steps} steps, "
                f"{elapsed:.0f}/{self.seconds:.0f} s, {left:.0f} s left",
                flush=True,
            )

        return train_one_epoch

    def _set_patience(self, epochs_that_fit: float) -> None:
        inner = getattr(self._scheduler, "lr_scheduler", None)
        if self.patience != "auto" or not hasattr(inner, "patience"):
            return
        inner.patience = self.used_patience = int(
            min(max(epochs_that_fit // 40, 2), 50)
        )
        print(
            f"[budget] ~{epochs_that_fit:.0f} epochs fit: "
            f"ReduceLROnPlateau patience {inner.patience}",
            flush=True,
        )

    def _maybe_stage_two(self, next_epoch: int, elapsed: float) -> None:
        """Start Stage Two at ``next_epoch`` once its share of the budget is due."""
        if self._swa is None or self.stage_two_epoch is not None:
            return
        per_epoch = elapsed / self.epochs
        due = elapsed >= self.stage_two * self.seconds
        if not due and elapsed + per_epoch <= self.seconds:
            return
        self._swa.start = self._checkpoints.swa_start = next_epoch
        self.stage_two_epoch, self.stage_two_step = next_epoch, self.steps
        print(f"[budget] Stage Two from epoch {next_epoch}", flush=True)

    def _ensure_stage_two_checkpoint(self) -> None:
        """Copy the Stage One checkpoint as Stage Two's when none was saved."""
        io = self._checkpoints
        if io is None or self._swa is None:
            return
        found = sorted(Path(io.directory).glob(f"{io.tag}_epoch-*.pt"))
        if not found or any(p.stem.endswith("_swa") for p in found):
            return
        last = max(found, key=lambda p: int(p.stem.rsplit("-", 1)[1]))
        shutil.copyfile(last, last.with_name(f"{last.stem}_swa.pt"))
        print("[budget] no Stage Two epoch: Stage One model reused", flush=True)

    def wrap_train(self, original):
        def train(**kw):
            self._scheduler = kw.get("lr_scheduler")
            self._swa = kw.get("swa")
            self._checkpoints = kw["checkpoint_handler"].io
            self.t0 = time.perf_counter()
            self.deadline = self.t0 + self.seconds
            try:
                original(**kw)
            except _BudgetSpentError:
                pass
            self.train_seconds = time.perf_counter() - self.t0
            self._ensure_stage_two_checkpoint()

        return train

    def summary(self, threads: int) -> dict:
        per_epoch = self.steps_per_epoch or 1
        return {
            "budget_s": self.seconds,
            "train_seconds": self.train_seconds,
            "threads": threads,
            "steps": self.steps,
            "steps_per_epoch": self.steps_per_epoch,
            "epochs": self.steps / per_epoch,
            "first_epoch_s": self.first_epoch_s,
            "scheduler_patience": self.used_patience,
            "final_lr": self.final_lr,
            "stage_two_epoch": self.stage_two_epoch,
            "stage_two_steps": (
                0 if self.stage_two_step is None else self.steps - self.stage_two_step
            ),
            "stop": self.reason,
        }


def _sigint(budget: Budget):
    def handler(signum, frame):
        if budget.deadline == 0.0:
            raise KeyboardInterrupt
        print("[budget] interrupted: finishing this step", flush=True)
        budget.stop("interrupted")

    return handler


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" not in argv:
        print("usage: _mace_train.py [options] -- <mace_run_train args>")
        return 2
    cut = argv.index("--")
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget-s", type=float, required=True)
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--summary", type=Path, required=True)
    p.add_argument("--patience", default="auto", help="'auto' or keep MACE's value")
    p.add_argument("--stage-two", type=float, default=0.8, help="budget fraction")
    p.add_argument(
        "--flush-denormals",
        action="store_true",
        help="flush subnormal floats on every thread, as equiforce's commands do "
        "(MACE itself does not)",
    )
    args = p.parse_args(argv[:cut])

    torch.set_num_threads(args.threads)
    torch.set_num_interop_threads(args.threads)
    if args.flush_denormals:
        from equiforce.accel.denormals import flush_denormals

        flush_denormals()
    # e3nn's TorchScript code generation warns once per generated module.
    warnings.filterwarnings("ignore", message="The TorchScript type system")
    import mace.tools
    from mace.cli import run_train

    loop = sys.modules["mace.tools.train"]  # the module (mace.tools.train is the fn)
    budget = Budget(args.budget_s, args.patience, args.stage_two)
    loop.train_one_epoch = budget.wrap_epoch(loop.train_one_epoch)
    mace.tools.train = budget.wrap_train(mace.tools.train)  # run_train calls this
    signal.signal(signal.SIGINT, _sigint(budget))

    sys.argv = ["mace_run_train", *argv[cut + 1 :]]
    run_train.main()
    summary = {**budget.summary(args.threads), "flush_denormals": args.flush_denormals}
    text = json.dumps(summary, indent=2)
    tmp = args.summary.with_name(f".{args.summary.name}.tmp")
    tmp.write_text(text)
    tmp.replace(args.summary)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
