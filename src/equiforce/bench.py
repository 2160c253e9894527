"""``equiforce bench``: energy+forces latency and memory on standard systems.

Systems (seeded, reproducible): ethanol (rMD17 frame), benzene, non-periodic water
clusters (molecules on a 3.1 Å cubic grid ≈ 1 g/cm³, random orientations) and
periodic water boxes. Timings are medians of repeated calls after warm-up; the
neighbour list is timed separately and excluded from the model time.
"""

from __future__ import annotations

import argparse
import platform
import resource
import statistics
import time
from dataclasses import asdict, dataclass
from datetime import date
from pathlib import Path

import numpy as np
import torch

from equiforce.atomic import atomic_write_json

#: name -> (kind, number of water molecules or None)
SYSTEMS: dict[str, tuple[str, int | None]] = {
    "ethanol": ("molecule", None),
    "benzene": ("molecule", None),
    "water96": ("cluster", 32),
    "water384": ("cluster", 128),
    "water1029": ("cluster", 343),
    "water3000": ("cluster", 1000),
    "water10k": ("cluster", 3334),
    "box1029": ("box", 343),
    "box3000": ("box", 1000),
    "box10k": ("box", 3375),
    "box100k": ("box", 33_698),
}
DEFAULT_SYSTEMS = ("ethanol", "benzene", "water96", "water384", "water1029", "box1029")


def water_positions(
    n_mol: int, seed: int = 0, spacing: float = 3.1
) -> tuple[np.ndarray, ...]:
    """Water molecules on a cubic grid with random orientations.

    Returns:
        positions (3·n_mol, 3) Å, atomic numbers (3·n_mol,), edge length of the
        smallest cube holding the grid (k·spacing, Å).
    """
    from ase.build import molecule
    from scipy.spatial.transform import Rotation

    w = molecule("H2O")
    local = w.positions - w.positions.mean(0)
    k = int(np.ceil(n_mol ** (1 / 3) - 1e-9))
    grid = np.array([(a, b, c) for a in range(k) for b in range(k) for c in range(k)])
    grid = grid[:n_mol] * spacing
    rots = Rotation.random(n_mol, random_state=seed).as_matrix()  # (n_mol, 3, 3)
    pos = np.einsum("mij,aj->mai", rots, local) + grid[:, None, :]
    return pos.reshape(-1, 3), np.tile(w.numbers, n_mol), k * spacing


def make_system(name: str):
    """``ase.Atoms`` of a named benchmark system."""
    from ase import Atoms
    from ase.build import molecule

    kind, n_mol = SYSTEMS[name]
    if kind == "molecule":
        return molecule("CH3CH2OH" if name == "ethanol" else "C6H6")
    pos, z, box = water_positions(n_mol)
    if kind == "cluster":
        return Atoms(numbers=z, positions=pos)
    return Atoms(numbers=z, positions=pos, cell=np.eye(3) * box, pbc=True)


@dataclass
class BenchResult:
    """One timing row."""

    system: str
    n_atoms: int
    n_edges: int
    dtype: str
    mode: str
    ms_median: float
    ms_min: float
    n_calls: int
    neighbor_ms: float
    peak_rss_mib: float
    compile_s: float | None = None


def _median_time(
    fn, min_seconds: float, min_calls: int = 5, max_calls: int = 500
) -> list[float]:
    times: list[float] = []
    start = time.perf_counter()
    while len(times) < max_calls and (
        len(times) < min_calls or time.perf_counter() - start < min_seconds
    ):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return times


