"""Training throughput (structures/s), eager autograd vs the compiled training step.

One process, same data, model and batches: the eager step (``model(...,
create_graph=True)`` then ``loss.backward()``) and the compiled step
(:class:`equiforce.train.compiled_step.CompiledTrainStep`) alternate in rounds, so
both see the same machine state. Each step includes the Adam update. The compiled
step's first call (compilation) is timed separately.

Example (issue 6, item 5)::

    .venv/bin/python benchmarks/train_speed.py --molecule aspirin --threads 2 \\
        --json docs/bench/session3/train_speed.json
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from equiforce.config import load_config
from equiforce.train.compiled_step import CompiledTrainStep, assign_gradients
from equiforce.train.loss import WeightedLoss
from equiforce.train.progress import Reporter
from equiforce.train.setup import build_training_model, prepare_data

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--molecule", choices=["aspirin", "ethanol"], default="aspirin")
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    p.add_argument("--steps", type=int, default=40, help="steps per round and mode")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    p.add_argument("--json", type=Path, default=None)
    p.add_argument(
        "--profile",
        type=Path,
        default=None,
        help="after the rounds, profile one pass of compiled steps (Inductor kernels "
        "named, torch.profiler) and write the table of self CPU time to this file; "
        "the named kernels add a little overhead to every compiled step",
    )
    return p.parse_args()


def main() -> None:
    """Run the comparison and print (and optionally save) the medians."""
    args = parse_args()
    torch.set_num_threads(args.threads)
    if args.profile is not None:
        import torch._inductor.config as inductor_config

        inductor_config.cpp.enable_kernel_profile = True  # one row per fused kernel
    config = load_config(
        ROOT / "examples" / f"rmd17_{args.molecule}.yaml",
        [f"training.batch_size={args.batch_size}", f"training.dtype={args.dtype}"],
    )
    t = config.training
    data = prepare_data(config, config.model.resolved.cutoff, Reporter(enabled=False))
    device = torch.device(args.device)
    model = build_training_model(config, data.statistics)[0].to(device).train()
    loss_fn = WeightedLoss(t.energy_weight, t.forces_weight)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-4)
    gen = torch.Generator().manual_seed(0)
    n = len(data.train)
    batches = [
        data.train.batch(
            torch.randperm(n, generator=gen)[: args.batch_size].numpy()
        ).to(device)
        for _ in range(args.steps)
    ]
    compiled = CompiledTrainStep(model, loss_fn)

    def eager_step(batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(batch, compute_forces=True, create_graph=True)
        loss, _ = loss_fn(out, batch)
        loss.backward()
        optimizer.step()

    def compiled_step(batch) -> None:
        optimizer.zero_grad(set_to_none=True)
        _, grads = compiled(batch)
        assign_gradients(model, grads)
        optimizer.step()

    compiled_step(batches[0])  # compile
    print(f"compiled step: first call {compiled.compile_seconds:.1f} s")
    eager_step(batches[0])
    times: dict[str, list[float]] = {"eager": [], "compiled": []}
    for r in range(args.rounds):
        for mode, fn in (("eager", eager_step), ("compiled", compiled_step)):
            start = time.perf_counter()
            for b in batches:
                fn(b)
            if device.type == "cuda":  # the steps are queued, not finished
                torch.cuda.synchronize()
            times[mode].append((time.perf_counter() - start) / len(batches))
        print(
            f"round {r + 1}/{args.rounds}: "
            + ", ".join(f"{m} {v[-1] * 1e3:.1f} ms/step" for m, v in times.items())
        )
    result = {
        "molecule": args.molecule,
        "batch_size": args.batch_size,
        "dtype": args.dtype,
        "threads": args.threads,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "compile_seconds": compiled.compile_seconds,
        "still_compiled": compiled.compiled,
        "n_compiles": compiled.n_compiles,
        "machine": platform.processor() or platform.machine(),
        "date": date.today().isoformat(),
        "torch": torch.__version__,
    }
    for mode, v in times.items():
        ms = statistics.median(v) * 1e3
        result[f"{mode}_ms_per_step"] = ms
        result[f"{mode}_structures_per_s"] = args.batch_size / ms * 1e3
    # after a failed compile both modes are the autograd step: no speed-up to report
    result["speedup"] = (
        result["eager_ms_per_step"] / result["compiled_ms_per_step"]
        if compiled.compiled
        else None
    )
    print(json.dumps(result, indent=2))
    if args.profile is not None:
        profile_compiled(compiled_step, batches, args.profile)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2) + "\n")


def profile_compiled(step, batches, path: Path) -> None:
    """Profile one pass of ``step`` over ``batches``; write the self-CPU-time table."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for b in batches:
            step(b)
    table = prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=40)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{len(batches)} compiled steps\n{table}\n")
    print(table)


if __name__ == "__main__":
    main()
