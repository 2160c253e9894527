"""SchNet: invariant continuous-filter convolutions (with a PhysNet-style option).

References:
    Schütt, Sauceda, Kindermans, Tkatchenko, Müller, "SchNet – A deep learning
    architecture for molecules and materials", J. Chem. Phys. 148, 241722 (2018)
    (cfconv, cosine cutoff, shifted softplus, Gaussian expansion with 0.1 Å
    spacing and γ = 10 Å⁻²); Schütt et al., NeurIPS 2017 (F = 64, T = 3 for MD17).
    Unke, Meuwly, "PhysNet", J. Chem. Theory Comput. 15, 3678 (2019) for the
    ``interaction="physnet"`` option (gated residual interaction blocks, linear
    filters G·g(r), exp-normal radial basis, N_res interaction 3 / atomic 2).

Symbols → code names:

=============  ==================  ===========================
paper          code                shape
=============  ==================  ===========================
x_i            ``features``        (n_atoms, F)
r_ij           ``edge_vectors``    (n_edges, 3)
e_k(d_ij)      ``rbf``             (n_edges, K)
f_cut(d_ij)    ``phi``             (n_edges,)
W(r_ij)        ``filters``         (n_edges, F)
v_i            ``d_features``      (n_atoms, F)
ssp            ``shifted_softplus``
=============  ==================  ===========================
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from equiforce.data.graph import AtomicGraph
from equiforce.models.base import NUM_ELEMENTS, PotentialModel
from equiforce.nn.layers import Dense
from equiforce.nn.radial import Cutoff, make_basis
from equiforce.nn.scatter import scatter_sum
from equiforce.nn.spherical import safe_norm

_LN2 = math.log(2.0)


def shifted_softplus(x: torch.Tensor) -> torch.Tensor:
    """ssp(x) = ln(½eˣ + ½) = softplus(x) − ln 2 (ssp(0) = 0)."""
    return nn.functional.softplus(x) - _LN2


class ShiftedSoftplus(nn.Module):
    """Module form of :func:`shifted_softplus`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Elementwise, any shape."""
        return shifted_softplus(x)


class SchNetConfig(BaseModel):
    """Hyperparameters of SchNet (defaults: Schütt et al. 2017/2018, MD17 setting).

    ``interaction="physnet"`` swaps the cfconv block for PhysNet's gated
    residual interaction block (Unke & Meuwly 2019); its own fields
    (``num_residual_*``) then take PhysNet's defaults.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_features: int = Field(64, gt=0, description="atom-wise feature width F")
    num_interactions: int = Field(3, gt=0, description="interaction blocks T")
    num_filters: int | None = Field(
        None, gt=0, description="cfconv filter width (None: equal to F)"
    )
    interaction: Literal["schnet", "physnet"] = Field(
        "schnet", description="cfconv block (SchNet) or gated residual block (PhysNet)"
    )
    cutoff: float = Field(5.0, gt=0, description="cutoff radius r_c, Å")
    cutoff_fn: Literal["cosine", "phys", "exponential"] = Field(
        "cosine", description="f_cut(d); SchNet 2018 uses the cosine cutoff"
    )
    radial_basis: Literal["gaussian", "physnet", "bernstein", "fourier"] = Field(
        "gaussian",
        description="radial expansion e_k(d) (SchNet: Gaussians on [0, r_c])",
    )
    num_radial: int = Field(
        51,
        gt=1,
        description="radial functions K (51 Gaussians = 0.1 Å spacing on [0, 5] Å)",
    )
    num_residual_interaction: int = Field(
        3,
        ge=0,
        description="PhysNet residual blocks inside an interaction (physnet only)",
    )
    num_residual_atomic: int = Field(
        2,
        ge=0,
        description="PhysNet residual blocks after an interaction (physnet only)",
    )
    readout_hidden: int | None = Field(
        None, gt=0, description="hidden width of the readout MLP (None: F/2, as SchNet)"
    )
    zero_init_readout: bool = Field(
        False, description="zero last readout layer: E ≡ E0 at initialisation"
    )


PRESETS: dict[str, dict] = {
    "default": {},
    "schnetpack": {"num_features": 128, "num_radial": 20},
    "physnet": {
        "interaction": "physnet",
        "num_features": 128,
        "num_interactions": 5,
        "radial_basis": "physnet",
        "num_radial": 64,
        "cutoff_fn": "phys",
    },
    "small": {"num_features": 32, "num_interactions": 2, "num_radial": 20},
}


class CFConvInteraction(nn.Module):
    """SchNet interaction: x ← x + Dense(ssp(Dense(cfconv(Dense(x), W))))."""

    def __init__(self, n_features: int, n_filters: int, n_radial: int) -> None:
        super().__init__()
        self.in2f = Dense(n_features, n_filters, bias=False)
        self.filter1 = Dense(n_radial, n_filters)
        self.filter2 = Dense(n_filters, n_filters)
        self.f2out = Dense(n_filters, n_features)
        self.out = Dense(n_features, n_features)

    def forward(
        self,
        features: torch.Tensor,  # (n_atoms, F)
        rbf: torch.Tensor,  # (n_edges, K)
        phi: torch.Tensor,  # (n_edges,)
        idx_i: torch.Tensor,  # (n_edges,)
        idx_j: torch.Tensor,  # (n_edges,)
    ) -> torch.Tensor:
        """Return updated features (n_atoms, F)."""
        filters = self.filter2(shifted_softplus(self.filter1(rbf)))  # (n_edges, Ff)
        filters = filters * phi[:, None]
        h = self.in2f(features)  # (n_atoms, Ff)
        msg = h.index_select(0, idx_j) * filters  # (n_edges, Ff)
        conv = scatter_sum(msg, idx_i, features.shape[0])  # (n_atoms, Ff)
        d_features = self.out(shifted_softplus(self.f2out(conv)))  # (n_atoms, F)
        return features + d_features


