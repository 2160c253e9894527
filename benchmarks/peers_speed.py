"""Energy+forces latency of peer packages on equiforce's benchmark systems.

Runs under the peers virtualenv (``.venv-peers/bin/python``: torch CPU,
``so3krates-torch``, ``mace-torch`` with its own e3nn, equiforce installed
``--no-deps``). Each peer model gets random weights; only speed is measured.

Models (hyperparameters):

* ``so3krates-torch`` 0.2.x ``So3krates``: the equiforce ``default`` preset
  (mlff v1.0): F=128, 2 layers, 4 heads, degrees 1-4, cutoff 5 Å, 32 radial
  functions, cosine cutoff, identity q/k activation. Differences, because the
  package has no equivalent option: Gaussian radial basis instead of PhysNet's,
  attention divisor ``sqrt_num_features`` (sqrt of the per-head width, as
  equiforce's ``sqrt_head_size``), 118 one-hot element rows instead of 119,
  readout activation SiLU (the package default; equiforce ``default`` uses
  identity). None of these changes the per-edge arithmetic materially.
* ``mace`` (mace-torch 0.3.x ``ScaleShiftMACE``, the usual "medium" model):
  hidden irreps ``128x0e+128x1o``, r_max 5 Å, 2 interactions, max_ell 3,
  correlation 3, 8 Bessel functions, polynomial cutoff p=5, radial MLP
  [64, 64, 64], MLP irreps ``16x0e``, RealAgnosticResidualInteractionBlock,
  elements H, C, O.

Timing matches ``equiforce.bench.bench_system``: the neighbour list (the
package's own ``AtomicData.from_config`` + batching) is timed separately and
excluded; the model time is the median of repeated ``model(batch)`` calls
with forces after two warm-up calls. ``--compile`` adds rows for each
package's ``torch.compile`` path, labelled ``<peer>+compile``.

    .venv-peers/bin/python benchmarks/peers_speed.py --systems ethanol,water96 \
        --dtypes float32 --min-seconds 0.2 --out /tmp/peers.json
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path

import torch

# e3nn 0.4.4 (pinned by mace-torch) loads its own constants.pt with torch.load's
# default, which torch >= 2.6 made weights_only=True; that file pickles ``slice``.
torch.serialization.add_safe_globals([slice])
# e3nn's TorchScript code generation (MACE) warns once per generated module.
warnings.filterwarnings("ignore", message="The TorchScript type system")

from equiforce.bench import SYSTEMS, BenchResult, machine_info, make_system  # noqa: E402

PEERS = ("so3krates-torch", "mace")
MACE_ELEMENTS = [1, 6, 8]


def build_so3krates_torch(dtype: torch.dtype) -> torch.nn.Module:
    """so3krates-torch ``So3krates`` with the equiforce ``default`` hyperparameters."""
    from so3krates_torch.modules.models import So3krates

    previous = torch.get_default_dtype()
    try:  # the constructor sets the global default dtype
        model = So3krates(
            r_max=5.0,
            num_radial_basis_fn=32,
            degrees=[1, 2, 3, 4],
            num_features=128,
            num_heads=4,
            num_layers=2,
            num_elements=118,
            final_mlp_layers=2,
            message_normalization="sqrt_num_features",
            radial_basis_fn="gaussian",
            cutoff_fn="cosine",
            qk_non_linearity="identity",
            seed=0,
            dtype=dtype,
        )
    finally:
        torch.set_default_dtype(previous)
    return model.to(dtype).eval()


def build_mace(dtype: torch.dtype) -> torch.nn.Module:
    """mace-torch ``ScaleShiftMACE``, "medium"-like (see module docstring)."""
    import numpy as np
    from e3nn import o3
    from mace.modules import ScaleShiftMACE, interaction_classes

    torch.manual_seed(0)
    block = interaction_classes["RealAgnosticResidualInteractionBlock"]
    model = ScaleShiftMACE(
        r_max=5.0,
        num_bessel=8,
        num_polynomial_cutoff=5,
        max_ell=3,
        interaction_cls=block,
        interaction_cls_first=block,
        num_interactions=2,
        num_elements=len(MACE_ELEMENTS),
        hidden_irreps=o3.Irreps("128x0e+128x1o"),
        MLP_irreps=o3.Irreps("16x0e"),
        atomic_energies=np.zeros(len(MACE_ELEMENTS)),
        avg_num_neighbors=20.0,
        atomic_numbers=MACE_ELEMENTS,
        correlation=3,
        gate=torch.nn.functional.silu,
        radial_MLP=[64, 64, 64],
        atomic_inter_scale=1.0,
        atomic_inter_shift=0.0,
    )
    return model.to(dtype).eval()


def make_batch(peer: str, atoms, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Neighbour list + batch dict in the package's own input format."""
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        if peer == "mace":
            from mace import data as mdata
            from mace.tools import torch_geometric, utils

            config = mdata.config_from_atoms(atoms)
            table = utils.AtomicNumberTable(MACE_ELEMENTS)
            item = mdata.AtomicData.from_config(config, z_table=table, cutoff=5.0)
        else:
            from so3krates_torch.data.atomic_data import AtomicData
            from so3krates_torch.data.utils import config_from_atoms
            from so3krates_torch.tools import torch_geometric, utils

            config = config_from_atoms(atoms)
            table = utils.AtomicNumberTable(list(range(1, 119)))
            item = AtomicData.from_config(config, z_table=table, cutoff=5.0)
        batch = torch_geometric.Batch.from_data_list([item])
    finally:
        torch.set_default_dtype(previous)
    out = batch.to_dict()
    return {
        k: v.to(dtype) if torch.is_tensor(v) and v.is_floating_point() else v
        for k, v in out.items()
    }


