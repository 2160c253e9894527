import argparse
import typing

import pytest
import torch
import yaml
from _train_helpers import ETHANOL, TINY_MODEL

from equiforce.config import (
    ConfigError,
    EquiforceConfig,
    ModelSection,
    So3kratesSection,
    load_config,
    validate_config,
)
from equiforce.data.dataset import e0_table
from equiforce.models.registry import MODELS, PRESETS, build_model
from equiforce.models.so3krates import So3kratesConfig
from equiforce.train import cli
from equiforce.train.setup import build_training_model


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
    assert isinstance(cfg.model.resolved, So3kratesConfig)
    assert cfg.model.resolved.num_features == 16
    assert cfg.model.resolved.cutoff == 5.0


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
    assert cfg.model.resolved.degrees == (1,)
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


# ------------------------------------------------------- typed model section
def test_model_union_covers_the_registry():
    (union, _) = typing.get_args(ModelSection)
    tags = {cls.family() for cls in typing.get_args(union)}
    assert tags == set(MODELS)
    for cls in typing.get_args(union):
        assert cls.model_fields["resolved"].annotation is MODELS[cls.family()][0]


def test_unknown_override_key_and_preset_suggest_the_closest(tiny_config, tmp_path):
    raw = tiny_config()
    raw["model"] = {"name": "schnet", "overrides": {"num_interaction": 2}}
    with pytest.raises(ConfigError) as info:
        validate_config(raw, tmp_path, source="c.yaml")
    assert info.value.lines == [
        "c.yaml: model.overrides.num_interaction: unknown key "
        "(did you mean 'num_interactions'?)"
    ]
    raw["model"] = {"name": "nequip", "preset": "lmax4"}
    with pytest.raises(ConfigError) as info:
        validate_config(raw, tmp_path, source="c.yaml")
    (line,) = info.value.lines
    assert line.startswith("c.yaml: model.preset: unknown value 'lmax4' (did you mean")
    assert line.endswith("allowed: default, large, lmax1, lmax3, small")
    raw["model"] = {"name": "painn", "overide": {}}
    with pytest.raises(ConfigError) as info:
        validate_config(raw, tmp_path, source="c.yaml")
    assert info.value.lines == [
        "c.yaml: model.overide: unknown key (did you mean 'overrides'?)"
    ]


@pytest.mark.parametrize("name", sorted(MODELS))
def test_presets_resolve_into_the_family_config(name, tiny_config, tmp_path):
    for preset, values in PRESETS[name].items():
        raw = tiny_config()
        raw["model"] = {"name": name, "preset": preset}
        section = validate_config(raw, tmp_path).model
        assert section.name == name and section.preset == preset
        assert type(section.resolved) is MODELS[name][0]
        for key, value in values.items():
            assert getattr(section.resolved, key) == value, (preset, key)
    # overrides beat the preset; the section without a name is So3krates
    raw = tiny_config()
    raw["model"] = {"preset": "paper", "overrides": {"num_layers": 1}}
    resolved = validate_config(raw, tmp_path).model.resolved
    assert (resolved.num_layers, resolved.num_features) == (1, 132)
    assert EquiforceConfig.model_validate({"data": raw["data"]}).model == (
        So3kratesSection()
    )


def test_family_validators_run_at_load_time(tiny_config, tmp_path):
    raw = tiny_config()
    raw["model"]["overrides"] |= {"num_features": 18, "num_heads": 4}
    raw["model"]["overrides"]["message_normalization"] = "avg_num_neighbors"
    with pytest.raises(ConfigError) as info:
        validate_config(raw, tmp_path, source="c.yaml")
    assert info.value.lines == [
        "c.yaml: model.overrides: num_features=18 must be divisible by num_heads=4"
    ]
    raw["model"]["overrides"] |= {"num_features": 16, "degrees": [2, 1]}
    (line,) = pytest.raises(
        ConfigError, validate_config, raw, tmp_path, source="c.yaml"
    ).value.lines
    assert line.startswith("c.yaml: model.overrides.degrees: degrees must be unique")
    raw["model"]["overrides"]["degrees"] = [1, 2]
    (line,) = pytest.raises(
        ConfigError, validate_config, raw, tmp_path, source="c.yaml"
    ).value.lines
    assert "needs avg_num_neighbors" in line


def test_old_format_yaml_and_saved_configs_load(tmp_path):
    """The YAML users write and the complete one a run directory saves both load."""
    short = {"data": {"train": {"path": str(ETHANOL)}}}
    short["model"] = {"name": "so3krates", "preset": "default"}
    short["model"]["overrides"] = {"num_features": 64}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(short))
    config = load_config(path)
    assert config.model.resolved.num_features == 64
    saved = yaml.safe_load(config.to_yaml())
    assert set(saved["model"]) == {"name", "preset", "overrides"}
    assert saved["model"]["overrides"]["num_features"] == 64
    assert len(saved["model"]["overrides"]) == len(So3kratesConfig.model_fields)
    path.write_text(config.to_yaml())
    assert load_config(path) == config
    old_run = sorted(
        (ETHANOL.parents[2] / "docs" / "bench").glob("session*/**/config.resolved.yaml")
    )
    assert old_run, "no saved run config to load"
    for saved_path in old_run:
        raw = yaml.safe_load(saved_path.read_text())
        loaded = load_config(saved_path).model_dump(mode="json")
        # keys added to the config since the run was saved load at their defaults
        new = set(loaded["model"]["overrides"]) - set(raw["model"]["overrides"])
        defaults = So3kratesConfig().model_dump(mode="json")
        for key in new:
            assert loaded["model"]["overrides"].pop(key) == defaults[key], key
        assert loaded["model"] == raw["model"], saved_path


def test_avg_num_neighbors_from_the_data_builds_the_same_model(tiny_config, tmp_path):
    """The typed patch builds what the string-keyed one did (same weights)."""
    stats = {"avg_num_neighbors": 7.25, "e0": {"1": -13.6, "6": -1029.0, "8": -2041.0}}
    config = validate_config(tiny_config(), tmp_path)
    resolved = config.model.resolved.model_copy(  # as a config missing the value
        update={"message_normalization": "avg_num_neighbors"}
    )
    config = config.model_copy(
        update={"model": config.model.model_copy(update={"resolved": resolved})}
    )
    model, patched = build_training_model(config, stats)
    assert patched.model.resolved.avg_num_neighbors == 7.25
    assert config.model.resolved.avg_num_neighbors is None  # not changed in place
    # the dict the trainer patched by string key before
    overrides = resolved.model_dump(mode="json")
    overrides["avg_num_neighbors"] = stats["avg_num_neighbors"]
    e0 = e0_table({int(z): v for z, v in stats["e0"].items()})
    before = build_model("so3krates", None, seed=0, e0=e0, **overrides)
    assert model.config == before.config
    for (k, a), (_, b) in zip(
        model.state_dict().items(), before.state_dict().items(), strict=True
    ):
        torch.testing.assert_close(a, b, rtol=0, atol=0, msg=k)
    # without the normalisation nothing is patched
    plain = validate_config(tiny_config(), tmp_path)
    assert build_training_model(plain, stats)[1] == plain
    assert TINY_MODEL["num_features"] == plain.model.resolved.num_features
