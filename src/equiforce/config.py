"""Training configuration: pydantic v2 models and :func:`load_config`.

Sections ``data``, ``model`` and ``training`` of a YAML file.

Every section forbids unknown keys and is frozen. Errors are reported one per
line as ``file: key.path: message (did you mean ...)`` by
:func:`format_errors`; the CLI prints them and exits with status 2 before any
file is written.

Relative data paths are resolved against the folder of the YAML file, so a
config works from any working directory.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

_FROZEN = ConfigDict(extra="forbid", frozen=True)


class ConfigError(ValueError):
    """An invalid configuration; ``lines`` holds one message per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class DataSource(BaseModel):
    """One labelled file and how to read it (see :func:`equiforce.data.io.read`)."""

    model_config = _FROZEN

    path: str = Field(description="file with structures and labels (npz, extxyz, ...)")
    format: str | None = Field(
        None, description="ASE format name or 'npz'; default from suffix"
    )
    index: str = Field(":", description="frames to read, ASE slice syntax")
    energy_key: str | None = Field(
        None, description="npz/info key of energies; auto if None"
    )
    forces_key: str | None = Field(
        None, description="npz/arrays key of forces; auto if None"
    )
    stress_key: str | None = Field(None, description="npz/info key of stress")
    energy_unit: str = Field(
        "eV", description="unit of stored energies, e.g. 'kcal/mol'"
    )
    force_unit: str | None = Field(
        None, description="unit of stored forces; default energy_unit/length_unit"
    )
    length_unit: str = Field("Angstrom", description="unit of positions and cell")

    def read_kwargs(self) -> dict[str, Any]:
        """Keyword arguments for :func:`equiforce.data.io.read`."""
        return self.model_dump(exclude={"path"})


class DataConfig(BaseModel):
    """Where the data are, how to split them and how to get statistics."""

    model_config = _FROZEN

    train: DataSource = Field(
        description="training file (the validation split comes from it)"
    )
    valid: DataSource | None = Field(
        None, description="separate validation file; if None, n_valid frames of `train`"
    )
    test: DataSource | None = Field(
        None, description="held-out test file (eval/learning-curve)"
    )
    n_train: int | None = Field(
        None, gt=0, description="training frames; None: all the rest"
    )
    n_valid: int = Field(50, ge=0, description="validation frames taken from `train`")
    split_seed: int = Field(0, description="seed of the random train/valid split")
    split_file: str | None = Field(
        None,
        description="JSON {'train': [...], 'valid': [...]} frame indices (beats seeds)",
    )
    e0: Literal["least_squares", "isolated_atoms", "zero"] = Field(
        "least_squares", description="source of per-element reference energies E0"
    )
    isolated_atoms: str | None = Field(
        None, description="file of single-atom energies (eV) when e0='isolated_atoms'"
    )
    min_distance: float | None = Field(
        0.75, ge=0, description="drop frames with an interatomic distance below this, Å"
    )
    max_force: float | None = Field(
        25.0,
        gt=0,
        description="drop frames with any |force component| above this, eV/Å",
    )

    @model_validator(mode="after")
    def _check_e0(self) -> DataConfig:
        if self.e0 == "isolated_atoms" and not self.isolated_atoms:
            raise ValueError(
                "e0='isolated_atoms' needs data.isolated_atoms (a file path)"
            )
        return self


class ModelSection(BaseModel):
    """Architecture: registry name, preset and field overrides."""

    model_config = _FROZEN

    name: str = Field("so3krates", description="model registry key")
    preset: str | None = Field("default", description="named hyperparameter preset")
    overrides: dict[str, Any] = Field(
        default_factory=dict,
        description="fields of the model config that replace the preset",
    )

    def __hash__(self) -> int:  # dict field: hash by value
        return hash(
            (self.name, self.preset, tuple(sorted(map(str, self.overrides.items()))))
        )


