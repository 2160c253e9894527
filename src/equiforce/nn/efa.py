"""Euclidean fast attention (EFA): global attention at linear cost, l ≤ 2 outputs.

Reference: Frank, Chmiela, Müller, Unke, *Euclidean fast attention: machine
learning global atomic representations at linear cost*, arXiv 2412.08541 (JAX
code ``thorben-frank/euclidean_fast_attention``). Design notes:
``docs/global_attention.md``; the sphere quadrature (grids, harmonics, error
bounds) is :mod:`equiforce.nn.efa_grid`.

Construction. For atom features h_i, queries, keys and values q_i = W_q h_i,
k_i = W_k h_i (D_qk features, D_qk even: D_qk/2 pairs) and v_i = W_v h_i (D_v
features). Pair k of q and k is rotated, on every direction u_m of a Lebedev
grid, by the angle ω_k u_m·r_i (Euclidean RoPE), and linear attention is summed
per structure:

    y_i(u_m) = q̃_{i,m}ᵀ S_{g(i),m} / √D_qk,   S_{g,m} = Σ_{j∈g} k̃_{j,m} v_jᵀ.

Tensor integration: the output of degree l is the sphere average weighted by
the harmonic Ŷ_l(u) = √(4π) Y_l(u) (e3nn basis, Ŷ_0 = 1):

    y_i^{(l)} = Σ_m w_m Ŷ_l(u_m) y_i(u_m)     ((2l+1) components × D_v).

Closed form. With R the 2×2 rotation, aᵀR(θ)b = (a·b) cos θ + (a∧b) sin θ where
a∧b = a₁b₀ − a₀b₁ (components 2k, 2k+1), and θ = ω_k u·r_ij with r_ij = r_j − r_i
(R(a)ᵀR(b) = R(b − a)). The plane-wave expansion (:mod:`~equiforce.nn.efa_grid`)
turns the average of Ŷ_l(u) cos θ into Re(i^l) j_l(ω r_ij) Ŷ_l(r̂_ij), that of
Ŷ_l(u) sin θ into Im(i^l) j_l Ŷ_l, so

    y_i^{(l)} = Σ_{j∈g(i)} Σ_k κ_l(q_i^{(k)}, k_j^{(k)}) j_l(ω_k r_ij) Ŷ_l(r̂_ij) v_j / √D_qk,

    κ_0 = q·k,   κ_1 = q∧k,   κ_2 = −q·k   (κ_l = Re(i^l) q·k + Im(i^l) q∧k),

j = i included for l = 0 (j_l(0) = 0 for l ≥ 1), up to the quadrature error,
computed in O(N·M·C·D_qk·D_v) (C = Σ(2l+1) components) instead of O(N²) time and
O(N·M·D_qk) memory for any C: the weights w_m Ŷ_c(u_m) and 1/√D_qk scale the rows
of the small per-structure sums S, never an (N, C, M, D_qk) copy of q̃.
Outputs transform as Ŷ_l(r̂_ij): degree 1 as a polar vector ("1o"), degree 2 as
"2e", like So3krates' Euclidean variables. The j₀ kernel is a pair sum over
all atoms of a structure; structures in a batch never see each other (S is a
per-structure sum).

Equivariant values. The values may also carry each atom's Euclidean variables
x_j (So3krates' (2l+1)-vectors), gated by C invariant channels of its features,
v_j^{(l,c)} = g_c(h_j) x_j^{(l)}. They travel with the invariant (l = 0)
integration, y_i^{(l,c)} = Σ_j Σ_k κ_0 j_0(ω_k r_ij) g_c(h_j) x_j^{(l)} / √D_qk:
an invariant kernel times vectors that rotate with the structure is equivariant
(the quadrature needs no higher order). This is the path by which an atom learns
the *orientation* of a distant group (a far CH₂ plane is an l = 2 pattern of its
Euclidean variables), to first order; with invariant values the orientation
reaches it only through the tiny angular spread of far pair vectors.

Symbols → code names: h_i ``features`` (n_atoms, F); r_i ``positions``
(n_atoms, 3); u_m ``grid_u`` (M, 3); w_m Ŷ_c(u_m) ``grid_weights`` (C, M);
ω_k ``frequencies`` (D_qk/2,); g(i) ``graph_index`` (n_atoms,).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from equiforce.errors import EquiforceError
from equiforce.nn.efa_grid import (  # noqa: F401 (re-exported: the EFA's public API)
    LEBEDEV_POINTS,
    check_quadrature,
    integration_weights,
    lebedev_grid,
    max_phase_for_order,
    quadrature_error_bound,
    rope_frequencies,
)
from equiforce.nn.layers import Dense

#: Eager calls with more structures than this sum per structure slice by slice;
#: fewer structures (and every traced call) use one matrix product over all of
#: them (cost ∝ number of structures, but no data-dependent shapes).
ONE_PRODUCT_MAX_GRAPHS = 4


class GlobalAttentionInputError(EquiforceError):
    """A structure the global attention cannot take (periodic, or too extended)."""


# ---------------------------------------------------------------- input checks
def is_tracing() -> bool:
    """Whether the current call is traced (Dynamo, export or ``make_fx``).

    Traced graphs cannot raise on data; their callers check the inputs eagerly
    (:meth:`equiforce.models.base.PotentialModel.check_graph`).
    """
    if torch.compiler.is_compiling():
        return True
    from torch.fx.experimental.proxy_tensor import get_proxy_mode

    return get_proxy_mode() is not None


def structure_extents(
    positions: torch.Tensor, graph_index: torch.Tensor, n_graphs: int
) -> torch.Tensor:
    """Upper bound of each structure's largest pair distance, (n_graphs,) Å.

    2 × the largest distance of an atom from the structure's centroid
    (rotation and translation invariant, O(N)).
    """
    pos = positions.detach()
    centre = centroids(pos, graph_index, n_graphs)
    radius = (pos - centre[graph_index]).norm(dim=1)  # (n_atoms,)
    out = radius.new_zeros(n_graphs)
    return 2.0 * out.scatter_reduce(0, graph_index, radius, "amax", include_self=True)


def largest_pair_distance(positions: torch.Tensor, chunk: int = 4096) -> float:
    """Exact largest pair distance of one structure (O(N²) in chunks), Å."""
    pos = positions.detach()
    best = 0.0
    for a in range(0, pos.shape[0], chunk):
        best = max(best, float(torch.cdist(pos[a : a + chunk], pos).max()))
    return best


def check_structures(
    positions: torch.Tensor,  # (n_atoms, 3)
    graph_index: torch.Tensor,  # (n_atoms,)
    n_atoms: torch.Tensor,  # (n_graphs,)
    pbc: torch.Tensor,  # (n_graphs, 3)
    r_max: float,
) -> None:
    """Raise :class:`GlobalAttentionInputError` for inputs the EFA cannot take.

    Periodic structures (the phase of an image shift is not a multiple of 2π),
    and structures whose largest pair distance exceeds ``r_max`` (the quadrature
    rule, hence rotation invariance, holds only within it). The O(N) centroid
    bound is tried first; only structures it cannot clear get the exact O(N²)
    largest pair distance.
    """
    n_graphs = n_atoms.shape[0]
    periodic = pbc.any(dim=1).nonzero().flatten().tolist()
    if periodic:
        raise GlobalAttentionInputError(
            f"global attention (EFA) takes open structures only; structure(s) "
            f"{periodic} (graph index) are periodic"
        )
    bound = structure_extents(positions, graph_index, n_graphs)
    doubtful = (bound > r_max).nonzero().flatten().tolist()
    if not doubtful:
        return
    starts = (torch.cumsum(n_atoms, 0) - n_atoms).tolist()
    counts = n_atoms.tolist()
    for g in doubtful:
        extent = largest_pair_distance(positions[starts[g] : starts[g] + counts[g]])
        if extent > r_max:
            raise GlobalAttentionInputError(
                f"structure {g} (graph index) has atoms {extent:.3f} Å apart, more "
                f"than the global attention's r_max = {r_max:g} Å: beyond r_max "
                f"the quadrature, and with it rotation invariance, fails; build the "
                f"model with a larger global_attention.r_max (and a grid fine "
                f"enough for max_frequency × r_max)"
            )


# ------------------------------------------------------------------ the maths
def centroids(
    positions: torch.Tensor, graph_index: torch.Tensor, n_graphs: int
) -> torch.Tensor:
    """Mean position of each structure, (n_graphs, 3)."""
    sums = positions.new_zeros((n_graphs, 3)).index_add(0, graph_index, positions)
    counts = positions.new_zeros(n_graphs).index_add(
        0, graph_index, torch.ones_like(positions[:, 0])
    )
    return sums / counts.clamp(min=1.0)[:, None]


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate feature pairs (2k, 2k+1) of ``x`` by the angles behind cos/sin.

    Shapes: x (N, D); cos, sin (N, M, D/2) -> (N, M, D).
    """
    pairs = x.view(x.shape[0], 1, -1, 2)  # (N, 1, D/2, 2)
    a, b = pairs[..., 0], pairs[..., 1]
    out = torch.stack((a * cos - b * sin, a * sin + b * cos), dim=-1)
    return out.flatten(2)


