"""benchmarks/speed.py and benchmarks/peers_speed.py: outputs and their consistency."""

from __future__ import annotations

import importlib.util
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
SPEED = ROOT / "benchmarks" / "speed.py"
PEERS = ROOT / "benchmarks" / "peers_speed.py"
PEERS_PYTHON = ROOT / ".venv-peers" / "bin" / "python"


def _load_script(name: str):
    """A benchmarks/ script as a module (benchmarks/ is not a package)."""
    path = ROOT / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"bench_{name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def _pairs_within(atoms, cutoff: float) -> int:
    """Directed pairs closer than ``cutoff`` (open boundaries), brute force."""
    d = np.linalg.norm(atoms.positions[:, None] - atoms.positions[None], axis=-1)
    return int(((d < cutoff) & ~np.eye(len(atoms), dtype=bool)).sum())


def _row(mode: str, n: int, ms: float, dtype: str = "float32") -> dict:
    return {
        "system": f"s{n}", "n_atoms": n, "n_edges": 10 * n, "dtype": dtype,
        "mode": mode, "ms_median": ms, "ms_min": ms, "n_calls": 5,
        "neighbor_ms": 0.1, "peak_rss_mib": 100.0 + n / 100, "compile_s": None,
    }  # fmt: skip


def test_fit_exponents_recovers_power_law_above_1000_atoms():
    speed = _load_script("speed")
    sizes = [9, 96, 1029, 3000, 10_002]
    # below 1,000 atoms the time is flat (overhead); above it grows as N^1.3
    rows = [_row("eager", n, 5.0 if n < 1000 else 1e-3 * n**1.3) for n in sizes]
    rows += [_row("mace", n, 2e-2 * n) for n in sizes]
    fits = speed.fit_exponents(rows)
    assert fits["equiforce eager float32"]["exponent"] == pytest.approx(1.3, abs=1e-9)
    assert fits["equiforce eager float32"]["atoms"] == [1029, 3000, 10_002]
    assert fits["mace float32"]["exponent"] == pytest.approx(1.0, abs=1e-9)
    # one system above 1,000 atoms: no fit
    assert speed.fit_exponents([_row("eager", 9, 1.0), _row("eager", 2000, 9.0)]) == {}


def test_memory_summary_uses_largest_system():
    speed = _load_script("speed")
    rows = [_row("compiled", n, 1.0) for n in (9, 96, 1029)]
    rows.append(_row("compiled", 5000, 1.0, dtype="float64"))  # float32 preferred
    mem = speed.memory_summary(rows)["equiforce compiled"]
    assert mem["n_atoms"] == 1029 and mem["dtype"] == "float32"
    rss = 100.0 + 1029 / 100
    assert mem["atoms_per_gib"] == pytest.approx(1029 / (rss / 1024))
    assert mem["atoms_per_gib_above_base"] == pytest.approx(
        1029 / ((rss - 100.09) / 1024)
    )


