"""Energy+forces speed of equiforce So3krates, side by side with peer packages.

Runs the equiforce rows (``equiforce.bench.run_bench``: random-weight So3krates
``default`` preset, eager and compiled, float32 and float64) and, when
``.venv-peers/bin/python`` exists, ``benchmarks/peers_speed.py`` in that
environment on the same systems (so3krates-torch and mace-torch) in the same run.
Every row is the median of repeated energy+forces calls after warm-up; the
neighbour list is timed separately and excluded.

Outputs in ``--out-dir`` (default ``docs/bench``):

* ``speed.json``: machine, command, all rows (``equiforce.bench.BenchResult``
  fields; ``mode`` is eager/compiled for equiforce and so3krates-torch/mace
  (``+compile``) for peers), fitted exponents and memory;
* ``speed_vs_atoms.png``: log-log time vs atoms per model/mode/dtype with the
  scaling exponent fitted over systems with >= 1,000 atoms;
* ``speed.md``: table with machine, date and the exact command.

    .venv/bin/python benchmarks/speed.py                 # full grid (long)
    .venv/bin/python benchmarks/speed.py --quick --min-seconds 0.2   # smoke test
"""

from __future__ import annotations

import argparse
import json
import math
import shlex
import subprocess
import sys
import tempfile
from datetime import datetime
from pathlib import Path

from equiforce.atomic import atomic_path

ROOT = Path(__file__).resolve().parents[1]
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"
FULL = (
    "ethanol",
    "benzene",
    "water96",
    "water384",
    "water1029",
    "water3000",
    "water10k",
    "box1029",
    "box3000",
    "box10k",
)
QUICK = ("ethanol", "benzene", "water96")
FIT_MIN_ATOMS = 1000


def _atomic_write(path: Path, data: str | bytes) -> None:
    """Write ``data`` to ``path`` atomically (see :mod:`equiforce.atomic`)."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data.encode() if isinstance(data, str) else data)


def label(row: dict) -> str:
    """Series name of a row: ``equiforce eager``, ``mace``, ``mace+compile``."""
    return (
        f"equiforce {row['mode']}"
        if row["mode"] in ("eager", "compiled", "inductor")
        else row["mode"]
    )


def run_equiforce(
    systems: list[str], args: argparse.Namespace, report: dict, out_json: Path
) -> None:
    """Equiforce rows, one ``run_bench`` call per system; JSON rewritten after each."""
    from equiforce.bench import run_bench

    for name in systems:
        part = run_bench(
            [name],
            args.dtypes.split(","),
            args.modes.split(","),
            preset=args.preset,
            threads=args.threads,
            min_seconds=args.min_seconds,
            min_calls=args.min_calls,
            warmup=args.warmup,
        )
        report["machine"] = part["machine"]
        report["results"].extend(part["results"])
        _atomic_write(out_json, json.dumps(report, indent=2))


def run_peers(
    systems: list[str], args: argparse.Namespace, report: dict, out_json: Path
) -> None:
    """Peer rows from ``peers_speed.py`` under the peers interpreter (subprocess)."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "peers.json"
        cmd = [
            str(PEERS_PYTHON),
            str(ROOT / "benchmarks" / "peers_speed.py"),
            "--systems",
            ",".join(systems),
            "--dtypes",
            args.dtypes,
            "--threads",
            str(args.threads),
            "--min-seconds",
            str(args.min_seconds),
            "--out",
            str(raw),
        ]
        if args.peers_compile:
            cmd.append("--compile")
        try:
            rc = subprocess.call(cmd, cwd=ROOT)
        finally:  # also on Ctrl-C: keep the rows the peers script finished
            if raw.exists():
                peers = json.loads(raw.read_text())
                report["results"].extend(peers["results"])
                report["peers"] = {
                    "versions": peers.get("versions", {}),
                    "errors": peers.get("errors", []),
                }
                _atomic_write(out_json, json.dumps(report, indent=2))
        if rc != 0:
            report.setdefault("peers", {}).setdefault("errors", []).append(
                f"peers_speed.py exited with status {rc}"
            )


def fit_exponents(rows: list[dict]) -> dict[str, dict]:
    """Least-squares slope of log(time) vs log(atoms) over rows with >= 1,000 atoms."""
    import numpy as np

    fits: dict[str, dict] = {}
    for key in sorted({(label(r), r["dtype"]) for r in rows}):
        pts = sorted(
            (r["n_atoms"], r["ms_median"])
            for r in rows
            if (label(r), r["dtype"]) == key and r["n_atoms"] >= FIT_MIN_ATOMS
        )
        if len({n for n, _ in pts}) < 2:
            continue
        x, y = np.log([p[0] for p in pts]), np.log([p[1] for p in pts])
        slope, _ = np.polyfit(x, y, 1)
        fits[f"{key[0]} {key[1]}"] = {
            "exponent": float(slope),
            "n_points": len(pts),
            "atoms": [int(p[0]) for p in pts],
        }
    return fits


