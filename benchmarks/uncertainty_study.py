"""Extrapolation study of uncertainty: committee vs multi-head So3krates on xTB data.

For each molecule (3BPA, acetylacetone; ``data/uncertainty/``, GFN2-xTB labels):

1. split the 500 300 K frames (seed 0) into 400 train, 50 valid and 50 held out
   (``data.split_file``; the held-out frames are written to ``test_300K.extxyz``);
2. train (a) a committee of K So3krates (seeds 0 … K−1, ``equiforce train
   --committee K``'s :func:`~equiforce.train.committee.train_committee`) and (b)
   one So3krates with K readout heads (seed 0), every model with the same
   wall-clock budget (``--minutes``; warm-up + cosine on the training clock,
   ``training.schedule_clock: time``);
3. evaluate the committee, the multi-head model and member 0 alone on the
   held-out 300 K frames and the xTB MD frames at 600 K and 1,200 K: force MAE,
   Spearman's ρ between each frame's largest force error max_i |ΔF_i| and its
   predicted ``forces_std_max``, calibration (RMS error against RMS std in bins,
   :mod:`equiforce.train.calibration`), and the threshold on ``forces_std_max``
   that stops MD before the largest force error passes 0.1 eV/Å: the largest
   threshold that still flags every frame (of all three sets) whose error
   exceeds it, with the fraction of held-out 300 K frames it flags (false
   alarms: those frames are where the model was trained);
4. time one energy+forces call on a 3BPA frame: one model, the multi-head model
   (mean only, and with every head's forces), the latent uncertainty, the
   committee.

The latent uncertainty (``latent``: a Gaussian mixture over the multi-head
model's final features, :mod:`equiforce.uncertainty.latent`) is fitted to the
multi-head model's run after it trained (``equiforce uncertainty fit``), so it
and the heads' spread are compared on the same model; the heads' energy std
alone (``heads_energy``) is ranked from the heads' evaluation. ``--kinds``
chooses what is trained and evaluated (the committee costs K models' time).

Resumable: finished members and runs are kept, an interrupted one resumes, an
evaluation already written is reused (``--fresh-eval`` redoes them).

    python benchmarks/uncertainty_study.py --minutes 1 --molecules 3bpa   # smoke
    python benchmarks/uncertainty_study.py --minutes 4 --threads 1
    python benchmarks/uncertainty_study.py --minutes 4 --kinds heads,latent

Outputs in ``--out`` (default ``benchmarks/results/uncertainty_study``):
``<molecule>/{committee,heads}/`` (run directories), ``<molecule>/eval/``
(per-set metrics and per-frame arrays), ``<molecule>_calibration_<kind>.png``
(binned calibration over all frames), ``<molecule>_frames.png`` (largest
force error against predicted std per frame), ``results.json``, ``results.md``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import shutil
import statistics
import sys
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from equiforce.atomic import atomic_write_json, atomic_write_text
from equiforce.config import DataSource, validate_config
from equiforce.data.dataset import GraphDataset
from equiforce.models.registry import load_model
from equiforce.train import calibration
from equiforce.train.committee import train_committee
from equiforce.train.distributed import INTERRUPTED
from equiforce.train.evaluate import evaluate_model
from equiforce.train.latent_fit import fit_run
from equiforce.train.launch import resume, train
from equiforce.train.progress import Reporter
from equiforce.train.rundir import RunDir
from equiforce.train.setup import read_source
from equiforce.uncertainty import load_ensemble
from equiforce.uncertainty.latent import LATENT_FILE

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "uncertainty"
MOLECULES = ("3bpa", "acac")
SETS = ("300K", "600K", "1200K")
HOT = ("600K", "1200K")
KINDS = {
    "committee": "committee of K",
    "heads": "K readout heads",
    "single": "one model (member 0)",
    "latent": "latent distance (heads model)",
    "heads_energy": "K heads' energy std",
}
#: what --kinds may name (heads_energy comes with heads)
TRAINED_KINDS = ("committee", "heads", "latent")
FORCE_LIMIT = 0.1  # eV/Å, the largest force error an MD run may accept
#: looser limits, for when a short budget leaves most frames above FORCE_LIMIT
OTHER_LIMITS = (0.25, 0.5)


def kind_name(kind: str, k: int) -> str:
    """The model's name in tables and plots, e.g. ``committee of 4``."""
    return KINDS[kind].replace("K", str(k))


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--molecules", default=",".join(MOLECULES))
    p.add_argument("--minutes", type=float, default=10.0, help="budget per model")
    p.add_argument("--k", type=int, default=4, help="members / readout heads")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--preset", default="default", help="So3krates preset")
    p.add_argument("--n-train", type=int, default=400)
    p.add_argument("--n-valid", type=int, default=50)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--lr", type=float, default=1e-3)
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--fresh-eval", action="store_true", help="redo the evaluations")
    p.add_argument("--calls", type=int, default=10, help="timing: calls per round")
    p.add_argument("--rounds", type=int, default=5, help="timing: rounds")
    p.add_argument("--progress", action="store_true", help="training progress bars")
    p.add_argument(
        "--kinds",
        default=",".join(TRAINED_KINDS),
        help="models to train and evaluate: committee (and member 0 alone), "
        "heads (and their energy std), latent (fitted to the heads model)",
    )
    p.add_argument("--components", type=int, default=8, help="latent mixture")
    p.add_argument(
        "--latent-dims", type=int, default=32,
        help="latent mixture on this many principal components (0: all)",
    )  # fmt: skip
    args = p.parse_args(argv)
    args.molecules = [m.strip() for m in args.molecules.split(",") if m.strip()]
    if bad := sorted(set(args.molecules) - set(MOLECULES)):
        p.error(f"--molecules: unknown {bad}; choose from {list(MOLECULES)}")
    if args.k < 2:
        p.error("--k: an ensemble needs at least 2 members")
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    if bad := sorted(set(args.kinds) - set(TRAINED_KINDS)):
        p.error(f"--kinds: unknown {bad}; choose from {list(TRAINED_KINDS)}")
    return args


