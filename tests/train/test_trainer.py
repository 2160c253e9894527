import csv
import json
import os
import signal
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from _train_helpers import ETHANOL, make_tiny_config

from equiforce.config import DataSource, load_config, validate_config
from equiforce.data.dataset import e0_table
from equiforce.models.checkpoint import load_checkpoint
from equiforce.models.registry import build_model, load_model
from equiforce.train.evaluate import evaluate
from equiforce.train.launch import RunDirError, resume, train


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short run shared by several tests."""
    root = tmp_path_factory.mktemp("fit")
    raw = make_tiny_config(max_steps=60, lr=5e-3, valid_interval=20)
    config = validate_config(raw, root)
    best = train(config, root / "run", progress=False)
    return root / "run", best


def _valid_loss_of(model, run_dir):
    from equiforce import read
    from equiforce.data.dataset import FrameStore, GraphDataset
    from equiforce.train.loss import WeightedLoss
    from equiforce.train.metrics import predict
    from equiforce.train.setup import eval_batches

    splits = json.loads((run_dir / "splits.json").read_text())
    frames = read(ETHANOL, energy_unit="kcal/mol", index="0:40")
    store = FrameStore.from_atoms(frames).subset(splits["valid"])
    ds = GraphDataset(store, model.cutoff, torch.float32)
    return predict(model.eval(), eval_batches(ds, 10)()).loss(WeightedLoss())


def test_short_fit_lowers_the_loss(trained):
    run_dir, best = trained
    config = load_config(run_dir / "config.resolved.yaml")
    stats = json.loads((run_dir / "statistics.json").read_text())
    e0 = e0_table({int(z): v for z, v in stats["e0"].items()})
    initial = build_model(
        config.model.name,
        None,
        seed=config.training.seed,
        e0=e0,
        **config.model.resolved.model_dump(),
    )
    loss0 = _valid_loss_of(initial, run_dir)
    loss1 = _valid_loss_of(load_model(best), run_dir)
    assert loss1 < 0.7 * loss0


def test_run_dir_contents(trained):
    run_dir, best = trained
    for name in (
        "config.resolved.yaml",
        "splits.json",
        "statistics.json",
        "metrics.csv",
        "best.pt",
        "last.pt",
        "final_metrics.json",
    ):
        assert (run_dir / name).is_file(), name
    assert any((run_dir / "tb").iterdir())
    splits = json.loads((run_dir / "splits.json").read_text())
    assert len(splits["train"]) == 30 and len(splits["valid"]) == 10
    assert not set(splits["train"]) & set(splits["valid"])
    rows = list(csv.DictReader((run_dir / "metrics.csv").open()))
    assert [int(r["step"]) for r in rows] == list(range(5, 61, 5))
    valid_rows = [r for r in rows if r["valid_loss"]]
    assert [int(r["step"]) for r in valid_rows] == [20, 40, 60]
    ckpt = load_checkpoint(best)
    best_row = min(valid_rows, key=lambda r: float(r["valid_loss"]))
    assert ckpt["best_step"] == int(best_row["step"])
    last = load_checkpoint(run_dir / "last.pt")
    assert last["training_state"]["step"] == 60
    # last.pt holds EMA weights as its model, the raw weights in the training state
    ema = last["training_state"]["ema"]["shadow"]
    for k, v in last["state_dict"].items():
        assert torch.equal(v, ema[k])
    with pytest.raises(RunDirError, match="resume"):
        train(load_config(run_dir / "config.resolved.yaml"), run_dir, progress=False)


def test_eval_metrics_match_hand_computation(trained, tmp_path):
    run_dir, best = trained
    source = DataSource(path=str(ETHANOL), energy_unit="kcal/mol", index="40:52")
    metrics = evaluate(best, source, tmp_path / "eval", batch_size=5, progress=False)
    from equiforce import AtomicGraph, read

    model = load_model(best)
    de, dea, df, zs = [], [], [], []
    for atoms in read(ETHANOL, energy_unit="kcal/mol", index="40:52"):
        g = AtomicGraph.from_atoms(atoms, model.cutoff, dtype=torch.float32)
        out = model(g, compute_forces=True)
        e = out["energy"].item() - atoms.get_potential_energy()
        de.append(e)
        dea.append(e / len(atoms))
        df.append(out["forces"].double().numpy() - atoms.get_forces())
        zs.append(atoms.numbers)
    de, dea, df, zs = (
        np.array(de),
        np.array(dea),
        np.concatenate(df),
        np.concatenate(zs),
    )
    assert metrics["n_structures"] == 12
    assert metrics["energy_mae"] == pytest.approx(1000 * np.abs(de).mean(), rel=1e-5)
    assert metrics["energy_rmse"] == pytest.approx(
        1000 * np.sqrt((de**2).mean()), rel=1e-5
    )
    assert metrics["energy_per_atom_mae"] == pytest.approx(
        1000 * np.abs(dea).mean(), rel=1e-5
    )
    assert metrics["forces_mae"] == pytest.approx(1000 * np.abs(df).mean(), rel=1e-4)
    assert metrics["forces_rmse"] == pytest.approx(
        1000 * np.sqrt((df**2).mean()), rel=1e-4
    )
    h = metrics["forces_per_element"]["H"]
    assert h["mae"] == pytest.approx(1000 * np.abs(df[zs == 1]).mean(), rel=1e-4)
    assert h["n_atoms"] == int((zs == 1).sum())
    assert (
        json.loads((tmp_path / "eval" / "metrics.json").read_text())["n_structures"]
        == 12
    )
    assert (tmp_path / "eval" / "parity.png").read_bytes()[:4] == b"\x89PNG"


KILL_SCRIPT = textwrap.dedent(
    """
    import os, signal, sys
    from equiforce.config import load_config
    from equiforce.train import launch
    from equiforce.train import trainer as T

    original = T.Trainer.train_step
    def step_then_die(self, *args):
        if self.step == int(sys.argv[3]):  # mid-run, between two checkpoints
            os.kill(os.getpid(), signal.SIGKILL)
        return original(self, *args)
    T.Trainer.train_step = step_then_die
    launch.train(load_config(sys.argv[1]), sys.argv[2], progress=False)
    """
)


def test_resume_after_sigkill_matches_uninterrupted(tmp_path, write_config):
    raw = make_tiny_config(
        max_steps=40,
        checkpoint_interval=5,
        valid_interval=10,
        schedule="plateau",
        plateau_patience=0,
    )
    path = write_config(raw)
    ref_dir, killed_dir = tmp_path / "ref", tmp_path / "killed"
    train(load_config(path), ref_dir, progress=False)

    script = tmp_path / "kill.py"
    script.write_text(KILL_SCRIPT)
    env = dict(os.environ, PYTHONHASHSEED="0")
    proc = subprocess.run(
        [sys.executable, str(script), str(path), str(killed_dir), "23"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    state = load_checkpoint(killed_dir / "last.pt")["training_state"]
    assert state["step"] == 20  # the work of steps 21-23 was lost
    assert not (killed_dir / "final_metrics.json").exists()

    resume(killed_dir, progress=False)
    a = load_checkpoint(ref_dir / "last.pt")
    b = load_checkpoint(killed_dir / "last.pt")
    assert b["training_state"]["step"] == 40
    for k in a["state_dict"]:
        torch.testing.assert_close(
            b["state_dict"][k], a["state_dict"][k], rtol=1e-6, atol=1e-7
        )
        torch.testing.assert_close(
            b["training_state"]["model"][k],
            a["training_state"]["model"][k],
            rtol=1e-6,
            atol=1e-7,
        )
    assert b["training_state"]["schedule"] == a["training_state"]["schedule"]
    rows_a = list(csv.DictReader((ref_dir / "metrics.csv").open()))
    rows_b = list(csv.DictReader((killed_dir / "metrics.csv").open()))
    assert [r["step"] for r in rows_b] == [r["step"] for r in rows_a]
    assert [r["valid_loss"] for r in rows_b] == [r["valid_loss"] for r in rows_a]


def test_time_budget_stops_and_still_writes_best(tmp_path, write_config):
    raw = make_tiny_config(max_steps=10_000, max_minutes=1e-4, valid_interval=1000)
    train(load_config(write_config(raw)), tmp_path / "run", progress=False)
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert final["stop"] == "max_minutes reached"
    assert final["final_step"] < 10_000
    assert (
        load_checkpoint(tmp_path / "run" / "best.pt")["best_step"]
        == final["final_step"]
    )


def test_early_stopping(tmp_path, write_config):
    # lr = 0 cannot improve after the first validation
    raw = make_tiny_config(
        max_steps=200,
        lr=1e-12,
        valid_interval=2,
        early_stopping_patience=2,
        ema_decay=None,
    )
    train(load_config(write_config(raw)), tmp_path / "run", progress=False)
    final = json.loads((tmp_path / "run" / "final_metrics.json").read_text())
    assert final["stop"] == "early stopping"
    assert final["final_step"] < 200


@pytest.mark.parametrize(
    "variant",
    [
        {
            "dtype": "float64",
            "optimizer": "amsgrad",
            "schedule": "cosine",
            "warmup_steps": 2,
        },
        {
            "optimizer": "adamw",
            "weight_decay": 0.01,
            "clip_grad_norm": 0.1,
            "energy_per_atom": True,
            "schedule": "constant",
            "ema_decay": None,
        },
    ],
)
def test_training_variants_run_and_record(tmp_path, write_config, variant):
    raw = make_tiny_config(max_steps=6, valid_interval=3, **variant)
    best = train(load_config(write_config(raw)), tmp_path / "run", progress=False)
    ckpt = load_checkpoint(best)
    assert ckpt["dtype"] == variant.get("dtype", "float32")
    model = load_model(best)
    assert next(model.parameters()).dtype == getattr(torch, ckpt["dtype"])
    rows = list(csv.DictReader((tmp_path / "run" / "metrics.csv").open()))
    lrs = [float(r["lr"]) for r in rows]
    if variant.get("schedule") == "cosine":
        assert lrs[-1] < lrs[0]
    else:
        assert lrs == [pytest.approx(3e-3)] * len(lrs)


def test_sigint_stops_cleanly_and_resume_finishes(tmp_path, write_config):
    path = write_config(make_tiny_config(max_steps=30, checkpoint_interval=10))
    script = tmp_path / "int.py"
    script.write_text(KILL_SCRIPT.replace("signal.SIGKILL", "signal.SIGINT"))
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, str(script), str(path), str(run_dir), "13"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    final = json.loads((run_dir / "final_metrics.json").read_text())
    assert final["stop"] == "interrupted"
    # the step in flight finished; nothing done is lost
    assert load_checkpoint(run_dir / "last.pt")["training_state"]["step"] == 14
    resume(run_dir, progress=False)
    assert load_checkpoint(run_dir / "last.pt")["training_state"]["step"] == 30


def test_compiled_step_config_trains_like_autograd(tmp_path, monkeypatch):
    """``training.compile`` routes steps through CompiledTrainStep; same weights.

    The torch.func step runs eagerly here (compiling takes minutes; the compiled
    graph itself is checked in test_compiled_step.py, marked slow).
    """
    import functools

    from equiforce.train import trainer as trainer_mod

    calls = []

    class Recording(trainer_mod.CompiledTrainStep):
        def __call__(self, batch):
            calls.append(batch.n_graphs)
            return super().__call__(batch)

    monkeypatch.setattr(
        trainer_mod, "CompiledTrainStep", functools.partial(Recording, compile=False)
    )
    weights = {}
    for flag in (False, True):
        raw = make_tiny_config(max_steps=6, dtype="float64", compile=flag)
        best = train(validate_config(raw, tmp_path), tmp_path / f"run{flag}", False)
        weights[flag] = load_checkpoint(best)["state_dict"]
    assert len(calls) == 6
    for name, w in weights[False].items():
        torch.testing.assert_close(weights[True][name], w, rtol=1e-7, atol=1e-10)
    with pytest.raises(Exception, match="stress"):
        validate_config(make_tiny_config(compile=True, stress_weight=1.0), tmp_path)


def test_time_clock_cosine_decays_over_the_budget(tmp_path):
    """schedule_clock='time': the lr follows training seconds and ends near min_lr."""
    raw = make_tiny_config(
        max_steps=None,
        max_minutes=0.1,
        schedule="cosine",
        schedule_clock="time",
        warmup_steps=2,
        lr=3e-3,
        min_lr=1e-5,
        valid_interval=50,
        log_interval=5,
    )
    run = tmp_path / "run"
    train(validate_config(raw, tmp_path), run, progress=False)
    with open(run / "metrics.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["train_loss"]]
    elapsed = np.array([float(r["elapsed_s"]) for r in rows])
    lr = np.array([float(r["lr"]) for r in rows])
    assert len(rows) >= 5 and elapsed[-1] <= 6.0 + 2.0
    assert np.all(np.diff(lr) <= 0)  # past the warm-up: decreasing with time
    expected = 1e-5 + (3e-3 - 1e-5) * 0.5 * (1 + np.cos(np.pi * elapsed / 6.0))
    # each row's lr is that of its last step, taken a few ms before the row's time
    np.testing.assert_allclose(lr, expected, rtol=0.1, atol=1.5e-4)


def test_optimizer_steps_equal_plain_adam_for_transposed_gradients():
    """The fused Adam of make_optimizer reads gradients in the parameter's layout.

    torch.func gives transposed weight gradients; torch 2.13's fused CPU Adam
    misreads those unless assign_gradients copies them into place.
    """
    from types import SimpleNamespace

    from equiforce.train.compiled_step import assign_gradients
    from equiforce.train.optimizer import make_optimizer

    torch.manual_seed(0)
    fused, plain = torch.nn.Linear(4, 3).double(), torch.nn.Linear(4, 3).double()
    plain.load_state_dict(fused.state_dict())
    cfg = SimpleNamespace(optimizer="adam", lr=0.1, weight_decay=0.0)
    opt_a, opt_b = make_optimizer(fused, cfg), torch.optim.Adam(plain.parameters(), 0.1)
    for _ in range(3):
        grads = {
            "weight": torch.randn(4, 3, dtype=torch.float64).t(),  # strides (1, 3)
            "bias": torch.randn(3, dtype=torch.float64),
        }
        assign_gradients(fused, grads)
        for name, p in plain.named_parameters():
            p.grad = grads[name].contiguous()
        opt_a.step()
        opt_b.step()
    for a, b in zip(fused.parameters(), plain.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_weight_decay_spares_biases_and_scales():
    """AdamW decay shrinks a weight matrix with zero gradient, never a bias.

    Per-element energy scales and shifts are vectors too: decaying them towards
    zero would bias the energies, not regularise the model.
    """
    from types import SimpleNamespace

    from equiforce.train.optimizer import make_optimizer

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 3).double()
    before = {n: p.detach().clone() for n, p in layer.named_parameters()}
    cfg = SimpleNamespace(optimizer="adamw", lr=0.1, weight_decay=0.5)
    opt = make_optimizer(layer, cfg)
    for p in layer.parameters():
        p.grad = torch.zeros_like(p)
    opt.step()
    # decoupled decay alone: w <- w (1 - lr wd); the bias is untouched
    torch.testing.assert_close(layer.weight, before["weight"] * (1 - 0.1 * 0.5))
    torch.testing.assert_close(layer.bias, before["bias"], rtol=0, atol=0)


def test_single_group_optimizer_state_from_older_runs_resumes():
    """A pre-split AdamW state (one group, decay on everything) loads into two groups.

    Each parameter keeps its own moments; the vectors lose the decay, the
    matrices keep it, and the learning rate and step count carry over.
    """
    from types import SimpleNamespace

    from equiforce.train.optimizer import make_optimizer, upgrade_optimizer_state

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Linear(3, 2)).double()
    old = torch.optim.AdamW(model.parameters(), lr=0.01, weight_decay=0.1)
    for _ in range(2):
        model(torch.randn(5, 4, dtype=torch.float64)).square().sum().backward()
        old.step()
    saved = old.state_dict()
    new = make_optimizer(
        model, SimpleNamespace(optimizer="adamw", lr=0.5, weight_decay=0.1)
    )
    with pytest.raises(ValueError, match="parameter groups"):
        new.load_state_dict(saved)  # what resuming did before the upgrade
    new.load_state_dict(upgrade_optimizer_state(saved, model, new))
    for p in model.parameters():
        torch.testing.assert_close(new.state[p]["exp_avg"], old.state[p]["exp_avg"])
        assert int(new.state[p]["step"]) == 2
    decay = {tuple(g["params"][0].shape): g["weight_decay"] for g in new.param_groups}
    assert decay == {(3, 4): 0.1, (3,): 0.0}
    assert {g["lr"] for g in new.param_groups} == {0.01}
    # a state with the current layout passes through untouched
    assert (
        upgrade_optimizer_state(new.state_dict(), model, new)["param_groups"]
        == (new.state_dict()["param_groups"])
    )