def _fold_weights(s: torch.Tensor, row_weights: torch.Tensor) -> torch.Tensor:
    """Σ_m w_{c,m} q̃_mᵀ S_m as one product: weight the rows of S per component.

    Shapes: s (M·D_qk, X), row_weights (M·D_qk, C) -> (M·D_qk, C·X), so that
    q̃ (N, M·D_qk) @ result = (N, C, X) component by component.
    """
    return (row_weights[:, :, None] * s[:, None, :]).reshape(s.shape[0], -1)


def euclidean_rope_attention(
    q: torch.Tensor,  # (N, D_qk)
    k: torch.Tensor,  # (N, D_qk)
    v: torch.Tensor,  # (N, D_v)
    positions: torch.Tensor,  # (N, 3)
    graph_index: torch.Tensor,  # (N,) sorted
    n_atoms: torch.Tensor,  # (n_graphs,)
    frequencies: torch.Tensor,  # (D_qk/2,) rad/Å
    grid_u: torch.Tensor,  # (M, 3)
    grid_w: torch.Tensor,  # (M,) summing to 1
) -> torch.Tensor:
    """Invariant EFA output y (N, D_v) (module note), per-structure sums."""
    return euclidean_rope_integrals(
        q, k, v, positions, graph_index, n_atoms, frequencies, grid_u, grid_w[None]
    )[:, 0]


