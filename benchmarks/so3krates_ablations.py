"""Side-by-side ablations of the So3krates speed changes, one process per variant set.

1. ``paired``: energy+forces (eager autograd) on the same graph with paired edges
   (filters once per unordered pair) and with ``edges_paired=False`` (per edge),
   interleaved call by call in one process.
2. ``compiled``: the compiled path (:class:`CompiledPotential`) with ATen gathers from
   ``--extern-rows`` rows (default 1,024; 0 = always, 10**9 = never) and the C++ wrapper
   on or off. Run it once per setting; compare medians of runs made one after another.
3. ``chunks``: eager energy+forces with several ``edge_chunk_size`` settings
   (``--chunk-sizes none,250000,60000``), interleaved call by call in one process.
4. ``order``: eager energy+forces with the atoms in the system's own order, pre-sorted
   along a Morton (Z-order) curve, and sorted inside the call (the library default
   from ``SPATIAL_ORDER_MIN_ATOMS`` atoms), interleaved in one process (memory
   locality of the per-edge gathers; the other ablations use the library default).
5. ``calls``: ``--calls`` consecutive eager calls per system, each timed, with the
   peak RSS and the process's CPU time per wall time (how many cores it kept
   busy). For the allocator comparison run it once as is and once with
   ``EQUIFORCE_MALLOC_TUNING=0`` (glibc's default mmap of large blocks); with
   ``GLIBC_TUNABLES=glibc.malloc.hugetlb=1`` for transparent huge pages in the heap.
6. ``threads``: compiled calls at ``--threads`` vs one thread vs the library default
   (one thread below ``runtime.COMPILED_ONE_THREAD_MAX_EDGES`` edges), alternating
   in one process.
7. ``table``: radial filters read from the inference table (``filter_table``
   "on") vs computed ("off"), eager and compiled, alternating in one process, with
   the largest force and energy differences between the two.
8. ``backends``: the compiled path with the AOTInductor library (the CPU default)
   and with ``torch.compile`` only, alternating ``--rounds`` times in one process
   (a model with a non-zero readout, so that their forces can be compared).
9. ``profile``: torch.profiler of warmed-up calls (``--modes eager`` or
   ``compiled``), the largest ops by self CPU time.

    python benchmarks/so3krates_ablations.py paired --systems ethanol,water96,box1029
    python benchmarks/so3krates_ablations.py compiled --extern-rows 1024 --cpp-wrapper 1
    python benchmarks/so3krates_ablations.py compiled --extern-rows 1000000000 --cpp-wrapper 1
    python benchmarks/so3krates_ablations.py chunks --systems box3000,box10k --threads 1
    python benchmarks/so3krates_ablations.py order --systems box3000,box10k --threads 1
    python benchmarks/so3krates_ablations.py calls --systems box100k --calls 2 --threads 1
    python benchmarks/so3krates_ablations.py calls --systems box10k --calls 6 --shuffle \
        --spatial-order-min-atoms none      # then with the default (Morton order)
    python benchmarks/so3krates_ablations.py threads --threads 2 \
        --systems ethanol,benzene,aspirin,water96:24,water96:48,water96:66,water96
    python benchmarks/so3krates_ablations.py profile --modes eager --systems box10k \
        --edge-chunk-size 250000 --compile-chunks 0 --threads 1
    EQUIFORCE_CPP_WRAPPER=0 python benchmarks/so3krates_ablations.py profile \
        --modes compiled --systems ethanol --threads 1
    python benchmarks/so3krates_ablations.py table --rounds 3 \
        --systems ethanol,aspirin,water96,box1029,box3000
    EQUIFORCE_MALLOC_TUNING=0 python benchmarks/so3krates_ablations.py calls \
        --systems box100k --calls 1 --threads 1
    python benchmarks/so3krates_ablations.py backends --rounds 8 --threads 2 \
        --systems ethanol,benzene,aspirin,water96,box1029
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from equiforce.accel.compiled import CompiledPotential
from equiforce.accel.runtime import tune_allocator
from equiforce.bench import machine_info, make_system
from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model
from equiforce.nn import scatter


def _median_ms(fn, n: int) -> float:
    ts = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t)
    return 1e3 * statistics.median(ts)


def _calls(n_atoms: int) -> int:
    return 200 if n_atoms < 50 else (10 if n_atoms < 2000 else 4)


def paired(systems: list[str], model) -> list[dict]:
    """Per-pair vs per-edge filters, eager, interleaved in one process."""
    rows = []
    for name in systems:
        atoms = make_system(name)
        g = AtomicGraph.from_atoms(atoms, model.cutoff, torch.float32, False)
        gu = replace(g, edges_paired=False)
        for _ in range(2):
            model(g), model(gu)
        n = _calls(len(atoms))
        tp, tu = [], []
        for _ in range(n):
            tp.append(_median_ms(lambda g=g: model(g), 1))
            tu.append(_median_ms(lambda gu=gu: model(gu), 1))
        rows.append(
            {
                "system": name,
                "atoms": len(atoms),
                "edges": g.n_edges,
                "paired_ms": statistics.median(tp),
                "per_edge_ms": statistics.median(tu),
            }
        )
        print(rows[-1], flush=True)
    return rows


def compiled(systems: list[str], model, extern_rows: int, cpp: bool) -> list[dict]:
    """Compiled energy+forces with the given gather threshold and wrapper."""
    scatter.EXTERN_MIN_ROWS = extern_rows
    pot = CompiledPotential(model, cpp_wrapper=cpp)
    rows = []
    for name in systems:
        atoms = _named_system(name)
        g = AtomicGraph.from_atoms(atoms, model.cutoff, torch.float32, False)
        for _ in range(5):
            pot(g)
        rows.append(
            {
                "system": name,
                "atoms": len(atoms),
                "extern_rows": extern_rows,
                "cpp_wrapper": cpp,
                "compiled_ms": _median_ms(lambda g=g: pot(g), _calls(len(atoms))),
                "compiled": pot.compiled,
            }
        )
        print(rows[-1], flush=True)
    return rows


def chunks(systems: list[str], model, sizes: list[int | None]) -> list[dict]:
    """Eager energy+forces per edge-chunk size, interleaved; first round untimed."""
    # only the explicit sizes chunk
    model.auto_chunk_edges = model.auto_chunk_edges_detached = 10**12
    rows = []
    for name in systems:
        atoms = make_system(name)
        g = AtomicGraph.from_atoms(atoms, model.cutoff, torch.float32)
        times: dict[int | None, list[float]] = {s: [] for s in sizes}
        for rnd in range(4):
            for size in sizes:
                model.edge_chunk_size = size
                ms = _median_ms(lambda g=g: model(g), 1)
                if rnd:
                    times[size].append(ms)
        rows.append(
            {
                "system": name,
                "atoms": len(atoms),
                "edges": g.n_edges,
                "ms_by_chunk_size": {
                    str(k): statistics.median(v) for k, v in times.items()
                },
            }
        )
        print(rows[-1], flush=True)
    return rows


def _system(name: str, shuffle: bool):
    """A benchmark system, its atoms optionally listed in a seeded random order."""
    atoms = make_system(name)
    if shuffle:
        gen = torch.Generator().manual_seed(0)
        atoms = atoms[torch.randperm(len(atoms), generator=gen).numpy()]
    return atoms


def order(
    systems: list[str], model, rounds: int = 4, shuffle: bool = False
) -> list[dict]:
    """Own atom order vs Morton order, eager, interleaved; first round untimed.

    ``own``: the atoms as built, no reordering; ``morton``: pre-sorted along the
    Morton curve; ``auto``: the atoms as built, sorted inside the call by
    ``PotentialModel.atom_order`` (the sort, the relabelling and the unsorting of
    the outputs included), whatever ``spatial_order_min_atoms`` says;
    ``morton_edges``: pre-sorted atoms and the pairs sorted by (i, j) too.
    ``shuffle``: list the atoms in a random order first (a trajectory frame after
    diffusion, or a file written in no particular order).
    """
    from equiforce.data.ordering import spatial_order

    rows = []
    for name in systems:
        atoms = _system(name, shuffle)
        own = AtomicGraph.from_atoms(atoms, model.cutoff, torch.float32)
        perm = spatial_order(own.positions, own.graph_index).numpy()
        graphs = {
            "own": (own, None),
            "morton": (
                AtomicGraph.from_atoms(atoms[perm], model.cutoff, torch.float32),
                None,
            ),
            "auto": (own, 0),
        }
        # pre-sorted atoms and pairs sorted by (i, j): rows touched in order
        m = graphs["morton"][0]
        half = m.n_edges // 2
        key = m.edge_index[0, :half] * m.num_nodes + m.edge_index[1, :half]
        o = torch.argsort(key)
        o = torch.cat([o, o + half])
        graphs["morton_edges"] = (
            replace(m, edge_index=m.edge_index[:, o], edge_shifts=m.edge_shifts[o]),
            None,
        )
        times: dict[str, list[float]] = {k: [] for k in graphs}
        default = model.spatial_order_min_atoms
        try:
            for rnd in range(rounds):
                for key, (g, limit) in graphs.items():
                    model.spatial_order_min_atoms = limit
                    ms = _median_ms(lambda g=g: model(g), 1)
                    if rnd:
                        times[key].append(ms)
        finally:
            model.spatial_order_min_atoms = default
        rows.append(
            {
                "system": name + (" shuffled" if shuffle else ""),
                "atoms": len(atoms),
                "edges": own.n_edges,
                **{f"{k}_ms": statistics.median(v) for k, v in times.items()},
            }
        )
        print(rows[-1], flush=True)
    return rows


def calls(systems: list[str], model, n_calls: int, shuffle: bool = False) -> list[dict]:
    """Consecutive eager calls, each timed, and the process's peak RSS after them."""
    import os
    import resource

    rows = []
    for name in systems:
        atoms = _system(name, shuffle)
        g = AtomicGraph.from_atoms(atoms, model.cutoff, torch.float32)
        ms, cpu_per_wall = [], []
        for _ in range(n_calls):  # process CPU time / wall time: cores kept busy
            cpu = time.process_time()
            ms.append(_median_ms(lambda g=g: model(g), 1))
            cpu_per_wall.append((time.process_time() - cpu) / (ms[-1] / 1e3))
        rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
        rows.append(
            {
                "system": name,
                "atoms": len(atoms),
                "edges": g.n_edges,
                # as in a forces-only call (outputs detached)
                "chunked": g.n_edges
                > (model.edge_chunk_size or model.auto_chunk_size_detached)
                and (
                    model.edge_chunk_size is not None
                    or g.n_edges > model.auto_chunk_edges_detached
                ),
                "shuffled": shuffle,
                "spatial_order_min_atoms": model.spatial_order_min_atoms,
                "malloc_tuning": os.environ.get("EQUIFORCE_MALLOC_TUNING", "1"),
                "glibc_tunables": os.environ.get("GLIBC_TUNABLES", ""),
                "edge_chunk_size": model.edge_chunk_size,
                "chunk_workers": model.chunk_workers,
                "filter_table": model.filter_table,
                "compile_chunks": model.compile_chunks,
                "call_ms": ms,
                "cpu_per_wall": cpu_per_wall,
                "peak_rss_gib": rss,
            }
        )
        print(rows[-1], flush=True)
    return rows


