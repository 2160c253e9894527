import argparse

import pytest
import yaml

from equiforce.config import ConfigError, load_config
from equiforce.train import cli


def _errors(path, overrides=()):
    with pytest.raises(ConfigError) as info:
        load_config(path, list(overrides))
    return info.value.lines


def test_valid_config_resolves_paths_and_model(tiny_config, write_config, tmp_path):
    raw = tiny_config()
    raw["data"]["train"]["path"] = "data.npz"  # relative to the YAML file
    cfg = load_config(write_config(raw))
    assert cfg.data.train.path == str(tmp_path / "data.npz")
    # the model section is completed with every field of the model config
    assert cfg.model.overrides["num_features"] == 16
    assert cfg.model.overrides["cutoff"] == 5.0


def test_unknown_key_suggests_closest(tiny_config, write_config):
    raw = tiny_config()
    raw["training"]["learning_rate"] = 1e-3
    raw["data"]["n_trian"] = 3
    path = write_config(raw)
    lines = _errors(path)
    assert f"{path}: data.n_trian: unknown key (did you mean 'n_train'?)" in lines
    assert any(
        ln.startswith(f"{path}: training.learning_rate: unknown key") for ln in lines
    )
    assert len(lines) == 2


def test_unknown_model_field_and_name(tiny_config, write_config):
    raw = tiny_config()
    raw["model"]["overrides"]["num_feature"] = 8
    lines = _errors(write_config(raw))
    assert lines == [
        f"{lines[0].split(': ')[0]}: model.overrides.num_feature: unknown key "
        "(did you mean 'num_features'?)"
    ]
    raw = tiny_config()
    raw["model"]["name"] = "so3kratez"
    (line,) = _errors(write_config(raw))
    assert "model.name: unknown value 'so3kratez' (did you mean 'so3krates'?)" in line


def test_wrong_type_and_out_of_range(tiny_config, write_config):
    raw = tiny_config(batch_size="five", lr=-0.001, optimizer="sgd")
    path = write_config(raw)
    lines = _errors(path)
    text = "\n".join(lines)
    assert f"{path}: training.batch_size: Input should be a valid integer" in text
    assert "training.lr: Input should be greater than 0 (got -0.001)" in text
    assert "training.optimizer: Input should be 'adam', 'adamw' or 'amsgrad'" in text
    assert len(lines) == 3


def test_cross_field_rules(tiny_config, write_config):
    raw = tiny_config(energy_weight=0.0, forces_weight=0.0)
    assert any("all zero" in ln for ln in _errors(write_config(raw)))
    raw = tiny_config(max_steps=None, max_epochs=None, max_minutes=None)
    assert any(
        "max_steps, max_epochs, max_minutes" in ln for ln in _errors(write_config(raw))
    )
    raw = tiny_config()
    raw["data"]["e0"] = "isolated_atoms"
    assert any("data.isolated_atoms" in ln for ln in _errors(write_config(raw)))


def test_yaml_exponent_spellings_coerce(tiny_config, tmp_path):
    base = yaml.safe_dump(tiny_config()).replace("lr: 0.003", "lr: LR")
    for spelling in ("1e-3", "1.0e-3", "'1e-3'"):
        path = tmp_path / "c.yaml"
        path.write_text(base.replace("LR", spelling))
        assert yaml.safe_load(path.read_text())["training"]["lr"] in ("1e-3", 1e-3)
        assert load_config(path).training.lr == pytest.approx(1e-3)


def test_set_overrides_are_yaml(tiny_config, write_config):
    path = write_config(tiny_config())
    cfg = load_config(
        path,
        ["training.lr=2e-4", "model.overrides.degrees=[1]", "training.ema_decay=null"],
    )
    assert cfg.training.lr == pytest.approx(2e-4)
    assert cfg.model.overrides["degrees"] == [1]
    assert cfg.training.ema_decay is None
    lines = _errors(path, ["training.batch_size=0"])
    assert "training.batch_size: Input should be greater than 0 (got 0)" in lines[0]


def test_cli_config_error_exits_2_before_writing(
    tiny_config, write_config, tmp_path, capsys
):
    raw = tiny_config()
    raw["training"]["optimiser"] = "adam"
    path = write_config(raw)
    parser = argparse.ArgumentParser()
    cli.register(parser.add_subparsers())
    run_dir = tmp_path / "run"
    args = parser.parse_args(["train", str(path), "--run-dir", str(run_dir), "--quiet"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert f"{path}: training.optimiser: unknown key (did you mean 'optimizer'?)" in err
    assert not run_dir.exists()
