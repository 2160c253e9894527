"""Configuration of the global attention branch (Euclidean fast attention, EFA).

The maths is in :mod:`equiforce.nn.efa`; this module holds the validated
settings a model family embeds in its config (``So3kratesConfig.global_attention``)
and builds the per-layer blocks from them.
"""

from __future__ import annotations

import math
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from equiforce.nn.efa import LEBEDEV_POINTS, EuclideanFastAttention, check_quadrature


class GlobalAttentionConfig(BaseModel):
    """Euclidean fast attention as a zero-initialised residual branch per layer.

    The grid must integrate the highest phase ω_max·r_max at the highest output
    degree: the config is rejected when the Lebedev order is too coarse for
    ``max_frequency × r_max`` (rule and bound in :mod:`equiforce.nn.efa_grid`).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    r_max: float = Field(
        10.0,
        gt=0,
        description="largest interatomic distance within a structure, Å; a larger "
        "structure is a run-time error",
    )
    max_frequency: float = Field(
        math.pi / 10.0,
        gt=0,
        description="ω_max, rad/Å: RoPE frequencies are linspace(0, ω_max, "
        "num_features_qk/2); the shortest resolved wavelength is 2π/ω_max",
    )
    lebedev_order: int = Field(
        11, description="order of the Lebedev grid (11 → 50 points, 19 → 146, ...)"
    )
    num_features_qk: int = Field(
        16, gt=0, description="query/key width D_qk (even; D_qk/2 frequencies)"
    )
    num_features_v: int = Field(32, gt=0, description="value width D_v")
    qk_activation: Literal["identity", "silu"] = Field(
        "identity", description="activation on queries and keys"
    )
    layers: tuple[int, ...] | None = Field(
        None, description="0-based layers that get the branch; None: every layer"
    )
    zero_init: bool = Field(
        True, description="zero output projection: the branch adds nothing at init"
    )
    quadrature_tolerance: float = Field(
        1e-4,
        gt=0,
        lt=1,
        description="allowed bound of the quadrature error of the j_l kernels",
    )
    degrees: tuple[int, ...] = Field(
        (0,),
        description="output degrees: [0] invariant (into the features); [0, 1, 2] "
        "adds the tensor outputs j_l(ωr)Y_l (into the Euclidean variables); the "
        "grid must then integrate degree l_max higher",
    )

    equivariant_values: int = Field(
        0,
        ge=0,
        description="C > 0: the values also carry each atom's Euclidean variables, "
        "gated by C invariant channels, to every atom through the invariant kernel "
        "(how an atom learns the orientation of a distant group, e.g. a far CH2 "
        "plane); needs So3krates' Euclidean variables. 0: invariant values only",
    )

    @field_validator("lebedev_order")
    @classmethod
    def _check_order(cls, v: int) -> int:
        if v not in LEBEDEV_POINTS:
            raise ValueError(
                f"lebedev_order={v} is not available; choose one of "
                f"{sorted(LEBEDEV_POINTS)}"
            )
        return v

    @field_validator("num_features_qk")
    @classmethod
    def _check_qk(cls, v: int) -> int:
        if v % 2:
            raise ValueError(f"num_features_qk={v} must be even (RoPE rotates pairs)")
        return v

    @field_validator("degrees")
    @classmethod
    def _check_degrees(cls, v: tuple[int, ...]) -> tuple[int, ...]:
        if v[:1] != (0,) or list(v) != sorted(set(v)) or max(v) > 2:
            raise ValueError(
                f"degrees must be sorted, unique, start at 0 and be ≤ 2 "
                f"(e.g. [0] or [0, 1, 2]): {list(v)}"
            )
        return v

    @field_validator("layers")
    @classmethod
    def _check_layers(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is not None and (
            not v or any(t < 0 for t in v) or list(v) != sorted(set(v))
        ):
            raise ValueError(f"layers must be unique, sorted, ≥ 0 and not empty: {v}")
        return v

    @model_validator(mode="after")
    def _check_grid(self) -> GlobalAttentionConfig:
        check_quadrature(
            self.lebedev_order,
            self.max_frequency,
            self.r_max,
            self.quadrature_tolerance,
            max(self.degrees),
        )
        return self

    def layer_indices(self, num_layers: int) -> tuple[int, ...]:
        """Layers with the branch, checked against ``num_layers``."""
        layers = tuple(range(num_layers)) if self.layers is None else self.layers
        if layers[-1] >= num_layers:
            raise ValueError(
                f"global_attention.layers={layers} names a layer ≥ num_layers="
                f"{num_layers}"
            )
        return layers


def build_global_attention(
    cfg: GlobalAttentionConfig,
    num_features: int,
    num_layers: int,
    ev_degrees: tuple[int, ...] = (),
) -> nn.ModuleDict:
    """One :class:`EuclideanFastAttention` per chosen layer, keyed by str(layer).

    ``ev_degrees``: degrees of the model's Euclidean variables (used with
    ``equivariant_values``).
    """
    return nn.ModuleDict(
        {
            str(t): EuclideanFastAttention(
                num_features,
                cfg.num_features_qk,
                cfg.num_features_v,
                r_max=cfg.r_max,
                max_frequency=cfg.max_frequency,
                lebedev_order=cfg.lebedev_order,
                qk_activation=cfg.qk_activation,
                zero_init=cfg.zero_init,
                tolerance=cfg.quadrature_tolerance,
                degrees=cfg.degrees,
                ev_degrees=tuple(ev_degrees) if cfg.equivariant_values else (),
                equivariant_values=cfg.equivariant_values,
            )
            for t in cfg.layer_indices(num_layers)
        }
    )
