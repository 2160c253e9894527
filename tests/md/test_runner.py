"""Runner: outputs, resume after SIGINT/SIGKILL, stability monitor, config errors."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import numpy as np
import pytest
import torch
from ase import Atoms
from helpers import lj_cluster

from equiforce.data.trajectory import read_trajectory
from equiforce.md.config import ConfigError, MDConfig, load_md_config
from equiforce.md.forcefield import LennardJones
from equiforce.md.observers import StabilityMonitor
from equiforce.md.runner import Simulation, run_md, thermo_table
from equiforce.md.state import maxwell_boltzmann, state_from_atoms


def _cfg(**kw):
    base = dict(
        ensemble="langevin",
        temperature=20.0,
        timestep=5.0,
        steps=60,
        output_interval=5,
        seed=3,
    )
    return MDConfig(**(base | kw))


@pytest.mark.parametrize("fmt", ["extxyz", "hdf5"])
def test_sigint_then_resume_continues_identically(tmp_path, fmt):
    cfg = _cfg(trajectory_format=fmt)
    ref = run_md(LennardJones(), [lj_cluster()], cfg, tmp_path / "ref", progress=False)
    assert ref.steps_done == 60 and ref.stable

    lj, calls = LennardJones(), [0]

    def interrupting(state):
        calls[0] += 1
        if calls[0] == 23:  # Ctrl-C in the middle of the run
            os.kill(os.getpid(), signal.SIGINT)
        return lj(state)

    first = run_md(interrupting, [lj_cluster()], cfg, tmp_path / "run", progress=False)
    assert first.interrupted and first.steps_done < 60
    second = run_md(
        lj, [lj_cluster()], cfg, tmp_path / "run", resume=True, progress=False
    )
    assert not second.interrupted and second.time_fs == 300.0
    suffix = ".h5" if fmt == "hdf5" else ".xyz"
    a = read_trajectory(tmp_path / "ref" / f"trajectory{suffix}")
    b = read_trajectory(tmp_path / "run" / f"trajectory{suffix}")
    np.testing.assert_array_equal(a.step, b.step)
    np.testing.assert_allclose(a.positions, b.positions, atol=1e-7)
    np.testing.assert_allclose(a.velocities, b.velocities, atol=1e-7)
    ta, tb = (
        thermo_table(tmp_path / "ref" / "thermo.csv"),
        thermo_table(tmp_path / "run" / "thermo.csv"),
    )
    np.testing.assert_allclose(ta["total_eV"], tb["total_eV"], atol=1e-9)


_KILL_SCRIPT = textwrap.dedent(
    """
    import sys
    sys.path.insert(0, {helpers!r})
    from helpers import lj_cluster
    from equiforce.md.config import MDConfig
    from equiforce.md.forcefield import LennardJones
    from equiforce.md.runner import run_md
    cfg = MDConfig(ensemble="nve", temperature=20.0, timestep=5.0, steps=10**7,
                   output_interval=1, trajectory_format={fmt!r},
                   checkpoint_interval_s={interval!r})
    run_md(LennardJones(), [lj_cluster()], cfg, {out!r}, progress=False)
    """
)


@pytest.mark.parametrize("interval", [0.0, 0.3], ids=["every-frame", "every-0.3s"])
@pytest.mark.parametrize("fmt", ["extxyz", "hdf5"])
def test_killed_run_is_readable_and_resumable(tmp_path, fmt, interval):
    """SIGKILL mid-run: the trajectory reads back with consecutive frames, and a
    resume continues from the last checkpoint (at the last frame when
    checkpoints are taken at every frame), recomputing what came after it."""
    out = tmp_path / "run"
    script = _KILL_SCRIPT.format(
        helpers=os.path.dirname(__file__), fmt=fmt, out=str(out), interval=interval
    )
    proc = subprocess.Popen([sys.executable, "-c", script])
    suffix = ".h5" if fmt == "hdf5" else ".xyz"
    deadline = time.time() + 60
    while time.time() < deadline and not (out / "md_state.pt").exists():
        time.sleep(0.2)
    time.sleep(1.5)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    traj = read_trajectory(out / f"trajectory{suffix}")
    assert len(traj) > 5 and np.all(np.diff(traj.step) == 1)
    cfg = MDConfig(
        ensemble="nve",
        temperature=20.0,
        timestep=5.0,
        steps=int(traj.step[-1]) + 10,
        output_interval=1,
        trajectory_format=fmt,
    )
    checkpoint_step = torch.load(out / "md_state.pt", weights_only=True)["state"]
    checkpoint_step = int(checkpoint_step["step"])
    assert checkpoint_step <= traj.step[-1]  # never ahead of the written frames
    res = run_md(LennardJones(), [lj_cluster()], cfg, out, resume=True, progress=False)
    after = read_trajectory(out / f"trajectory{suffix}")
    assert after.step[-1] == cfg.steps and np.all(np.diff(after.step) == 1)
    assert res.steps_done == cfg.steps - checkpoint_step
    if interval == 0:
        assert res.steps_done <= 11
    th = thermo_table(out / "thermo.csv")
    np.testing.assert_array_equal(th["step"], after.step)


def test_stability_monitor_flags_each_criterion():
    atoms = lj_cluster()
    mol = Atoms("OH2", positions=[[0, 0, 0], [0.96, 0, 0], [-0.24, 0.93, 0]])
    monitor = StabilityMonitor([mol], temperature=300.0)
    assert len(monitor.pairs) == 2  # two O–H bonds, no H–H bond
    state = state_from_atoms([mol])
    state.forces = torch.zeros_like(state.positions)
    state.energy = torch.zeros(1, dtype=torch.float64)
    assert monitor.check(state, 0.0) == []
    stretched = state.clone()
    stretched.positions[1, 0] += 0.6
    assert "bond" in monitor.check(stretched, 1.0)[0].reason
    hot = state.clone()
    maxwell_boltzmann(hot, 1000.0)
    assert "temperature" in monitor.check(hot, 1.0)[0].reason
    nan = state.clone()
    nan.forces[0, 0] = float("nan")
    assert "non-finite" in monitor.check(nan, 1.0)[0].reason
    lj = StabilityMonitor([atoms], temperature=None)
    close = state_from_atoms([atoms])
    close.positions[1] = close.positions[0] + torch.tensor(
        [0.5, 0.0, 0.0], dtype=torch.float64
    )
    close.forces = torch.zeros_like(close.positions)
    reasons = [e.reason for e in lj.check(close, 0.0)]
    assert reasons and ("pair distance" in reasons[0] or "bond" in reasons[0])


class _Exploding:
    """LJ until step 40, then a force that pushes atom 0 away ever harder."""

    def __init__(self):
        self.lj, self.calls = LennardJones(), 0

    def __call__(self, state):
        self.calls += 1
        e, f = self.lj(state)
        if self.calls > 40:
            f = f.clone()
            f[0] += 50.0 * (self.calls - 40)
        return e, f


def test_run_stops_cleanly_on_blow_up_and_not_on_healthy_run(tmp_path):
    cfg = _cfg(ensemble="nve", steps=400, output_interval=10)
    healthy = run_md(
        LennardJones(), [lj_cluster()], cfg, tmp_path / "ok", progress=False
    )
    assert healthy.stable and healthy.steps_done == 400
    res = run_md(_Exploding(), [lj_cluster()], cfg, tmp_path / "bad", progress=False)
    assert not res.stable and res.steps_done < 400
    event = res.events[0]
    assert 40 <= event.step < 400 and event.time_fs == 5.0 * event.step
    traj = read_trajectory(tmp_path / "bad" / "trajectory.xyz")
    assert traj.step[-1] == event.step
    import json

    summary = json.loads((tmp_path / "bad" / "result.json").read_text())
    assert summary["stable"] is False and summary["events"][0]["reason"] == event.reason


def test_config_errors_name_the_key(tmp_path):
    path = tmp_path / "md.yaml"
    path.write_text("md:\n  ensemble: nvt\n  timestep: -1\n  temprature: 300\n")
    with pytest.raises(ConfigError) as err:
        load_md_config(path)
    msg = str(err.value)
    assert f"{path}: ensemble" in msg and "timestep" in msg
    assert "temprature: unknown key (did you mean 'temperature'?)" in msg
    cfg = load_md_config(None, time_ps=1.0, timestep=0.5)
    assert cfg.n_steps == 2000 and cfg.trajectory_suffix == ".xyz"  # 200 frames
    assert load_md_config(None, time_ps=10.0).trajectory_suffix == ".h5"  # 2,000


def test_simulation_replicas_write_one_trajectory_each(tmp_path):
    cfg = _cfg(n_replicas=1, steps=20)
    sim = Simulation(LennardJones(), [lj_cluster(), lj_cluster(seed=1)], cfg, tmp_path)
    res = sim.run(progress=True)
    assert res.steps_done == 20
    for k in range(2):
        assert len(read_trajectory(tmp_path / f"trajectory_{k}.xyz")) == 5
    th = thermo_table(tmp_path / "thermo.csv")
    assert set(th["system"]) == {0.0, 1.0}


def test_progress_goes_to_plain_lines_when_output_is_not_a_terminal(capsys, tmp_path):
    # a live bar written to a log showed nothing until the end of the run
    cfg = MDConfig(steps=40, output_interval=10, timestep=1.0)
    run_md(LennardJones(), [lj_cluster()], cfg, tmp_path / "run", progress=True)
    err = capsys.readouterr().err
    assert "md: step " in err and "steps/s" in err and "ETA" in err, err
    assert "━" not in err  # no bar characters