class TrainingConfig(BaseModel):
    """Loss, optimiser, schedule, stopping and run settings (defaults: spec §5.1)."""

    model_config = _FROZEN

    energy_weight: float = Field(
        0.01, ge=0, description="weight of the energy MSE (eV²)"
    )
    forces_weight: float = Field(
        0.99, ge=0, description="weight of the force MSE ((eV/Å)²)"
    )
    stress_weight: float = Field(
        0.0, ge=0, description="weight of the stress MSE ((eV/Å³)²)"
    )
    energy_per_atom: bool = Field(
        False, description="energy loss on E/n_atoms instead of E"
    )
    optimizer: Literal["adam", "adamw", "amsgrad"] = Field(
        "adam", description="optimiser"
    )
    lr: float = Field(1e-3, gt=0, description="peak learning rate")
    weight_decay: float = Field(
        0.0, ge=0, description="weight decay (decoupled for adamw)"
    )
    schedule: Literal["exponential", "plateau", "cosine", "constant"] = Field(
        "exponential", description="learning-rate schedule"
    )
    schedule_clock: Literal["steps", "time"] = Field(
        "steps",
        description="cosine: decay over the run's steps, or over max_minutes of "
        "training time (ends at min_lr exactly when a wall-clock budget runs out)",
    )
    decay_rate: float = Field(
        0.75, gt=0, le=1, description="exponential: lr·rate^(step/steps)"
    )
    decay_steps: int = Field(
        125_000, gt=0, description="exponential: steps per decay_rate"
    )
    warmup_steps: int = Field(
        0, ge=0, description="linear warm-up steps (all schedules)"
    )
    min_lr: float = Field(1e-6, ge=0, description="floor of plateau and end of cosine")
    plateau_factor: float = Field(0.5, gt=0, lt=1, description="plateau: lr multiplier")
    plateau_patience: int = Field(
        5, ge=0, description="plateau: validations without improvement before a cut"
    )
    batch_size: int = Field(5, gt=0, description="structures per training batch")
    valid_batch_size: int = Field(
        50, gt=0, description="structures per validation batch"
    )
    ema_decay: float | None = Field(
        0.99, ge=0, lt=1, description="EMA of weights (validation, best.pt); None: off"
    )
    clip_grad_norm: float | None = Field(
        None, gt=0, description="global-norm gradient clip"
    )
    max_steps: int | None = Field(None, gt=0, description="stop after this many steps")
    max_epochs: int | None = Field(100, gt=0, description="stop after this many epochs")
    max_minutes: float | None = Field(
        None, gt=0, description="wall-clock training budget"
    )
    valid_interval: int = Field(1000, gt=0, description="steps between validations")
    checkpoint_interval: int | None = Field(
        None, gt=0, description="steps between last.pt writes; default valid_interval"
    )
    log_interval: int = Field(10, gt=0, description="steps between metrics.csv rows")
    early_stopping_patience: int | None = Field(
        None, gt=0, description="stop after this many validations without improvement"
    )
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="parameter dtype"
    )
    seed: int = Field(0, description="model initialisation and shuffling seed")
    threads: int | None = Field(
        None, gt=0, description="torch CPU threads; None: default"
    )
    device: str = Field("cpu", description="torch device, e.g. 'cpu' or 'cuda'")
    processes: int = Field(
        1,
        ge=1,
        description="training processes (torch.distributed); each step's batch is "
        "split over them (batch_size stays the whole batch); on 'cuda' one GPU each",
    )
    compile: bool = Field(
        False,
        description="compile the training step (loss and weight gradients in one "
        "torch.compile graph; the first step compiles for a minute or more)",
    )

    @model_validator(mode="after")
    def _check(self) -> TrainingConfig:
        if self.compile and self.stress_weight > 0:
            raise ValueError("compile: the compiled step does not train on stress")
        if self.batch_size < self.processes:
            raise ValueError(
                f"batch_size={self.batch_size} is split over processes="
                f"{self.processes}: it must be at least that"
            )
        if self.processes > 1 and self.device not in ("cpu", "cuda"):
            raise ValueError(
                f"processes={self.processes} needs device 'cpu' or 'cuda' "
                f"(process r takes cuda:r), not {self.device!r}"
            )
        if self.energy_weight == self.forces_weight == self.stress_weight == 0:
            raise ValueError(
                "energy_weight, forces_weight and stress_weight are all zero"
            )
        if (
            self.max_steps is None
            and self.max_epochs is None
            and self.max_minutes is None
        ):
            raise ValueError("set at least one of max_steps, max_epochs, max_minutes")
        if self.schedule_clock == "time" and (
            self.schedule != "cosine" or self.max_minutes is None
        ):
            raise ValueError(
                "schedule_clock='time' needs schedule='cosine' and max_minutes"
            )
        if (
            self.schedule == "cosine"
            and self.schedule_clock == "steps"
            and self.max_steps is None
            and self.max_epochs is None
        ):
            raise ValueError(
                "schedule='cosine' needs max_steps or max_epochs (its length), "
                "or schedule_clock='time' with max_minutes"
            )
        return self


class EquiforceConfig(BaseModel):
    """A whole training configuration file."""

    model_config = _FROZEN

    data: DataConfig
    model: ModelSection = Field(default_factory=ModelSection)
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    def model_kwargs(self) -> dict[str, Any]:
        """Arguments for :func:`equiforce.models.registry.build_model` (without e0)."""
        return {
            "name": self.model.name,
            "preset": self.model.preset,
            **self.model.overrides,
        }

    def to_yaml(self) -> str:
        """The config as YAML (JSON-compatible values, defaults included)."""
        return yaml.safe_dump(self.model_dump(mode="json"), sort_keys=False)


