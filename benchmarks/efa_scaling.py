"""Cost of EFA against atoms (100 to 100,000): local, EFA and dense O(N²) So3krates.

Issue 20's cost benchmark. Three models on the same open clusters (jittered
simple cubic packing at 0.1 atoms/Å³, C/H/O, ``efa_cost.cluster``):

- ``local``: the So3krates default preset (F = 128, 2 layers, cutoff 5 Å);
- ``efa``: the same with EFA in both layers (``EFA`` below: r_max = 130 Å, which
  covers the 100k-atom cluster's 124 Å diameter; ω_max = π/130 rad/Å, so
  b_max = ω_max·r_max = π and the 50-point Lebedev grid (order 11, ≤ 1.36π at
  l = 0) is fine enough; D_qk = 16, D_v = 32, degrees [0]; output projections
  random, not zero, so the branch acts as in a trained model);
- ``dense``: the EFA model with the quadrature replaced by its exact O(N²)
  closed form y_i = Σ_j Σ_k (q_i^{(k)}·k_j^{(k)}) j₀(ω_k r_ij) v_j / √D_qk (same
  q/k/v weights; rows in chunks under activation checkpointing, so memory stays
  O(N)); it is skipped where its predicted time exceeds ``--dense-limit-s``.

Each (model, size) runs in a fresh subprocess (its peak RSS, ``ru_maxrss``, is
its own) under a memory guard (RLIMIT_AS and an RSS watchdog; a run that passes
it is recorded as "does not fit" instead of swapping). Per call: one eager
float32 energy+forces call ``model(graph)`` (forces-only inference path, graph
built beforehand); one warm-up call, then the median of ``--repeats`` calls, fewer
(at least one) where they would exceed ``--budget-s``. The EFA and dense workers
also time one attention block alone (forward + gradient w.r.t. features and
positions) after the model calls. Exponents: log-log least squares over
≥ 1,000 atoms::

    nice -n 5 env PYTHONPATH=src python benchmarks/efa_scaling.py \\
        --json docs/bench/global/efa_scaling.json

``--plot`` redraws ``efa_scaling.png`` from a JSON file without measuring;
``--merge A.json B.json --json OUT.json`` joins runs (e.g. sizes measured by
separate drivers), recomputes the summary and plots.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
from efa_cost import cluster  # sibling script (benchmarks/ is on sys.path)

R_MAX = 130.0
EFA = {
    "r_max": R_MAX,
    "max_frequency": math.pi / R_MAX,
    "lebedev_order": 11,
    "zero_init": False,
}
SIZES = [100, 300, 1000, 3000, 10000, 30000, 100000]
#: ``efa_values``: EFA carrying the Euclidean variables too (``equivariant_values``
#: 4, the setting of examples/global_cumulene.yaml)
MODELS = ["local", "efa", "efa_values", "dense"]
VALUES = 4
GIB = 1024**3


# ------------------------------------------------------------ dense baseline
def _dense_rows(qa, kp, v, pa, pos, omega_over_pi):
    """Rows a of y: (B, P, 2), (N, P, 2), (N, D_v), (B, 3), (N, 3), (P,) -> (B, D_v)."""
    r = torch.cdist(pa, pos)  # (B, N) Å
    dots = torch.einsum("bpc,npc->bnp", qa, kp)  # (B, N, P) q^{(k)}·k^{(k)}
    kernel = torch.sinc(r[..., None] * omega_over_pi)  # j₀(ω_k r_ij), (B, N, P)
    return (dots * kernel).sum(-1) @ v


def dense_integrals(
    q, k, v, positions, graph_index, n_atoms, frequencies, grid_u, grid_weights
):
    """Exact O(N²) l = 0 output (N, 1, D_v), one structure; drop-in for the EFA's."""
    from torch.utils.checkpoint import checkpoint

    if n_atoms.shape[0] != 1 or grid_weights.shape[0] != 1:
        raise ValueError("the dense baseline takes one structure and degrees [0]")
    n, d_qk = q.shape
    qp, kp = q.view(n, -1, 2), k.view(n, -1, 2)
    w = (frequencies / math.pi).to(q.dtype)
    chunk = max(1, 2**21 // n)  # (chunk, N, P) float32 tensors of ≤ 64 MiB
    rows = [
        checkpoint(
            _dense_rows,
            qp[a : a + chunk],
            kp,
            v,
            positions[a : a + chunk],
            positions,
            w,
            use_reentrant=False,
        )  # fmt: skip
        for a in range(0, n, chunk)
    ]
    return (torch.cat(rows) / math.sqrt(d_qk))[:, None]


# ----------------------------------------------------------------- the worker
def build(kind: str):
    from equiforce.models.registry import build_model
    from equiforce.nn import efa

    if kind == "dense":
        efa.euclidean_rope_integrals = dense_integrals  # the block calls it by name
    ga = None if kind == "local" else EFA
    if kind == "efa_values":
        ga = EFA | {"equivariant_values": VALUES}
    return build_model(
        "so3krates", dtype=torch.float32, seed=0, global_attention=ga
    ).eval()


def timed(fn, repeats: int, budget_s: float) -> tuple[float, list[float], list[float]]:
    """Warm-up seconds, wall and CPU seconds of the timed calls (≤ repeats).

    CPU seconds are this process's (``time.process_time``): with one thread
    they count the work alone, not the waits for a core on a loaded machine.

    A warm-up call longer than the budget is the only call (its time is then
    the measurement; the warm-up's extra work, filter tables, is < 1 s).
    """
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    first, first_cpu = time.perf_counter() - start, time.process_time() - cpu
    if first > budget_s:
        return first, [first], [first_cpu]
    n = max(1, min(repeats, int(budget_s / max(first, 1e-9))))
    times, cpu_times = [], []
    for _ in range(n):
        start, cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - cpu)
    return first, times, cpu_times