def _named_system(name: str):
    """``make_system`` names, ``aspirin`` (shipped rMD17 test frame 0), or
    ``water96:K`` (the first K atoms of the 96-atom water cluster)."""
    if name == "aspirin":
        from equiforce.data.io import read

        path = (
            Path(__file__).resolve().parents[1] / "data/rmd17/rmd17_aspirin_test_01.npz"
        )
        return read(path, index="0")[0]
    base, _, count = name.partition(":")
    atoms = make_system(base)
    return atoms[: int(count)] if count else atoms


def threads(systems: list[str], model, rounds: int) -> list[dict]:
    """Compiled calls at the process's thread count vs one thread, in one process.

    Rounds alternate the settings; the rows give the best round's median. The
    library default (one thread below ``COMPILED_ONE_THREAD_MAX_EDGES`` edges) is
    off while timing the forced settings.
    """
    from equiforce.accel import runtime

    pot = CompiledPotential(model)
    n_threads = torch.get_num_threads()
    rows = []
    for name in systems:
        atoms = _named_system(name)
        g = AtomicGraph.from_atoms(atoms, model.cutoff, torch.float32)
        pot(g)
        n = _calls(len(atoms)) if g.n_edges < 2000 else 30
        res: dict[str, list[float]] = {"many": [], "one": [], "default": []}
        for _ in range(rounds):
            runtime.SMALL_GRAPHS_ONE_THREAD = False
            for key, th in (("many", n_threads), ("one", 1)):
                torch.set_num_threads(th)
                res[key].append(_median_ms(lambda g=g: pot(g), n))
            torch.set_num_threads(n_threads)
            runtime.SMALL_GRAPHS_ONE_THREAD = True
            res["default"].append(_median_ms(lambda g=g: pot(g), n))
        rows.append(
            {
                "system": name,
                "atoms": len(atoms),
                "edges": g.n_edges,
                "threads": n_threads,
                "ms_many_threads": min(res["many"]),
                "ms_one_thread": min(res["one"]),
                "ms_library_default": min(res["default"]),
            }
        )
        print(rows[-1], flush=True)
    return rows


