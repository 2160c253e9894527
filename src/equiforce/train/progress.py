"""Progress display (rich): loading bars, the live training bar and result tables.

A disabled :class:`Reporter` prints nothing, so library calls and tests stay quiet.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from equiforce.console import LineTicker, hms


class Reporter:
    """Progress output for long operations.

    Args:
        enabled: show bars and messages.
        console: rich console (default: stderr).
    """

    def __init__(self, enabled: bool = True, console: Console | None = None) -> None:
        self.enabled = enabled
        self.console = console or Console(stderr=True)
        #: plain progress lines instead of a live bar (output is not a terminal)
        self.lines = enabled and not self.console.is_terminal

    def print(self, *args) -> None:
        """Print a message (if enabled)."""
        if self.enabled:  # long lines stay whole in logs (no wrap at 80 columns)
            self.console.print(*args, soft_wrap=True)

    @contextlib.contextmanager
    def status(self, message: str) -> Iterator[None]:
        """A spinner while an operation of unknown length runs."""
        if not self.enabled:
            yield
            return
        with self.console.status(message):
            yield

    @contextlib.contextmanager
    def bar(self, description: str, total: int) -> Iterator[Callable[[int], None]]:
        """A bar with count, rate and ETA; yields ``advance(n)``."""
        if not self.enabled:
            yield lambda n: None
            return
        columns = (
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
        )
        with Progress(*columns, console=self.console, transient=False) as prog:
            task = prog.add_task(description, total=total)
            yield lambda n: prog.advance(task, n)

    @contextlib.contextmanager
    def training(
        self, total_steps: int | None, start_step: int
    ) -> Iterator[TrainingBar]:
        """The live training bar (see :class:`TrainingBar`)."""
        bar = TrainingBar(self, total_steps, start_step)
        if not self.enabled or self.lines:
            yield bar
            return
        with bar.progress:
            yield bar


class TrainingBar:
    """Step, loss, validation force MAE, structures/s and ETA of a training run."""

    def __init__(
        self, reporter: Reporter, total_steps: int | None, start_step: int
    ) -> None:
        self.progress = Progress(
            TextColumn("step {task.completed:.0f}/{task.fields[total_text]}"),
            BarColumn(),
            TaskProgressColumn(),
            TextColumn("loss {task.fields[loss]}"),
            TextColumn("val F MAE {task.fields[val]} meV/Å"),
            TextColumn("{task.fields[rate]} struct/s"),
            TextColumn("ETA {task.fields[eta]}"),
            console=reporter.console,
            disable=not reporter.enabled or reporter.lines,
        )
        self.ticker = LineTicker("train") if reporter.lines else None
        self.task = self.progress.add_task(
            "train",
            total=total_steps,
            completed=start_step,
            total_text=str(total_steps or "?"),
            loss="-",
            val="-",
            rate="-",
            eta="-",
        )
        self._t0 = time.perf_counter()
        self._n_structures = 0

    def update(
        self,
        step: int,
        loss: float,
        n_structures: int,
        eta_s: float | None,
        val_forces_mae: float | None = None,
    ) -> None:
        """Advance to ``step`` and refresh the fields."""
        self._n_structures += n_structures
        rate = self._n_structures / max(time.perf_counter() - self._t0, 1e-9)
        fields = {"loss": f"{loss:.4g}", "rate": f"{rate:.0f}"}
        fields["eta"] = "-" if eta_s is None else hms(eta_s)
        if val_forces_mae is not None:
            fields["val"] = f"{val_forces_mae:.1f}"
        self.progress.update(self.task, completed=step, **fields)
        if self.ticker is not None and self.ticker.due():
            task = self.progress.tasks[0]
            self.ticker.line(
                f"step {step}/{task.fields['total_text']}, loss {fields['loss']}, "
                f"val F MAE {task.fields['val']} meV/Å, {fields['rate']} struct/s, "
                f"ETA {fields['eta']}"
            )


def metrics_table(metrics: dict, title: str) -> Table:
    """Energy and force errors as a rich table (meV, meV/Å)."""
    table = Table(title=title)
    for col in ("quantity", "MAE", "RMSE", "unit"):
        table.add_column(col, justify="right" if col in ("MAE", "RMSE") else "left")
    rows = (
        ("energy (total)", "energy_mae", "energy_rmse", "meV"),
        ("energy per atom", "energy_per_atom_mae", "energy_per_atom_rmse", "meV/atom"),
        ("force component", "forces_mae", "forces_rmse", "meV/Å"),
        ("dipole component", "dipole_mae", "dipole_rmse", "me·Å"),
        ("hirshfeld_ratios", "hirshfeld_ratios_mae", "hirshfeld_ratios_rmse", "10⁻³"),
    )
    counts, n = metrics.get("n_labelled", {}), metrics.get("n_frames")
    for name, mae, rmse, unit in rows:
        if mae in metrics:
            label = name.split()[0].replace("force", "forces")
            if n is not None and counts.get(label, n) < n:  # say what it averages
                name += f" ({counts[label]} of {n} frames)"
            table.add_row(name, f"{metrics[mae]:.3f}", f"{metrics[rmse]:.3f}", unit)
    for el, m in metrics.get("forces_per_element", {}).items():
        table.add_row(f"force on {el}", f"{m['mae']:.3f}", f"{m['rmse']:.3f}", "meV/Å")
    return table