def maxrss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def worker(kind: str, n: int, repeats: int, budget_s: float) -> dict:
    from equiforce.data.graph import AtomicGraph

    torch.manual_seed(0)
    pos, z = cluster(n)
    model = build(kind)
    graph = AtomicGraph.from_arrays(pos, z, model.cutoff, dtype=torch.float32)
    row = {"model": kind, "n_atoms": len(z), "n_edges": graph.n_edges}
    row["extent_A"] = 2 * float(np.linalg.norm(pos - pos.mean(0), axis=1).max())
    row["rss_before_mib"] = maxrss_mib()
    first, times, cpu = timed(lambda: model(graph)["forces"], repeats, budget_s)
    row.update(warmup_s=first, call_s=statistics.median(times), calls=times)
    row.update(call_cpu_s=statistics.median(cpu), calls_cpu=cpu)
    row["peak_rss_mib"] = maxrss_mib()  # before the block timings below
    if kind != "local":
        block = model.global_attention["0"]
        feats = torch.randn(len(z), 128)
        p = graph.positions.detach()
        ev = torch.randn(len(z), model.m_tot) if block.ev_gate is not None else None

        def block_call() -> None:
            f = feats.clone().requires_grad_(True)
            x = p.clone().requires_grad_(True)
            outs = block(f, x, graph.graph_index, graph.n_atoms, ev)
            loss = sum(o.square().sum() for o in outs if o is not None)
            torch.autograd.grad(loss, (f, x))

        _, btimes, bcpu = timed(block_call, repeats, budget_s / 2)
        row["block_s"] = statistics.median(btimes)
        row["block_cpu_s"] = statistics.median(bcpu)
    return row


def agreement(n: int = 300) -> float:
    """Largest |EFA − dense| of one block's output over its largest |dense| entry."""
    from equiforce.nn import efa

    torch.manual_seed(0)
    pos, _ = cluster(n)
    x = torch.tensor(pos, dtype=torch.float64)
    q, k = (
        torch.randn(len(x), 16, dtype=x.dtype),
        torch.randn(len(x), 16, dtype=x.dtype),
    )
    v = torch.randn(len(x), 32, dtype=x.dtype)
    gi, na = torch.zeros(len(x), dtype=torch.long), torch.tensor([len(x)])
    freqs = efa.rope_frequencies(8, EFA["max_frequency"])
    u, _ = efa.lebedev_grid(EFA["lebedev_order"])
    wts = efa.integration_weights(EFA["lebedev_order"], (0,))
    args = (q, k, v, x, gi, na, freqs, u, wts)
    fast, exact = efa.euclidean_rope_integrals(*args), dense_integrals(*args)
    return float((fast - exact).abs().max() / exact.abs().max())