def table(systems: list[str], model, rounds: int, modes: list[str]) -> list[dict]:
    """Filters from the inference table vs computed, eager and compiled, alternating.

    Rounds alternate ``filter_table`` "off"/"on"; rows give the best round's median
    and how far the tabulated energies and forces are from the exact ones.
    """
    pots = {"compiled": CompiledPotential(model)} if "compiled" in modes else {}
    rows = []
    for name in systems:
        atoms = _named_system(name)
        g = AtomicGraph.from_atoms(atoms, model.cutoff, torch.float32)
        n = _calls(len(atoms))
        row: dict = {"system": name, "atoms": len(atoms), "edges": g.n_edges}
        for mode in modes:
            call = pots.get(mode, model)
            out, res = {}, {"off": [], "on": []}
            for setting in ("off", "on"):  # compile both graphs, untimed
                model.filter_table = setting
                out[setting] = call(g)
            for _ in range(rounds):
                for setting in ("off", "on"):
                    model.filter_table = setting
                    res[setting].append(_median_ms(lambda g=g, c=call: c(g), n))
            f_off, f_on = out["off"]["forces"], out["on"]["forces"]
            row[f"{mode}_exact_ms"] = min(res["off"])
            row[f"{mode}_table_ms"] = min(res["on"])
            row[f"{mode}_force_max_rel"] = float(
                (f_on - f_off).abs().max() / f_off.abs().max()
            )
            row[f"{mode}_energy_diff_per_atom_eV"] = float(
                (out["on"]["energy"] - out["off"]["energy"]).abs().max() / len(atoms)
            )
        model.filter_table = "auto"
        rows.append(row)
        print(row, flush=True)
    return rows


