"""NequIP-like potential: e3nn irreps features and Clebsch–Gordan tensor products.

Reference: Batzner et al., "E(3)-equivariant graph neural networks for
data-efficient and accurate interatomic potentials", Nat. Commun. 13, 2453
(2022), arXiv 2101.03164. Defaults follow the paper and the reference code's
example configuration: F = 32 features per irrep, 4 interaction blocks,
l_max = 2 with even and odd parity, 8 trainable Bessel functions, polynomial
cutoff p = 6, r_c = 4 Å, radial MLP with 2 hidden layers of 64 SiLU units,
gated nonlinearities (SiLU on even scalars and gates, tanh on odd ones),
self-connection through a tensor product with the species attributes, and a
two-linear atomwise readout of the 0e scalars. The last block produces only
the 0e channels the readout reads (the same energy, without dead l > 0 work).

Deviations (stated so results are read correctly): species attributes are a
learned ``Embedding(119, num_species_channels)`` instead of a one-hot over the
dataset's elements (the same for any set of elements, so checkpoints do not
depend on a type map); the spherical harmonics come from
:class:`equiforce.nn.spherical.SphericalHarmonics` (e3nn's basis, "component"
normalisation). The energy is read from 0e scalars only, so the model is
O(3)-invariant (rotations and reflections).

Symbols → code names:

===============  ===================  =============================
paper            code                 shape
===============  ===================  =============================
V_i^{(l,p)}      ``features``         (n_atoms, irreps.dim)
Z_i (one-hot)    ``attrs``            (n_atoms, A)
r_ij             ``edge_vectors``     (n_edges, 3)
Y^l(r̂_ij)        ``sph``              (n_edges, (l_max+1)²)
B(d_ij)          ``bessel``           (n_edges, n_bessel)
u(d_ij)          ``envelope``         (n_edges,)
R(d_ij)          ``weights``          (n_edges, tp.weight_numel)
===============  ===================  =============================
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from e3nn import o3
from e3nn.nn import FullyConnectedNet, Gate
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

from equiforce.data.graph import AtomicGraph
from equiforce.models.base import NUM_ELEMENTS, PotentialModel
from equiforce.nn.scatter import scatter_sum
from equiforce.nn.spherical import SphericalHarmonics, safe_norm


class NequIPConfig(BaseModel):
    """Hyperparameters of the NequIP-like model (defaults: Batzner et al. 2022)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    num_features: int = Field(
        32, gt=0, description="multiplicity of every irrep (l, p)"
    )
    num_layers: int = Field(4, gt=0, description="interaction blocks")
    l_max: int = Field(2, ge=1, le=3, description="largest degree of features and Y^l")
    parity: Literal["full", "restricted"] = Field(
        "full",
        description="'full': even and odd irreps per l; 'restricted': only p = (−1)^l",
    )
    cutoff: float = Field(4.0, gt=0, description="cutoff radius r_c, Å")
    num_bessel: int = Field(8, gt=0, description="Bessel radial functions")
    trainable_bessel: bool = Field(True, description="learn the Bessel frequencies nπ")
    polynomial_p: int = Field(
        6, ge=2, description="power p of the polynomial envelope u(d)"
    )
    radial_hidden: int = Field(
        64, gt=0, description="width of the radial MLP hidden layers"
    )
    radial_layers: int = Field(2, ge=1, description="hidden layers of the radial MLP")
    num_species_channels: int = Field(
        8,
        gt=0,
        description="width A of the learned species attributes (self-connection)",
    )
    avg_num_neighbors: float | None = Field(
        None,
        gt=0,
        description="messages are divided by √(this); None: no normalisation",
    )
    resnet: bool = Field(False, description="residual update when irreps in = out")
    readout_hidden: int | None = Field(
        None, gt=0, description="width of the hidden 0e readout (None: F/2)"
    )
    zero_init_readout: bool = Field(
        False, description="zero last readout layer: E ≡ E0 at initialisation"
    )


PRESETS: dict[str, dict] = {
    "default": {},
    "lmax1": {"l_max": 1},
    "lmax3": {"l_max": 3},
    "large": {"num_features": 64, "num_layers": 5, "l_max": 3},
    "small": {"num_features": 16, "num_layers": 2, "l_max": 2},
}