@pytest.mark.slow
def test_speed_quick_no_peers(tmp_path):
    from equiforce.bench import make_system

    cmd = [sys.executable, str(SPEED), "--quick", "--no-peers", "--min-seconds", "0.1"]
    subprocess.run([*cmd, "--out-dir", str(tmp_path)], cwd=ROOT, check=True)
    report = json.loads((tmp_path / "speed.json").read_text())
    rows = report["results"]
    assert {(r["system"], r["dtype"], r["mode"]) for r in rows} == {
        (s, d, m)
        for s in ("ethanol", "benzene", "water96")
        for d in ("float32", "float64")
        for m in ("eager", "compiled")
    }
    for r in rows:
        atoms = make_system(r["system"])
        assert r["n_atoms"] == len(atoms)
        assert r["n_edges"] == _pairs_within(atoms, 5.0)
        assert math.isfinite(r["ms_median"]) and 0 < r["ms_min"] <= r["ms_median"]
        assert r["n_calls"] >= 5 and r["neighbor_ms"] > 0 and r["peak_rss_mib"] > 50
        assert (r["compile_s"] is not None) == (r["mode"] == "compiled")
    assert report["fits"] == {}  # no system with >= 1,000 atoms in --quick
    mem = report["memory"]["equiforce eager"]
    assert mem["system"] == "water96"
    assert mem["atoms_per_gib"] == pytest.approx(96 / (mem["peak_rss_mib"] / 1024))
    assert (tmp_path / "speed_vs_atoms.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "speed.md").read_text()
    assert "benchmarks/speed.py --quick --no-peers --min-seconds 0.1" in md
    assert report["machine"]["cpu"] in md
    for system, n in (("ethanol", 9), ("benzene", 12), ("water96", 96)):
        assert f"| {system} | {n} |" in md


@pytest.mark.slow
@pytest.mark.skipif(not PEERS_PYTHON.exists(), reason=".venv-peers not set up")
def test_peers_same_graphs_as_equiforce(tmp_path):
    from equiforce.bench import make_system

    out = tmp_path / "peers.json"
    cmd = [str(PEERS_PYTHON), str(PEERS), "--systems", "ethanol", "--dtypes", "float32"]
    cmd += ["--min-seconds", "0.1", "--out", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True)
    report = json.loads(out.read_text())
    assert report["errors"] == []
    assert {r["mode"] for r in report["results"]} == {"so3krates-torch", "mace"}
    n_pairs = _pairs_within(make_system("ethanol"), 5.0)
    for r in report["results"]:
        assert r["n_atoms"] == 9 and r["n_edges"] == n_pairs
        assert math.isfinite(r["ms_median"]) and 0 < r["ms_min"] <= r["ms_median"]


def test_md_speed_replicas_row(tmp_path):
    """benchmarks/md_speed.py: one row per molecule, replica throughput recorded."""
    out = tmp_path / "md.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "md_speed.py"), "--eager"]
    args = ["--molecules", "ethanol", "--steps", "4", "--warmup", "2", "--threads", "1"]
    subprocess.run(
        [*cmd, *args, "--replicas", "3", "--json", str(out)], cwd=ROOT, check=True
    )
    report = json.loads(out.read_text())
    assert report["meta"]["compiled"] is False and report["meta"]["steps"] == 4
    (row,) = report["results"]
    assert row["molecule"] == "ethanol" and row["n_atoms"] == 9
    rate, ase = row["native_x3_replica_steps_per_s"], row["ase_steps_per_s"]
    assert rate > 0 and ase > 0
    assert row["native_x3_vs_ase"] == pytest.approx(rate / ase)
    assert row["speedup"] == pytest.approx(row["native_steps_per_s"] / ase)
    # the untrained (zero-readout) model leaves ethanol whole over 4 steps
    assert row["rebuilds_per_step"] == 0 and row["edges_per_atom"] == 8.0
    assert row["model"].startswith("so3krates default preset")
    # one model per molecule: a molecule without one is an error, not a default
    bad = subprocess.run(
        [*cmd, *args, "--model", "aspirin=x.pt", "--json", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "no checkpoint for ethanol" in bad.stderr


def test_rmd17_cpu_so3krates_budget_run(tmp_path):
    """benchmarks/rmd17_cpu.py: a few-second budget trains, stops and is evaluated."""
    script = ROOT / "benchmarks" / "rmd17_cpu.py"
    cmd = [sys.executable, str(script), "--molecule", "ethanol", "--minutes", "0.1"]
    cmd += ["--threads", "1", "--models", "so3krates", "--out", str(tmp_path)]
    subprocess.run(cmd, cwd=ROOT, check=True)
    info = json.loads((tmp_path / "results.json").read_text())
    (row,) = info["rows"]
    assert row["model"] == "So3krates" and row["threads"] == 1
    assert row["minutes"] == pytest.approx(0.1)
    assert 0 < row["train_seconds"] <= 6 + 5  # stopped at the budget (+ one validation)
    assert row["steps"] > 0 and math.isfinite(row["forces_mae"])
    assert row["forces_mae"] > 0 and row["energy_mae"] > 0
    metrics = json.loads((tmp_path / "so3krates" / "test" / "metrics.json").read_text())
    assert metrics["n_structures"] == 1000  # the whole test file
    md = (tmp_path / "results.md").read_text()
    assert f"| {row['forces_mae']:.2f} |" in md and "MACE NeurIPS 2022 Table 1" in md


def test_budget_scaling_fit_and_inversion():
    """The log-log fit recovers a known power law and inverts it for a target."""
    bs = _load_script("budget_scaling")
    steps = np.array([1e4, 3e4, 1e5, 3e5])
    c, alpha, r2 = bs.fit_power_law(steps, 800.0 * steps**-0.4)
    assert (c, alpha, r2) == pytest.approx((800.0, 0.4, 1.0), rel=1e-9)
    need = bs.steps_for(5.0, c, alpha)
    assert 800.0 * need**-0.4 == pytest.approx(5.0, rel=1e-9)
    assert bs.steps_for(5.0, 800.0, 0.0) == math.inf  # a flat curve never gets there
    with pytest.raises(ValueError, match="two lengths"):
        bs.fit_power_law([1e4, 1e4], [10.0, 9.0])


def _results_json(path: Path, molecule: str, steps: int, f_mae: float) -> Path:
    row = {"model": "So3krates", "minutes": 10.0, "threads": 1, "steps": steps}
    row |= {"train_seconds": 600.0, "energy_mae": 1.0, "forces_mae": f_mae}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"molecule": molecule, "date": "x", "rows": [row]}))
    return path