class ResidualBlock(nn.Module):
    """PhysNet residual block: x + W₂ σ(W₁ σ(x) + b₁) + b₂ (pre-activation)."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.dense1 = Dense(width, width)
        self.dense2 = Dense(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(n, width) -> (n, width)."""
        h = self.dense1(shifted_softplus(x))
        return x + self.dense2(shifted_softplus(h))


class PhysNetInteraction(nn.Module):
    """PhysNet interaction + atomic residual stack (Unke & Meuwly 2019, Fig. 2).

    v_i = W_I σ(x_i) + Σ_j (G g(r_ij) f_cut) ∘ W_J σ(x_j); v_i ← residual blocks;
    x_i ← u ∘ x_i + W σ(v_i); x_i ← residual blocks.
    """

    def __init__(
        self, n_features: int, n_radial: int, n_res_int: int, n_res_atom: int
    ) -> None:
        super().__init__()
        self.filter = Dense(n_radial, n_features, bias=False)  # G
        self.dense_i = Dense(n_features, n_features)
        self.dense_j = Dense(n_features, n_features)
        self.res_int = nn.Sequential(
            *(ResidualBlock(n_features) for _ in range(n_res_int))
        )
        self.dense_v = Dense(n_features, n_features)
        self.gate = nn.Parameter(torch.ones(n_features))  # u
        self.res_atom = nn.Sequential(
            *(ResidualBlock(n_features) for _ in range(n_res_atom))
        )

    def forward(
        self,
        features: torch.Tensor,  # (n_atoms, F)
        rbf: torch.Tensor,  # (n_edges, K)
        phi: torch.Tensor,  # (n_edges,)
        idx_i: torch.Tensor,  # (n_edges,)
        idx_j: torch.Tensor,  # (n_edges,)
    ) -> torch.Tensor:
        """Return updated features (n_atoms, F)."""
        act = shifted_softplus(features)
        filters = self.filter(rbf) * phi[:, None]  # (n_edges, F)
        msg = self.dense_j(act).index_select(0, idx_j) * filters
        v = self.dense_i(act) + scatter_sum(
            msg, idx_i, features.shape[0]
        )  # (n_atoms, F)
        v = self.res_int(v)
        features = self.gate * features + self.dense_v(shifted_softplus(v))
        return self.res_atom(features)


class SchNet(PotentialModel):
    """SchNet potential (Schütt et al. 2018); see the module docstring for symbols."""

    def __init__(self, config: SchNetConfig, e0: torch.Tensor | None = None) -> None:
        super().__init__(cutoff=config.cutoff, e0=e0)
        self.config = config
        cfg = config
        F = cfg.num_features
        self.embedding = nn.Embedding(NUM_ELEMENTS, F)
        nn.init.normal_(self.embedding.weight, 0.0, 1.0)
        self.rbf = make_basis(cfg.radial_basis, cfg.num_radial, cfg.cutoff)
        self.cutoff_fn = Cutoff(cfg.cutoff_fn, cfg.cutoff)
        if cfg.interaction == "schnet":
            n_filters = cfg.num_filters or F
            blocks = [
                CFConvInteraction(F, n_filters, cfg.num_radial)
                for _ in range(cfg.num_interactions)
            ]
        else:
            blocks = [
                PhysNetInteraction(
                    F,
                    cfg.num_radial,
                    cfg.num_residual_interaction,
                    cfg.num_residual_atomic,
                )
                for _ in range(cfg.num_interactions)
            ]
        self.interactions = nn.ModuleList(blocks)
        hidden = cfg.readout_hidden or max(F // 2, 1)
        self.readout = nn.Sequential(
            Dense(F, hidden),
            ShiftedSoftplus(),
            Dense(hidden, 1, zero_init=cfg.zero_init_readout),
        )

    def atomic_energies(
        self,
        graph: AtomicGraph,
        edge_vectors: torch.Tensor,
        differentiable: bool = True,
    ) -> torch.Tensor:
        """Network atomic energies (n_atoms,) from the final SchNet features."""
        idx_i, idx_j = graph.edge_index[0], graph.edge_index[1]
        d = safe_norm(edge_vectors)  # (n_edges,)
        rbf = self.rbf(d).to(edge_vectors.dtype)  # (n_edges, K)
        phi = self.cutoff_fn(d)  # (n_edges,)
        features = self.embedding(graph.atomic_numbers)  # (n_atoms, F)
        for block in self.interactions:
            features = block(features, rbf, phi, idx_i, idx_j)
        return self.readout(features).squeeze(-1)  # (n_atoms,)