class BesselEnvelope(nn.Module):
    """Bessel basis (2/r_c)·sin(b_n d / r_c)/d, b_n = nπ, times the polynomial envelope.

    u(x) = 1 − (p+1)(p+2)/2·x^p + p(p+2)·x^{p+1} − p(p+1)/2·x^{p+2}, x = d/r_c
    (value and first two derivatives vanish at r_c).
    """

    def __init__(self, num: int, r_c: float, p: int, trainable: bool) -> None:
        super().__init__()
        freq = torch.arange(1, num + 1, dtype=torch.get_default_dtype()) * math.pi
        self.freq = nn.Parameter(freq, requires_grad=trainable)
        self.r_c, self.p = float(r_c), float(p)

    def envelope(self, d: torch.Tensor) -> torch.Tensor:
        """(n_edges,) -> (n_edges,)."""
        x, p = d / self.r_c, self.p
        u = (
            1.0
            - 0.5 * (p + 1.0) * (p + 2.0) * x**p
            + p * (p + 2.0) * x ** (p + 1.0)
            - 0.5 * p * (p + 1.0) * x ** (p + 2.0)
        )
        return torch.where(x < 1.0, u, torch.zeros_like(u))

    def forward(self, d: torch.Tensor) -> torch.Tensor:
        """(n_edges,) -> (n_edges, num): basis · envelope."""
        safe = d.clamp(min=1e-9)[:, None]
        basis = (2.0 / self.r_c) * torch.sin(self.freq * safe / self.r_c) / safe
        return basis * self.envelope(d)[:, None]


def hidden_irreps(cfg: NequIPConfig) -> o3.Irreps:
    """Target feature irreps F×(l, p) for l ≤ l_max (both parities or p = (−1)^l)."""
    terms = []
    for l in range(cfg.l_max + 1):
        natural = 1 if l % 2 == 0 else -1
        parities = (natural, -natural) if cfg.parity == "full" else (natural,)
        terms += [(cfg.num_features, (l, p)) for p in parities]
    return o3.Irreps(terms)


class NequIPInteraction(nn.Module):
    """Linear → TP(V_j ⊗ Y(r̂_ij), R(d_ij)) → Σ_j → Linear, + self-connection, → Gate."""

    def __init__(
        self,
        irreps_in: o3.Irreps,
        irreps_sh: o3.Irreps,
        cfg: NequIPConfig,
        scalars_only: bool = False,
    ) -> None:
        super().__init__()
        target = hidden_irreps(cfg)
        if scalars_only:  # last block: the readout reads 0e only, the rest is dead
            target = o3.Irreps([(m, ir) for m, ir in target if ir == o3.Irrep("0e")])
        mid, instructions = [], []
        for i, (mul, ir_in) in enumerate(irreps_in):
            for j, (_, ir_sh) in enumerate(irreps_sh):
                for ir_out in ir_in * ir_sh:
                    if ir_out in target:
                        instructions.append((i, j, len(mid), "uvu", True))
                        mid.append((mul, ir_out))
        irreps_mid = o3.Irreps(mid)
        reached = {ir for _, ir in irreps_mid}
        scalars = o3.Irreps(
            [(m, ir) for m, ir in target if ir.l == 0 and ir in reached]
        )
        gated = o3.Irreps([(m, ir) for m, ir in target if ir.l > 0 and ir in reached])
        gates = o3.Irreps([(m, "0e") for m, _ in gated])
        act = {1: nn.functional.silu, -1: torch.tanh}
        self.gate = Gate(
            scalars,
            [act[ir.p] for _, ir in scalars],
            gates,
            [act[1]] * len(gates),
            gated,
        )
        self.irreps_in, self.irreps_out = irreps_in, self.gate.irreps_out
        self.linear_in = o3.Linear(irreps_in, irreps_in)
        self.tp = o3.TensorProduct(
            irreps_in,
            irreps_sh,
            irreps_mid,
            instructions,
            shared_weights=False,
            internal_weights=False,
        )
        sizes = [cfg.num_bessel] + [cfg.radial_hidden] * cfg.radial_layers
        self.radial = FullyConnectedNet(
            [*sizes, self.tp.weight_numel], nn.functional.silu
        )
        self.linear_out = o3.Linear(irreps_mid, self.gate.irreps_in)
        attrs = o3.Irreps(f"{cfg.num_species_channels}x0e")
        self.self_connection = o3.FullyConnectedTensorProduct(
            irreps_in, attrs, self.gate.irreps_in
        )
        avg = cfg.avg_num_neighbors
        self.inv_sqrt_neighbors = 1.0 if avg is None else 1.0 / math.sqrt(avg)
        self.resnet = cfg.resnet and self.irreps_out == irreps_in

    def forward(
        self,
        features: torch.Tensor,  # (n_atoms, irreps_in.dim)
        attrs: torch.Tensor,  # (n_atoms, A)
        sph: torch.Tensor,  # (n_edges, (l_max+1)²)
        bessel: torch.Tensor,  # (n_edges, n_bessel)
        idx_i: torch.Tensor,  # (n_edges,)
        idx_j: torch.Tensor,  # (n_edges,)
    ) -> torch.Tensor:
        """Return the new features (n_atoms, irreps_out.dim)."""
        n_atoms = features.shape[0]
        h = self.linear_in(features)
        weights = self.radial(bessel)  # (n_edges, tp.weight_numel)
        msg = self.tp(h.index_select(0, idx_j), sph, weights)  # (n_edges, mid.dim)
        conv = scatter_sum(msg, idx_i, n_atoms) * self.inv_sqrt_neighbors
        pre = self.linear_out(conv) + self.self_connection(features, attrs)
        out = self.gate(pre)  # (n_atoms, irreps_out.dim)
        return features + out if self.resnet else out