def test_budget_scaling_collects_earlier_runs(tmp_path):
    """budget_scaling.py --minutes '' fits the --also runs: json, table and plot."""
    runs = [
        _results_json(tmp_path / f"r{k}" / "results.json", "ethanol", n, 500 * n**-0.3)
        for k, n in enumerate((2_000, 20_000, 200_000))
    ]
    cmd = [sys.executable, str(ROOT / "benchmarks" / "budget_scaling.py")]
    cmd += ["--molecule", "ethanol", "--minutes", "", "--out", str(tmp_path / "o")]
    subprocess.run([*cmd, "--also", *map(str, runs)], cwd=ROOT, check=True)
    info = json.loads((tmp_path / "o" / "scaling.json").read_text())
    assert [p["steps"] for p in info["points"]] == [2_000, 20_000, 200_000]
    assert info["fit"]["alpha"] == pytest.approx(0.3, rel=1e-9)
    assert info["steps_for_target"] == pytest.approx((500 / 5.0) ** (1 / 0.3), rel=1e-6)
    # the rate is the longest run's: 600 s / 200,000 steps
    assert info["ms_per_step"] == pytest.approx(3.0)
    # the two longest runs lie on the same law: the same slope
    assert info["tail_fit"]["steps"] == [20_000, 200_000]
    assert info["tail_fit"]["alpha"] == pytest.approx(0.3, rel=1e-9)
    # --rate-from: hours at another run's seconds per step (600 s / 2,000 steps)
    subprocess.run([*cmd, "--also", *map(str, runs), "--rate-from", str(runs[0])],
                   cwd=ROOT, check=True)  # fmt: skip
    again = json.loads((tmp_path / "o" / "scaling.json").read_text())
    assert again["ms_per_step"] == pytest.approx(300.0)
    assert again["hours_for_target"] == pytest.approx(100 * info["hours_for_target"])
    assert again["fastest_ms_per_step"] == pytest.approx(3.0)
    assert (tmp_path / "o" / "scaling.png").stat().st_size > 0
    assert "steps^−0.300" in (tmp_path / "o" / "scaling.md").read_text()
    wrong = _results_json(tmp_path / "w" / "results.json", "aspirin", 10, 1.0)
    bad = subprocess.run(
        [*cmd, "--also", str(runs[0]), str(wrong)],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode != 0 and "not 'ethanol'" in bad.stderr


def test_flops_script_counts_per_pair(tmp_path):
    """benchmarks/flops.py: FLOPs per call, per edge and per pair are consistent."""
    out = tmp_path / "flops.json"
    cmd = [sys.executable, str(ROOT / "benchmarks" / "flops.py"), "--no-compiled"]
    cmd += ["--systems", "ethanol,benzene", "--threads", "1", "--calls", "1"]
    subprocess.run([*cmd, "--square", "256", "--json", str(out)], cwd=ROOT, check=True)
    rows = json.loads(out.read_text())["rows"]
    assert [r["atoms"] for r in rows] == [9, 12]
    for r in rows:
        assert r["pairs"] * 2 == r["edges"]  # paired neighbour list
        assert r["flop_per_pair"] == pytest.approx(2 * r["flop_per_edge"])
        assert r["gflop_per_call"] * 1e9 == pytest.approx(
            r["flop_per_edge"] * r["edges"]
        )
        assert r["eager_gflops"] == pytest.approx(r["gflop_per_call"] / r["eager_s"])
    # the filter MLPs dominate: the cost per pair barely depends on the molecule
    assert rows[0]["flop_per_pair"] == pytest.approx(rows[1]["flop_per_pair"], rel=0.3)


def test_ablations_order_and_calls_record_their_settings(tmp_path):
    """so3krates_ablations.py order/calls: every order variant timed, settings kept."""
    script = ROOT / "benchmarks" / "so3krates_ablations.py"
    out = tmp_path / "abl.jsonl"
    base = [sys.executable, str(script)]
    common = ["--systems", "ethanol", "--threads", "1", "--json", str(out)]
    subprocess.run(
        [*base, "order", "--rounds", "2", "--shuffle", *common], cwd=ROOT, check=True
    )
    subprocess.run(
        [*base, "calls", "--calls", "2", "--spatial-order-min-atoms", "none", *common],
        cwd=ROOT,
        check=True,
    )
    order_run, calls_run = (json.loads(line) for line in out.read_text().splitlines())
    (row,) = order_run["rows"]
    assert row["system"] == "ethanol shuffled" and row["atoms"] == 9
    for key in ("own_ms", "morton_ms", "auto_ms", "morton_edges_ms"):
        assert row[key] > 0
    (row,) = calls_run["rows"]
    assert row["spatial_order_min_atoms"] is None and row["shuffled"] is False
    assert len(row["call_ms"]) == 2 and min(row["call_ms"]) > 0
    assert len(row["cpu_per_wall"]) == 2 and all(
        0 < c < 64 for c in row["cpu_per_wall"]
    )


def test_ablations_threads_rows(tmp_path):
    """so3krates_ablations.py threads: forced and default thread settings, cut systems."""
    script = ROOT / "benchmarks" / "so3krates_ablations.py"
    out = tmp_path / "threads.jsonl"
    cmd = [sys.executable, str(script), "threads", "--systems", "water96:6"]
    cmd += ["--threads", "2", "--rounds", "1", "--json", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True)
    (row,) = json.loads(out.read_text())["rows"]
    assert row["atoms"] == 6 and row["threads"] == 2
    for key in ("ms_many_threads", "ms_one_thread", "ms_library_default"):
        assert row[key] > 0


def test_ablations_profile_rows(tmp_path):
    """so3krates_ablations.py profile: the largest ops, fractions of one call."""
    script = ROOT / "benchmarks" / "so3krates_ablations.py"
    out = tmp_path / "profile.jsonl"
    cmd = [sys.executable, str(script), "profile", "--modes", "eager"]
    cmd += ["--systems", "water96:6", "--threads", "1", "--json", str(out)]
    subprocess.run(cmd, cwd=ROOT, check=True)
    (row,) = json.loads(out.read_text())["rows"]
    assert row["mode"] == "eager" and row["us_per_call_profiled"] > 0
    ops = row["ops"]
    assert 0 < len(ops) <= 15 and any(op["op"] == "aten::mm" for op in ops)
    fractions = [op["fraction"] for op in ops]
    assert fractions == sorted(fractions, reverse=True) and sum(fractions) <= 1 + 1e-9