# ------------------------------------------------------------------ data
def split_frames(text: str) -> list[str]:
    """The frames of an extxyz text, each as its own text (count, comment, atoms)."""
    lines, frames, i = text.splitlines(keepends=True), [], 0
    while i < len(lines) and lines[i].strip():
        n = int(lines[i])
        frames.append("".join(lines[i : i + n + 2]))
        i += n + 2
    return frames


def make_split(mol_dir: Path, molecule: str, n_train: int, n_valid: int) -> Path:
    """``split.json`` (train/valid/test indices, seed 0) and ``test_300K.extxyz``."""
    path = mol_dir / "split.json"
    if path.exists():
        return path
    frames = split_frames((DATA / f"{molecule}_xtb_train_300K.extxyz").read_text())
    if n_train + n_valid >= len(frames):
        raise SystemExit(f"--n-train + --n-valid must leave held-out frames of "
                         f"{len(frames)}")  # fmt: skip
    order = np.random.default_rng(0).permutation(len(frames)).tolist()
    split = {
        "train": sorted(order[:n_train]),
        "valid": sorted(order[n_train : n_train + n_valid]),
        "test": sorted(order[n_train + n_valid :]),
    }
    mol_dir.mkdir(parents=True, exist_ok=True)
    test = "".join(frames[i] for i in split["test"])
    atomic_write_text(mol_dir / "test_300K.extxyz", test)
    atomic_write_json(path, split)
    return path


def test_files(mol_dir: Path, molecule: str) -> dict[str, Path]:
    """The three evaluation files, by set name."""
    return {
        "300K": mol_dir / "test_300K.extxyz",
        "600K": DATA / f"{molecule}_xtb_md_600K.extxyz",
        "1200K": DATA / f"{molecule}_xtb_md_1200K.extxyz",
    }


# ------------------------------------------------------------------ training
def base_config(args, molecule: str, split: Path, heads: int = 1):
    """The validated training config of one model (member 0 / the heads model)."""
    overrides = {"readout_heads": heads} if heads > 1 else {}
    raw = {
        "data": {
            "train": {"path": str(DATA / f"{molecule}_xtb_train_300K.extxyz")},
            "split_file": str(split),
            "e0": "least_squares",
        },
        "model": {"name": "so3krates", "preset": args.preset, "overrides": overrides},
        "training": {
            "energy_weight": 0.01,
            "forces_weight": 0.99,
            "lr": args.lr,
            "batch_size": args.batch_size,
            "schedule": "cosine",
            "schedule_clock": "time",
            "max_minutes": args.minutes,
            "max_epochs": None,
            "warmup_steps": 50,
            "min_lr": 1e-5,
            "valid_interval": 50,
            "threads": args.threads,
            "seed": 0,
        },
    }
    return validate_config(raw, ROOT, source=f"{molecule} study config")