# ----------------------------------------------------------------- the driver
def available_bytes() -> int:
    with open("/proc/meminfo") as f:
        info = {ln.split(":")[0]: int(ln.split()[1]) * 1024 for ln in f}
    return info["MemAvailable"]


def run_worker(args, kind: str, n: int, limit: int) -> dict:
    """One (model, size) in a fresh process; RSS above ``limit`` kills it."""
    cmd = [sys.executable, __file__, "--worker", kind, str(n)]
    cmd += ["--repeats", str(args.repeats), "--budget-s", str(args.budget_s)]
    env = dict(os.environ, OMP_NUM_THREADS=str(args.threads))
    env["EFA_SCALING_THREADS"] = str(args.threads)

    def guard() -> None:  # address space: RSS limit plus room for mappings
        lim = limit + 4 * GIB
        resource.setrlimit(resource.RLIMIT_AS, (lim, lim))

    load0 = os.getloadavg()
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
        text=True, preexec_fn=guard,
    )  # fmt: skip
    killed = False
    while proc.poll() is None:
        try:
            with open(f"/proc/{proc.pid}/status") as f:
                rss = next(int(ln.split()[1]) for ln in f if ln.startswith("VmRSS"))
        except (FileNotFoundError, StopIteration, ProcessLookupError):
            rss = 0
        if rss * 1024 > limit:
            proc.kill()
            killed = True
        time.sleep(0.2)
    out, err = proc.communicate()
    load = [round(a, 2) for a in load0] + [round(a, 2) for a in os.getloadavg()]
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if proc.returncode == 0 and lines:
        row = json.loads(lines[-1])
        row["load_before_after"] = load
        return row
    memory = killed or "MemoryError" in err or "alloc" in err.lower()
    return {
        "model": kind, "n_atoms": n, "fits": False if memory else None,
        "error": ("does not fit: RSS limit" if killed else err.strip()[-400:]),
        "limit_gib": limit / GIB, "load_before_after": load,
    }  # fmt: skip


def fit_exponent(rows: list[dict], key: str, min_atoms: int = 1000) -> float | None:
    pts = [
        (r["n_atoms"], r[key]) for r in rows if r.get(key) and r["n_atoms"] >= min_atoms
    ]
    if len(pts) < 2:
        return None
    x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
    return float(np.polyfit(x, y, 1)[0])


def summarise(rows: list[dict]) -> dict:
    """Exponents (wall and CPU time, memory) and the EFA/dense share of each call.

    ``added_vs_local``: model call over the local model's, minus 1 (CPU time);
    ``blocks_vs_local``: the two attention blocks alone (2 × block CPU time) over
    the local call, a steadier estimate of the same share on a loaded machine.
    """
    by = {m: [r for r in rows if r["model"] == m and "call_s" in r] for m in MODELS}
    out = {}
    for m, rs in by.items():
        for key in ("call_s", "call_cpu_s", "peak_rss_mib"):
            out[f"{m}_{key}_exponent"] = fit_exponent(rs, key)
        if m != "local":
            out[f"{m}_block_cpu_s_exponent"] = fit_exponent(rs, "block_cpu_s")
    loc = {r["n_atoms"]: r for r in by["local"]}
    for r in by["efa"] + by["efa_values"] + by["dense"]:
        base = loc.get(r["n_atoms"])
        if base and "call_cpu_s" in r and "call_cpu_s" in base:
            r["added_vs_local"] = r["call_cpu_s"] / base["call_cpu_s"] - 1.0
            r["blocks_vs_local"] = 2 * r["block_cpu_s"] / base["call_cpu_s"]
    return out


