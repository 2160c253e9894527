"""Fine-tuning study: SO3LR fine-tuned vs So3krates from scratch on 50 aspirin frames.

Both models train on the same 50 rMD17 aspirin frames (split 01, frames 0-49 of
the train file; validation: frames 950-999 of it) for the same wall-clock budget
(``training.max_minutes``, cosine learning rate over that time), one after the
other on the same threads, and are tested on the rMD17 test file. Rows:

- ``so3lr_zero_shot``: the shipped SO3LR, before any step, with its per-element
  reference energies refitted on the 50 frames (its ``init.pt``; SO3LR's own E0
  are zero and rMD17 energies are PBE/def2-SVP totals, so only forces compare
  without the refit);
- ``so3lr_finetuned``: ``examples/so3lr_finetune_aspirin.yaml`` (lr 2e-4);
- ``so3krates_scratch``: the same data and budget, So3krates ``default`` preset
  (F = 128, T = 2, degrees 1-4), lr 1e-3, E0 by least squares.

    python benchmarks/so3lr_finetune.py                 # 20 min per model
    python benchmarks/so3lr_finetune.py --minutes 2 --test-index 0:200   # smoke

Writes ``--out`` (default ``benchmarks/results/so3lr_finetune``): the two run
directories and ``results.json`` (test errors in meV and meV/Å, steps and seconds
trained, the command, machine and date).
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import sys
import time
from datetime import date
from pathlib import Path

import torch
import yaml

from equiforce.atomic import atomic_write_json
from equiforce.config import EquiforceConfig, validate_config
from equiforce.data.dataset import FrameStore, GraphDataset
from equiforce.data.io import read
from equiforce.models.checkpoint import load_checkpoint
from equiforce.models.registry import load_model
from equiforce.train.launch import train
from equiforce.train.metrics import predict
from equiforce.train.setup import eval_batches

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "so3lr_finetune_aspirin.yaml"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--minutes", type=float, default=20.0, help="budget per model")
    p.add_argument("--n-train", type=int, default=50, help="training frames")
    p.add_argument("--threads", type=int, default=1, help="torch threads")
    p.add_argument(
        "--test-index", default=":", help="test frames, e.g. 0:200 (default all)"
    )
    p.add_argument("--lr-finetune", type=float, default=2e-4)
    p.add_argument("--lr-scratch", type=float, default=1e-3)
    p.add_argument("--freeze", nargs="*", default=[], help="SO3LR parameter globs")
    p.add_argument(
        "--out", type=Path, default=ROOT / "benchmarks" / "results" / "so3lr_finetune"
    )
    p.add_argument(
        "--fresh", action="store_true", help="delete earlier runs in --out first"
    )
    return p.parse_args(argv)


def configs(args: argparse.Namespace) -> dict[str, EquiforceConfig]:
    """The fine-tuning config (the example) and the from-scratch one."""
    raw = yaml.safe_load(EXAMPLE.read_text())
    raw["data"]["train"]["index"] = f"0:{args.n_train}"
    raw["training"] |= {"max_minutes": args.minutes, "threads": args.threads}
    fine = json.loads(json.dumps(raw))  # deep copies
    fine["training"]["lr"] = args.lr_finetune
    fine["model"]["freeze"] = list(args.freeze)
    scratch = json.loads(json.dumps(raw))
    scratch["model"] = {"name": "so3krates", "preset": "default"}
    scratch["data"]["e0"] = "least_squares"
    scratch["training"]["lr"] = args.lr_scratch
    return {
        "so3lr_finetuned": validate_config(fine, EXAMPLE.parent, str(EXAMPLE)),
        "so3krates_scratch": validate_config(scratch, EXAMPLE.parent, str(EXAMPLE)),
    }


def test_errors(model, config: EquiforceConfig, index: str) -> dict:
    """Test-file errors of ``model`` (meV, meV/Å), long-range pairs when it has them."""
    source = config.data.test
    kwargs = source.read_kwargs() | {"index": index}
    store = FrameStore.from_atoms(read(source.path, **kwargs))
    dtype = next(model.parameters()).dtype
    lr_cutoff = getattr(model, "lr_cutoff", None)
    ds = GraphDataset(store, model.cutoff, dtype, lr_cutoff)
    metrics = predict(model.eval(), eval_batches(ds, 25)()).metrics()
    keep = ("n_structures", "energy_mae", "energy_rmse", "forces_mae", "forces_rmse")
    return {k: metrics[k] for k in keep}


def run_one(name: str, config: EquiforceConfig, out: Path, args) -> dict:
    """Train one model (or reuse a finished run) and test its best.pt."""
    run = out / name
    if not (run / "final_metrics.json").exists():
        if run.exists():
            shutil.rmtree(run)
        torch.set_num_threads(args.threads)
        t0 = time.perf_counter()
        train(config, run, progress=False)
        print(f"{name}: trained in {time.perf_counter() - t0:.0f} s", flush=True)
    final = json.loads((run / "final_metrics.json").read_text())
    last = load_checkpoint(run / "last.pt")["training_state"]
    row = {
        "steps": int(final["final_step"]),
        "best_step": int(final["best_step"]),
        "seconds_trained": round(float(last["elapsed"]), 1),
        "stop": final["stop"],
    }
    row |= test_errors(load_model(run / "best.pt"), config, args.test_index)
    return row


def main(argv=None) -> int:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    out = args.out
    if args.fresh and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    rows: dict[str, dict] = {}
    cfgs = configs(args)
    for name, config in cfgs.items():
        rows[name] = run_one(name, config, out, args)
        print(name, json.dumps(rows[name]), flush=True)
    zero = load_model(out / "so3lr_finetuned" / "init.pt")
    rows["so3lr_zero_shot"] = test_errors(
        zero, cfgs["so3lr_finetuned"], args.test_index
    )
    print("so3lr_zero_shot", json.dumps(rows["so3lr_zero_shot"]), flush=True)
    result = {
        "date": date.today().isoformat(),
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]),
        "machine": f"{platform.processor() or platform.machine()}, "
        f"{torch.get_num_threads()} thread(s), torch {torch.__version__}",
        "minutes_per_model": args.minutes,
        "n_train": args.n_train,
        "test_index": args.test_index,
        "units": "energy meV, forces meV/Å (test file)",
        "rows": rows,
    }
    atomic_write_json(out / "results.json", result)
    print(out / "results.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
