"""SO3LR hyperparameters: So3krates plus charge/spin inputs and long-range terms."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from equiforce.models.so3krates.config import So3kratesConfig


class SO3LRConfig(So3kratesConfig):
    """So3krates backbone + charge/spin embeddings + ZBL, electrostatics, dispersion.

    Defaults are the released SO3LR model (Kabylda, Frank et al., JACS 2025;
    ``so3krates-torch`` 0.2.1 ``pretrained/so3lr``): T = 3, r_c = 4.5 Å,
    Bernstein basis, PhysNet cutoff, LayerNorm 1 and 2 (ε = 1e-6, Flax's
    default), residual MLP 1, SiLU readout with per-element scale and shift.
    """

    num_layers: int = Field(3, gt=0, description="number of layers T")
    cutoff: float = Field(4.5, gt=0, description="short-range cutoff r_c, Å")
    cutoff_fn: Literal["cosine", "phys", "exponential"] = Field(
        "phys", description="φ(d)"
    )
    radial_basis: Literal["physnet", "bernstein", "fourier", "gaussian"] = Field(
        "bernstein", description="radial basis K(d)"
    )
    message_normalization: Literal[
        "sqrt_head_size", "identity", "avg_num_neighbors"
    ] = Field(
        "avg_num_neighbors", description="divisor n of the attention coefficients"
    )
    avg_num_neighbors: float | None = Field(13.168995780096482, gt=0)
    layer_norm_1: bool = True
    layer_norm_2: bool = True
    residual_mlp_1: bool = True
    readout_activation: Literal["identity", "silu"] = Field("silu", description="σ_E")
    per_element_scale_shift: bool = True
    layer_norm_eps: float = Field(1e-6, gt=0, description="ε of the LayerNorms")
    charge_embedding: bool = Field(True, description="embed the total charge")
    spin_embedding: bool = Field(True, description="embed the total spin")
    head_hidden: int = Field(
        128, gt=0, description="hidden width of the charge and Hirshfeld heads"
    )
    zbl: bool = Field(True, description="ZBL repulsion term")
    electrostatics: bool = Field(True, description="electrostatics term")
    dispersion: bool = Field(True, description="dispersion term")
    lr_cutoff: float = Field(
        12.0, gt=0, description="long-range cutoff r_lr of both long-range terms, Å"
    )
    electrostatics_sigma: float = Field(
        4.0, gt=0, description="erf damping length σ of the Coulomb kernel, Å"
    )
    periodic_electrostatics: Literal["pme", "ewald", "direct"] = Field(
        "pme",
        description="3D-periodic cells: PME or Ewald sum of the erf-damped Coulomb "
        "(torch-pme), or 'direct' (the shifted kernel summed over images within r_lr)",
    )
    periodic_point_charges: bool = Field(
        False,
        description="PME/Ewald of bare point charges 1/d instead of erf(d/σ)/d "
        "(so3krates-torch's use_pme physics; smearing r_lr/6, real space within r_lr)",
    )
    pme_mesh_spacing: float | None = Field(
        None,
        gt=0,
        description="PME mesh spacing, Å (None: smearing/(2√2), 1 Å for σ = 4 Å)",
    )
    dispersion_beta: float = Field(
        1.2, gt=0, description="damping scale β of the dispersion (ρ ∝ β α^{1/7})"
    )
    dispersion_damping: float = Field(
        2.0, gt=0, description="width of the dispersion switch-off below r_lr, Å"
    )

    @property
    def long_range_cutoff(self) -> float | None:
        """Cutoff of the long-range pairs, Å; None when no long-range term is on."""
        return self.lr_cutoff if self.electrostatics or self.dispersion else None

    @model_validator(mode="after")
    def _check_long_range(self) -> SO3LRConfig:
        if self.lr_cutoff <= self.cutoff:
            raise ValueError(
                f"lr_cutoff={self.lr_cutoff} Å must exceed the short-range "
                f"cutoff={self.cutoff} Å"
            )
        if self.dispersion_damping >= self.lr_cutoff:
            raise ValueError("dispersion_damping must be smaller than lr_cutoff")
        if self.num_features % 2:
            raise ValueError("num_features must be even (Hirshfeld head: F/2)")
        if self.readout_heads != 1:
            raise ValueError(
                "readout_heads must be 1 for SO3LR (its charge and dispersion terms "
                "read one set of features); use a committee for its uncertainty"
            )
        return self


PRESETS: dict[str, dict] = {
    "default": {},
    "small": {
        "num_features": 64,
        "num_layers": 2,
        "readout_hidden": 64,
        "head_hidden": 64,
    },
}
