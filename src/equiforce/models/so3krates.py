"""So3krates: the SO(3)-equivariant transformer with Euclidean variables.

References: Frank, Unke, Müller, NeurIPS 2022 (arXiv 2205.14276); Frank, Unke,
Müller, Chmiela, Nat. Commun. 15, 6539 (2024). Equations follow
``so3krates-spec.md`` (mlff v1.0 ``SO3kratesSparse``).

Symbols → code names:

=========  ==================  ===========================
paper      code                shape
=========  ==================  ===========================
f_i        ``features``        (n_atoms, F)
x_i        ``ev``              (n_atoms, m_tot)
r_ij       ``edge_vectors``    (n_edges, 3)
K_ij       ``rbf``             (n_edges, K)
Y_ij       ``sph``             (n_edges, m_tot)
φ(d_ij)    ``phi``             (n_edges,)
c(x)       ``contract(ev)``    (·, |L|)
=========  ==================  ===========================
"""

from __future__ import annotations

import contextlib
import copy
import functools
import math
from collections.abc import Iterator
from typing import Literal, NamedTuple

import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from torch import nn

from equiforce.data.graph import AtomicGraph
from equiforce.models.base import NUM_ELEMENTS, PotentialModel, weight_state_key
from equiforce.models.edge_chunks import (
    ChunkedMessages,
    checkpointed_messages,
    compiled_chunk_kernels,
    warn_compile_failure,
)
from equiforce.nn.layers import MLP, Dense, HeadwiseLinear, ResidualMLP
from equiforce.nn.radial import Cutoff, make_basis
from equiforce.nn.scatter import gather_rows, scatter_sum
from equiforce.nn.spherical import SphericalHarmonics, safe_norm
from equiforce.nn.spline import CubicHermiteTable


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
    per_element_scale_shift: bool = Field(False, description="learnable s_Z, b_Z")
    zero_init_readout: bool = Field(True, description="E ≡ 0 at initialisation")

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