def _times(
    fn: Callable[[], object],
    min_seconds: float,
    min_calls: int = 5,
    max_calls: int = 500,
) -> list[float]:
    """Call times as in ``equiforce bench`` (same stopping rule for every model)."""
    from equiforce.bench import _median_time

    return _median_time(fn, min_seconds, min_calls, max_calls)


def peak_rss_mib() -> float:
    """Peak resident memory of this process (MiB).

    ``VmHWM`` belongs to the process image, so it starts afresh at ``exec``;
    ``ru_maxrss`` would carry the parent's peak (``speed.py``) into this process.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _compiled(peer: str, dtype: torch.dtype) -> torch.nn.Module:
    """The package's torch.compile path (MACE: ``tools.compile.prepare``)."""
    if peer == "mace":
        from mace.tools.compile import configure_autograd_for_compile, prepare

        configure_autograd_for_compile(allow_autograd=True)
        model = prepare(build_mace)(dtype)
        return torch.compile(model, mode="default", fullgraph=True)
    from so3krates_torch.tools.compile import prepare

    return torch.compile(prepare(build_so3krates_torch)(dtype), mode="default")


def bench_peer(
    peer: str,
    system: str,
    dtype: torch.dtype,
    compile: bool,
    min_seconds: float,
    models: dict,
) -> BenchResult:
    """Time energy+forces of one peer model on one system."""
    atoms = make_system(system)
    nl = _times(lambda: make_batch(peer, atoms, dtype), 0.2, 3, 50)
    batch = make_batch(peer, atoms, dtype)
    key = (peer, dtype, compile)
    if key not in models:
        build = build_mace if peer == "mace" else build_so3krates_torch
        models[key] = _compiled(peer, dtype) if compile else build(dtype)
    model = models[key]
    # MACE's calculator runs compiled models with training=True (graph kept for
    # autograd inside the compiled region); eager calls use training=False.
    training = compile and peer == "mace"

    def call() -> None:
        data = dict(batch)
        data["positions"] = batch["positions"].detach().clone()
        if compile:  # as MACE's calculator: grad inputs marked before the call
            data["positions"].requires_grad_(True)
            data["node_attrs"] = (
                batch["node_attrs"].detach().clone().requires_grad_(True)
            )
        out = model(data, training=training, compute_force=True)
        out["forces"].detach()

    compile_s = None
    t = time.perf_counter()
    call()
    if compile:
        compile_s = time.perf_counter() - t
    call()
    times = _times(call, min_seconds)
    return BenchResult(
        system=system,
        n_atoms=len(atoms),
        n_edges=int(batch["edge_index"].shape[1]),
        dtype=str(dtype).split(".")[-1],
        mode=peer + ("+compile" if compile else ""),
        ms_median=1e3 * statistics.median(times),
        ms_min=1e3 * min(times),
        n_calls=len(times),
        neighbor_ms=1e3 * statistics.median(nl),
        peak_rss_mib=peak_rss_mib(),
        compile_s=compile_s,
    )


