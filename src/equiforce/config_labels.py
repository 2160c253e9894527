"""Config fields of the electrostatic inputs and labels (charge, spin, dipole, Hirshfeld).

Mixed into :class:`equiforce.config.DataSource` (where the values are in a file)
and :class:`equiforce.config.TrainingConfig` (their loss weights), so that
those sections keep one place each; see :mod:`equiforce.data.extra_labels` for
how the readers find the values.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from equiforce import keys
from equiforce.models.registry import MODELS

#: Training labels beside energy, forces and stress, and their weight fields.
PROPERTY_WEIGHTS: dict[str, str] = {
    keys.DIPOLE: "dipole_weight",
    keys.HIRSHFELD_RATIOS: "hirshfeld_weight",
}

#: Every label's weight field in ``training``.
LABEL_WEIGHTS: dict[str, str] = {
    keys.ENERGY: "energy_weight",
    keys.FORCES: "forces_weight",
    keys.STRESS: "stress_weight",
    **PROPERTY_WEIGHTS,
}

#: A label the loss can weight (``data.optional_labels``).
LabelName = Literal["energy", "forces", "stress", "dipole", "hirshfeld_ratios"]

_KEY = "key of the {} (npz key, info/arrays key); default: {}"


class ExtraLabelKeys(BaseModel):
    """Where a file keeps total charge, spin, dipoles and Hirshfeld ratios."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    charge_key: str | None = Field(
        None, description=_KEY.format("total charge, e", "charge, total_charge")
    )
    spin_key: str | None = Field(
        None, description=_KEY.format("total spin S", "spin, total_spin")
    )
    dipole_key: str | None = Field(
        None, description=_KEY.format("dipole moment", "dipole, dipole_moment")
    )
    hirshfeld_key: str | None = Field(
        None, description=_KEY.format("Hirshfeld volume ratios", "hirshfeld_ratios")
    )
    dipole_unit: str = Field(
        "e*Angstrom", description="unit of stored dipoles: e*Angstrom, e*Bohr, Debye"
    )


class PropertyLossWeights(BaseModel):
    """Loss weights of the dipole and Hirshfeld ratios (models with charge heads)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    dipole_weight: float = Field(
        0.0, ge=0, description="weight of the dipole MSE ((e·Å)², per component)"
    )
    hirshfeld_weight: float = Field(
        0.0, ge=0, description="weight of the Hirshfeld-ratio MSE (per atom)"
    )

    @model_validator(mode="after")
    def _check_compile(self) -> PropertyLossWeights:
        if getattr(self, "compile", False) and self.property_weights():
            raise ValueError(
                "compile: the compiled step does not train on dipoles or Hirshfeld "
                "ratios (set dipole_weight and hirshfeld_weight to 0)"
            )
        return self

    def property_weights(self) -> dict[str, float]:
        """The nonzero property weights by label name."""
        weights = {name: getattr(self, w) for name, w in PROPERTY_WEIGHTS.items()}
        return {name: w for name, w in weights.items() if w > 0}


def check_property_model(weights: PropertyLossWeights, model_name: str) -> None:
    """Raise if a weighted property is one the model family cannot predict.

    Raises:
        ValueError: naming ``training.<label>_weight`` and the family.
    """
    outputs = getattr(MODELS[model_name][1], "property_outputs", ())
    for name in weights.property_weights():
        if name not in outputs:
            raise ValueError(
                f"training.{PROPERTY_WEIGHTS[name]}: model {model_name!r} does not "
                f"predict {name} (SO3LR does); set it to 0 or choose model.name: so3lr"
            )