class NequIP(PotentialModel):
    """NequIP-like O(3)-equivariant potential (Batzner et al. 2022)."""

    def __init__(self, config: NequIPConfig, e0: torch.Tensor | None = None) -> None:
        super().__init__(cutoff=config.cutoff, e0=e0)
        self.config = config
        cfg = config
        F = cfg.num_features
        self.embedding = nn.Embedding(NUM_ELEMENTS, F)  # → F×0e
        self.species_attrs = nn.Embedding(NUM_ELEMENTS, cfg.num_species_channels)
        nn.init.normal_(self.embedding.weight, 0.0, 1.0)
        nn.init.normal_(self.species_attrs.weight, 0.0, 1.0)
        self.irreps_sh = o3.Irreps.spherical_harmonics(cfg.l_max)
        self.sph = SphericalHarmonics(tuple(range(cfg.l_max + 1)))
        self.sph_scale = math.sqrt(4.0 * math.pi)  # integral → component normalisation
        self.radial = BesselEnvelope(
            cfg.num_bessel, cfg.cutoff, cfg.polynomial_p, cfg.trainable_bessel
        )
        irreps = o3.Irreps(f"{F}x0e")
        layers = []
        for t in range(cfg.num_layers):
            last = t == cfg.num_layers - 1
            layers.append(NequIPInteraction(irreps, self.irreps_sh, cfg, last))
            irreps = layers[-1].irreps_out
        self.layers = nn.ModuleList(layers)
        hidden = o3.Irreps(f"{cfg.readout_hidden or max(F // 2, 1)}x0e")
        self.readout_hidden = o3.Linear(irreps, hidden)  # only 0e channels connect
        self.readout_out = o3.Linear(hidden, o3.Irreps("1x0e"))
        if cfg.zero_init_readout:
            with torch.no_grad():
                self.readout_out.weight.zero_()

    def atomic_energies(
        self,
        graph: AtomicGraph,
        edge_vectors: torch.Tensor,
        differentiable: bool = True,
    ) -> torch.Tensor:
        """Network atomic energies (n_atoms,) from the final 0e scalars."""
        idx_i, idx_j = graph.edge_index[0], graph.edge_index[1]
        d = safe_norm(edge_vectors)  # (n_edges,)
        sph = self.sph(edge_vectors) * self.sph_scale  # (n_edges, (l_max+1)²)
        bessel = self.radial(d)  # (n_edges, n_bessel)
        z = graph.atomic_numbers
        features = self.embedding(z)  # (n_atoms, F)
        attrs = self.species_attrs(z)  # (n_atoms, A)
        for layer in self.layers:
            features = layer(features, attrs, sph, bessel, idx_i, idx_j)
        return self.readout_out(self.readout_hidden(features)).squeeze(-1)  # (n_atoms,)
