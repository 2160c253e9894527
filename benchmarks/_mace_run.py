"""MACE side of ``rmd17_cpu.py``: data files, ``mace_run_train`` under a budget, test.

MACE runs in the peers virtualenv (``--peers-env``) through
``benchmarks/_mace_train.py`` (hard wall-clock stop, time-based Stage Two) and is
evaluated on the test file in float64 by ``benchmarks/_mace_eval.py``; both run as
subprocesses of the benchmark.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from pathlib import Path

from equiforce.atomic import atomic_write_json
from equiforce.config import load_config

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "rmd17"
BENCH = Path(__file__).resolve().parent


def _write_extxyz(frames, path: Path) -> None:
    """Frames with REF_energy / REF_forces (eV, eV/Å) for MACE, written atomically."""
    import ase.io

    from equiforce.atomic import atomic_path

    out = []
    for atoms in frames:
        a = atoms.copy()
        a.calc = None
        a.info["REF_energy"] = atoms.get_potential_energy()
        a.arrays["REF_forces"] = atoms.get_forces()
        out.append(a)
    with atomic_path(path) as tmp:
        ase.io.write(tmp, out, format="extxyz")


def _mace_cmd(work: Path, args) -> list[str]:
    """MACE CLI for rMD17 (MACE README recipe, smaller width for a CPU budget).

    ``--max_num_epochs`` and ``--start_swa`` never bind: ``_mace_train.py`` stops
    the loop at the wall-clock budget, starts Stage Two at 80% of it and sets
    the plateau patience from the epochs that fit.
    """
    return [
        "--name=mace",
        f"--train_file={work / 'train.xyz'}",
        f"--valid_file={work / 'valid.xyz'}",
        "--energy_key=REF_energy",
        "--forces_key=REF_forces",
        "--E0s=average",
        "--model=MACE",
        "--r_max=5.0",
        f"--num_channels={args.mace_channels}",
        f"--max_L={args.mace_max_L}",
        "--correlation=3",
        f"--batch_size={args.batch_size}",
        "--valid_batch_size=10",
        "--max_num_epochs=1000000",
        "--swa",
        "--start_swa=999999",
        "--swa_lr=1e-3",
        "--swa_energy_weight=1000.0",
        "--swa_forces_weight=100.0",
        "--lr=0.01",
        "--amsgrad",
        "--ema",
        "--ema_decay=0.99",
        "--energy_weight=1.0",
        "--forces_weight=1000.0",
        "--scheduler=ReduceLROnPlateau",
        "--lr_factor=0.8",
        "--scheduler_patience=50",
        f"--default_dtype={args.mace_dtype}",
        "--device=cpu",
        "--pin_memory=False",
        "--seed=0",
        "--eval_interval=1",
        f"--model_dir={work}",
        f"--checkpoints_dir={work / 'checkpoints'}",
        f"--results_dir={work / 'results'}",
        f"--log_dir={work / 'logs'}",
    ]


def _splits(args, out: Path) -> dict[str, list[int]]:
    """The So3krates run's split, or the same split recomputed from the example."""
    done = out / "so3krates" / "splits.json"
    if done.exists():
        return json.loads(done.read_text())
    from equiforce.train.progress import Reporter
    from equiforce.train.setup import filtered_indices, make_splits, read_source

    config = load_config(ROOT / "examples" / f"rmd17_{args.molecule}.yaml")
    store = read_source(config.data.train, Reporter(False))
    kept = filtered_indices(store, config.data, "train", Reporter(False))
    return make_splits(config.data, store, kept)


def _mace_env(threads: int) -> dict[str, str]:
    """Environment of the MACE subprocesses: thread limits and e3nn's torch.load.

    e3nn 0.4.4 (pinned by mace-torch) loads its own ``constants.pt`` with
    ``torch.load``'s default, which torch >= 2.6 made ``weights_only=True``;
    that file pickles ``slice`` and fails to load. Here ``torch.load`` only
    reads that file of the peers virtualenv (trusted) and the checkpoints and
    models these subprocesses wrote themselves, never user-supplied files.
    """
    n = str(threads)
    return dict(
        os.environ,
        OMP_NUM_THREADS=n,
        MKL_NUM_THREADS=n,
        TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD="1",
    )