def euclidean_rope_integrals(
    q: torch.Tensor,  # (N, D_qk)
    k: torch.Tensor,  # (N, D_qk)
    v: torch.Tensor,  # (N, D_v)
    positions: torch.Tensor,  # (N, 3)
    graph_index: torch.Tensor,  # (N,) sorted
    n_atoms: torch.Tensor,  # (n_graphs,)
    frequencies: torch.Tensor,  # (D_qk/2,) rad/Å
    grid_u: torch.Tensor,  # (M, 3)
    grid_weights: torch.Tensor,  # (C, M) w_m Ŷ_c(u_m)
) -> torch.Tensor:
    """Tensor-integrated EFA outputs y^{(l)} (N, C, D_v) (module note).

    Component c of the output is Σ_m grid_weights[c, m] y_i(u_m): with
    :func:`~equiforce.nn.efa_grid.integration_weights` the components of the
    degrees asked for, in e3nn order. Positions are taken relative to their
    structure's centroid (the result is exactly translation invariant either
    way; this keeps phases small in float32).
    """
    n, d_qk = q.shape
    c, m = grid_weights.shape
    n_graphs = n_atoms.shape[0]
    rel = positions - centroids(positions, graph_index, n_graphs)[graph_index]
    angles = (rel @ grid_u.t())[..., None] * frequencies  # (N, M, D_qk/2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    q_rot = rope(q, cos, sin).reshape(n, -1)  # (N, M·D_qk)
    k_rot = rope(k, cos, sin).reshape(n, -1)  # (N, M·D_qk)
    # the grid weights and 1/√D_qk go on the small per-structure sums S, not on q̃
    rows = grid_weights.t().repeat_interleave(d_qk, 0) / math.sqrt(d_qk)  # (M·D_qk, C)
    if n_graphs == 1:
        return (q_rot @ _fold_weights(k_rot.t() @ v, rows)).view(n, c, -1)
    # is_tracing() first: a traced n_graphs <= 4 would guard the structure count
    if is_tracing() or n_graphs <= ONE_PRODUCT_MAX_GRAPHS:
        y = _one_product(q_rot, k_rot, v, graph_index, n_graphs, rows)
        return y.view(n, c, -1)
    # eager, many structures: slice by slice (graph_index is sorted)
    counts = n_atoms.tolist()
    parts = [
        (qs @ _fold_weights(ks.t() @ vs, rows)).view(-1, c, v.shape[1])
        for qs, ks, vs in zip(
            q_rot.split(counts), k_rot.split(counts), v.split(counts), strict=True
        )
    ]
    return torch.cat(parts)


