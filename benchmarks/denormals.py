"""What subnormal ("denormal") floats cost: training, inference and MD with flushing off/on.

Model: So3krates ``default`` preset on rMD17 aspirin (``examples/rmd17_aspirin.yaml``),
first trained for ``--warm-steps`` eager Adam steps with flushing off so that the
weights, gradients and Adam moments are those of a run under way, not of the
initialisation. Then:

1. **census**: one eager training step (energy, forces, force loss, weight
   gradients, fused Adam) under a ``TorchDispatchMode`` that counts the
   subnormal values every ATen operator returns, plus those in the weights,
   gradients, Adam moments and EMA weights: where subnormals come from.
2. **threads**: the flush check on every intra-op thread
   (:func:`equiforce.accel.denormals.subnormals_from_all_threads`) with flushing
   off, on the calling thread only (``torch.set_flush_denormal``), and everywhere
   (:func:`~equiforce.accel.denormals.flush_denormals`), and the time of a
   subnormal-heavy elementwise product and matrix product in each state.
3. **timing**: training step (eager autograd and compiled), inference
   (``Potential``, eager and compiled) and NVE MD steps, flushing off and on
   alternating in rounds; median ms per step and the ratio off/on.

Example::

    .venv/bin/python benchmarks/denormals.py --threads 2 --json docs/bench/denormals/aspirin.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from datetime import date
from pathlib import Path

import torch

from equiforce.accel.denormals import (
    SubnormalCensus,
    flush_denormals,
    subnormal_count,
    subnormals_from_all_threads,
)
from equiforce.config import load_config
from equiforce.train.compiled_step import CompiledTrainStep, assign_gradients
from equiforce.train.ema import EMA
from equiforce.train.loss import WeightedLoss
from equiforce.train.optimizer import make_optimizer
from equiforce.train.progress import Reporter
from equiforce.train.setup import build_training_model, prepare_data

ROOT = Path(__file__).resolve().parents[1]
CASES = ("train_eager", "train_compiled", "infer_eager", "infer_compiled", "md")


def parse_args() -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=5)
    p.add_argument("--warm-steps", type=int, default=50)
    p.add_argument("--rounds", type=int, default=4, help="alternating rounds")
    p.add_argument("--steps", type=int, default=20, help="steps per round and mode")
    p.add_argument("--cases", default=",".join(CASES), help=f"comma list of {CASES}")
    p.add_argument("--json", type=Path, default=None)
    return p.parse_args()


def census(model, loss_fn, optimizer, ema, batch) -> dict:
    """Subnormals produced by one eager training step, and held in the state."""
    mode = SubnormalCensus()
    with mode:
        optimizer.zero_grad(set_to_none=True)
        out = model(batch, compute_forces=True, create_graph=True)
        loss, _ = loss_fn(out, batch)
        loss.backward()
        optimizer.step()
    ema.update(model)
    params = list(model.parameters())
    state = [optimizer.state[p] for p in params if p in optimizer.state]

    def held(tensors) -> dict:
        tensors = [t for t in tensors if t is not None]
        return {
            "subnormal": sum(subnormal_count(t) for t in tensors),
            "of": sum(t.numel() for t in tensors),
        }

    by_op = {
        k: {"subnormal": v, "of": mode.sizes[k]}
        for k, v in mode.counts.most_common()
        if v
    }
    return {
        "ops_producing_subnormals": by_op,
        "weights": held(params),
        "gradients": held(p.grad for p in params),
        "adam_exp_avg": held(s.get("exp_avg") for s in state),
        "adam_exp_avg_sq": held(s.get("exp_avg_sq") for s in state),
        "ema_weights": held(ema.shadow.values()) if hasattr(ema, "shadow") else None,
    }


def timed(fn, n: int) -> float:
    """Seconds per call of ``fn`` over ``n`` calls."""
    start = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - start) / n


def thread_check(threads: int) -> dict:
    """Flush state and subnormal-heavy kernel times with and without flushing."""
    torch.set_num_threads(threads)
    a = torch.full((1 << 22,), 1e-20)  # a·1e-20 = 1e-40: subnormal results
    m = torch.randn(768, 768) * 1e-39  # subnormal inputs of a matrix product
    w = torch.randn(768, 768)
    res = {}
    for label in ("off", "main_thread_only", "all_threads"):
        flush_denormals(False)
        if label == "main_thread_only":
            torch.set_flush_denormal(True)
        elif label == "all_threads":
            flush_denormals(True)
        timed(lambda: a * 1e-20, 3)
        res[label] = {
            "subnormals_left_of_1Mi": subnormals_from_all_threads(),
            "elementwise_ms": 1e3 * min(timed(lambda: a * 1e-20, 10) for _ in range(3)),
            "matmul_ms": 1e3 * min(timed(lambda: m @ w, 10) for _ in range(3)),
        }
        print(f"threads {threads}, flush {label}: {res[label]}")
    flush_denormals(False)
    return res


def main() -> None:
    """Warm up, count, check threads, time; print and optionally save."""
    args = parse_args()
    cases = [c for c in args.cases.split(",") if c]
    flush_denormals(False)
    torch.set_num_threads(args.threads)
    config = load_config(
        ROOT / "examples" / "rmd17_aspirin.yaml",
        [f"training.batch_size={args.batch_size}", "training.dtype=float32"],
    )
    t = config.training
    data = prepare_data(config, config.model.resolved.cutoff, Reporter(enabled=False))
    model = build_training_model(config, data.statistics)[0].train()
    loss_fn = WeightedLoss(t.energy_weight, t.forces_weight)
    optimizer = make_optimizer(model, t)
    ema = EMA(model, t.ema_decay or 0.99)
    gen = torch.Generator().manual_seed(0)
    n = len(data.train)

    def batch():
        idx = torch.randperm(n, generator=gen)[: args.batch_size].numpy()
        return data.train.batch(idx)

    def eager_step(b) -> None:
        optimizer.zero_grad(set_to_none=True)
        out = model(b, compute_forces=True, create_graph=True)
        loss, _ = loss_fn(out, b)
        loss.backward()
        optimizer.step()
        ema.update(model)

    start = time.perf_counter()
    for _ in range(args.warm_steps):
        eager_step(batch())
    print(f"{args.warm_steps} warm-up steps in {time.perf_counter() - start:.0f} s")
    result: dict = {
        "threads": args.threads,
        "batch_size": args.batch_size,
        "warm_steps": args.warm_steps,
        "machine": platform.processor() or platform.machine(),
        "load_average_at_start": os.getloadavg(),
        "cores": os.cpu_count(),
        "date": date.today().isoformat(),
        "torch": torch.__version__,
        "census": census(model, loss_fn, optimizer, ema, batch()),
    }
    print(json.dumps(result["census"], indent=1))
    result["threads_check"] = {
        k: thread_check(k) for k in sorted({1, 2, args.threads}, reverse=True)
    }
    torch.set_num_threads(args.threads)
    batches = [batch() for _ in range(args.steps)]
    result["timing"] = {
        c: time_case(c, model, loss_fn, optimizer, ema, batches, args) for c in cases
    }
    result["load_average_at_end"] = os.getloadavg()
    print(json.dumps(result["timing"], indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1) + "\n")


def time_case(case, model, loss_fn, optimizer, ema, batches, args) -> dict:
    """Median ms per step of one case, flushing off and on alternating."""
    from equiforce.md.forcefield import ModelForceField
    from equiforce.md.integrators import VelocityVerlet
    from equiforce.md.state import state_from_atoms
    from equiforce.potential import Potential

    extra: dict = {}
    if case.startswith("train"):
        model.train()
        if case == "train_compiled":
            step = CompiledTrainStep(model, loss_fn)

            def one(b) -> None:
                optimizer.zero_grad(set_to_none=True)
                assign_gradients(model, step(b)[1])
                optimizer.step()
                ema.update(model)

            one(batches[0])
            extra["compile_s"] = step.compile_seconds
        else:

            def one(b) -> None:
                optimizer.zero_grad(set_to_none=True)
                out = model(b, compute_forces=True, create_graph=True)
                loss_fn(out, b)[0].backward()
                optimizer.step()
                ema.update(model)

        def run() -> None:
            for b in batches:
                one(b)

        per = len(batches)
    else:
        import copy

        from ase import Atoms

        frame = batches[0].split()[0]
        atoms = Atoms(
            frame.atomic_numbers.numpy(), frame.positions.detach().double().numpy()
        )
        pot = Potential(
            copy.deepcopy(model).eval(), compile=case != "infer_eager", skin=0.5
        )
        if case == "md":
            ff = ModelForceField(pot)
            integ = VelocityVerlet(dt=0.5)
            state = integ.init(state_from_atoms([atoms]), ff)

            def run() -> None:
                for _ in range(args.steps):
                    integ.step(state, ff)
        else:

            def run() -> None:
                for _ in range(args.steps):
                    pot.compute(atoms.positions, atoms.numbers)

        start = time.perf_counter()
        run()  # warm-up (compiles)
        extra["first_pass_s"] = time.perf_counter() - start
        per = args.steps
    # wall time, and CPU time of the process (all its threads): on a shared
    # machine the CPU time is what the work costs, the wall time adds waiting
    times: dict[str, list[float]] = {"off": [], "on": [], "off_cpu": [], "on_cpu": []}
    for r in range(args.rounds):
        for label in ("off", "on"):
            flush_denormals(label == "on")
            start, cpu = time.perf_counter(), time.process_time()
            run()
            times[label].append((time.perf_counter() - start) / per * 1e3)
            times[f"{label}_cpu"].append((time.process_time() - cpu) / per * 1e3)
        print(
            f"{case} round {r + 1}: "
            + ", ".join(f"{k} {v[-1]:.2f} ms" for k, v in times.items())
        )
    flush_denormals(False)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {
        "off_ms": med["off"],
        "on_ms": med["on"],
        "off_over_on": med["off"] / med["on"],
        "off_cpu_ms": med["off_cpu"],
        "on_cpu_ms": med["on_cpu"],
        "off_over_on_cpu": med["off_cpu"] / med["on_cpu"],
        **extra,
        "rounds": times,
    }


if __name__ == "__main__":
    main()
