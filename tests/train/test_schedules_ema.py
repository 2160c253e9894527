import argparse
import json

import pytest
import torch
from _train_helpers import ETHANOL, make_tiny_config

from equiforce.config import TrainingConfig, load_config
from equiforce.train import cli
from equiforce.train.ema import EMA
from equiforce.train.schedules import Schedule
from equiforce.workflows.learning_curve import learning_curve


def test_exponential_decay_matches_spec():
    s = Schedule(TrainingConfig())  # lr 1e-3 · 0.75^(step / 125000)
    assert s.lr(0) == pytest.approx(1e-3)
    assert s.lr(125_000) == pytest.approx(0.75e-3)
    assert s.lr(19_000) == pytest.approx(1e-3 * 0.75 ** (19_000 / 125_000))


def test_warmup_cosine():
    cfg = TrainingConfig(
        schedule="cosine", lr=1e-3, warmup_steps=10, min_lr=1e-5, max_steps=110
    )
    s = Schedule(cfg, total_steps=110)
    assert s.lr(0) == pytest.approx(1e-4)  # (0 + 1) / 10 of the peak
    assert s.lr(9) == pytest.approx(1e-3)
    assert s.lr(60) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half way
    assert s.lr(110) == pytest.approx(1e-5)


def test_cosine_on_the_time_clock_ends_at_the_budget():
    cfg = TrainingConfig(
        schedule="cosine",
        schedule_clock="time",
        lr=1e-3,
        min_lr=1e-5,
        warmup_steps=10,
        max_epochs=None,
        max_minutes=2.0,
    )
    s = Schedule(cfg)  # no step count needed
    assert s.lr(0, 0.0) == pytest.approx(1e-4)  # warm-up still counts steps
    assert s.lr(500, 0.0) == pytest.approx(1e-3)
    assert s.lr(7, 60.0) == pytest.approx(0.8 * (1e-5 + (1e-3 - 1e-5) * 0.5))
    assert s.lr(500, 60.0) == pytest.approx(1e-5 + (1e-3 - 1e-5) * 0.5)  # half time
    assert s.lr(10**6, 120.0) == pytest.approx(1e-5)
    assert s.lr(3, 500.0) == pytest.approx(0.4 * 1e-5)  # past the budget: the floor


@pytest.mark.parametrize(
    "bad",
    [
        {"schedule": "exponential", "schedule_clock": "time", "max_minutes": 5},
        {"schedule": "cosine", "schedule_clock": "time", "max_steps": 100},
    ],
)
def test_time_clock_needs_cosine_and_a_budget(bad):
    with pytest.raises(ValueError, match="schedule_clock='time'"):
        TrainingConfig(**bad)


def test_plateau_cuts_after_patience_and_restores():
    cfg = TrainingConfig(
        schedule="plateau", lr=1e-3, plateau_patience=1, plateau_factor=0.5
    )
    s = Schedule(cfg)
    for loss in (1.0, 0.9, 0.95, 0.95):  # two validations without improvement
        s.on_validation(loss)
    assert s.lr(500) == pytest.approx(0.5e-3)
    t = Schedule(cfg)
    t.load_state_dict(s.state_dict())
    assert t.lr(500) == s.lr(500)


def test_ema_hand_computed():
    model = torch.nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(0.0)
    ema = EMA(model, decay=0.9)
    with torch.no_grad():
        model.weight.fill_(1.0)
    ema.update(model)  # decay min(0.9, 2/11)
    d = 2 / 11
    assert ema.shadow["weight"].item() == pytest.approx(1 - d)
    with ema.applied(model):
        assert model.weight.item() == pytest.approx(1 - d)
    assert model.weight.item() == 1.0


def test_learning_curve_writes_table_and_plot(tmp_path, write_config):
    raw = make_tiny_config(max_steps=6, valid_interval=3)
    raw["data"]["test"] = {
        "path": str(ETHANOL),
        "energy_unit": "kcal/mol",
        "index": "40:50",
    }
    config = load_config(write_config(raw))
    rows = learning_curve(config, [20, 10], tmp_path / "lc", progress=False)
    assert [r["n_train"] for r in rows] == [10, 20]
    splits = [
        json.loads((tmp_path / "lc" / f"n{n}" / "splits.json").read_text())
        for n in (10, 20)
    ]
    assert splits[0]["valid"] == splits[1]["valid"]
    assert set(splits[0]["train"]) <= set(splits[1]["train"])
    assert (tmp_path / "lc" / "learning_curve.png").read_bytes()[:4] == b"\x89PNG"
    text = (tmp_path / "lc" / "learning_curve.csv").read_text().splitlines()
    assert text[0].startswith("n_train,energy_mae")
    assert len(text) == 3
    # finished sizes are skipped on a re-run
    mtime = (tmp_path / "lc" / "n10" / "best.pt").stat().st_mtime_ns
    learning_curve(config, [10], tmp_path / "lc", progress=False)
    assert (tmp_path / "lc" / "n10" / "best.pt").stat().st_mtime_ns == mtime


def test_cli_eval_bad_input_exits_2(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    args = parser.parse_args(
        [
            "eval",
            "--model",
            str(tmp_path / "missing.pt"),
            "--data",
            str(ETHANOL),
            "--quiet",
        ]
    )
    assert args.func(args) == 2
    assert "missing.pt" in capsys.readouterr().err