def run_state(path: Path) -> str:
    """``done``, ``interrupted`` (resumable) or ``new`` (a partial start is removed)."""
    run = RunDir(path)
    if run.final_metrics.exists():
        if json.loads(run.final_metrics.read_text()).get("stop") != INTERRUPTED:
            return "done"
    if run.last.exists() and run.config.exists():
        return "interrupted"
    if path.exists():
        shutil.rmtree(path)
    return "new"


def train_models(args, molecule: str, mol_dir: Path, split: Path) -> dict[str, Path]:
    """Train (or continue) the committee and the multi-head model; their paths."""
    com = mol_dir / "committee"
    t0 = time.perf_counter()
    paths = {}
    if "committee" in args.kinds:
        _, interrupted = train_committee(
            base_config(args, molecule, split), com, args.k, progress=args.progress
        )
        if interrupted:
            raise SystemExit("interrupted: run the same command again to continue")
        paths["committee"] = com
        paths["single"] = com / "member_0" / "best.pt"
    heads = mol_dir / "heads"
    if not {"heads", "latent"} & set(args.kinds):
        return paths
    state = run_state(heads)
    if state == "interrupted":
        resume(heads, progress=args.progress)
    elif state == "new":
        cfg = base_config(args, molecule, split, heads=args.k)
        train(cfg, heads, progress=args.progress)
    if run_state(heads) != "done":
        raise SystemExit("interrupted: run the same command again to continue")
    if "latent" in args.kinds and not (heads / LATENT_FILE).exists():
        fit_run(
            heads,
            n_components=args.components,
            progress=args.progress,
            n_dims=args.latent_dims or None,
        )
    print(f"{molecule}: models ready ({time.perf_counter() - t0:.0f} s this call)")
    if "heads" in args.kinds:
        paths["heads"] = heads / "best.pt"
    if "latent" in args.kinds:
        paths["latent"] = heads / LATENT_FILE
    return paths


def load_kind(kind: str, path: Path):
    """The model of ``kind`` (heads: the heads' spread, not a latent.pt beside it)."""
    if kind == "single":
        return load_model(path)
    return load_ensemble(path, latent=kind == "latent")


def training_summary(run_dir: Path) -> dict:
    """Steps, seconds trained and validation force MAE of one run."""
    import csv

    final = json.loads((run_dir / "final_metrics.json").read_text())
    with open(run_dir / "metrics.csv", newline="") as fh:
        rows = list(csv.DictReader(fh))
    return {
        "steps": final.get("final_step"),
        "best_step": final.get("best_step"),
        "train_seconds": float(rows[-1]["elapsed_s"]) if rows else None,
        "valid_forces_mae": final.get("forces_mae"),
    }


# ------------------------------------------------------------------ evaluation
def evaluate_kind(kind: str, path: Path, files: dict[str, Path], eval_dir: Path):
    """Errors (and the spread's per-frame data) of one model on every set, cached.

    Returns:
        ({set: metrics dict}, {set: per-frame arrays of calibration.collect}).
    """
    metrics, frames = {}, {}
    model = None
    for name, file in files.items():
        stem = eval_dir / f"{kind}_{name}"
        if (stem.with_suffix(".json")).exists():
            metrics[name] = json.loads(stem.with_suffix(".json").read_text())
            if kind != "single":
                frames[name] = dict(np.load(stem.with_suffix(".npz")))
            continue
        if model is None:
            model = load_kind(kind, path).eval()
        dtype = next(model.parameters()).dtype
        store = read_source(DataSource(path=str(file)), Reporter(False))
        dataset = GraphDataset(store, model.cutoff, dtype)
        m = evaluate_model(model, dataset)
        m = {k: m[k] for k in ("energy_mae", "forces_mae", "forces_rmse")}
        if kind != "single":
            frames[name] = calibration.collect(model, dataset, 50)
            m |= _set_scores(frames[name])
            eval_dir.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(stem.with_suffix(".npz"), **frames[name])
        atomic_write_json(stem.with_suffix(".json"), m)
        metrics[name] = m
    return metrics, frames


