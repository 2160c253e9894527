"""Euclidean fast attention (EFA): global SO(3)-invariant attention at linear cost.

Reference: Frank, Chmiela, Müller, Unke, *Euclidean fast attention: machine
learning global atomic representations at linear cost*, arXiv 2412.08541 (JAX
code ``thorben-frank/euclidean_fast_attention``). Design notes:
``docs/global_attention.md``.

Construction (invariant output). For atom features h_i, queries, keys and values
q_i = W_q h_i, k_i = W_k h_i (D_qk features, D_qk even: D_qk/2 pairs) and
v_i = W_v h_i (D_v features). Pair k of q and k is rotated, on every direction
u_m of a Lebedev grid, by the angle ω_k u_m·r_i (Euclidean RoPE), and linear
attention is summed per structure and integrated over the sphere:

    y_i = Σ_m w_m q̃_{i,m}ᵀ S_{g(i),m} / √D_qk,   S_{g,m} = Σ_{j∈g} k̃_{j,m} v_jᵀ.

Since R(a)ᵀR(b) = R(b − a), the sphere average of cos(ω u·r) is j₀(ω|r|) and that
of sin(ω u·r) vanishes, this equals the global pair kernel

    y_i = Σ_{j∈g(i)} Σ_k (q_i^{(k)}·k_j^{(k)}) j₀(ω_k r_ij) v_j / √D_qk

(j = i included) up to the quadrature error, computed in O(N·M·D_qk·D_v) instead
of O(N²). Structures in a batch never see each other: S is a per-structure sum.

Quadrature rule (why a grid can be too coarse). A Lebedev rule of order p
integrates every polynomial of degree ≤ p on the sphere exactly, its weights are
positive (normalised here to sum 1) and its points come in ± pairs. By the
plane-wave (Jacobi–Anger) expansion
cos(b u·r̂) = Σ_{l even} (−1)^{l/2} (2l+1) j_l(b) P_l(u·r̂), and |P_l| ≤ 1, so for
every pair with phase b = ω|r_ij|

    |Σ_m w_m cos(b u_m·r̂) − j₀(b)| ≤ Σ_{l>p} (2l+1) |j_l(b)| =: ε_p(b),

while the sine part is exactly zero on a symmetric grid. The phases reach at most
b_max = ω_max·r_max (pairs within r_max); :func:`check_quadrature` requires
max_{b≤b_max} ε_p(b) ≤ tolerance. With the default tolerance 1e-4 this
reproduces Table S3 of the paper (``LEBEDEV_FREQUENCY_LOOKUP`` in the reference
code) to within ~10 %: order 11 (50 points) allows b_max ≤ 1.36π (table: π),
order 19 (146 points) 3.14π (3π), order 41 (590 points) 8.8π (9π).

Symbols → code names: h_i ``features`` (n_atoms, F); r_i ``positions``
(n_atoms, 3); u_m, w_m ``grid_u`` (M, 3), ``grid_w`` (M,); ω_k ``frequencies``
(D_qk/2,); g(i) ``graph_index`` (n_atoms,).
"""

from __future__ import annotations

import functools
import math

import numpy as np
import torch
from torch import nn

from equiforce.errors import EquiforceError
from equiforce.nn.layers import Dense

#: Lebedev orders SciPy's ``lebedev_rule`` provides, with their point counts.
LEBEDEV_POINTS = {
    3: 6, 5: 14, 7: 26, 9: 38, 11: 50, 13: 74, 15: 86, 17: 110, 19: 146, 21: 170,
    23: 194, 25: 230, 27: 266, 29: 302, 31: 350, 35: 434, 41: 590, 47: 770,
    53: 974, 59: 1202, 65: 1454, 71: 1730, 77: 2030, 83: 2354, 89: 2702,
    95: 3074, 101: 3470, 107: 3890, 113: 4334, 119: 4802, 125: 5294, 131: 5810,
}  # fmt: skip

#: Eager calls with more structures than this sum per structure slice by slice;
#: fewer structures (and every traced call) use one matrix product over all of
#: them (cost ∝ number of structures, but no data-dependent shapes).
ONE_PRODUCT_MAX_GRAPHS = 4


