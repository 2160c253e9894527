"""Pydantic configuration of an MD run (``md.yaml``), validated before any work.

A YAML file may hold the fields at top level or under an ``md:`` section.
Command-line flags override file values. Unknown keys are rejected with their
dotted path.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from equiforce.config_errors import load_yaml
from equiforce.errors import EquiforceError
from equiforce.md.uncertainty import UncertaintyConfig


class StabilityConfig(BaseModel):
    """Stop criteria of the stability monitor (md-protocol.md §3.1)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = Field(True, description="check stability at every output frame")
    bond_tolerance: float = Field(0.5, gt=0, description="max bond deviation, Å")
    min_distance: float = Field(0.6, ge=0, description="min pair distance, Å")
    max_temperature_factor: float = Field(3.0, gt=1, description="max T / T_target")


class MDConfig(BaseModel):
    """Everything that defines an MD run except the model and the structure."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    ensemble: Literal["nve", "langevin", "csvr", "nhc", "npt"] = Field(
        "nve", description="integrator / thermostat (npt: stochastic cell rescaling)"
    )
    temperature: float = Field(300.0, ge=0, description="target temperature, K")
    init_temperature: float | None = Field(
        None,
        ge=0,
        description="Maxwell-Boltzmann temperature, K (default: temperature)",
    )
    timestep: float = Field(0.5, gt=0, description="timestep, fs")
    steps: int | None = Field(None, ge=0, description="number of steps")
    time_ps: float | None = Field(None, ge=0, description="simulated time, ps")
    friction: float = Field(0.01, ge=0, description="Langevin friction γ, 1/fs")
    taut: float = Field(100.0, gt=0, description="CSVR time constant, fs")
    tdamp: float | None = Field(
        None, gt=0, description="NHC time constant, fs (100·dt)"
    )
    chain_length: int = Field(3, ge=1, description="NHC chain length")
    pressure: float = Field(1.0, description="NPT target pressure, bar")
    taup: float = Field(1000.0, gt=0, description="NPT barostat time constant, fs")
    compressibility: float = Field(
        4.5e-5,
        gt=0,
        description="NPT isothermal compressibility estimate, 1/bar (sets only "
        "how strongly the cell is coupled; water: 4.5e-5, solids ~1e-6)",
    )
    barostat: Literal["isotropic", "anisotropic"] = Field(
        "isotropic",
        description="NPT cell coupling: one volume, or the three Cartesian axes",
    )
    npt_thermostat: Literal["csvr", "langevin"] = Field(
        "csvr", description="thermostat of NPT runs (taut or friction)"
    )
    output_interval: int = Field(10, ge=1, description="steps between frames")
    checkpoint_interval_s: float = Field(
        1.0,
        ge=0,
        description="wall seconds between state checkpoints (HDF5 frames are flushed "
        "with them; a killed run resumes from the last one); 0: at every frame",
    )
    seed: int = Field(0, description="seed of velocities and thermostat noise")
    frame: int = Field(0, description="frame of the structure file to start from")
    n_replicas: int = Field(1, ge=1, description="independent replicas in one batch")
    dtype: Literal["float64", "float32"] = Field(
        "float64", description="integration dtype"
    )
    model_dtype: Literal["float64", "float32"] | None = Field(
        None, description="model compute dtype (default: the checkpoint's)"
    )
    device: str = Field("cpu", description="torch device")
    threads: int | None = Field(
        None,
        gt=0,
        description="torch CPU threads; None: the cores not busy with other work",
    )
    skin: float = Field(0.5, ge=0, description="neighbour-list skin, Å")
    compile: bool | None = Field(
        None, description="compiled model path (None: after 20 eager steps)"
    )
    remove_rotation: bool | None = Field(
        None, description="zero angular momentum (default: open systems)"
    )
    trajectory_format: Literal["auto", "extxyz", "hdf5"] = Field(
        "auto", description="auto: extxyz up to 1,000 frames, HDF5 beyond"
    )
    stability: StabilityConfig = StabilityConfig()
    uncertainty: UncertaintyConfig = UncertaintyConfig()

    @model_validator(mode="after")
    def _check_length(self) -> MDConfig:
        if self.steps is not None and self.time_ps is not None:
            raise ValueError("give either steps or time_ps, not both")
        return self

    @property
    def n_steps(self) -> int:
        """Number of integrator steps (default 1,000)."""
        if self.time_ps is not None:
            return int(round(self.time_ps * 1000.0 / self.timestep))
        return 1000 if self.steps is None else self.steps

    @property
    def trajectory_suffix(self) -> str:
        """File suffix of the trajectory (".xyz" or ".h5")."""
        fmt = self.trajectory_format
        if fmt == "auto":
            fmt = "hdf5" if self.n_steps // self.output_interval > 1000 else "extxyz"
        return ".h5" if fmt == "hdf5" else ".xyz"


class ConfigError(EquiforceError):
    """Invalid MD configuration; the message has one line per problem."""


def format_errors(err: ValidationError, source: str) -> str:
    """One line per error: ``source: dotted.path: message``."""
    lines = []
    known = set(MDConfig.model_fields) | set(StabilityConfig.model_fields)
    known |= set(UncertaintyConfig.model_fields)
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "md"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            close = difflib.get_close_matches(str(e["loc"][-1]), known, n=1)
            msg = "unknown key" + (f" (did you mean {close[0]!r}?)" if close else "")
        lines.append(f"{source}: {loc}: {msg}")
    return "\n".join(lines)


def load_md_config(path: str | Path | None = None, **overrides) -> MDConfig:
    """Read ``path`` (optional), apply non-None ``overrides`` and validate.

    Raises:
        ConfigError: with the file, the key path and the reason for every problem.
    """
    data: dict = {}
    source = "md config"
    if path is not None:
        source = str(path)
        try:
            loaded = load_yaml(path) or {}
        except ValueError as err:
            raise ConfigError(str(err)) from None
        if not isinstance(loaded, dict):
            raise ConfigError(f"{path}: expected a mapping of MD settings")
        data = dict(loaded.get("md", loaded))
    nested = overrides.pop("uncertainty", None)  # flags merge into the section
    if nested:
        data["uncertainty"] = {**(data.get("uncertainty") or {}), **nested}
    data.update({k: v for k, v in overrides.items() if v is not None})
    if data.get("steps") is not None and "time_ps" in data and "steps" in overrides:
        data.pop("time_ps")  # a --steps flag wins over a file's time_ps
    try:
        return MDConfig(**data)
    except ValidationError as err:
        raise ConfigError(format_errors(err, source)) from None