def _set_scores(data: dict) -> dict:
    """Per-set ranking scores and how many frames exceed the force limit."""
    return {
        "spearman_max_force": calibration.spearman(
            data["frame_std"], data["frame_err"]
        ),
        "spearman_energy": (  # None without an energy std (latent distance)
            calibration.spearman(data["e_std"], data["e_err"])
            if len(data["e_std"])
            else None
        ),
        "n_frames": int(len(data["frame_err"])),
        "n_bad": int(np.sum(data["frame_err"] > FORCE_LIMIT)),
        "max_force_std_median": float(np.median(data["frame_std"])),
        "max_force_err_median": float(np.median(data["frame_err"])),
    }


def pooled(frames: dict[str, dict], names) -> dict:
    """The per-frame arrays of several sets concatenated."""
    return {k: np.concatenate([frames[n][k] for n in names]) for k in frames[names[0]]}


def threshold_summary(frames: dict[str, dict], limit: float = FORCE_LIMIT) -> dict:
    """The stop threshold over all sets and what it flags in each.

    ``threshold_eV_A`` (:func:`calibration.threshold_for` over all frames) is the
    largest ``forces_std_max`` threshold that flags every frame whose largest
    force error exceeds ``limit``; ``flagged_<set>`` the fraction of each set's
    frames it flags; ``false_alarm_300K`` the fraction of 300 K frames under
    the limit that it flags.
    """
    names = list(frames)
    all_ = pooled(frames, names)
    out = calibration.threshold_for(all_["frame_std"], all_["frame_err"], limit)
    thr = out.get("threshold_eV_A")
    hot = [n for n in names if n in HOT]
    if hot:
        h = pooled(frames, hot)
        out["spearman_hot"] = calibration.spearman(h["frame_std"], h["frame_err"])
    out["spearman_all"] = calibration.spearman(all_["frame_std"], all_["frame_err"])
    if thr is None:
        return out
    for n in names:
        out[f"flagged_{n}"] = float(np.mean(frames[n]["frame_std"] >= thr))
    if "300K" in frames:
        f = frames["300K"]
        good = f["frame_err"] <= limit
        flagged = f["frame_std"] >= thr
        out["false_alarm_300K"] = float(flagged[good].mean()) if good.any() else None
    return out


def energy_std_ranking(frames: dict[str, dict]) -> dict:
    """Spearman ρ of each frame's largest force error against the heads' energy std."""
    hot = pooled(frames, [n for n in frames if n in HOT])
    all_ = pooled(frames, list(frames))
    return {
        "spearman_hot": calibration.spearman(hot["e_std"], hot["frame_err"]),
        "spearman_all": calibration.spearman(all_["e_std"], all_["frame_err"]),
        **{
            f"spearman_{n}": calibration.spearman(f["e_std"], f["frame_err"])
            for n, f in frames.items()
        },
    }