def _write(path: Path, report: dict) -> None:
    from equiforce.atomic import atomic_write_json

    atomic_write_json(path, report)


def installed_peers() -> list[str]:
    """Peers whose package imports in this interpreter."""
    import importlib.util

    found = {"so3krates-torch": "so3krates_torch", "mace": "mace"}
    return [p for p, mod in found.items() if importlib.util.find_spec(mod) is not None]


def run(
    systems: list[str],
    dtypes: list[str],
    peers: list[str],
    compile: bool,
    threads: int,
    min_seconds: float,
    out: Path,
) -> dict:
    """Run the grid, rewriting ``out`` after every row (interrupt-safe)."""
    from rich.progress import Progress

    torch.set_num_threads(threads)
    report = {
        "machine": machine_info(),
        "versions": _versions(peers),
        "results": [],
        "errors": [],
    }
    models: dict = {}
    jobs = [
        (s, d, p, c)
        for s in systems
        for d in dtypes
        for p in peers
        for c in ((False, True) if compile else (False,))
    ]
    with Progress(console=None, transient=False) as progress:
        task = progress.add_task("peers", total=len(jobs))
        for system, dt, peer, comp in jobs:
            progress.update(
                task, description=f"{peer}{'+c' if comp else ''} {system} {dt}"
            )
            try:
                r = bench_peer(
                    peer, system, getattr(torch, dt), comp, min_seconds, models
                )
                report["results"].append(asdict(r))
                progress.console.print(
                    f"{r.system:>10} {r.n_atoms:>6} atoms {r.dtype:>7} {r.mode:>22}: "
                    f"{r.ms_median:9.3f} ms (nl {r.neighbor_ms:.3f} ms, "
                    f"rss {r.peak_rss_mib:.0f} MiB)"
                )
            except Exception as err:  # noqa: BLE001 - a failing row must not stop the run
                row = f"{peer}{'+compile' if comp else ''} {system} {dt}"
                first = (str(err).strip().splitlines() or [""])[0]
                msg = f"{row}: {type(err).__name__}: {first}"
                report["errors"].append(msg)
                progress.console.print(f"[red]failed[/red] {msg}")
                traceback.print_exc(file=sys.stderr)
            _write(out, report)
            progress.advance(task)
    return report


def _versions(peers: list[str]) -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    dists = {"so3krates-torch": "so3krates-torch", "mace": "mace-torch"}
    found = {}
    for p in [*peers, "e3nn"]:
        try:
            found[p] = version(dists.get(p, p))
        except PackageNotFoundError:
            found[p] = "not installed"
    return found


def main(argv: list[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument(
        "--systems",
        default="ethanol,benzene,water96",
        help=f"comma list from {', '.join(SYSTEMS)}",
    )
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument(
        "--peers", default=",".join(PEERS), help="comma list: so3krates-torch,mace"
    )
    p.add_argument(
        "--compile", action="store_true", help="also time torch.compile paths"
    )
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--min-seconds", type=float, default=2.0, help="timing budget per row"
    )
    p.add_argument("--out", type=Path, default=Path("peers_speed.json"))
    args = p.parse_args(argv)
    systems = [s for s in args.systems.split(",") if s]
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        p.error(f"unknown system(s) {unknown}; known: {', '.join(SYSTEMS)}")
    peers = [x for x in args.peers.split(",") if x]
    bad = [x for x in peers if x not in PEERS]
    if bad:
        p.error(f"unknown peer(s) {bad}; known: {', '.join(PEERS)}")
    missing = sorted(set(peers) - set(installed_peers()))
    if missing:
        print(f"peers not installed here, skipped: {missing}", file=sys.stderr)
        peers = [x for x in peers if x not in missing]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    try:
        run(
            systems,
            args.dtypes.split(","),
            peers,
            args.compile,
            args.threads,
            args.min_seconds,
            args.out,
        )
    except KeyboardInterrupt:
        print(f"interrupted; finished rows are in {args.out}", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