def _one_product(
    q_rot: torch.Tensor,  # (N, M·D_qk)
    k_rot: torch.Tensor,  # (N, M·D_qk)
    v: torch.Tensor,  # (N, D_v)
    graph_index: torch.Tensor,  # (N,)
    n_graphs: int,
    rows: torch.Tensor,  # (M·D_qk, C) weights of the rows of S
) -> torch.Tensor:
    """Per-structure linear attention as matrix products over all structures.

    Values are spread into one block per structure, S = k̃ᵀ V_block gives every
    structure's sum at once, and each atom keeps its own structure's block.
    Returns (N, C, D_v).
    """
    n, d_v = v.shape
    c = rows.shape[1]
    # (one_hot would fix a traced structure count to the example's)
    structures = torch.arange(n_graphs, device=graph_index.device)
    onehot = (graph_index[:, None] == structures).to(v.dtype)  # (N, G)
    v_block = (onehot[:, :, None] * v[:, None, :]).reshape(n, -1)  # (N, G·D_v)
    s = k_rot.t() @ v_block  # (M·D_qk, G·D_v)
    y_all = (q_rot @ _fold_weights(s, rows)).view(n, c, n_graphs, d_v)
    return (y_all * onehot[:, None, :, None]).sum(2)


class EuclideanFastAttention(nn.Module):
    """EFA block: features (N, F) -> invariant update (N, F) and degree-l updates.

    The invariant output y^{(0)} goes through a Dense map D_v -> F; each tensor
    degree l ≥ 1 in ``degrees`` through a bias-free map D_v -> 1 (equivariant:
    it mixes value channels, never components), giving one (2l+1)-vector per
    atom and degree, as So3krates' Euclidean variables. With
    ``equivariant_values`` C > 0 the Euclidean variables (degrees ``ev_degrees``)
    are carried as well (module note), C gated channels mixed to one per degree
    by a bias-free map. All maps are zero at initialisation with ``zero_init``.

    Args:
        num_features: width F of the input and output features.
        num_features_qk: D_qk (even), query/key width.
        num_features_v: D_v, value width.
        r_max: largest pair distance handled, Å.
        max_frequency: ω_max, rad/Å (frequencies linspace(0, ω_max, D_qk/2)).
        lebedev_order: order of the Lebedev grid (SciPy).
        qk_activation: "identity" or "silu" on q and k.
        zero_init: zero output projections (the block adds nothing at init).
        tolerance: allowed quadrature error bound (:func:`check_quadrature`,
            at the highest degree).
        degrees: output degrees, sorted, starting with 0, each ≤ 2.
        ev_degrees: degrees of the Euclidean variables given to :meth:`forward`
            (needed with ``equivariant_values``).
        equivariant_values: C, gated channels of Euclidean-variable values
            (0: invariant values only).
    """

    def __init__(
        self,
        num_features: int,
        num_features_qk: int,
        num_features_v: int,
        r_max: float,
        max_frequency: float,
        lebedev_order: int,
        qk_activation: str = "identity",
        zero_init: bool = True,
        tolerance: float = 1e-4,
        degrees: tuple[int, ...] = (0,),
        ev_degrees: tuple[int, ...] = (),
        equivariant_values: int = 0,
    ) -> None:
        super().__init__()
        if num_features_qk % 2:
            raise ValueError(f"num_features_qk={num_features_qk} must be even")
        degrees = tuple(degrees)
        if (
            degrees[:1] != (0,)
            or list(degrees) != sorted(set(degrees))
            or max(degrees) > 2
        ):
            raise ValueError(
                f"degrees must be sorted, unique, start at 0 and be ≤ 2: {degrees}"
            )
        check_quadrature(lebedev_order, max_frequency, r_max, tolerance, max(degrees))
        self.r_max = float(r_max)
        self.degrees = degrees
        #: degrees of the tensor outputs (l ≥ 1)
        self.tensor_degrees = degrees[1:]
        self.q = Dense(num_features, num_features_qk)
        self.k = Dense(num_features, num_features_qk)
        self.v = Dense(num_features, num_features_v)
        self.out = Dense(num_features_v, num_features, zero_init=zero_init)
        self.qk_act = nn.SiLU() if qk_activation == "silu" else nn.Identity()
        u, _ = lebedev_grid(lebedev_order)
        self.register_buffer("grid_u", u, persistent=False)
        weights = integration_weights(lebedev_order, degrees)  # (C, M)
        self.register_buffer("grid_weights", weights, persistent=False)
        freqs = rope_frequencies(num_features_qk // 2, max_frequency)
        self.register_buffer("frequencies", freqs, persistent=False)
        if self.tensor_degrees:
            n_t = len(self.tensor_degrees)
            w = torch.zeros(n_t, num_features_v)
            if not zero_init:
                nn.init.normal_(w, 0.0, 1.0 / math.sqrt(num_features_v))
            #: per tensor degree, weights of the value channels (n_tensor_degrees, D_v)
            self.out_tensor = nn.Parameter(w)
            comp = [
                k for k, l in enumerate(self.tensor_degrees) for _ in range(2 * l + 1)
            ]
            self.register_buffer(
                "component_degree",
                torch.tensor(comp, dtype=torch.long),
                persistent=False,
            )  # (C − 1,) tensor-degree index of each tensor component
        else:
            self.out_tensor = None
        self.ev_gate = self.out_ev = None
        if equivariant_values:
            if not ev_degrees:
                raise ValueError(
                    "equivariant_values needs the Euclidean variables' degrees"
                )
            self.ev_gate = Dense(num_features, equivariant_values)
            w = torch.zeros(len(ev_degrees), equivariant_values)
            if not zero_init:
                nn.init.normal_(w, 0.0, 1.0 / math.sqrt(equivariant_values))
            #: per Euclidean-variable degree, weights of its gated channels (n_ev, C)
            self.out_ev = nn.Parameter(w)
            comp = [k for k, l in enumerate(ev_degrees) for _ in range(2 * l + 1)]
            self.register_buffer(
                "ev_component_degree",
                torch.tensor(comp, dtype=torch.long),
                persistent=False,
            )  # (m_tot,) degree index of each Euclidean-variable component

    def forward(
        self,
        features: torch.Tensor,  # (N, F)
        positions: torch.Tensor,  # (N, 3)
        graph_index: torch.Tensor,  # (N,)
        n_atoms: torch.Tensor,  # (n_graphs,)
        ev: torch.Tensor | None = None,  # (N, m_tot)
    ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """Global updates; inputs are checked by the caller (``check_structures``).

        Args:
            features: invariant features h (N, F).
            positions: Cartesian positions (N, 3), Å.
            graph_index: structure of each atom (N,), sorted.
            n_atoms: atoms per structure (n_graphs,).
            ev: the Euclidean variables (components of ``ev_degrees``), needed
                with ``equivariant_values``.

        Returns:
            The invariant update (N, F); the tensor updates (N, Σ_{l≥1}(2l+1))
            (components of ``tensor_degrees`` in e3nn order, concatenated), or
            None without tensor degrees; the carried Euclidean variables
            (N, m_tot), or None without ``equivariant_values``.
        """
        q = self.qk_act(self.q(features))
        k = self.qk_act(self.k(features))
        v = self.v(features)  # (N, D_v)
        d_v = v.shape[1]
        if self.ev_gate is not None:
            if ev is None:
                raise ValueError("this EFA block carries Euclidean variables: pass ev")
            gated = ev[:, :, None] * self.ev_gate(features)[:, None, :]  # (N, m, C)
            v = torch.cat([v, gated.flatten(1)], dim=1)  # (N, D_v + m·C)
        y = euclidean_rope_integrals(
            q, k, v, positions, graph_index, n_atoms,
            self.frequencies, self.grid_u, self.grid_weights,
        )  # (N, C, D_v [+ m·C])  # fmt: skip
        d_features = self.out(y[:, 0, :d_v])
        d_tensor = d_ev = None
        if self.out_tensor is not None:
            w = self.out_tensor[self.component_degree]  # (C − 1, D_v)
            d_tensor = (y[:, 1:, :d_v] * w).sum(-1)  # (N, C − 1)
        if self.out_ev is not None:
            carried = y[:, 0, d_v:].view(y.shape[0], ev.shape[1], -1)  # (N, m, C)
            d_ev = (carried * self.out_ev[self.ev_component_degree]).sum(-1)
        return d_features, d_tensor, d_ev
