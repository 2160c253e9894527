"""One So3krates layer (attention on features and Euclidean variables) and c(x)."""

from __future__ import annotations

import math

import torch
from torch import nn

from equiforce.models.so3krates.config import So3kratesConfig
from equiforce.nn.exact import ExactConstants
from equiforce.nn.layers import MLP, Dense, HeadwiseLinear, ResidualMLP
from equiforce.nn.scatter import gather_rows, scatter_sum


def _contraction_matrix(degrees: tuple[int, ...]) -> torch.Tensor:
    """(m_tot, |L|) float64: 1/√(2l+1) on each degree's components."""
    mat = torch.zeros(
        sum(2 * l + 1 for l in degrees), len(degrees), dtype=torch.float64
    )
    start = 0
    for k, l in enumerate(degrees):
        mat[start : start + 2 * l + 1, k] = 1.0 / math.sqrt(2 * l + 1)
        start += 2 * l + 1
    return mat


class DegreeContraction(ExactConstants):
    """c(x)_l = |x_l|²/√(2l+1): (n, m_tot) -> (n, |L|), as one matmul.

    ``mat`` stays a persistent buffer (older model files carry it) but is always
    the exact value in the current dtype (:class:`ExactConstants`).
    """

    def __init__(self, degrees: tuple[int, ...]) -> None:
        super().__init__()
        self.degrees = tuple(degrees)
        mat = _contraction_matrix(self.degrees)
        self.register_buffer("mat", mat)
        # (m_tot,) degree block of each component, for per-degree gating
        self.register_buffer(
            "expand", (mat > 0).to(torch.float64).T.contiguous()
        )  # (|L|, m_tot)

        self.blocks = [
            (sum(2 * k + 1 for k in degrees[:i]), 2 * l + 1)
            for i, l in enumerate(degrees)
        ]  # (start, size) of each degree's components

    def exact_constants(self) -> dict[str, torch.Tensor]:
        """The contraction matrix and its 0/1 degree mask, exact in any dtype."""
        mat = _contraction_matrix(self.degrees)
        return {"mat": mat, "expand": (mat > 0).to(torch.float64).T.contiguous()}

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