def memory_summary(rows: list[dict]) -> dict[str, dict]:
    """Atoms per GiB of peak RSS on the largest system, per series (float32 preferred).

    ``ru_maxrss`` is the process peak so far; the largest system runs last in
    its process, so its row holds that system's peak. ``atoms_per_gib_above_base``
    subtracts the smallest system's RSS (interpreter, libraries, model).
    """
    out: dict[str, dict] = {}
    for name in sorted({label(r) for r in rows}):
        mine = [r for r in rows if label(r) == name]
        dtype = (
            "float32"
            if any(r["dtype"] == "float32" for r in mine)
            else mine[0]["dtype"]
        )
        mine = [r for r in mine if r["dtype"] == dtype]
        big = max(mine, key=lambda r: r["n_atoms"])
        base = min(r["peak_rss_mib"] for r in mine)
        extra = big["peak_rss_mib"] - base
        out[name] = {
            "system": big["system"],
            "n_atoms": big["n_atoms"],
            "dtype": dtype,
            "peak_rss_mib": big["peak_rss_mib"],
            "atoms_per_gib": big["n_atoms"] / (big["peak_rss_mib"] / 1024),
            "atoms_per_gib_above_base": big["n_atoms"] / (extra / 1024)
            if extra > 0
            else None,
        }
    return out