def frames_plot(results: dict, molecule: str, k: int, path: Path) -> None:
    """Largest force error against predicted max force std, per frame and set."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    kinds = [kind for kind in results if results[kind].get("frames")]
    fig, axes = plt.subplots(1, len(kinds), figsize=(4.6 * len(kinds), 4.2))
    for ax, kind in zip(np.atleast_1d(axes), kinds, strict=True):
        for name, f in results[kind]["frames"].items():
            ax.scatter(f["frame_std"], f["frame_err"], s=8, alpha=0.7, label=name)
        thr = results[kind]["threshold"].get("threshold_eV_A")
        ax.axhline(FORCE_LIMIT, color="k", lw=0.8, ls="--", label="0.1 eV/Å")
        if thr is not None:
            ax.axvline(thr, color="r", lw=0.8, ls=":", label=f"threshold {thr:.3f}")
        ax.set(xscale="log", yscale="log", xlabel="predicted max force std (eV/Å)",
               ylabel="max |ΔF_i| (eV/Å)")  # fmt: skip
        rho = results[kind]["threshold"].get("spearman_hot", float("nan"))
        ax.set_title(f"{kind_name(kind, k)}: ρ(600+1200 K) {rho:.2f}", fontsize=9)
        ax.legend(fontsize=7)
    fig.suptitle(f"{molecule}, xTB: trained at 300 K")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def study_molecule(args, molecule: str, out: Path) -> dict:
    """Train, evaluate and summarise one molecule."""
    mol_dir = out / molecule
    split = make_split(mol_dir, molecule, args.n_train, args.n_valid)
    paths = train_models(args, molecule, mol_dir, split)
    files = test_files(mol_dir, molecule)
    eval_dir = mol_dir / "eval"
    if args.fresh_eval and eval_dir.exists():
        shutil.rmtree(eval_dir)
    results = {}
    for kind, path in paths.items():
        metrics, frames = evaluate_kind(kind, path, files, eval_dir)
        res = {"sets": metrics, "frames": frames}
        if kind == "heads":  # their energy std alone ranks the force errors?
            results["heads_energy"] = {"threshold": energy_std_ranking(frames)}
        if frames:
            res["threshold"] = threshold_summary(frames)
            res["other_limits"] = {
                str(lim): threshold_summary(frames, lim) for lim in OTHER_LIMITS
            }
            cal = calibration.calibration_metrics(pooled(frames, list(frames)))
            res["binned_all"] = {k: cal[k] for k in ("forces_binned", "energy_binned")}
            calibration.calibration_plot(
                cal, out / f"{molecule}_calibration_{kind}.png",
                f"{molecule} xTB, {kind_name(kind, args.k)}, 300+600+1200 K",
            )  # fmt: skip
        results[kind] = res
    frames_plot(results, molecule, args.k, out / f"{molecule}_frames.png")
    runs = {}
    if "committee" in paths:
        runs = {
            f"member_{k}": paths["committee"] / f"member_{k}" for k in range(args.k)
        }
    if (mol_dir / "heads" / "final_metrics.json").exists():
        runs["heads"] = mol_dir / "heads"
    for r in results.values():
        r.pop("frames", None)
    if "latent" in results and (mol_dir / "heads" / "latent.json").exists():
        results["latent"]["fit"] = json.loads(
            (mol_dir / "heads" / "latent.json").read_text()
        )
    return {
        "training": {n: training_summary(p) for n, p in runs.items()},
        "models": results,
    }


# ------------------------------------------------------------------ timing
def time_calls(args, out: Path) -> dict | None:
    """ms per energy+forces call on the first 3BPA frame, by model."""
    from ase.io import read
    from uncertainty_cost import _timer  # benchmarks/ is on sys.path as a script

    from equiforce.potential import Potential

    com = out / "3bpa" / "committee"
    if not (out / "3bpa" / "heads" / "best.pt").exists():
        return None
    atoms = read(DATA / "3bpa_xtb_train_300K.extxyz", index=0)
    heads = out / "3bpa" / "heads" / "best.pt"
    cases = {
        "one model": load_model(heads),  # the heads model's mean: one readout's cost
        f"{args.k} heads, mean only": load_model(heads),
        f"{args.k} heads + energy_std": load_ensemble(
            heads, forces_std=False, latent=False
        ),
        f"{args.k} heads + forces_std": load_ensemble(heads, latent=False),
    }
    if (heads.parent / LATENT_FILE).exists():
        cases["latent (heads model)"] = load_ensemble(heads.parent / LATENT_FILE)
    if (com / "member_0" / "best.pt").exists():
        cases["one model"] = load_model(com / "member_0" / "best.pt")
        cases[f"committee of {args.k}"] = load_ensemble(com)
    timers = {
        name: _timer(Potential(m, compile=False, skin=0.5), atoms, args.calls)
        for name, m in cases.items()
    }
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(args.rounds):  # interleaved rounds: load drifts hit all alike
        for name, run in timers.items():
            times[name].append(run())
    return {name: statistics.median(t) for name, t in times.items()}


# ------------------------------------------------------------------ report
def _f(v, spec: str = ".2f") -> str:
    return (
        "–" if v is None or (isinstance(v, float) and np.isnan(v)) else format(v, spec)
    )


def results_markdown(info: dict) -> str:
    """The tables of results.md (and docs/uncertainty.md)."""
    k = info["k"]
    lines = [
        f"So3krates `{info['preset']}`, {info['minutes']:g} min per model, "
        f"{info['threads']} thread(s), {info['n_train']} train / {info['n_valid']} "
        f"valid frames at 300 K; {info['date']}; {info['machine']}.",
        "",
        "| molecule | model | set | F MAE (meV/Å) | frames > 0.1 eV/Å | "
        "ρ max-force | ρ energy |",
        "|---|---|---|---|---|---|---|",
    ]
    for mol, res in info["molecules"].items():
        for kind, r in res["models"].items():
            for name, m in r.get("sets", {}).items():
                lines.append(
                    f"| {mol} | {kind_name(kind, k)} | {name} | "
                    f"{_f(m['forces_mae'], '.1f')} | "
                    f"{m.get('n_bad', '–')}/{m.get('n_frames', '–')} | "
                    f"{_f(m.get('spearman_max_force'))} | "
                    f"{_f(m.get('spearman_energy'))} |"
                )
    lines += [
        "",
        "| molecule | model | ρ 600+1200 K | ρ all | threshold (eV/Å) | "
        "flagged 300 K (false alarms) | flagged 600 K | flagged 1200 K | precision |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for mol, res in info["molecules"].items():
        for kind, r in res["models"].items():
            if "threshold" not in r:
                continue
            t = r["threshold"]
            lines.append(
                f"| {mol} | {kind_name(kind, k)} | "
                f"{_f(t.get('spearman_hot'))} | {_f(t.get('spearman_all'))} | "
                f"{_f(t.get('threshold_eV_A'), '.3f')} | "
                f"{_f(t.get('flagged_300K'))} ({_f(t.get('false_alarm_300K'))}) | "
                f"{_f(t.get('flagged_600K'))} | {_f(t.get('flagged_1200K'))} | "
                f"{_f(t.get('precision'))} |"
            )
    lines += [
        "",
        "Looser error limits (threshold in eV/Å, flagged fraction of 300 K / "
        "1200 K frames):",
        "",
        "| molecule | model | "
        + " | ".join(f"limit {lim} eV/Å" for lim in OTHER_LIMITS)
        + " |",
        "|---|---|" + "---|" * len(OTHER_LIMITS),
    ]
    for mol, res in info["molecules"].items():
        for kind, r in res["models"].items():
            if "other_limits" not in r:
                continue
            cells = [
                f"{_f(t.get('threshold_eV_A'), '.3f')} "
                f"({_f(t.get('flagged_300K'))} / {_f(t.get('flagged_1200K'))})"
                for t in r["other_limits"].values()
            ]
            name = kind_name(kind, k)
            lines.append(f"| {mol} | {name} | " + " | ".join(cells) + " |")
    lines += ["", "| molecule | member / model | steps | trained (s) | valid F MAE (meV/Å) |",
              "|---|---|---|---|---|"]  # fmt: skip
    for mol, res in info["molecules"].items():
        for name, t in res["training"].items():
            lines.append(
                f"| {mol} | {name} | {t['steps']} | {_f(t['train_seconds'], '.0f')} "
                f"| {_f(t['valid_forces_mae'], '.1f')} |"
            )
    if info.get("timing_ms"):
        base = info["timing_ms"]["one model"]
        lines += [
            "",
            "| 3BPA energy+forces call | ms | vs one model |",
            "|---|---|---|",
        ]
        for name, ms in info["timing_ms"].items():
            lines.append(f"| {name} | {ms:.1f} | {100 * (ms / base - 1):+.0f} % |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    out = args.out or ROOT / "benchmarks" / "results" / "uncertainty_study"
    out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    with contextlib.suppress(RuntimeError):  # already set once work has run
        torch.set_num_interop_threads(args.threads)
    info = {
        "command": " ".join(
            ["python", "benchmarks/uncertainty_study.py", *sys.argv[1:]]
        ),
        "date": date.today().isoformat(),
        "machine": f"{platform.machine()} {platform.processor()}".strip(),
        "torch": torch.__version__,
        "preset": args.preset,
        "minutes": args.minutes,
        "threads": args.threads,
        "k": args.k,
        "n_train": args.n_train,
        "n_valid": args.n_valid,
        "force_limit_eV_A": FORCE_LIMIT,
        "molecules": {},
    }
    for molecule in args.molecules:
        info["molecules"][molecule] = study_molecule(args, molecule, out)
    if "3bpa" in args.molecules:
        info["timing_ms"] = time_calls(args, out)
    atomic_write_json(out / "results.json", info)
    text = results_markdown(info)
    atomic_write_text(out / "results.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