class GlobalAttentionInputError(EquiforceError):
    """A structure the global attention cannot take (periodic, or too extended)."""


# ------------------------------------------------------------------ quadrature
@functools.lru_cache(maxsize=32)
def _lebedev_numpy(order: int) -> tuple[np.ndarray, np.ndarray]:
    from scipy.integrate import lebedev_rule

    x, w = lebedev_rule(order)
    return np.ascontiguousarray(x.T), w / w.sum()


def lebedev_grid(order: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Lebedev points and weights of ``order`` (SciPy), float64.

    Returns:
        ``u`` (M, 3) unit vectors and ``w`` (M,) positive weights summing to 1
        (so the quadrature gives the sphere *average*).

    Raises:
        ValueError: ``order`` is not one SciPy provides.
    """
    if order not in LEBEDEV_POINTS:
        raise ValueError(
            f"Lebedev order {order} is not available; choose one of "
            f"{sorted(LEBEDEV_POINTS)}"
        )
    u, w = _lebedev_numpy(order)
    return torch.tensor(u, dtype=torch.float64), torch.tensor(w, dtype=torch.float64)


def quadrature_error_bound(order: int, max_phase: float) -> float:
    """The maximum over b ∈ [0, max_phase] of ε_p(b) = Σ_{l>p} (2l+1)|j_l(b)| (module note).

    Bounds the quadrature error of the j₀ kernel for every pair whose phase
    ω_k r_ij is at most ``max_phase`` (radians).
    """
    from scipy.special import spherical_jn

    ls = np.arange(order + 1, order + 1 + max(200, int(4 * max_phase) + 50))
    phases = np.linspace(0.0, max_phase, 129)[1:]
    tails = [float(((2 * ls + 1) * np.abs(spherical_jn(ls, b))).sum()) for b in phases]
    return max(tails, default=0.0)


def max_phase_for_order(order: int, tolerance: float) -> float:
    """Largest b_max (radians) with :func:`quadrature_error_bound` ≤ ``tolerance``."""
    lo, hi = 0.0, float(order) + 10.0
    for _ in range(50):  # bisection; the bound grows with b in this range
        mid = 0.5 * (lo + hi)
        lo, hi = (
            (mid, hi) if quadrature_error_bound(order, mid) <= tolerance else (lo, mid)
        )
    return lo


def check_quadrature(
    order: int, max_frequency: float, r_max: float, tolerance: float
) -> None:
    """Raise ValueError if the grid cannot integrate phases up to ω_max·r_max.

    Args:
        order: Lebedev order p.
        max_frequency: ω_max, rad/Å.
        r_max: largest pair distance handled, Å.
        tolerance: allowed ε_p (module note).
    """
    lebedev_grid(order)  # valid order
    phase = max_frequency * r_max
    bound = quadrature_error_bound(order, phase)
    if bound > tolerance:
        allowed = max_phase_for_order(order, tolerance)
        need = next(
            (
                p
                for p in sorted(LEBEDEV_POINTS)
                if quadrature_error_bound(p, phase) <= tolerance
            ),
            None,
        )
        hint = (
            f"use lebedev_order ≥ {need} ({LEBEDEV_POINTS[need]} points)"
            if need is not None
            else "no available grid is fine enough"
        )
        raise ValueError(
            f"Lebedev order {order} ({LEBEDEV_POINTS[order]} points) is too coarse for "
            f"max_frequency·r_max = {max_frequency:g} rad/Å × {r_max:g} Å = "
            f"{phase / math.pi:.3g}π rad: quadrature error bound {bound:.2e} > "
            f"tolerance {tolerance:.1e} (this grid allows ≤ {allowed / math.pi:.3g}π); "
            f"lower max_frequency or r_max, or {hint}"
        )


def rope_frequencies(num_pairs: int, max_frequency: float) -> torch.Tensor:
    """ω_k = linspace(0, ω_max, D_qk/2), rad/Å, float64 (one pair: ω_max)."""
    if num_pairs == 1:
        return torch.tensor([max_frequency], dtype=torch.float64)
    return torch.linspace(0.0, max_frequency, num_pairs, dtype=torch.float64)


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
    """Invariant EFA output y (N, D_v) (module note), per-structure sums.

    Positions are taken relative to their structure's centroid (the result is
    exactly translation invariant either way; this keeps phases small in float32).
    """
    n, d_qk = q.shape
    n_graphs = n_atoms.shape[0]
    rel = positions - centroids(positions, graph_index, n_graphs)[graph_index]
    angles = (rel @ grid_u.t())[..., None] * frequencies  # (N, M, D_qk/2)
    cos, sin = torch.cos(angles), torch.sin(angles)
    q_rot = rope(q, cos, sin) * (grid_w[:, None] / math.sqrt(d_qk))  # (N, M, D_qk)
    q_rot = q_rot.reshape(n, -1)  # (N, M·D_qk)
    k_rot = rope(k, cos, sin).reshape(n, -1)  # (N, M·D_qk)
    if n_graphs == 1:
        return q_rot @ (k_rot.t() @ v)
    if n_graphs <= ONE_PRODUCT_MAX_GRAPHS or is_tracing():
        return _one_product(q_rot, k_rot, v, graph_index, n_graphs)
    # eager, many structures: slice by slice (graph_index is sorted)
    counts = n_atoms.tolist()
    parts = [
        qs @ (ks.t() @ vs)
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
) -> torch.Tensor:
    """Per-structure linear attention as matrix products over all structures.

    Values are spread into one block per structure, S = k̃ᵀ V_block gives every
    structure's sum at once, and each atom keeps its own structure's block.
    """
    n, d_v = v.shape
    onehot = torch.nn.functional.one_hot(graph_index, n_graphs).to(v.dtype)  # (N, G)
    v_block = (onehot[:, :, None] * v[:, None, :]).reshape(n, -1)  # (N, G·D_v)
    y_all = (q_rot @ (k_rot.t() @ v_block)).view(n, n_graphs, d_v)
    return (y_all * onehot[:, :, None]).sum(1)


class EuclideanFastAttention(nn.Module):
    """Invariant EFA block: features (N, F) -> update (N, F), zero at initialisation.

    Args:
        num_features: width F of the input and output features.
        num_features_qk: D_qk (even), query/key width.
        num_features_v: D_v, value width.
        r_max: largest pair distance handled, Å.
        max_frequency: ω_max, rad/Å (frequencies linspace(0, ω_max, D_qk/2)).
        lebedev_order: order of the Lebedev grid (SciPy).
        qk_activation: "identity" or "silu" on q and k.
        zero_init: zero output projection (the block adds nothing at init).
        tolerance: allowed quadrature error bound (:func:`check_quadrature`).
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
    ) -> None:
        super().__init__()
        if num_features_qk % 2:
            raise ValueError(f"num_features_qk={num_features_qk} must be even")
        check_quadrature(lebedev_order, max_frequency, r_max, tolerance)
        self.r_max = float(r_max)
        self.q = Dense(num_features, num_features_qk)
        self.k = Dense(num_features, num_features_qk)
        self.v = Dense(num_features, num_features_v)
        self.out = Dense(num_features_v, num_features, zero_init=zero_init)
        self.qk_act = nn.SiLU() if qk_activation == "silu" else nn.Identity()
        u, w = lebedev_grid(lebedev_order)
        self.register_buffer("grid_u", u, persistent=False)
        self.register_buffer("grid_w", w, persistent=False)
        freqs = rope_frequencies(num_features_qk // 2, max_frequency)
        self.register_buffer("frequencies", freqs, persistent=False)

    def forward(
        self,
        features: torch.Tensor,  # (N, F)
        positions: torch.Tensor,  # (N, 3)
        graph_index: torch.Tensor,  # (N,)
        n_atoms: torch.Tensor,  # (n_graphs,)
    ) -> torch.Tensor:
        """Global update (N, F); inputs are checked by the caller (``check_structures``)."""
        q = self.qk_act(self.q(features))
        k = self.qk_act(self.k(features))
        y = euclidean_rope_attention(
            q, k, self.v(features), positions, graph_index, n_atoms,
            self.frequencies, self.grid_u, self.grid_w,
        )  # fmt: skip
        return self.out(y)