def plot(rows: list[dict], fits: dict[str, dict], path: Path) -> None:
    """Log-log time vs atoms, one line per series and dtype."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5.5))
    names = sorted({label(r) for r in rows})
    colors = dict(zip(names, plt.cm.tab10.colors, strict=False))
    for name in names:
        for dtype, style in (("float32", "-"), ("float64", "--")):
            pts = sorted(
                (r["n_atoms"], r["ms_median"])
                for r in rows
                if label(r) == name and r["dtype"] == dtype
            )
            if not pts:
                continue
            fit = fits.get(f"{name} {dtype}")
            tag = f"{name} {dtype}" + (f" (∝ N^{fit['exponent']:.2f})" if fit else "")
            ax.plot(
                *zip(*pts, strict=True),
                style,
                marker="o",
                ms=4,
                color=colors[name],
                label=tag,
            )
    ax.set(
        xscale="log",
        yscale="log",
        xlabel="atoms",
        ylabel="energy+forces per call (ms, median)",
        title=f"exponents fitted over ≥ {FIT_MIN_ATOMS:,} atoms",
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120)
    plt.close(fig)


def _fmt(ms: float | None) -> str:
    if ms is None or not math.isfinite(ms):
        return "–"
    return f"{ms:.3g}" if ms < 100 else f"{ms:,.0f}"


def markdown(report: dict) -> str:
    """The results table as markdown (machine, date and command first)."""
    rows, m = report["results"], report.get("machine", {})
    names = sorted(
        {label(r) for r in rows}, key=lambda n: (not n.startswith("equiforce"), n)
    )
    lines = [
        "# Energy+forces speed",
        "",
        f"- date: {report['started']}; machine: {m.get('cpu')}, "
        f"{report['threads']} threads, "
        f"torch {m.get('torch')}, Python {m.get('python')}"
        + (f", GPU {m['cuda']}" if m.get("cuda") else ""),
        f"- command: `{report['command']}`",
        "- ms per energy+forces call (median after warm-up); neighbour list excluded "
        "(its time in the nl columns: equiforce = vesin, peers = the package's own).",
    ]
    if report.get("peers", {}).get("versions"):
        vers = ", ".join(f"{k} {v}" for k, v in report["peers"]["versions"].items())
        lines.append(f"- peers (random weights, see benchmarks/README.md): {vers}")
    head = ["system", "atoms", "edges", "dtype", *names, "nl equiforce", "nl peers"]
    lines += ["", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    keys = sorted({(r["n_atoms"], r["system"], r["dtype"]) for r in rows})
    for n_atoms, system, dtype in keys:
        sel = [r for r in rows if r["system"] == system and r["dtype"] == dtype]
        by = {label(r): r for r in sel}
        eq = [r for r in sel if label(r).startswith("equiforce")]
        pe = [r for r in sel if not label(r).startswith("equiforce")]
        cells = [
            system,
            str(n_atoms),
            str(eq[0]["n_edges"] if eq else sel[0]["n_edges"]),
            dtype,
        ]
        cells += [_fmt(by[n]["ms_median"]) if n in by else "–" for n in names]
        cells += [
            _fmt(eq[0]["neighbor_ms"]) if eq else "–",
            _fmt(min(r["neighbor_ms"] for r in pe)) if pe else "–",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    lines += _fit_and_memory_lines(report)
    return "\n".join(lines) + "\n"


def _fit_and_memory_lines(report: dict) -> list[str]:
    lines = [
        "",
        f"Scaling exponents (log-log fit over systems with ≥ {FIT_MIN_ATOMS:,} atoms):",
        "",
    ]
    if report["fits"]:
        lines += [
            f"- {k}: {v['exponent']:.2f} ({v['n_points']} points)"
            for k, v in report["fits"].items()
        ]
    else:
        lines.append("- none (needs two systems with ≥ 1,000 atoms)")
    lines += ["", "Memory (peak RSS of the process at the largest system):", ""]
    for k, v in report["memory"].items():
        above = v["atoms_per_gib_above_base"]
        lines.append(
            f"- {k}: {v['system']} ({v['n_atoms']:,} atoms, {v['dtype']}) peak "
            f"{v['peak_rss_mib']:,.0f} MiB → {v['atoms_per_gib']:,.0f} atoms/GiB"
            + (
                f" ({above:,.0f} atoms/GiB above the smallest system's RSS)"
                if above
                else ""
            )
        )
    compiles = [r for r in report["results"] if r.get("compile_s")]
    if compiles:
        worst = max(compiles, key=lambda r: r["compile_s"])
        lines += [
            "",
            f"Compile time (first call) up to {worst['compile_s']:.1f} s "
            f"({label(worst)}, {worst['system']}, {worst['dtype']}).",
        ]
    errors = report.get("peers", {}).get("errors", [])
    if errors:
        lines += ["", "Peer rows that failed:", "", *[f"- {e}" for e in errors]]
    return lines


def finish(report: dict, out_dir: Path) -> None:
    """Fits, memory, and the three output files."""
    rows = report["results"]
    report["fits"] = fit_exponents(rows)
    report["memory"] = memory_summary(rows) if rows else {}
    _atomic_write(out_dir / "speed.json", json.dumps(report, indent=2))
    if rows:
        plot(rows, report["fits"], out_dir / "speed_vs_atoms.png")
    _atomic_write(out_dir / "speed.md", markdown(report))


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--systems", help=f"comma list (default: {','.join(FULL)})")
    p.add_argument(
        "--quick",
        action="store_true",
        help=f"{','.join(QUICK)} only, 0.5 s per row unless --min-seconds",
    )
    p.add_argument(
        "--no-peers", action="store_true", help="skip so3krates-torch and mace"
    )
    p.add_argument(
        "--peers-compile",
        action="store_true",
        help="also time the peers' torch.compile paths",
    )
    p.add_argument(
        "--min-seconds", type=float, help="timing budget per row (default 2)"
    )
    p.add_argument(
        "--min-calls", type=int, default=5, help="timed calls per row (at least)"
    )
    p.add_argument("--warmup", type=int, default=2, help="untimed calls per row")
    p.add_argument("--dtypes", default="float32,float64")
    p.add_argument(
        "--modes",
        default="eager,compiled",
        help="equiforce modes: eager, compiled (the default backend: AOTInductor "
        "on the CPU), inductor (torch.compile only)",
    )
    p.add_argument("--preset", default="default", help="equiforce So3krates preset")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out-dir", type=Path, default=ROOT / "docs" / "bench")
    args = p.parse_args(argv)
    if args.min_seconds is None:
        args.min_seconds = 0.5 if args.quick else 2.0
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and write the outputs; Ctrl-C keeps finished rows."""
    from equiforce.bench import SYSTEMS

    argv = sys.argv[1:] if argv is None else argv
    args = parse_args(argv)
    systems = (
        args.systems.split(",") if args.systems else list(QUICK if args.quick else FULL)
    )
    unknown = [s for s in systems if s not in SYSTEMS]
    if unknown:
        raise SystemExit(f"unknown system(s) {unknown}; known: {', '.join(SYSTEMS)}")
    report = {
        "started": datetime.now().isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "benchmarks/speed.py", *argv]),
        "threads": args.threads,
        "systems": systems,
        "results": [],
    }
    out_json = args.out_dir / "speed.json"
    try:
        run_equiforce(systems, args, report, out_json)
        if args.no_peers:
            pass
        elif PEERS_PYTHON.exists():
            run_peers(systems, args, report, out_json)
        else:
            print(f"{PEERS_PYTHON} not found: peer packages skipped", file=sys.stderr)
    except KeyboardInterrupt:
        print("interrupted: writing the rows finished so far", file=sys.stderr)
        finish(report, args.out_dir)
        return 130
    finish(report, args.out_dir)
    print(
        f"wrote {args.out_dir}/speed.json, speed.md, speed_vs_atoms.png",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
