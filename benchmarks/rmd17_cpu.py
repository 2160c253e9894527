"""rMD17 accuracy under a wall-clock budget on this CPU: So3krates vs MACE.

Trains So3krates on one rMD17 molecule (split 01: 950 train / 50 valid from the
train file, seed 0) for a fixed budget, evaluates on the 1,000-frame test file
and prints the errors next to published numbers (../shared/docs/anchors.md,
MACE NeurIPS 2022 Table 1). MACE (``mace-torch`` in the peers virtualenv,
``--peers-env``, default ``.venv-peers/bin``) is trained with its own
``mace_run_train`` on the same split, budget and threads, in a subprocess.

Budget handling. So3krates: the learning rate follows warm-up + cosine over the
training seconds (``training.schedule_clock: time``), so it reaches its floor when
``max_minutes`` stops training, however fast the steps turn out; a short timing
probe only sets the validation interval and the warm-up length (with
``--schedule exponential``, the spec's decay, it also sets ``max_steps``). MACE
(``benchmarks/_mace_train.py``): a hard wall-clock stop inside its training loop
(checked before every step); ReduceLROnPlateau with patience set after the first
epoch to 1/40 of the epochs that fit. Both clocks count training steps and
validations, not data loading or model construction; each row records the
seconds actually trained.

    python benchmarks/rmd17_cpu.py --molecule ethanol --minutes 60 --threads 2
    python benchmarks/rmd17_cpu.py --molecule aspirin --minutes 60 --threads 2
    python benchmarks/rmd17_cpu.py --molecule ethanol --minutes 1   # smoke test

The two models can also run as two concurrent processes into one ``--out``
(``--models so3krates`` and ``--models mace``, same ``--molecule``): MACE uses
the So3krates split (recomputed identically when that run has not written it
yet), and each process merges its row into ``results.json``/``results.md``
under a lock, keeping the other model's row. ``--fresh`` deletes only the runs
of the models named in ``--models``.

Outputs in ``--out`` (default ``benchmarks/results/rmd17_<molecule>``):
``so3krates/`` (run dir + ``test/`` metrics and parity plot), ``mace/`` (MACE
run, ``train_summary.json``, ``test_metrics.json``), ``results.json`` and
``results.md`` (a table to paste into docs/benchmarks.md).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import torch

from equiforce.accel.denormals import flush_denormals
from equiforce.atomic import atomic_write_json, atomic_write_text
from equiforce.config import load_config
from equiforce.data.dataset import GraphDataset
from equiforce.models.registry import build_model
from equiforce.train.evaluate import evaluate
from equiforce.train.launch import train
from equiforce.train.optimizer import make_optimizer

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "rmd17"
BENCH = Path(__file__).resolve().parent

#: Published E/F MAE (meV, meV/Å), rMD17 N_train = 1,000; MACE NeurIPS 2022 Table 1
#: (verified, see ../shared/docs/anchors.md §2.1).
PUBLISHED = {
    "ethanol": {"MACE": (0.4, 2.1), "Allegro": (0.4, 2.1), "NequIP (L=3)": (0.4, 2.8)},
    "aspirin": {"MACE": (2.2, 6.6), "Allegro": (2.3, 7.3), "NequIP (L=3)": (2.3, 8.2)},
    "malonaldehyde": {
        "MACE": (0.8, 4.1),
        "Allegro": (0.6, 3.6),
        "NequIP (L=3)": (0.8, 5.1),
    },
    "toluene": {"MACE": (0.5, 1.5), "Allegro": (0.4, 1.8), "NequIP (L=3)": (0.3, 1.6)},
    "azobenzene": {
        "MACE": (1.2, 3.0),
        "Allegro": (1.2, 2.6),
        "NequIP (L=3)": (0.7, 2.9),
    },
}
TARGET_F = {"ethanol": 5.0, "aspirin": 15.0}  # issue 3 target, meV/Å, 60 min on 2 cores
MODEL_NAMES = {"so3krates": "So3krates", "mace": "MACE"}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--molecule", choices=sorted(PUBLISHED), default="ethanol")
    p.add_argument(
        "--minutes", type=float, default=60.0, help="training budget per model"
    )
    p.add_argument("--threads", type=int, default=2, help="torch threads in all")
    p.add_argument(
        "--processes",
        type=int,
        default=1,
        help="So3krates training processes (training.processes); the threads are "
        "split between them and each takes its share of every batch",
    )
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--preset", default="default", help="So3krates preset")
    p.add_argument("--schedule", choices=["cosine", "exponential"], default="cosine")
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument(
        "--seed",
        type=int,
        default=0,
        help="So3krates initialisation and shuffling seed (the split stays split 01)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        help="compiled So3krates training step (training.compile)",
    )
    p.add_argument(
        "--models", default="so3krates,mace", help="comma list: so3krates, mace"
    )
    p.add_argument(
        "--peers-env",
        type=Path,
        default=ROOT / ".venv-peers" / "bin",
        help="bin folder of the virtualenv with mace-torch",
    )
    p.add_argument("--mace-channels", type=int, default=64)
    p.add_argument(
        "--mace-flush-denormals",
        action="store_true",
        help="flush subnormal floats in MACE's training process too (equiforce "
        "always does; MACE as shipped does not)",
    )
    p.add_argument("--mace-max-L", type=int, default=1, dest="mace_max_L")
    p.add_argument(
        "--mace-dtype",
        choices=["float32", "float64"],
        default="float32",
        help="MACE training dtype (the test set is evaluated in float64)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        dest="sets",
        help="extra So3krates config override, as `equiforce train --set` (repeatable; "
        "e.g. training.ema_decay=0.999); applied after the options above",
    )
    p.add_argument("--out", type=Path, default=None)
    p.add_argument(
        "--fresh",
        action="store_true",
        help="delete previous runs of the models in --models from --out",
    )
    args = p.parse_args(argv)
    args.models = [m.strip() for m in args.models.split(",") if m.strip()]
    if bad := sorted(set(args.models) - set(MODEL_NAMES)):
        p.error(f"--models: unknown {bad}; choose from {sorted(MODEL_NAMES)}")
    return args


def seconds_per_step(
    config, n_probe: int = 30, n_warmup: int = 10
) -> tuple[float, float]:
    """Seconds per training step after ``n_warmup`` steps, and seconds of warm-up.

    With ``training.compile`` the warm-up includes the compilation (and the
    recompilation for dynamic shapes at the second batch); the run's own
    compilation then mostly hits Inductor's cache.
    """
    from equiforce.train.compiled_step import CompiledTrainStep, assign_gradients
    from equiforce.train.loss import WeightedLoss
    from equiforce.train.progress import Reporter
    from equiforce.train.setup import read_source

    src = config.data.train.model_copy(update={"index": "0:60"})
    store = read_source(src, Reporter(False))
    device = config.training.device
    model = build_model(config.model.name, **config.model.resolved.model_dump())
    model = model.to(device)
    ds = GraphDataset(store, model.cutoff, torch.float32)
    opt = make_optimizer(model, config.training)
    loss_fn, bs = WeightedLoss(), config.training.batch_size
    step_fn = CompiledTrainStep(model, loss_fn) if config.training.compile else None
    start = t0 = time.perf_counter()
    warmup = 0.0
    for k in range(n_probe + n_warmup):
        if k == n_warmup:
            t0 = time.perf_counter()
            warmup = t0 - start
        first = k * bs % 50
        batch = ds.batch(range(first, first + bs)).to(device)
        opt.zero_grad()
        if step_fn is not None:
            _, grads = step_fn(batch)
            assign_gradients(model, grads)
        else:
            out = model(batch, compute_forces=True, create_graph=True)
            loss_fn(out, batch)[0].backward()
        opt.step()
    return (time.perf_counter() - t0) / n_probe, warmup


def so3krates_config(args):
    """The example config with the budget, threads and a schedule over the budget."""
    base = ROOT / "examples" / f"rmd17_{args.molecule}.yaml"
    sets = [
        f"model.preset={args.preset}",
        f"training.threads={max(1, args.threads // args.processes)}",
        f"training.processes={args.processes}",
        f"training.device={args.device}",
        f"training.lr={args.lr}",
        f"training.batch_size={args.batch_size}",
        f"training.seed={args.seed}",
        f"training.max_minutes={args.minutes}",
        "training.max_epochs=null",
        f"training.compile={str(args.compile).lower()}",
        *args.sets,
    ]
    config = load_config(base, sets)
    torch.set_num_threads(args.threads)
    sps, warmup = seconds_per_step(config)
    # an estimate for the validation interval and the warm-up; the cosine itself
    # runs on the training clock and ends at the budget whatever the real speed
    t = config.training  # --set may have changed the budget or the step
    budget = 60 * t.max_minutes - (warmup if t.compile else 0.0)
    steps = max(int(budget / sps), 10)
    sets += [f"training.valid_interval={max(steps // 40, 5)}"]
    if args.schedule == "cosine":
        warm = min(1000, steps // 50)
        sets += [
            "training.schedule=cosine",
            "training.schedule_clock=time",
            f"training.warmup_steps={warm}",
            "training.min_lr=1e-5",
        ]
    else:
        sets += [f"training.max_steps={steps}"]
    print(
        f"so3krates: {sps * 1000:.0f} ms/step -> about {steps} steps in "
        f"{t.max_minutes:g} min"
    )
    sets += args.sets  # last, so that they also win over the schedule above
    return load_config(base, sets), sps


def _last_elapsed(metrics_csv: Path) -> float | None:
    """Seconds trained (``elapsed_s`` of the last metrics.csv row)."""
    import csv

    with open(metrics_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    return float(rows[-1]["elapsed_s"]) if rows else None


def run_so3krates(args, out: Path) -> dict:
    """Train (or resume, or reuse) the So3krates run; evaluate on the test file."""
    from equiforce.train.launch import resume

    run_dir = out / "so3krates"
    sps = float("nan")
    if (run_dir / "last.pt").exists() and not (run_dir / "final_metrics.json").exists():
        best = resume(run_dir)
    elif (run_dir / "final_metrics.json").exists():
        best = run_dir / "best.pt"
    else:
        config, sps = so3krates_config(args)
        best = train(config, run_dir)
    config = load_config(run_dir / "config.resolved.yaml")
    metrics = evaluate(best, config.data.test, run_dir / "test")
    final = json.loads((run_dir / "final_metrics.json").read_text())
    t = config.training
    n_train = len(json.loads((run_dir / "splits.json").read_text())["train"])
    return {
        "model": "So3krates",
        "preset": config.model.preset or args.preset,
        # the recipe as trained (from the run's resolved config, also on resume)
        "lr": t.lr,
        "min_lr": t.min_lr,
        "ema_decay": t.ema_decay,
        "energy_weight": t.energy_weight,
        "forces_weight": t.forces_weight,
        "threads": t.threads * t.processes,
        "processes": t.processes,
        "batch_size": t.batch_size,
        "minutes": t.max_minutes,
        "train_seconds": _last_elapsed(run_dir / "metrics.csv"),
        "probe_ms_per_step": 1000 * sps,
        "steps": final["final_step"],
        "epochs": final["final_step"] * t.batch_size / n_train,
        "best_step": final["best_step"],
        "stop": final.get("stop"),
        "energy_mae": metrics["energy_mae"],
        "forces_mae": metrics["forces_mae"],
        "energy_rmse": metrics["energy_rmse"],
        "forces_rmse": metrics["forces_rmse"],
    }


@contextlib.contextmanager
def _locked(path: Path):
    """Exclusive lock on ``path`` (blocks while another process holds it)."""
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _merged_rows(path: Path, molecule: str, new: list[dict]) -> list[dict]:
    """Rows of ``path`` (if any) with the rows of ``new`` replacing same models."""
    rows: dict[str, dict] = {}
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("molecule") != molecule:
            raise SystemExit(
                f"{path}: results for {old.get('molecule')!r}, not {molecule!r}; "
                "use another --out"
            )
        rows = {r["model"]: r for r in old.get("rows", [])}
    rows.update({r["model"]: r for r in new})
    order = list(MODEL_NAMES.values())
    return sorted(rows.values(), key=lambda r: (order + [r["model"]]).index(r["model"]))


def _fmt(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def results_markdown(info: dict) -> str:
    """The results table (this machine's rows, then the published ones)."""
    molecule = info["molecule"]
    lines = [
        f"### rMD17 {molecule}, split 01, 1,000-frame test set ({info['date']})",
        "",
        "| model | E MAE (meV) | F MAE (meV/Å) | threads | budget (min) "
        "| trained (s) | steps | epochs | source |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in info["rows"]:
        lines.append(
            f"| {r['model']} ({r.get('preset', '')}) | {r['energy_mae']:.2f} | "
            f"{r['forces_mae']:.2f} | {r.get('threads', '-')} | "
            f"{_fmt(r.get('minutes'), 'g')} | {_fmt(r.get('train_seconds'), '.0f')} | "
            f"{r.get('steps', '-')} | {_fmt(r.get('epochs'), '.1f')} | this machine |"
        )
    for name, (e, f) in PUBLISHED[molecule].items():
        lines.append(
            f"| {name} | {e} | {f} | | | | converged, GPU | | "
            "MACE NeurIPS 2022 Table 1 |"
        )
    if molecule in TARGET_F:
        lines.append(f"\nTarget (issue 3): F MAE ≤ {TARGET_F[molecule]} meV/Å.")
    return "\n".join(lines) + "\n"


def write_results(args, out: Path, new_rows: list[dict]) -> None:
    """Merge ``new_rows`` into results.json/results.md (safe for concurrent runs)."""
    with _locked(out / ".results.lock"):
        rows = _merged_rows(out / "results.json", args.molecule, new_rows)
        info = {
            "molecule": args.molecule,
            "date": date.today().isoformat(),
            "cpu": platform.processor() or platform.machine(),
            "torch": torch.__version__,
            "rows": rows,
        }
        atomic_write_json(out / "results.json", info)
        text = results_markdown(info)
        atomic_write_text(out / "results.md", text)
    print(text)


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out or ROOT / "benchmarks" / "results" / f"rmd17_{args.molecule}"
    if "mace" in args.models and not (args.peers_env / "python").exists():
        print(
            f"MACE needs the peers virtualenv: {args.peers_env}/python not found "
            "(set --peers-env, or run --models so3krates)",
            file=sys.stderr,
        )
        return 2
    out.mkdir(parents=True, exist_ok=True)
    if args.fresh:
        for name in args.models:
            shutil.rmtree(out / name, ignore_errors=True)
    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # already set once work has run
        torch.set_num_interop_threads(args.threads)
    # as `equiforce train` does (EQUIFORCE_FLUSH_DENORMALS=0 opts out); without it
    # the step-time probe ran IEEE subnormals: 64 instead of 28 ms on a Xeon
    flush_denormals()
    from _mace_run import run_mace  # benchmarks/ is on sys.path when run as a script

    runners = {"so3krates": run_so3krates, "mace": run_mace}
    for name in args.models:
        t0 = time.perf_counter()
        write_results(args, out, [runners[name](args, out)])
        print(f"{name}: done in {time.perf_counter() - t0:.0f} s (all stages)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