def _run_child(cmd: list[str], env: dict, timeout: float) -> None:
    """Run ``cmd``; Ctrl-C reaches the child only (it stops training cleanly)."""
    proc = subprocess.Popen(cmd, env=env)
    previous = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        rc = proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    finally:
        signal.signal(signal.SIGINT, previous)
    if rc != 0:
        raise subprocess.CalledProcessError(rc, cmd)


def _mace_data(args, out: Path, work: Path) -> None:
    """train/valid/test extxyz files of the So3krates split (written once)."""
    from equiforce import read

    files = [work / f"{name}.xyz" for name in ("train", "valid", "test")]
    if all(f.exists() for f in files):
        return
    frames = read(DATA / f"rmd17_{args.molecule}_train_01.npz", energy_unit="kcal/mol")
    split = _splits(args, out)
    atomic_write_json(work / "splits.json", split)  # to compare with So3krates'
    _write_extxyz([frames[k] for k in split["train"]], files[0])
    _write_extxyz([frames[k] for k in split["valid"]], files[1])
    test = read(DATA / f"rmd17_{args.molecule}_test_01.npz", energy_unit="kcal/mol")
    _write_extxyz(test, files[2])


def _best_epoch(work: Path, stage_two: bool) -> int | None:
    """Epoch of the checkpoint MACE kept (best validation loss of the stage)."""
    epochs = []
    for p in (work / "checkpoints").glob("*_epoch-*.pt"):
        tail = p.stem.rsplit("_epoch-", 1)[1]
        if tail.endswith("_swa") == stage_two:
            epochs.append(int(tail.removesuffix("_swa")))
    return max(epochs) if epochs else None


def run_mace(args, out: Path) -> dict:
    """Train MACE with its own CLI (peers venv) on the same split and budget."""
    work = out / "mace"
    summary_path, test_path = work / "train_summary.json", work / "test_metrics.json"
    python, env = str(args.peers_env / "python"), _mace_env(args.threads)
    if not (summary_path.exists() and (work / "mace.model").exists()):
        if work.exists():  # an unfinished run: MACE restarts from scratch
            shutil.rmtree(work)
        work.mkdir(parents=True)
        _mace_data(args, out, work)
        cmd = [python, str(BENCH / "_mace_train.py"), f"--budget-s={60 * args.minutes}"]
        cmd += [f"--threads={args.threads}", f"--summary={summary_path}"]
        cmd += ["--flush-denormals"] * args.mace_flush_denormals + ["--"]
        cmd += _mace_cmd(work, args)
        print(f"mace: training for {args.minutes:g} min, {args.threads} threads")
        _run_child(cmd, env, timeout=60 * args.minutes * 1.2 + 900)
    model = work / "mace_stagetwo.model"  # the recipe's final model
    stage_two = model.exists()
    model = model if stage_two else work / "mace.model"
    if not test_path.exists():
        _mace_data(args, out, work)
        cmd = [python, str(BENCH / "_mace_eval.py"), f"--model={model}"]
        cmd += [f"--test={work / 'test.xyz'}", f"--out={test_path}"]
        _run_child([*cmd, f"--threads={args.threads}"], env, timeout=3600)
    s = json.loads(summary_path.read_text())
    m = json.loads(test_path.read_text())
    return {
        "model": "MACE",
        "preset": f"{args.mace_channels} ch, L={args.mace_max_L}, {args.mace_dtype}"
        + (", subnormals flushed" if s.get("flush_denormals") else ""),
        "threads": s["threads"],
        "minutes": s["budget_s"] / 60,
        "train_seconds": s["train_seconds"],
        "steps": s["steps"],
        "epochs": s["epochs"],
        "evaluated": model.name,
        "best_epoch": _best_epoch(work, stage_two),
        "stage_two_epoch": s.get("stage_two_epoch"),
        "stage_two_steps": s.get("stage_two_steps"),
        "scheduler_patience": s["scheduler_patience"],
        "final_lr": s["final_lr"],
        "stop": s["stop"],
        "energy_mae": m["energy_mae"],
        "forces_mae": m["forces_mae"],
        "energy_rmse": m["energy_rmse"],
        "forces_rmse": m["forces_rmse"],
    }