def plot(data: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    labels = {
        "local": "local So3krates",
        "efa": "+ EFA (50 pts)",
        "efa_values": "+ EFA, Euclidean values",
        "dense": "+ dense O(N²)",
    }
    for m, style, col in zip(
        MODELS, ["o-", "s-", "d-", "^--"], ["C0", "C1", "C3", "C2"], strict=True
    ):
        rs = [r for r in data["rows"] if r["model"] == m and "call_cpu_s" in r]
        n = [r["n_atoms"] for r in rs]
        axes[0].loglog(n, [r["call_cpu_s"] for r in rs], style, c=col, label=labels[m])
        if m != "local":  # one attention block alone, forward + gradient
            blk = [r["block_cpu_s"] for r in rs]
            axes[0].loglog(n, blk, style[0] + ":", c=col, label=f"{m} block alone")
        axes[1].loglog(
            n, [r["peak_rss_mib"] / 1024 for r in rs], style, c=col, label=labels[m]
        )
    axes[0].set(
        xlabel="atoms", ylabel="CPU s per energy+forces call", title="time (1 thread)"
    )
    axes[1].set(xlabel="atoms", ylabel="peak RSS (GiB)", title="memory")
    for ax in axes:
        ax.grid(True, which="both", alpha=0.3)
        ax.legend()
    fig.suptitle(
        f"So3krates default, float32 eager, open clusters, r_max = {R_MAX:g} Å "
        f"({data['meta']['date']})",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--worker", nargs=2, metavar=("MODEL", "ATOMS"))
    p.add_argument("--sizes", type=int, nargs="*", default=SIZES)
    p.add_argument("--models", nargs="*", default=MODELS, choices=MODELS)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--budget-s", type=float, default=300.0, help="per worker")
    p.add_argument("--dense-limit-s", type=float, default=600.0)
    p.add_argument("--mem-gib", type=float, default=20.0, help="RSS cap per worker")
    p.add_argument("--json", type=Path)
    p.add_argument("--plot", type=Path, help="redraw the PNG from this JSON, no runs")
    p.add_argument("--merge", type=Path, nargs="*", help="join these JSON runs")
    args = p.parse_args(argv)
    if args.plot:
        plot(json.loads(args.plot.read_text()), args.plot.with_suffix(".png"))
        return 0
    if args.merge:
        runs = [json.loads(f.read_text()) for f in args.merge]
        rows = sorted(
            (r for run in runs for r in run["rows"]),
            key=lambda r: (r["n_atoms"], MODELS.index(r["model"])),
        )
        meta = dict(runs[0]["meta"], merged=[run["meta"] for run in runs])
        data = {"meta": meta, "summary": summarise(rows), "rows": rows}
        args.json.write_text(json.dumps(data, indent=1))
        plot(data, args.json.with_suffix(".png"))
        print(json.dumps(data["summary"]))
        return 0
    torch.set_num_threads(args.threads)
    if args.worker:
        row = worker(args.worker[0], int(args.worker[1]), args.repeats, args.budget_s)
        print(json.dumps(row), flush=True)
        return 0
    meta = {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes"),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "torch": torch.__version__, "threads": args.threads, "efa": EFA,
        "command": " ".join(["python", *sys.argv]),
        "efa_vs_dense_block_rel_err_300_atoms": agreement(),
    }  # fmt: skip
    print(json.dumps(meta), flush=True)
    rows: list[dict] = []
    for n in args.sizes:
        for kind in args.models:
            prev = [r for r in rows if r["model"] == kind and "call_s" in r]
            if kind == "dense" and prev:  # predict the pair sums' N² growth
                guess = prev[-1]["call_s"] * (n / prev[-1]["n_atoms"]) ** 2
                if guess * (1 + args.repeats) > args.dense_limit_s:
                    rows.append(
                        {"model": kind, "n_atoms": n, "skipped_predicted_s": guess}
                    )
                    print(json.dumps(rows[-1]), flush=True)
                    continue
            limit = int(min(args.mem_gib * GIB, available_bytes() - 1.5 * GIB))
            rows.append(run_worker(args, kind, n, limit))
            print(json.dumps(rows[-1]), flush=True)
            if args.json:  # partial results survive an interruption
                args.json.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    summary = summarise(rows)
    print(json.dumps(summary), flush=True)
    if args.json:
        args.json.write_text(
            json.dumps({"meta": meta, "summary": summary, "rows": rows}, indent=1)
        )
        plot({"meta": meta, "rows": rows}, args.json.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
