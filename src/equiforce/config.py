"""Training configuration: pydantic v2 models and :func:`load_config`.

Sections ``data``, ``model`` and ``training`` of a YAML file. The ``model``
section is one class per model family of :data:`equiforce.models.registry.MODELS`,
chosen by its ``name``; its preset and overrides are validated into that family's
config class when the file is loaded (:attr:`So3kratesSection.resolved` etc.).

Every section forbids unknown keys and is frozen. Errors are reported one per
line as ``file: key.path: message (did you mean ...)`` (``config_errors``); the
CLI prints them and exits with status 2 before any file is written.

Relative data paths are resolved against the folder of the YAML file, so a
config works from any working directory.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal, Self

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import PydanticCustomError

from equiforce.config_errors import choice_msg, format_errors, load_yaml
from equiforce.config_finetune import FineTuneOptions, resolve_init_from
from equiforce.config_labels import (
    ExtraLabelKeys,
    LabelName,
    PropertyLossWeights,
    check_property_model,
)
from equiforce.errors import EquiforceError
from equiforce.models.nequip import NequIPConfig
from equiforce.models.painn import PaiNNConfig
from equiforce.models.registry import PRESETS
from equiforce.models.schnet import SchNetConfig
from equiforce.models.so3krates import So3kratesConfig
from equiforce.models.so3lr import SO3LRConfig

_FROZEN = ConfigDict(extra="forbid", frozen=True)
_OVERRIDES_HELP = (
    "fields of the model config that replace the preset's; read back as the "
    "complete, validated model config"
)


class ConfigError(EquiforceError):
    """An invalid configuration; ``lines`` holds one message per problem."""

    def __init__(self, lines: list[str]) -> None:
        super().__init__("\n".join(lines))
        self.lines = lines


class DataSource(ExtraLabelKeys):
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
    optional_labels: tuple[LabelName, ...] = Field(
        (),
        description="labels the loss may miss in some or all frames (trained where "
        "present); any other weighted label missing from a frame is an error",
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


class _ModelSectionBase(FineTuneOptions):
    """Fields and checks every model family's section shares.

    The YAML a user writes is ``{name, preset, overrides}``; on validation the
    preset's values and the overrides become :attr:`resolved`, the family's own
    config class (so its validators run at load time), which is written back
    under the key ``overrides`` (every field, so a saved config rebuilds the
    same model whatever the presets become).
    """

    model_config = ConfigDict(
        extra="forbid", frozen=True, validate_by_name=True, serialize_by_alias=True
    )

    name: str
    preset: str | None = Field("default", description="named hyperparameter preset")
    resolved: BaseModel

    @classmethod
    def family(cls) -> str:
        """The registry name this section is for."""
        return cls.model_fields["name"].default

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str | None) -> str | None:
        presets = PRESETS.get(cls.family(), {})
        if preset is not None and preset not in presets:
            raise PydanticCustomError("unknown_choice", choice_msg(preset, presets))
        return preset

    @model_validator(mode="before")
    @classmethod
    def _apply_preset(cls, data: Any) -> Any:
        """Merge the preset under the overrides (before the family validates them)."""
        if not isinstance(data, dict):
            return data
        given = data.get("overrides", data.get("resolved", {}))
        if isinstance(given, BaseModel) or not isinstance(given, dict):
            return data  # a built config, or a type error the field reports
        preset = data.get("preset", cls.model_fields["preset"].default)
        params = dict(PRESETS.get(cls.family(), {}).get(preset, {}))
        params.update(given)
        data = {k: v for k, v in data.items() if k not in ("overrides", "resolved")}
        return data | {"overrides": params}

    def with_model(self, **changes: Any) -> Self:
        """This section with fields of the model config replaced (validated again).

        Args:
            **changes: fields of :attr:`resolved`, e.g. ``avg_num_neighbors=12.3``.
        """
        resolved = type(self.resolved).model_validate(
            self.resolved.model_dump() | changes
        )
        return self.model_copy(update={"resolved": resolved})


class So3kratesSection(_ModelSectionBase):
    """``model:`` of a So3krates model."""

    name: Literal["so3krates"] = "so3krates"
    resolved: So3kratesConfig = Field(alias="overrides", description=_OVERRIDES_HELP)


class SchNetSection(_ModelSectionBase):
    """``model:`` of a SchNet model."""

    name: Literal["schnet"] = "schnet"
    resolved: SchNetConfig = Field(alias="overrides", description=_OVERRIDES_HELP)


class PaiNNSection(_ModelSectionBase):
    """``model:`` of a PaiNN model."""

    name: Literal["painn"] = "painn"
    resolved: PaiNNConfig = Field(alias="overrides", description=_OVERRIDES_HELP)


class NequIPSection(_ModelSectionBase):
    """``model:`` of a NequIP model."""

    name: Literal["nequip"] = "nequip"
    resolved: NequIPConfig = Field(alias="overrides", description=_OVERRIDES_HELP)


class SO3LRSection(_ModelSectionBase):
    """``model:`` of an SO3LR model (So3krates + long-range terms)."""

    name: Literal["so3lr"] = "so3lr"
    resolved: SO3LRConfig = Field(alias="overrides", description=_OVERRIDES_HELP)


ModelSection = Annotated[
    So3kratesSection | SchNetSection | PaiNNSection | NequIPSection | SO3LRSection,
    Field(discriminator="name"),
]
"""Architecture: one section per registry family, chosen by ``name``."""

DEFAULT_MODEL = "so3krates"


class TrainingConfig(PropertyLossWeights):
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
        0.0, ge=0, description="weight decay of weight matrices (decoupled for adamw)"
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
    nonfinite_patience: int = Field(
        20,
        gt=0,
        description="stop after this many consecutive steps with a non-finite loss "
        "(such steps leave the weights unchanged)",
    )
    dtype: Literal["float32", "float64"] = Field(
        "float32", description="parameter dtype"
    )
    seed: int = Field(0, description="model initialisation and shuffling seed")
    threads: int | None = Field(
        None,
        gt=0,
        description="torch CPU threads; None: the cores not busy with other work",
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
    model: ModelSection = Field(default_factory=So3kratesSection)
    training: TrainingConfig = Field(default_factory=TrainingConfig)

    @field_validator("model", mode="before")
    @classmethod
    def _default_name(cls, section: Any) -> Any:
        if isinstance(section, dict) and "name" not in section:
            return {"name": DEFAULT_MODEL} | section
        return section

    @model_validator(mode="after")
    def _check_properties(self) -> EquiforceConfig:
        check_property_model(self.training, self.model.name)
        return self

    def model_kwargs(self) -> dict[str, Any]:
        """Arguments for :func:`equiforce.models.registry.build_model` (without e0)."""
        return {"name": self.model.name, **self.model.resolved.model_dump()}

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
        raw = load_yaml(path)
    except ValueError as err:
        raise ConfigError([str(err)]) from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError([f"{path}: top level must be a mapping of sections"])
    for item in overrides:
        apply_override(raw, item)
    return validate_config(raw, path.resolve().parent, source=str(path))


def validate_config(
    raw: dict, base_dir: Path, source: str = "config", init_from: bool = True
) -> EquiforceConfig:
    """Validate a raw dict (see :func:`load_config`).

    ``init_from=False`` skips reading ``model.init_from`` (a run's resolved config).
    """
    raw = dict(raw)  # resolve_init_from replaces raw["model"]
    if init_from and (lines := resolve_init_from(raw, base_dir, source)):
        raise ConfigError(lines)
    try:
        config = EquiforceConfig.model_validate(raw)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source, EquiforceConfig)) from None
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