def backends(systems: list[str], model, rounds: int) -> list[dict]:
    """AOTInductor library vs torch.compile, alternating round by round."""
    pots = {b: CompiledPotential(model, backend=b) for b in ("aoti", "inductor")}
    rows = []
    for name in systems:
        g = AtomicGraph.from_atoms(_named_system(name), model.cutoff, torch.float32)
        out = {}
        for b, pot in pots.items():
            t = time.perf_counter()
            out[b] = pot(g)
            first = time.perf_counter() - t
            print(f"{name} {b}: first call {first:.1f} s", flush=True)
            for _ in range(5):
                pot(g)
        n = _calls(g.num_nodes)
        times = {b: [] for b in pots}
        for _ in range(rounds):
            for b, pot in pots.items():
                times[b].append(_median_ms(lambda pot=pot, g=g: pot(g), n))
        forces = {b: o["forces"] for b, o in out.items()}
        ratios = [i / a for a, i in zip(times["aoti"], times["inductor"], strict=True)]
        rows.append(
            {
                "system": name,
                "atoms": g.num_nodes,
                "edges": g.n_edges,
                "calls_per_round": n,
                "aoti_ms": times["aoti"],
                "inductor_ms": times["inductor"],
                "median_ratio_inductor_over_aoti": statistics.median(ratios),
                "max_abs_dF": float((forces["aoti"] - forces["inductor"]).abs().max()),
                "max_abs_F": float(forces["inductor"].abs().max()),
                "backends": {b: pot.backend for b, pot in pots.items()},
            }
        )
        print(
            f"{name}: aoti {statistics.median(times['aoti']):.3f} ms, inductor "
            f"{statistics.median(times['inductor']):.3f} ms, median ratio "
            f"{rows[-1]['median_ratio_inductor_over_aoti']:.2f}, max |dF| "
            f"{rows[-1]['max_abs_dF']:.2e} of {rows[-1]['max_abs_F']:.1f}",
            flush=True,
        )
    return rows


