"""Learning curves: train at several training-set sizes, test on one fixed set.

The validation split and the test file are the same for every size, and the
training sets are nested (the seeded permutation is cut at growing lengths).
Finished sizes are skipped and an interrupted size is resumed, so the command
can be re-run after a crash.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

from rich.table import Table

from equiforce.atomic import atomic_path, atomic_write_text
from equiforce.config import DataSource, EquiforceConfig
from equiforce.train.evaluate import evaluate
from equiforce.train.progress import Reporter
from equiforce.train.rundir import RunDir

COLUMNS = (
    "n_train",
    "energy_mae",
    "energy_rmse",
    "forces_mae",
    "forces_rmse",
    "best_step",
)


def learning_curve(
    config: EquiforceConfig,
    sizes: list[int],
    out_dir: str | Path,
    test: DataSource | None = None,
    progress: bool = True,
) -> list[dict]:
    """Train one model per size and evaluate each on the test file.

    Args:
        config: training config; ``data.n_train`` is replaced by each size.
        sizes: training-set sizes.
        out_dir: folder; each size gets ``n{size}/`` (a run dir with ``test/``).
        test: test file (default: ``config.data.test``).
        progress: show progress.

    Returns:
        One row per size (``COLUMNS``; meV, meV/Å), also written to
        ``learning_curve.csv``/``.json`` with ``learning_curve.png``.
    """
    from equiforce.train.launch import resume, train

    test = test or config.data.test
    if test is None:
        raise ValueError(
            "learning curve needs a test file: set data.test or pass --test"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    report = Reporter(progress)
    rows = []
    for size in sorted(set(sizes)):
        run = RunDir(out / f"n{size}")
        result = run.path / "test" / "metrics.json"
        if not result.exists():
            report.print(f"[bold]training with n_train={size}[/bold]")
            if run.last.exists() and not run.final_metrics.exists():
                resume(run.path, progress=progress)
            elif not run.last.exists():
                data = config.data.model_copy(update={"n_train": size})
                train(
                    config.model_copy(update={"data": data}),
                    run.path,
                    progress=progress,
                )
            evaluate(run.best, test, run.path / "test", progress=progress)
        m = json.loads(result.read_text())
        best = json.loads(run.final_metrics.read_text())
        rows.append(
            {"n_train": size, **{k: m.get(k) for k in COLUMNS[1:5]}}
            | {"best_step": best.get("best_step")}
        )
        _write(out, rows)
    report.print(_table(rows))
    return rows


def _write(out: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, COLUMNS)
    writer.writeheader()
    writer.writerows(rows)
    atomic_write_text(out / "learning_curve.csv", buf.getvalue())
    atomic_write_text(out / "learning_curve.json", json.dumps(rows, indent=1) + "\n")
    plot_learning_curve(rows, out / "learning_curve.png")


def plot_learning_curve(rows: list[dict], path: Path) -> None:
    """Log-log plot of energy and force MAE against the training-set size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    n = [r["n_train"] for r in rows]
    fig, ax = plt.subplots(figsize=(5, 4))
    ax.loglog(n, [r["energy_mae"] for r in rows], "o-", label="energy MAE (meV)")
    if all(r.get("forces_mae") is not None for r in rows):
        ax.loglog(n, [r["forces_mae"] for r in rows], "s-", label="force MAE (meV/Å)")
    ax.set(xlabel="training structures", ylabel="test error")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _table(rows: list[dict]) -> Table:
    table = Table(title="learning curve (test set)")
    for col in ("n_train", "E MAE meV", "E RMSE meV", "F MAE meV/Å", "F RMSE meV/Å"):
        table.add_column(col, justify="right")
    for r in rows:
        vals = [r[k] for k in COLUMNS[1:5]]
        table.add_row(
            str(r["n_train"]), *("-" if v is None else f"{v:.2f}" for v in vals)
        )
    return table
