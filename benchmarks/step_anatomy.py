"""Where the rMD17 aspirin training step spends its time, and what bf16 products would buy.

So3krates ``default`` preset on aspirin (``examples/rmd17_aspirin.yaml``), trained
for ``--warm-steps`` eager steps first. Flushing of subnormals is on (the
default of every command). Times are CPU time of the process per step (all
threads; on a shared machine the wall time adds waiting for a core) and wall
time, medians over ``--rounds``.

1. **profile**: ``torch.profiler`` table of the compiled step (self CPU time).
2. **batch**: compiled step, ms per step and structures/s for each batch size.
3. **parts** (eager, batch 5): energy alone, energy+forces (one backward),
   energy+forces keeping the graph, and the full step (the weight gradient
   through the forces: the double backward).
4. **bf16**: the eager step and energy+forces with the forward under
   ``torch.autocast("cpu", torch.bfloat16)`` (matrix products in bf16 with float32
   accumulation) against float32: time, and the force deviation on
   ``--test-frames`` frames of the test file (RMSE and max, meV/Å) next to the
   model's own force error there.

Example::

    .venv/bin/python benchmarks/step_anatomy.py --threads 1 --json docs/bench/denormals/anatomy_t1.json
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import time
from datetime import date
from pathlib import Path

import numpy as np
import torch

from equiforce import keys
from equiforce.accel.denormals import flush_denormals
from equiforce.config import load_config
from equiforce.train.compiled_step import CompiledTrainStep, assign_gradients
from equiforce.train.loss import WeightedLoss
from equiforce.train.optimizer import make_optimizer
from equiforce.train.progress import Reporter
from equiforce.train.setup import build_training_model, prepare_data, read_source

ROOT = Path(__file__).resolve().parents[1]


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--warm-steps", type=int, default=100)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="steps per round")
    p.add_argument("--batch-sizes", default="1,2,5,10,20")
    p.add_argument("--test-frames", type=int, default=100)
    p.add_argument("--parts", default="profile,batch,parts,bf16")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args()


def measure(fn, rounds: int, steps: int) -> dict:
    """Median wall and CPU ms per call of ``fn`` (``steps`` calls per round)."""
    fn()
    wall, cpu = [], []
    for _ in range(rounds):
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(steps):
            fn()
        wall.append((time.perf_counter() - t0) / steps * 1e3)
        cpu.append((time.process_time() - c0) / steps * 1e3)
    return {"wall_ms": statistics.median(wall), "cpu_ms": statistics.median(cpu)}


def main() -> None:
    """Warm up, then the requested parts; print and optionally save."""
    args = parse_args()
    parts = set(args.parts.split(","))
    flush_denormals()
    torch.set_num_threads(args.threads)
    config = load_config(
        ROOT / "examples" / "rmd17_aspirin.yaml", ["training.dtype=float32"]
    )
    t = config.training
    data = prepare_data(config, config.model.resolved.cutoff, Reporter(enabled=False))
    model = build_training_model(config, data.statistics)[0].train()
    loss_fn = WeightedLoss(t.energy_weight, t.forces_weight)
    optimizer = make_optimizer(model, t)
    gen = torch.Generator().manual_seed(0)
    n = len(data.train)

    def batch(size: int = 5):
        return data.train.batch(torch.randperm(n, generator=gen)[:size].numpy())

    def eager_step(b, autocast: bool = False) -> None:
        optimizer.zero_grad(set_to_none=True)
        ctx = (
            torch.autocast("cpu", torch.bfloat16)
            if autocast
            else contextlib.nullcontext()
        )
        with ctx:
            out = model(b, compute_forces=True, create_graph=True)
        loss_fn(out, b)[0].backward()
        optimizer.step()

    start = time.perf_counter()
    for _ in range(args.warm_steps):
        eager_step(batch())
    result: dict = {
        "threads": args.threads,
        "warm_steps": args.warm_steps,
        "warm_up_s": time.perf_counter() - start,
        "load_average_at_start": os.getloadavg(),
        "date": date.today().isoformat(),
        "torch": torch.__version__,
    }
    b5 = batch()
    if parts & {"profile", "batch"}:
        step = CompiledTrainStep(model, loss_fn)

        def compiled(b) -> None:
            optimizer.zero_grad(set_to_none=True)
            assign_gradients(model, step(b)[1])
            optimizer.step()

        compiled(b5)
        result["compile_s"] = step.compile_seconds
    if "profile" in parts:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.steps):
                compiled(b5)
        rows = sorted(
            prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True
        )
        total = sum(e.self_cpu_time_total for e in rows)
        result["profile_top"] = [
            {
                "name": e.key,
                "share": e.self_cpu_time_total / total,
                "calls_per_step": e.count / args.steps,
                "self_ms_per_step": e.self_cpu_time_total / 1e3 / args.steps,
            }
            for e in rows[:15]
        ]
        for r in result["profile_top"]:
            print(f"{r['share']:6.1%} {r['self_ms_per_step']:8.2f} ms  {r['name']}")
    if "batch" in parts:  # sizes interleaved in each round: same machine state
        sizes = [int(s) for s in args.batch_sizes.split(",")]
        sets = {size: [batch(size) for _ in range(args.steps)] for size in sizes}
        times = {size: ([], []) for size in sizes}
        for size in sizes:
            compiled(sets[size][0])  # any recompilation outside the timing
        for _ in range(args.rounds):
            for size in sizes:
                t0, c0 = time.perf_counter(), time.process_time()
                for b in sets[size]:
                    compiled(b)
                times[size][0].append((time.perf_counter() - t0) / args.steps * 1e3)
                times[size][1].append((time.process_time() - c0) / args.steps * 1e3)
        result["batch"] = {}
        for size in sizes:
            cpu = statistics.median(times[size][1])
            result["batch"][size] = r = {
                "wall_ms": statistics.median(times[size][0]),
                "cpu_ms": cpu,
                "structures_per_cpu_s": size / cpu * 1e3,
                "edges": int(np.mean([b.n_edges for b in sets[size]])),
            }
            print(f"batch {size}: {r}")
    if "parts" in parts:
        result["parts"] = eager_parts(model, loss_fn, b5, eager_step, args)
    if "bf16" in parts:
        result["bf16"] = bf16(model, config, b5, eager_step, args)
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps({k: v for k, v in result.items() if k != "profile_top"}, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def eager_parts(model, loss_fn, b, eager_step, args) -> dict:
    """Eager energy, forces, forces with graph, full step (batch ``b``)."""

    def energy() -> None:
        with torch.no_grad():
            model(b, compute_forces=False, create_graph=False)

    def forces() -> None:
        model(b, compute_forces=True, create_graph=False)

    def forces_graph() -> None:
        model(b, compute_forces=True, create_graph=True)

    model.train()  # the exact (table-free) path for all four
    res = {}
    for name, fn in (
        ("energy", energy),
        ("energy_forces", forces),
        ("energy_forces_keep_graph", forces_graph),
        ("full_step_double_backward", lambda: eager_step(b)),
    ):
        res[name] = measure(fn, args.rounds, args.steps)
        print(f"{name}: {res[name]}")
    return res


def bf16(model, config, b, eager_step, args) -> dict:
    """Speed and force deviation of bf16 autocast against float32."""
    from equiforce.data.dataset import GraphDataset

    res = {
        "step_float32": measure(lambda: eager_step(b), args.rounds, args.steps),
        "step_bf16": measure(lambda: eager_step(b, True), args.rounds, args.steps),
    }
    model.train()  # exact path (no inference tables), forces only
    ef = {}
    for label, ctx in (
        ("float32", contextlib.nullcontext),
        ("bf16", lambda: torch.autocast("cpu", torch.bfloat16)),
    ):

        def call(ctx=ctx) -> None:
            with ctx():
                model(b, compute_forces=True, create_graph=False)

        ef[label] = measure(call, args.rounds, args.steps)
    res["energy_forces_float32"], res["energy_forces_bf16"] = ef["float32"], ef["bf16"]
    store = read_source(config.data.test, Reporter(enabled=False))
    test = GraphDataset(store, model.cutoff, dtype=torch.float32)
    idx = np.arange(min(args.test_frames, len(test)))
    dev, err, ref = [], [], []
    for chunk in np.array_split(idx, max(1, len(idx) // 10)):
        g = test.batch(chunk)
        f32 = model(g, compute_forces=True, create_graph=False)[keys.FORCES].detach()
        with torch.autocast("cpu", torch.bfloat16):
            out = model(g, compute_forces=True, create_graph=False)
        f16 = out[keys.FORCES].detach().float()
        dev.append((f16 - f32).numpy())
        err.append((f32 - g.targets[keys.FORCES]).numpy())
        ref.append(g.targets[keys.FORCES].numpy())
    dev, err, ref = (np.concatenate(x) for x in (dev, err, ref))
    res["forces_meV_per_A"] = {
        "bf16_minus_float32_rmse": 1e3 * float(np.sqrt((dev**2).mean())),
        "bf16_minus_float32_max": 1e3 * float(np.abs(dev).max()),
        "model_error_rmse_float32": 1e3 * float(np.sqrt((err**2).mean())),
        "reference_force_rms": 1e3 * float(np.sqrt((ref**2).mean())),
        "frames": len(idx),
    }
    print(json.dumps(res, indent=1))
    return res


if __name__ == "__main__":
    main()