def profile(systems: list[str], model, mode: str) -> list[dict]:
    """Where one call's time goes: torch.profiler, ops by self CPU time.

    ``mode``: "eager" (``model(graph)``, forces only) or "compiled"
    (:class:`CompiledPotential`; with ``EQUIFORCE_CPP_WRAPPER=0`` its kernels show
    by name). The call is warmed up first; the rows give the 15 largest ops.
    """
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    call = CompiledPotential(model) if mode == "compiled" else model
    rows = []
    for name in systems:
        g = AtomicGraph.from_atoms(_named_system(name), model.cutoff, torch.float32)
        n = _calls(g.num_nodes)
        for _ in range(min(n, 20)):
            call(g)
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(n):
                call(g)
        events = sorted(prof.key_averages(), key=lambda e: -e.self_cpu_time_total)
        total = sum(e.self_cpu_time_total for e in events)
        ops = [
            {
                "op": e.key,
                "calls_per_call": e.count / n,
                "us_per_call": e.self_cpu_time_total / n,
                "fraction": e.self_cpu_time_total / total,
            }
            for e in events[:15]
        ]
        row = {"system": name, "mode": mode, "edges": g.n_edges, "calls": n}
        rows.append(row | {"us_per_call_profiled": total / n, "ops": ops})
        print(f"{name} ({mode}, {g.n_edges} edges): {total / n:.0f} µs per call")
        for op in ops:
            print(
                f"  {op['op'][:50]:50s} {op['calls_per_call']:6.1f}x "
                f"{op['us_per_call']:10.1f} µs {100 * op['fraction']:5.1f} %"
            )
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "what",
        choices=[
            "paired",
            "compiled",
            "chunks",
            "order",
            "calls",
            "threads",
            "table",
            "backends",
            "profile",
        ],
    )
    p.add_argument(
        "--model", default=None, help="trained model file (default: random weights)"
    )
    p.add_argument(
        "--modes",
        default="eager,compiled",
        help="table: eager,compiled; profile: the first one",
    )
    p.add_argument(
        "--compile-chunks",
        type=int,
        choices=(0, 1),
        default=1,
        help="model.compile_chunks: compiled edge chunks in forces-only calls",
    )
    p.add_argument(
        "--filter-table",
        choices=("auto", "on", "off"),
        default="auto",
        help="model.filter_table for the other ablations (table alternates it)",
    )
    p.add_argument("--systems", default="ethanol,water96,box1029")
    p.add_argument("--extern-rows", type=int, default=scatter.EXTERN_MIN_ROWS)
    p.add_argument("--cpp-wrapper", type=int, choices=(0, 1), default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--chunk-sizes", default="none,250000,60000")
    p.add_argument("--calls", type=int, default=2, help="calls per system (calls)")
    p.add_argument(
        "--rounds", type=int, default=4, help="rounds, first untimed (order)"
    )
    p.add_argument(
        "--shuffle", action="store_true", help="random atom order first (order, calls)"
    )
    p.add_argument(
        "--edge-chunk-size",
        type=int,
        default=None,
        help="model.edge_chunk_size for calls (default: automatic)",
    )
    p.add_argument(
        "--chunk-workers",
        type=int,
        default=None,
        help="model.chunk_workers: compiled chunks at once (default: the threads)",
    )
    p.add_argument(
        "--spatial-order-min-atoms",
        default="default",
        help="model.spatial_order_min_atoms: default, none or an atom count",
    )
    p.add_argument(
        "--json", default=None, help="append results to this JSON-lines file"
    )
    args = p.parse_args(argv)
    tune_allocator()
    torch.set_num_threads(args.threads)
    if args.model:
        from equiforce.models.registry import load_model

        model = load_model(args.model).float().eval()
    else:  # table: a readout that is not zero, so that forces can be compared
        nonzero = (
            {"zero_init_readout": False} if args.what in ("table", "backends") else {}
        )
        model = build_model("so3krates", "default", dtype=torch.float32, **nonzero)
        model.eval()
    model.filter_table = args.filter_table
    model.compile_chunks = bool(args.compile_chunks)
    if args.edge_chunk_size is not None:  # calls: force a chunk size
        model.edge_chunk_size = args.edge_chunk_size
    model.chunk_workers = args.chunk_workers
    if args.spatial_order_min_atoms != "default":
        limit = args.spatial_order_min_atoms
        model.spatial_order_min_atoms = None if limit == "none" else int(limit)
    systems = args.systems.split(",")
    if args.what == "paired":
        rows = paired(systems, model)
    elif args.what == "chunks":
        sizes = [None if x == "none" else int(x) for x in args.chunk_sizes.split(",")]
        rows = chunks(systems, model, sizes)
    elif args.what == "order":
        rows = order(systems, model, args.rounds, args.shuffle)
    elif args.what == "calls":
        rows = calls(systems, model, args.calls, args.shuffle)
    elif args.what == "threads":
        rows = threads(systems, model, args.rounds)
    elif args.what == "table":
        rows = table(systems, model, args.rounds, args.modes.split(","))
    elif args.what == "backends":
        rows = backends(systems, model, args.rounds)
    elif args.what == "profile":
        rows = profile(systems, model, args.modes.split(",")[0])
    else:
        rows = compiled(systems, model, args.extern_rows, bool(args.cpp_wrapper))
    if args.json:
        with open(args.json, "a") as fh:
            fh.write(json.dumps({"machine": machine_info(), "rows": rows}) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