# ------------------------------------------------------------------ loading
def load_config(
    path: str | Path, overrides: list[str] | tuple[str, ...] = ()
) -> EquiforceConfig:
    """Read, override and validate a YAML training config.

    Args:
        path: YAML file.
        overrides: ``"section.key=value"`` strings; values are parsed as YAML
            (``training.lr=3e-4``, ``model.overrides.degrees=[1,2]``).

    Returns:
        The validated config; relative paths resolved against the file's folder
        and the model section completed with every field of the model config.

    Raises:
        ConfigError: one line per problem, ``file: key.path: message``.
    """
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as err:
        raise ConfigError([f"{path}: cannot read config ({err.strerror})"]) from None
    except yaml.YAMLError as err:
        raise ConfigError([f"{path}: invalid YAML: {err}"]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: top level must be a mapping of sections"])
    for item in overrides:
        apply_override(raw, item)
    return validate_config(raw, path.resolve().parent, source=str(path))


def validate_config(
    raw: dict, base_dir: Path, source: str = "config"
) -> EquiforceConfig:
    """Validate a raw dict (see :func:`load_config`)."""
    try:
        config = EquiforceConfig.model_validate(raw)
    except ValidationError as err:
        lines = format_errors(err, source, EquiforceConfig)
        section = raw.get("model", {})
        if isinstance(section, dict) and not any(".model." in f".{x}" for x in lines):
            try:  # report model-config errors in the same pass
                _resolve_model(
                    EquiforceConfig.model_construct(model=ModelSection(**section)),
                    source,
                )
            except (ConfigError, ValidationError) as model_err:
                lines += getattr(model_err, "lines", [])
        raise ConfigError(lines) from None
    config = _resolve_model(config, source)
    return _resolve_paths(config, base_dir)


def apply_override(raw: dict, item: str) -> None:
    """Set ``raw[a][b] = yaml(value)`` for ``item = 'a.b=value'`` (in place)."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError([f"--set {item!r}: expected section.key=value"])
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise ConfigError(
            [f"--set {item!r}: value is not valid YAML ({err})"]
        ) from None
    node = raw
    parts = key.strip().split(".")
    for part in parts[:-1]:
        if not isinstance(node.get(part), dict):
            node[part] = {}
        node = node[part]
    node[parts[-1]] = value


def _resolve_model(config: EquiforceConfig, source: str) -> EquiforceConfig:
    from equiforce.models.registry import MODELS, PRESETS, make_config

    section = config.model
    if section.name not in MODELS:
        raise ConfigError(
            [f"{source}: model.name: {_choice_msg(section.name, MODELS)}"]
        )
    presets = PRESETS.get(section.name, {})
    if section.preset is not None and section.preset not in presets:
        raise ConfigError(
            [f"{source}: model.preset: {_choice_msg(section.preset, presets)}"]
        )
    try:
        model_cfg = make_config(section.name, section.preset, **section.overrides)
    except ValidationError as err:
        lines = format_errors(
            err, source, MODELS[section.name][0], prefix=("model", "overrides")
        )
        raise ConfigError(lines) from None
    full = model_cfg.model_dump(mode="json")
    return config.model_copy(
        update={"model": section.model_copy(update={"overrides": full})}
    )


def _resolve_paths(config: EquiforceConfig, base: Path) -> EquiforceConfig:
    def fix(p: str | None) -> str | None:
        if p is None:
            return None
        q = Path(p).expanduser()
        return str(q if q.is_absolute() else (base / q).resolve())

    data = config.data
    update: dict[str, Any] = {"split_file": fix(data.split_file)}
    update["isolated_atoms"] = fix(data.isolated_atoms)
    for name in ("train", "valid", "test"):
        src = getattr(data, name)
        if src is not None:
            update[name] = src.model_copy(update={"path": fix(src.path)})
    return config.model_copy(update={"data": data.model_copy(update=update)})


# ------------------------------------------------------------------- errors
def _choice_msg(value: str, known) -> str:
    close = difflib.get_close_matches(value, list(known), n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return f"unknown value {value!r}{hint}; allowed: {', '.join(sorted(known))}"


def _model_at(cls: type[BaseModel] | None, loc: tuple) -> type[BaseModel] | None:
    """The pydantic model class that owns the last key of ``loc``."""
    for part in loc[:-1]:
        if cls is None or not isinstance(part, str) or part not in cls.model_fields:
            return None
        ann = cls.model_fields[part].annotation
        args = getattr(ann, "__args__", (ann,))
        cls = next(
            (a for a in args if isinstance(a, type) and issubclass(a, BaseModel)), None
        )
    return cls


def format_errors(
    err: ValidationError,
    source: str,
    root: type[BaseModel] | None = None,
    prefix: tuple[str, ...] = (),
) -> list[str]:
    """One ``source: key.path: message`` line per pydantic error.

    Unknown keys get a ``did you mean`` suggestion from the owning model's fields;
    literal choices list the allowed values; range errors show the given value.
    """
    lines = []
    for e in err.errors():
        loc = tuple(e["loc"])
        where = ".".join(str(p) for p in prefix + loc) or "(top level)"
        if e["type"] == "extra_forbidden":
            owner = _model_at(root, loc)
            known = list(owner.model_fields) if owner else []
            close = difflib.get_close_matches(str(loc[-1]), known, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            allowed = f"; allowed: {', '.join(known)}" if known and not close else ""
            msg = f"unknown key{hint}{allowed}"
        elif e["type"] == "missing":
            msg = "required key is missing"
        else:
            msg = e["msg"].removeprefix("Value error, ")
            if e["type"] != "literal_error" and not isinstance(
                e.get("input"), dict | list
            ):
                msg += f" (got {e['input']!r})"
        lines.append(f"{source}: {where}: {msg}")
    return lines
