"""So3krates hyperparameters (defaults = mlff v1.0 ``config.yaml``) and presets."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from equiforce.models.global_attention import GlobalAttentionConfig


class So3kratesConfig(BaseModel):
    """Hyperparameters of So3krates (defaults = mlff v1.0 ``config.yaml``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_features: int = Field(128, gt=0, description="invariant feature width F")
    num_layers: int = Field(2, gt=0, description="number of layers T")
    num_heads: int = Field(4, gt=0, description="invariant attention heads H")
    degrees: tuple[int, ...] = Field(
        (1, 2, 3, 4), description="degrees L of the Euclidean variables"
    )
    use_euclidean_variables: bool = Field(
        True,
        description="False gives the invariant ablation (no EV, no Y_l, no α2 branch)",
    )
    cutoff: float = Field(5.0, gt=0, description="cutoff radius r_c, Å")
    cutoff_fn: Literal["cosine", "phys", "exponential"] = Field(
        "cosine", description="φ(d)"
    )
    radial_basis: Literal["physnet", "bernstein", "fourier", "gaussian"] = Field(
        "physnet", description="radial basis K(d)"
    )
    num_radial: int = Field(32, gt=0, description="number of radial basis functions K")
    qk_activation: Literal["identity", "silu"] = Field(
        "identity", description="σ on q and k"
    )
    message_normalization: Literal[
        "sqrt_head_size", "identity", "avg_num_neighbors"
    ] = Field("sqrt_head_size", description="divisor n of the attention coefficients")
    avg_num_neighbors: float | None = Field(
        None, gt=0, description="divisor when message_normalization='avg_num_neighbors'"
    )
    layer_norm_1: bool = False
    layer_norm_2: bool = False
    residual_mlp_1: bool = False
    residual_mlp_2: bool = False
    readout_hidden: int = Field(128, gt=0, description="hidden width R of the readout")
    readout_activation: Literal["identity", "silu"] = Field(
        "identity", description="σ_E"
    )
    readout_heads: int = Field(
        1,
        ge=1,
        description="K readout heads over the shared representation, trained as an "
        "ensemble: the energy is their mean, their spread the uncertainty "
        "(equiforce.uncertainty, docs/uncertainty.md); 1: a single readout",
    )
    per_element_scale_shift: bool = Field(False, description="learnable s_Z, b_Z")
    zero_init_readout: bool = Field(True, description="E ≡ 0 at initialisation")
    global_attention: GlobalAttentionConfig | None = Field(
        None,
        description="Euclidean fast attention as a residual branch per layer "
        "(open structures within r_max only); None: local model",
    )

    @field_validator("degrees")
    @classmethod
    def _check_degrees(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if any(l < 1 for l in v) or len(set(v)) != len(v) or list(v) != sorted(v):
            raise ValueError(f"degrees must be unique, sorted and ≥ 1, got {v}")
        return v

    @model_validator(mode="after")
    def _check_heads(self) -> So3kratesConfig:
        if self.num_features % self.num_heads:
            raise ValueError(
                f"num_features={self.num_features} must be divisible by num_heads={self.num_heads}"
            )
        if self.use_euclidean_variables:
            if not self.degrees:
                raise ValueError(
                    "degrees must not be empty when use_euclidean_variables=True"
                )
            if self.num_features % len(self.degrees):
                raise ValueError(
                    f"num_features={self.num_features} must be divisible by the number of "
                    f"degrees={len(self.degrees)}"
                )
        if (
            self.message_normalization == "avg_num_neighbors"
            and self.avg_num_neighbors is None
        ):
            raise ValueError(
                "message_normalization='avg_num_neighbors' needs avg_num_neighbors"
            )
        if self.global_attention is not None:
            self.global_attention.layer_indices(self.num_layers)
            if self.global_attention.r_max <= self.cutoff:
                raise ValueError(
                    f"global_attention.r_max={self.global_attention.r_max} Å must "
                    f"exceed the cutoff={self.cutoff} Å"
                )
            tensor = self.global_attention.degrees[1:]
            ev = self.degrees if self.use_euclidean_variables else ()
            if any(l not in ev for l in tensor):
                raise ValueError(
                    f"global_attention.degrees={list(self.global_attention.degrees)}: "
                    f"the tensor outputs feed the Euclidean variables, which have "
                    f"degrees {list(ev)} (use_euclidean_variables="
                    f"{self.use_euclidean_variables}); each l ≥ 1 must be one of them"
                )
            if self.global_attention.equivariant_values and not ev:
                raise ValueError(
                    "global_attention.equivariant_values carries the Euclidean "
                    "variables, which this model does not have "
                    "(use_euclidean_variables=False or no degrees)"
                )
        return self


PRESETS: dict[str, dict] = {
    "default": {},
    "paper": {
        "num_features": 132,
        "num_layers": 3,
        "degrees": (1, 2, 3),
        "readout_hidden": 132,
        "readout_activation": "silu",
    },
    "invariant": {"use_euclidean_variables": False},
    "small": {
        "num_features": 64,
        "num_layers": 2,
        "degrees": (1, 2, 3, 4),
        "readout_hidden": 64,
    },
}
# Three layers train only with SO3LR's LayerNorms (after the attention and the
# interaction update) and its residual MLP: unnormalised, the softmax-free attention
# lets feature magnitudes grow layer by layer and the loss diverges after the
# warm-up. On rMD17 at a fixed CPU budget these beat `default` (docs/benchmarks.md §4).
_NORMALISED_THREE_LAYERS = {
    "num_layers": 3,
    "layer_norm_1": True,
    "layer_norm_2": True,
    "residual_mlp_1": True,
}
PRESETS["deep"] = dict(_NORMALISED_THREE_LAYERS)
PRESETS["deep-small"] = PRESETS["small"] | _NORMALISED_THREE_LAYERS