def bench_system(
    model,
    name: str,
    dtype: torch.dtype,
    mode: str,
    min_seconds: float = 2.0,
    min_calls: int = 5,
    warmup: int = 2,
) -> BenchResult:
    """Time energy+forces of ``model`` on system ``name``."""
    from equiforce.accel.compiled import CompiledPotential
    from equiforce.data.graph import AtomicGraph

    atoms = make_system(name)
    nl_times = _median_time(
        lambda: AtomicGraph.from_atoms(atoms, model.cutoff, dtype=dtype), 0.2, 3, 50
    )
    graph = AtomicGraph.from_atoms(atoms, model.cutoff, dtype=dtype)
    model = model.to(dtype).eval()
    compile_s = None
    if mode == "eager":
        call = lambda: model(graph)  # noqa: E731
    else:  # "compiled": the default backend; "inductor": torch.compile only
        backend = "inductor" if mode == "inductor" else None
        fast = CompiledPotential(model, compile=True, backend=backend)
        t = time.perf_counter()
        fast(graph)
        compile_s = time.perf_counter() - t
        call = lambda: fast(graph)  # noqa: E731
    for _ in range(warmup):
        call()
    times = _median_time(call, min_seconds, min_calls)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return BenchResult(
        system=name,
        n_atoms=len(atoms),
        n_edges=graph.n_edges,
        dtype=str(dtype).split(".")[-1],
        mode=mode,
        ms_median=1e3 * statistics.median(times),
        ms_min=1e3 * min(times),
        n_calls=len(times),
        neighbor_ms=1e3 * statistics.median(nl_times),
        peak_rss_mib=rss,
        compile_s=compile_s,
    )


def machine_info() -> dict:
    """Machine, software and date stamp for benchmark records."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": date.today().isoformat(),
        "cpu": cpu,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
    }


def run_bench(
    systems: list[str],
    dtypes: list[str],
    modes: list[str],
    model_path: str | None = None,
    preset: str = "default",
    threads: int = 2,
    min_seconds: float = 2.0,
    device: str = "cpu",
    min_calls: int = 5,
    warmup: int = 2,
) -> dict:
    """Run the benchmark grid; returns {"machine": ..., "results": [...]}."""
    from rich.console import Console

    from equiforce.accel.denormals import flush_denormals
    from equiforce.accel.runtime import tune_allocator
    from equiforce.models.registry import build_model, load_model

    torch.set_num_threads(threads)
    tune_allocator()
    flush_denormals()
    console = Console(stderr=True)
    model = (
        load_model(model_path)
        if model_path
        else build_model("so3krates", preset, zero_init_readout=False)
    ).to(device)
    results = []
    for name in systems:
        for dt in dtypes:
            for mode in modes:
                r = bench_system(
                    model,
                    name,
                    getattr(torch, dt),
                    mode,
                    min_seconds,
                    min_calls,
                    warmup,
                )
                results.append(asdict(r))
                console.print(
                    f"{r.system:>10} {r.n_atoms:>6} atoms {r.n_edges:>8} edges {r.dtype:>7} "
                    f"{r.mode:>8}: {r.ms_median:9.3f} ms (nl {r.neighbor_ms:.3f} ms, "
                    f"rss {r.peak_rss_mib:.0f} MiB"
                    + (f", compile {r.compile_s:.1f} s" if r.compile_s else "")
                    + ")"
                )
    return {
        "machine": machine_info(),
        "model": preset if not model_path else model_path,
        "results": results,
    }


def register(subparsers) -> None:
    """Add ``equiforce bench``."""
    p = subparsers.add_parser("bench", help="time energy+forces on standard systems")
    p.add_argument("--model", help="checkpoint (default: random So3krates of --preset)")
    p.add_argument("--preset", default="default")
    p.add_argument(
        "--systems",
        default=",".join(DEFAULT_SYSTEMS),
        help=f"comma list from {', '.join(SYSTEMS)}",
    )
    p.add_argument("--dtype", default="float32", help="comma list: float32,float64")
    p.add_argument(
        "--mode", default="eager,compiled", help="comma list: eager,compiled"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--min-seconds", type=float, default=2.0, help="timing budget per row"
    )
    p.add_argument("--min-calls", type=int, default=5, help="timed calls per row (≥ 1)")
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per row")
    p.add_argument("--out", default="bench.json", help="JSON output file")
    p.set_defaults(func=_cli)


def _cli(args: argparse.Namespace) -> int:
    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown system(s) {unknown}; known: {', '.join(SYSTEMS)}")
    report = run_bench(
        systems,
        args.dtype.split(","),
        args.mode.split(","),
        args.model,
        args.preset,
        args.threads,
        args.min_seconds,
        min_calls=args.min_calls,
        warmup=args.warmup,
    )
    atomic_write_json(args.out, report)
    return 0
