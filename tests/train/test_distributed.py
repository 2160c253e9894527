"""Training on several processes (equiforce.train.distributed) equals one process."""

import csv
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed as dist
from _train_helpers import make_tiny_config

from equiforce.config import ConfigError, load_config, validate_config
from equiforce.models.checkpoint import load_checkpoint
from equiforce.train import distributed
from equiforce.train.launch import resume, train

EQUIFORCE = Path(sys.executable).parent / "equiforce"


@pytest.fixture
def world_of_one():
    """A real gloo process group of this process alone."""
    port = distributed.free_port()
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=0, world_size=1
    )
    yield distributed.Group(0, 1, torch.device("cpu"))
    dist.destroy_process_group()


def test_shards_cover_the_batch_once():
    batch = np.arange(7)
    groups = [distributed.Group(r, 3, torch.device("cpu")) for r in range(3)]
    shards = [g.shard(batch) for g in groups]
    assert [len(s) for s in shards] == [3, 2, 2]
    assert sorted(np.concatenate(shards).tolist()) == batch.tolist()
    assert groups[0].main and not groups[1].main


def test_sum_gradients_scales_by_share_and_keeps_missing_gradients(world_of_one):
    a = torch.nn.Parameter(torch.zeros(2, 3))
    b = torch.nn.Parameter(torch.zeros(4))
    a.grad = torch.arange(6.0).reshape(2, 3)
    parts = world_of_one.sum_gradients([a, b], 0.25, {"loss": 2.0, "loss_forces": 4.0})
    torch.testing.assert_close(a.grad, 0.25 * torch.arange(6.0).reshape(2, 3))
    assert b.grad is None  # no process had one: Adam must skip it
    assert parts == {"loss": 0.5, "loss_forces": 1.0}


def test_follow_passes_the_stop_reason_clock_and_lr(world_of_one):
    assert world_of_one.follow(None, 12.5, 1e-3) == (None, 12.5, 1e-3)
    assert world_of_one.follow("max_minutes reached", 3.0, 0.0)[0] == (
        "max_minutes reached"
    )


@pytest.mark.parametrize(
    ("training", "needle"),
    [
        ({"processes": 0}, "processes"),
        ({"processes": 3, "batch_size": 2}, "at least"),
        ({"processes": 2, "device": "cuda:1"}, "cuda:r"),
    ],
)
def test_bad_process_settings_are_config_errors(tmp_path, training, needle):
    with pytest.raises(ConfigError, match=needle):
        validate_config(make_tiny_config(**training), tmp_path)


def _weights(path: Path) -> dict[str, torch.Tensor]:
    ckpt = load_checkpoint(path)
    return ckpt["training_state"]["model"] | {
        f"ema.{k}": v for k, v in ckpt["state_dict"].items()
    }


def _rows(run: Path) -> list[dict]:
    return list(csv.DictReader((run / "metrics.csv").open()))


def _children(pid: int) -> list[int]:
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid:
            out.append(int(stat.parent.name))
    return out


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses /proc")
def test_two_processes_killed_and_resumed_equal_one_process(tmp_path, write_config):
    """SIGKILL of a 2-process run mid-way, resume: the weights of one process.

    Float64, so the only difference is the order of the gradient sums (shard
    means scaled by 3/5 and 2/5 against one mean over 5). The kill also checks
    that the spawned processes die with the command that started them.
    """
    raw = make_tiny_config(
        max_steps=300,
        batch_size=5,
        valid_interval=50,
        checkpoint_interval=5,
        log_interval=10,
        dtype="float64",
        schedule="plateau",
        plateau_patience=0,
    )
    ref_dir, run_dir = tmp_path / "one", tmp_path / "two"
    train(validate_config(raw, tmp_path), ref_dir, progress=False)

    raw["training"]["processes"] = 2
    path = write_config(raw)
    parent = subprocess.Popen(
        [str(EQUIFORCE), "train", str(path), "--run-dir", str(run_dir), "--quiet"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180
        while not (run_dir / "last.pt").exists():
            assert parent.poll() is None, parent.stderr.read()
            assert time.monotonic() < deadline, "no checkpoint within 180 s"
            time.sleep(0.05)
        children = _children(parent.pid)
        os.kill(parent.pid, signal.SIGKILL)
        parent.wait(timeout=30)
        deadline = time.monotonic() + 30
        while any(_alive(c) for c in children) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not [c for c in children if _alive(c)], "orphaned training processes"
    finally:
        if parent.poll() is None:
            os.killpg(parent.pid, signal.SIGKILL)
    assert len(children) >= 2
    killed_at = load_checkpoint(run_dir / "last.pt")["training_state"]["step"]
    assert 0 < killed_at < 300
    assert not (run_dir / "final_metrics.json").exists()

    resume(run_dir, progress=False)
    a, b = _weights(ref_dir / "last.pt"), _weights(run_dir / "last.pt")
    assert load_checkpoint(run_dir / "last.pt")["training_state"]["step"] == 300
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-9, atol=1e-11, msg=k)
    rows_a, rows_b = _rows(ref_dir), _rows(run_dir)
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]
    # (train_loss is a mean over the steps since the last row, and the first row
    # after a resume averages only the steps after it: not compared)
    for ra, rb in zip(rows_a, rows_b, strict=True):
        for key in ("valid_loss", "valid_forces_mae", "lr"):
            if ra.get(key):
                assert float(rb[key]) == pytest.approx(float(ra[key]), rel=1e-8), key
    config = load_config(run_dir / "config.resolved.yaml")
    assert config.training.processes == 2


def test_torchrun_processes_train_like_one_process(tmp_path, write_config):
    """Under ``torchrun`` the launched processes are the training processes."""
    raw = make_tiny_config(max_steps=30, batch_size=5, valid_interval=10)
    raw["training"]["dtype"] = "float64"
    path = write_config(raw)
    train(validate_config(raw, tmp_path), tmp_path / "one", progress=False)
    torchrun = Path(sys.executable).parent / "torchrun"
    cmd = [str(torchrun), "--standalone", "--nproc_per_node", "2", str(EQUIFORCE)]
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
    proc = subprocess.run(
        [*cmd, "train", str(path), "--run-dir", str(tmp_path / "two"), "--quiet"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    a, b = (
        _weights(tmp_path / "one" / "last.pt"),
        _weights(tmp_path / "two" / "last.pt"),
    )
    for k in a:
        torch.testing.assert_close(b[k], a[k], rtol=1e-9, atol=1e-11, msg=k)
    assert (tmp_path / "two" / "final_metrics.json").exists()
    # process 0 alone prints the result: one line, best.pt's path
    assert proc.stdout.split() == [str(tmp_path / "two" / "best.pt")]


def test_launcher_world_must_match_processes(monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(ValueError, match="launcher started 2"):
        distributed.join_launched("cpu", processes=3)