class DegreeContraction(nn.Module):
    """c(x)_l = |x_l|²/√(2l+1): (n, m_tot) -> (n, |L|), as one matmul."""

    def __init__(self, degrees: tuple[int, ...]) -> None:
        super().__init__()
        m_tot = sum(2 * l + 1 for l in degrees)
        mat = torch.zeros(m_tot, len(degrees), dtype=torch.float64)
        start = 0
        for k, l in enumerate(degrees):
            mat[start : start + 2 * l + 1, k] = 1.0 / math.sqrt(2 * l + 1)
            start += 2 * l + 1
        self.register_buffer("mat", mat)
        # (m_tot,) degree block of each component, for per-degree gating
        self.register_buffer(
            "expand", (mat > 0).to(torch.float64).T.contiguous()
        )  # (|L|, m_tot)

        self.blocks = [
            (sum(2 * k + 1 for k in degrees[:i]), 2 * l + 1)
            for i, l in enumerate(degrees)
        ]  # (start, size) of each degree's components

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, m_tot) -> (n, |L|)."""
        if not torch.compiler.is_compiling():
            return (x * x) @ self.mat
        # compiled: slices that Inductor fuses into the neighbouring loops
        # instead of small matmul calls (~1.5 µs each, ~10 per small-molecule call)
        sq = x * x
        return torch.stack(
            [sq[..., a : a + m].sum(-1) / math.sqrt(m) for a, m in self.blocks], -1
        )

    def expand_degrees(self, a: torch.Tensor) -> torch.Tensor:
        """Per-degree values onto their components: (..., |L|) -> (..., m_tot)."""
        if not torch.compiler.is_compiling():
            return a @ self.expand
        return torch.cat(
            [
                a[..., k : k + 1].expand(*a.shape[:-1], m)
                for k, (_, m) in enumerate(self.blocks)
            ],
            -1,
        )


class So3kratesLayer(nn.Module):
    """Euclidean attention block + exchange block (spec §2.7)."""

    def __init__(
        self, cfg: So3kratesConfig, contract: DegreeContraction | None
    ) -> None:
        super().__init__()
        F, H, K = cfg.num_features, cfg.num_heads, cfg.num_radial
        self.ev = cfg.use_euclidean_variables
        self.num_heads, self.head_size = H, F // H
        self.contract = contract
        self.filter_r1 = MLP([K, F, F])
        self.q1 = HeadwiseLinear(H, F // H)
        self.k1 = HeadwiseLinear(H, F // H)
        self.v1 = HeadwiseLinear(H, F // H)
        act = nn.SiLU() if cfg.qk_activation == "silu" else nn.Identity()
        self.qk_act = act
        n_deg = len(cfg.degrees) if self.ev else 0
        self.n_deg = n_deg
        if self.ev:
            self.filter_s1 = MLP([n_deg, F // 4, F])
            self.filter_r2 = MLP([K, F, F])
            self.filter_s2 = MLP([n_deg, F // 4, F])
            self.q2 = HeadwiseLinear(n_deg, F // n_deg)
            self.k2 = HeadwiseLinear(n_deg, F // n_deg)
        self.exchange = Dense(F + n_deg, F + n_deg)
        self.norm1 = nn.LayerNorm(F) if cfg.layer_norm_1 else nn.Identity()
        self.norm2 = nn.LayerNorm(F) if cfg.layer_norm_2 else nn.Identity()
        self.res1 = ResidualMLP(F) if cfg.residual_mlp_1 else nn.Identity()
        self.res2 = ResidualMLP(F) if cfg.residual_mlp_2 else nn.Identity()
        if cfg.message_normalization == "sqrt_head_size":
            self.norm_inv1 = 1.0 / math.sqrt(F // H)
            self.norm_inv2 = 1.0 / math.sqrt(F // max(n_deg, 1))
        elif cfg.message_normalization == "identity":
            self.norm_inv1 = self.norm_inv2 = 1.0
        else:
            self.norm_inv1 = self.norm_inv2 = 1.0 / float(cfg.avg_num_neighbors)

    def radial_firsts(self) -> list[nn.Module]:
        """First Dense (K -> F) of the radial filters of this layer."""
        return (
            [self.filter_r1[0], self.filter_r2[0]] if self.ev else [self.filter_r1[0]]
        )

    def node_projection(self) -> torch.Tensor:
        """Block-diagonal (F, n·F) matrix of all per-head maps [q1 | q2 | k1 | k2 | v1]."""
        mats = [self.q1.block_diag()]
        if self.ev:
            mats.append(self.q2.block_diag())
        mats.append(self.k1.block_diag())
        if self.ev:
            mats.append(self.k2.block_diag())
        mats.append(self.v1.block_diag())
        return torch.cat(mats, dim=1)

    def edge_filters(
        self, hidden_r: torch.Tensor, s_ij: torch.Tensor | None, tabulated: bool = False
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """w1, w2 (n_edges, F) from the radial hidden layer and the spherical input.

        ``hidden_r`` is silu(first radial Dense) of both filters, (n_edges, 2F)
        (or (n_edges, F) without EV); the radial and spherical second layers of a
        filter are applied as one matmul on the concatenated hidden features.
        With ``tabulated`` it is instead the radial part of both filters' outputs
        (:meth:`radial_parts`, biases excluded), read from a table. ``s_ij`` None
        with Euclidean variables: they are still zero (first layer), so c = 0 and
        the spherical parts are one constant vector per filter.
        """
        F = hidden_r.shape[1] // (2 if self.ev else 1)
        r1, r2 = self.filter_r1[2], self.filter_r2[2] if self.ev else None
        if not self.ev:
            if tabulated:
                return hidden_r + r1.bias, None
            return torch.addmm(r1.bias, hidden_r, r1.weight.t()), None
        s1a, s2a = self.filter_s1[0], self.filter_s2[0]
        s1b, s2b = self.filter_s1[2], self.filter_s2[2]
        if s_ij is None:  # silu(W·0 + b) is the same for every pair
            c1 = s1b(torch.nn.functional.silu(s1a.bias)) + r1.bias  # (F,)
            c2 = s2b(torch.nn.functional.silu(s2a.bias)) + r2.bias
            if tabulated:
                return hidden_r[:, :F] + c1, hidden_r[:, F:] + c2
            w1 = torch.addmm(c1, hidden_r[:, :F], r1.weight.t())
            return w1, torch.addmm(c2, hidden_r[:, F:], r2.weight.t())
        w_sa = torch.cat([s1a.weight, s2a.weight], 0)  # (F/2, |L|)
        b_sa = torch.cat([s1a.bias, s2a.bias])
        hs = torch.nn.functional.silu(
            torch.addmm(b_sa, s_ij, w_sa.t())
        )  # (n_edges, F/2)
        q = hs.shape[1] // 2
        if tabulated:  # hidden_r holds the radial second layers' outputs
            w1 = torch.addmm(
                hidden_r[:, :F] + (r1.bias + s1b.bias), hs[:, :q], s1b.weight.t()
            )
            w2 = torch.addmm(
                hidden_r[:, F:] + (r2.bias + s2b.bias), hs[:, q:], s2b.weight.t()
            )
            return w1, w2
        h1 = torch.cat([hidden_r[:, :F], hs[:, :q]], 1)
        h2 = torch.cat([hidden_r[:, F:], hs[:, q:]], 1)
        w1 = torch.addmm(
            r1.bias + s1b.bias, h1, torch.cat([r1.weight, s1b.weight], 1).t()
        )
        w2 = torch.addmm(
            r2.bias + s2b.bias, h2, torch.cat([r2.weight, s2b.weight], 1).t()
        )
        return w1, w2

    def projection_weights(self) -> list[torch.Tensor]:
        """The parameters :meth:`node_projection` is built from."""
        mods = (self.q1, self.q2, self.k1, self.k2) if self.ev else (self.q1, self.k1)
        return [p for m in (*mods, self.v1) for p in m.parameters()]

    def node_maps(
        self,
        features: torch.Tensor,
        projection: torch.Tensor | None = None,
        proj: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-head maps of every atom: q (n_atoms, n_q·F) and [k | v] (n_atoms, (n_q+1)·F).

        ``projection``: :meth:`node_projection`, when the caller holds it already
        (inference calls keep it between calls: building the block-diagonal
        matrices was ~10 % of a small molecule's compiled call). ``proj``:
        ``features @ projection`` itself, when known (first layer at inference).
        """
        F = features.shape[1]
        if proj is None:
            if projection is None:
                projection = self.node_projection()
            proj = features @ projection  # (n_atoms, (2·n_q+1)·F)
        n_q = 2 if self.ev else 1
        q = self.qk_act(proj[:, : n_q * F])
        kv = torch.cat(
            [self.qk_act(proj[:, n_q * F : 2 * n_q * F]), proj[:, 2 * n_q * F :]], 1
        )
        return q, kv

    def edge_messages(
        self,
        q: torch.Tensor,  # (n_atoms, n_q·F)
        kv: torch.Tensor,  # (n_atoms, (n_q+1)·F)
        ev: torch.Tensor,  # (n_atoms, m_tot)
        hidden_r: torch.Tensor,  # (n_pairs, 2F) radial hidden features of both filters
        sph: torch.Tensor,  # (n_edges, m_tot)
        phi: torch.Tensor,  # (n_pairs,)
        idx_i: torch.Tensor,  # (n_edges,)
        idx_j: torch.Tensor,  # (n_edges,)
        n_dir: int = 1,
        tabulated: bool = False,
        ev_zero: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Attention messages summed per centre: Δf (n_atoms, F) and Δx (n_atoms, m_tot).

        The filters w1, w2 depend on (i, j) only through d_ij and c(x_j − x_i), both
        symmetric, so they are computed per *pair*: with ``n_dir=2`` the edges are
        paired (edge P + k reverses edge k, n_edges = 2·n_pairs) and the per-pair
        tensors broadcast over both directions; ``n_dir=1`` is one pair per edge.
        ``tabulated``: ``hidden_r`` holds :meth:`radial_parts` (see :meth:`edge_filters`).
        ``ev_zero``: ``ev`` is known to be zero (first layer), which skips c(x_j − x_i).
        """
        n_atoms = q.shape[0]
        n_edges = idx_i.shape[0]
        n_pairs = n_edges // n_dir
        H, d = self.num_heads, self.head_size
        F = H * d
        n_q = 2 if self.ev else 1
        s_ij = None
        if self.ev and not ev_zero:
            i_p, j_p = idx_i[:n_pairs], idx_j[:n_pairs]
            s_ij = self.contract(gather_rows(ev, j_p) - gather_rows(ev, i_p))
        w1, w2 = self.edge_filters(hidden_r, s_ij, tabulated)  # (n_pairs, F) each
        shape = (n_dir, n_pairs)
        # split (one backward node that concatenates) rather than slices (each
        # slice's backward zero-fills a full-width gradient): 40 % of eager time
        q_i = gather_rows(q, idx_i).view(*shape, n_q * F).split(F, dim=-1)
        kv_j = gather_rows(kv, idx_j).view(*shape, (n_q + 1) * F).split(F, dim=-1)
        phi1 = phi[:, None] * self.norm_inv1  # (n_pairs, 1)
        prod1 = (q_i[0] * w1 * kv_j[0]).view(*shape, H, d)
        alpha1 = prod1.sum(-1) * phi1  # (n_dir, n_pairs, H)
        v_j = kv_j[-1].view(*shape, H, d)
        msg = (alpha1[..., None] * v_j).reshape(n_edges, F)
        d_features = scatter_sum(msg, idx_i, n_atoms)  # (n_atoms, F)
        d_ev = None
        if self.ev:
            prod2 = q_i[1] * w2 * kv_j[1]
            alpha2 = prod2.view(*shape, self.n_deg, F // self.n_deg).sum(-1)
            alpha2 = alpha2 * (phi[:, None] * self.norm_inv2)  # (n_dir, n_pairs, |L|)
            gate = self.contract.expand_degrees(alpha2).reshape(n_edges, sph.shape[1])
            d_ev = scatter_sum(gate * sph, idx_i, n_atoms)
        return d_features, d_ev

    def update(
        self,
        features: torch.Tensor,  # (n_atoms, F)
        ev: torch.Tensor,  # (n_atoms, m_tot)
        d_features: torch.Tensor,  # (n_atoms, F)
        d_ev: torch.Tensor | None,  # (n_atoms, m_tot)
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual update, optional norm/MLP, then the exchange block."""
        F = features.shape[1]
        if self.ev:
            ev = ev + d_ev
        features = self.res1(self.norm1(features + d_features))
        if self.ev:
            bg = self.exchange(torch.cat([features, self.contract(ev)], dim=-1))
            features = features + bg[:, :F]
            ev = ev + self.contract.expand_degrees(bg[:, F:]) * ev
        else:
            features = features + self.exchange(features)
        features = self.norm2(self.res2(features))
        return features, ev

    def radial_parts(self, rbf: torch.Tensor) -> torch.Tensor:
        """Radial part of both filters' outputs, biases excluded: (n, K) -> (n, nF).

        A function of the pair distance alone, which is what the inference table
        (:meth:`So3krates.filter_tables`) stores.
        """
        hidden = self.radial_hidden(rbf)
        F = self.filter_r1[2].weight.shape[0]
        parts = [hidden[:, :F] @ self.filter_r1[2].weight.t()]
        if self.ev:
            parts.append(hidden[:, F:] @ self.filter_r2[2].weight.t())
        return torch.cat(parts, 1)

    def radial_hidden(self, rbf: torch.Tensor) -> torch.Tensor:
        """silu(first radial Dense) of this layer's filters: (n_edges, K) -> (n_edges, nF)."""
        firsts = self.radial_firsts()
        w = torch.cat([m.weight for m in firsts], 0)
        b = torch.cat([m.bias for m in firsts])
        return torch.nn.functional.silu(torch.addmm(b, rbf, w.t()))


class NodeProjections(NamedTuple):
    """Weight-only inputs of the per-head maps, kept between inference calls."""

    projections: list[torch.Tensor]  # per layer (F, (2·n_q+1)·F)
    first_layer: torch.Tensor  # (n_elements, (2·n_q+1)·F) embedding @ projection


class So3krates(PotentialModel):
    """So3krates potential (see module docstring for the symbol table)."""

    def __init__(self, config: So3kratesConfig, e0: torch.Tensor | None = None) -> None:
        super().__init__(cutoff=config.cutoff, e0=e0)
        self.config = config
        cfg = config
        F = cfg.num_features
        self.embedding = nn.Embedding(NUM_ELEMENTS, F)
        nn.init.normal_(self.embedding.weight, 0.0, 1.0)
        self.rbf = make_basis(cfg.radial_basis, cfg.num_radial, cfg.cutoff)
        self.cutoff_fn = Cutoff(cfg.cutoff_fn, cfg.cutoff)
        degrees = cfg.degrees if cfg.use_euclidean_variables else ()
        self.degrees = degrees
        self.m_tot = sum(2 * l + 1 for l in degrees)
        self.sph = SphericalHarmonics(degrees) if degrees else None
        self.contract = DegreeContraction(degrees) if degrees else None
        self.layers = nn.ModuleList(
            So3kratesLayer(cfg, self.contract) for _ in range(cfg.num_layers)
        )
        act = "silu" if cfg.readout_activation == "silu" else "identity"
        self.readout = MLP(
            [F, cfg.readout_hidden, 1],
            activation=act,
            zero_init_last=cfg.zero_init_readout,
        )
        #: Process edges in chunks of this size. None: automatic, i.e. all at once
        #: up to ``auto_chunk_edges`` edges (≈ 6 GiB of float32 intermediates) when
        #: the outputs stay differentiable (training: checkpointed chunks cost
        #: ≈ 1.3x), up to ``auto_chunk_edges_detached`` when they do not (MD,
        #: evaluation: the in-place chunks cost the same as all edges at once,
        #: 10,125-atom box at 2 threads 3.40 vs 3.34 s, and peak at 4.7 instead of
        #: 10.9 GiB; ``so3krates_ablations.py calls --edge-chunk-size``); chunks of
        #: ``auto_chunk_size`` edges above (``auto_chunk_size_detached`` for the
        #: in-place chunks, which run several at a time: 101k-atom box at 2
        #: threads, 250k-edge chunks one at a time 40 s, 60k-edge chunks two at a
        #: time 30 s, ``docs/benchmarks.md`` section 1, session 8). Runtime
        #: settings for very large systems, not part of the config.
        self.edge_chunk_size: int | None = None
        self.auto_chunk_edges: int = 1_000_000
        self.auto_chunk_edges_detached: int = 300_000
        self.auto_chunk_size: int = 250_000
        self.auto_chunk_size_detached: int = 60_000
        #: Forces-only chunked calls run each chunk's messages and their
        #: vector-Jacobian product as compiled graphs (dynamic shapes, compiled
        #: once per layer): eager chunks spend most of their time in separate
        #: element-wise passes over edge-sized tensors.
        self.compile_chunks: bool = True
        #: Compiled chunks computed at once, each on its own thread (CPU; the
        #: kernels run without the GIL). None: the caller's torch thread count.
        self.chunk_workers: int | None = None
        #: Forces-only calls (MD, evaluation; never training) read the radial part
        #: of every filter from a cubic Hermite table in the basis' smooth
        #: coordinate (:mod:`equiforce.nn.spline`) instead of computing its two
        #: Dense layers per pair. "auto": float32 models; "on"; "off". With 1,000
        #: intervals a trained filter is interpolated to ~1e-8 relative (below
        #: float32 rounding). Runtime settings, not part of the config.
        self.filter_table: Literal["auto", "on", "off"] = "auto"
        self.filter_table_intervals: int = 1000
        self._tables_cache: tuple[tuple, list[CubicHermiteTable]] | None = None
        self._active_tables: list[CubicHermiteTable] | None = None
        self._table_tensors: list[torch.Tensor] | None = None
        #: per-layer node projections of the current inference call (detached)
        self._active_projections: NodeProjections | None = None
        self._projections_cache: tuple[tuple, NodeProjections] | None = None
        self._projection_weights: list[torch.Tensor] | None = None
        if cfg.per_element_scale_shift:
            self.scale = nn.Parameter(torch.ones(NUM_ELEMENTS))
            self.shift = nn.Parameter(torch.zeros(NUM_ELEMENTS))
        else:
            self.scale = self.shift = None

    # ------------------------------------------------------- filter tables
    def _table_inputs(self) -> list[torch.Tensor]:
        """Every tensor the radial filter parts depend on.

        Listed once (walking the modules costs ~25 µs, a third of a small
        molecule's compiled call); the same parameter objects stay in place under
        ``load_state_dict``, optimizers and ``.to()``.
        """
        if self._table_tensors is None:
            tensors = list(self.rbf.buffers())
            for layer in self.layers:
                mlps = (
                    (layer.filter_r1, layer.filter_r2)
                    if layer.ev
                    else (layer.filter_r1,)
                )
                for mlp in mlps:
                    tensors += list(mlp.parameters())
            self._table_tensors = tensors
        return self._table_tensors

    def filter_tables(self) -> list[CubicHermiteTable]:
        """One table per layer: pair distance -> :meth:`So3kratesLayer.radial_parts`.

        Built in float64 from the current weights and stored in the model's dtype;
        rebuilt when a weight changed (in-place updates bump its version), moved or
        the model changed dtype.
        """
        weight = self.embedding.weight
        dtype, device = weight.dtype, weight.device
        tensors = self._table_inputs()
        key = (dtype, device, self.filter_table_intervals, *weight_state_key(tensors))
        if self._tables_cache is not None and self._tables_cache[0] == key:
            return self._tables_cache[1]
        basis = copy.deepcopy(self.rbf).double()
        ends = basis.to_table(torch.tensor([0.0, self.cutoff], dtype=torch.float64))
        lo, hi = sorted(float(x) for x in ends)
        tables = []
        for layer in self.layers:
            exact = copy.deepcopy(layer).double()

            def parts(s: torch.Tensor, exact=exact) -> torch.Tensor:
                return exact.radial_parts(basis(basis.from_table(s)))

            n = self.filter_table_intervals
            tables.append(
                CubicHermiteTable(parts, lo, hi, n, dtype=dtype, device=device)
            )
        self._tables_cache = (key, tables)
        return tables

    def _tables_wanted(self) -> bool:
        if self.filter_table == "on":
            return True
        if self.filter_table == "off":
            return False
        if self.filter_table != "auto":
            raise ValueError(
                f"filter_table must be 'auto', 'on' or 'off', got {self.filter_table!r}"
            )
        return self.embedding.weight.dtype == torch.float32

    def node_projections(self) -> NodeProjections:
        """Every layer's :meth:`So3kratesLayer.node_projection`, kept between calls.

        Rebuilt when one of its weights or the embedding changed (version
        counters) or moved. Only for calls that take no parameter gradients.
        """
        if self._projection_weights is None:
            self._projection_weights = [self.embedding.weight] + [
                p for layer in self.layers for p in layer.projection_weights()
            ]
        key = weight_state_key(self._projection_weights)
        if self._projections_cache is not None and self._projections_cache[0] == key:
            return self._projections_cache[1]
        with torch.no_grad():
            mats = [layer.node_projection() for layer in self.layers]
            first = self.embedding.weight @ mats[0]
        maps = NodeProjections(mats, first)
        self._projections_cache = (key, maps)
        return maps

    def clear_inference_caches(self) -> None:
        """Drop the filter tables and node projections kept between calls.

        They are rebuilt when a weight changes in place (its version counter),
        moves or changes dtype, but not when it is written through ``.data``
        (``p.data.copy_(...)``: that alias has a version counter of its own).
        Call this after such a write.
        """
        self._tables_cache = None
        self._projections_cache = None
        super().clear_inference_caches()

    @contextlib.contextmanager
    def inference_tables(self) -> Iterator[None]:
        """Calls inside read weight-only quantities from caches.

        The radial filters from :meth:`filter_tables` (see ``filter_table``) and
        the per-head maps from :meth:`node_projections`.
        """
        previous = self._active_tables, self._active_projections
        self._active_tables = self.filter_tables() if self._tables_wanted() else None
        self._active_projections = self.node_projections()
        try:
            yield
        finally:
            self._active_tables, self._active_projections = previous

    # ---------------------------------------------------------------- chunks
    def _edge_chunk(
        self, n_edges: int, differentiable: bool | None = None
    ) -> int | None:
        """Edge chunk size for a graph of ``n_edges`` (None: no chunking).

        ``differentiable``: as in :meth:`chunks_edges`.
        """
        if differentiable is None:
            differentiable = self.outputs_differentiable
        chunk = self.edge_chunk_size
        limit = (
            self.auto_chunk_edges if differentiable else self.auto_chunk_edges_detached
        )
        if chunk is None and n_edges > limit:
            chunk = (
                self.auto_chunk_size
                if differentiable
                else self.auto_chunk_size_detached
            )
        return chunk if chunk is not None and n_edges > chunk else None

    def chunks_edges(self, n_edges: int, differentiable: bool | None = None) -> bool:
        """True when edges are processed in chunks (very large graphs)."""
        return self._edge_chunk(n_edges, differentiable) is not None

    def _chunked_layer(
        self,
        layer,
        features,
        ev,
        q,
        kv,
        d,
        vec,
        phi,
        idx_i,
        idx_j,
        chunk: int,
        n_dir: int,
        table: CubicHermiteTable | None = None,
    ):
        """One layer with edges in chunks (see :mod:`equiforce.models.edge_chunks`).

        Memory is O(n_atoms·F + chunk·F) instead of O(n_edges·F): per-edge
        intermediates of a chunk are recomputed in the backward pass, at about 1.3x
        the cost. ``d`` and ``phi`` are per pair; a chunk takes ``chunk / n_dir``
        pairs with all their directions. When the outputs must stay differentiable
        (training: forces in the loss) chunks are checkpointed; otherwise (forces
        for MD or evaluation) :class:`ChunkedMessages` sums in place. ``table``:
        the layer's filter table, if filters are read from one. ``q`` and ``kv``:
        :meth:`So3kratesLayer.node_maps` of ``features``. ``vec``: the edge
        vectors (n_edges, 3); each chunk computes its spherical harmonics from
        them (on all edges at once, outside the compiled chunks, they were a
        third of a 100k-atom call).
        """
        F = features.shape[1]
        chunk_messages = functools.partial(self.chunk_messages, layer, table, n_dir)
        tensors = (q, kv, ev, d, vec, phi, idx_i, idx_j)
        if self.outputs_differentiable:
            d_f, d_ev = checkpointed_messages(chunk_messages, *tensors, chunk, n_dir, F)
            return layer.update(features, ev, d_f, d_ev)
        kernels = None
        if self.compile_chunks and not torch.compiler.is_compiling():
            kernels = compiled_chunk_kernels(self, layer, table, n_dir)
        try:
            d_f, d_ev = ChunkedMessages.apply(
                chunk_messages, kernels, chunk, n_dir, F, *tensors
            )
        except Exception as err:  # noqa: BLE001 - compiler failure -> eager chunks
            if kernels is None:
                raise
            warn_compile_failure(err)
            self.compile_chunks = False
            return self._chunked_layer(
                layer, features, ev, q, kv, d, vec, phi, idx_i, idx_j, chunk, n_dir,
                table,
            )  # fmt: skip
        return layer.update(features, ev, d_f, d_ev if layer.ev else None)

    def chunk_messages(
        self,
        layer: So3kratesLayer,
        table: CubicHermiteTable | None,
        n_dir: int,
        q: torch.Tensor,  # (n_atoms, n_q·F)
        kv: torch.Tensor,  # (n_atoms, (n_q+1)·F)
        ev: torch.Tensor,  # (n_atoms, m_tot)
        d_c: torch.Tensor,  # (n_pairs_c,)
        vec_c: torch.Tensor,  # (n_edges_c, 3) edge vectors
        phi_c: torch.Tensor,  # (n_pairs_c,)
        i_c: torch.Tensor,  # (n_edges_c,)
        j_c: torch.Tensor,  # (n_edges_c,)
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Δf and Δx of one chunk of pairs (all their directions) in ``layer``."""
        sph_c = self._harmonics(vec_c)  # (n_edges_c, m_tot)
        if table is None:
            hidden = layer.radial_hidden(self.rbf(d_c).to(d_c.dtype))
        else:
            hidden = table(self.rbf.to_table(d_c))
        # Euclidean variables still zero; only at inference, where parameter
        # gradients are not taken (training keeps exact zeros for the skipped weights)
        first = layer is self.layers[0] and self._active_projections is not None
        return layer.edge_messages(
            q, kv, ev, hidden, sph_c, phi_c, i_c, j_c, n_dir, table is not None, first
        )

    def _harmonics(self, vectors: torch.Tensor) -> torch.Tensor:
        """Y(r) of edge vectors (n, 3) -> (n, m_tot); (n, 0) without Euclidean variables."""
        if self.sph is None:
            return vectors.new_zeros((vectors.shape[0], 0))
        return self.sph(vectors)

    def atomic_energies(
        self, graph: AtomicGraph, edge_vectors: torch.Tensor
    ) -> torch.Tensor:
        """Network atomic energies (n_atoms,) from So3krates features."""
        idx_i, idx_j = graph.edge_index[0], graph.edge_index[1]
        # symmetric per-edge quantities once per unordered pair when edges are paired
        n_dir = 2 if graph.edges_paired else 1
        n_pairs = idx_i.shape[0] // n_dir
        d = safe_norm(edge_vectors[:n_pairs])  # (n_pairs,)
        chunk = self._edge_chunk(idx_i.shape[0])
        chunked = chunk is not None
        tables = self._active_tables
        # per layer: radial hidden features (exact) or radial filter parts (tables)
        if tables is not None:
            s = self.rbf.to_table(d)  # (n_pairs,)
            radial = None if chunked else [table(s) for table in tables]
        elif not chunked:
            rbf = self.rbf(d).to(edge_vectors.dtype)  # (n_pairs, K)
            # first radial Dense of every filter of every layer in one product
            firsts = [m for layer in self.layers for m in layer.radial_firsts()]
            w_first = torch.cat([m.weight for m in firsts], 0)  # (T·nF, K)
            b_first = torch.cat([m.bias for m in firsts])
            hidden = torch.nn.functional.silu(torch.addmm(b_first, rbf, w_first.t()))
            radial = hidden.chunk(len(self.layers), dim=1)  # T × (n_pairs, nF)
        phi = self.cutoff_fn(d)  # (n_pairs,)
        z = graph.atomic_numbers
        features = self.embedding(z)  # (n_atoms, F)
        n_atoms = features.shape[0]
        sph = None if chunked else self._harmonics(edge_vectors)  # (n_edges, m_tot)
        ev = features.new_zeros((n_atoms, self.m_tot))
        maps = self._active_projections
        for t, layer in enumerate(self.layers):
            if maps is None:
                q, kv = layer.node_maps(features)
            else:  # the first layer's maps depend on the element alone
                proj = maps.first_layer[z] if t == 0 else None
                q, kv = layer.node_maps(features, maps.projections[t], proj)
            if chunked:
                table = None if tables is None else tables[t]
                features, ev = self._chunked_layer(
                    layer, features, ev, q, kv, d, edge_vectors, phi, idx_i, idx_j,
                    chunk, n_dir, table,
                )  # fmt: skip
                continue
            d_f, d_ev = layer.edge_messages(
                q,
                kv,
                ev,
                radial[t],
                sph,
                phi,
                idx_i,
                idx_j,
                n_dir,
                tables is not None,
                ev_zero=t == 0 and maps is not None,  # as in chunk_messages
            )
            features, ev = layer.update(features, ev, d_f, d_ev)
        e = self.readout(features).squeeze(-1)  # (n_atoms,)
        if self.scale is not None:
            e = self.scale[z] * e + self.shift[z]
        return e
