"""The So3krates model: embedding, attention layers, readout (see the package doc)."""

from __future__ import annotations

import torch
from torch import nn

from equiforce.data.graph import AtomicGraph
from equiforce.models.base import NUM_ELEMENTS, PotentialModel
from equiforce.models.global_attention import build_global_attention
from equiforce.models.heads import HeadsMixin, ReadoutHeads
from equiforce.models.so3krates.config import So3kratesConfig
from equiforce.models.so3krates.fast import So3kratesFastPaths
from equiforce.models.so3krates.layer import DegreeContraction, So3kratesLayer
from equiforce.nn.efa import check_structures, is_tracing
from equiforce.nn.layers import MLP
from equiforce.nn.radial import Cutoff, make_basis
from equiforce.nn.spherical import SphericalHarmonics, safe_norm


class So3krates(So3kratesFastPaths, HeadsMixin, PotentialModel):
    """So3krates potential (see the package docstring for the symbol table)."""

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
        self.n_heads = cfg.readout_heads
        if self.n_heads > 1:  # an ensemble of readouts (equiforce.models.heads)
            self.readout = ReadoutHeads(
                F, cfg.readout_hidden, self.n_heads, act, cfg.zero_init_readout
            )
        else:
            self.readout = MLP(
                [F, cfg.readout_hidden, 1],
                activation=act,
                zero_init_last=cfg.zero_init_readout,
            )
        self._init_fast_paths()
        #: Euclidean fast attention branches by str(layer) (None: local model)
        self.global_attention = (
            None
            if cfg.global_attention is None
            else build_global_attention(
                cfg.global_attention, F, cfg.num_layers, degrees
            )
        )
        if cfg.global_attention is not None and cfg.global_attention.degrees[1:]:
            # (C_t, m_tot): EFA tensor components onto their Euclidean variables
            self.register_buffer(
                "efa_to_ev",
                efa_placement(cfg.global_attention.degrees[1:], degrees),
                persistent=False,
            )
        else:
            self.efa_to_ev = None
        if cfg.per_element_scale_shift:
            self.scale = nn.Parameter(torch.ones(NUM_ELEMENTS))
            self.shift = nn.Parameter(torch.zeros(NUM_ELEMENTS))
        else:
            self.scale = self.shift = None

    def _harmonics(self, vectors: torch.Tensor) -> torch.Tensor:
        """Y(r) of edge vectors (n, 3) -> (n, m_tot); (n, 0) without Euclidean variables."""
        if self.sph is None:
            return vectors.new_zeros((vectors.shape[0], 0))
        return self.sph(vectors)

    def check_graph(self, graph: AtomicGraph) -> None:
        """With global attention: open structures within its r_max only."""
        if self.global_attention is not None:
            check_structures(
                graph.positions, graph.graph_index, graph.n_atoms, graph.pbc,
                self.config.global_attention.r_max,
            )  # fmt: skip

    def _global_branch(
        self, t: int, features: torch.Tensor, ev: torch.Tensor, graph: AtomicGraph
    ) -> tuple[torch.Tensor, torch.Tensor | None] | None:
        """EFA updates of layer ``t``'s input, or None without a branch there.

        Returns the feature update (n_atoms, F) and the Euclidean-variable
        update (n_atoms, m_tot) of the tensor outputs and carried Euclidean
        variables (None without either).
        """
        efa = self.global_attention
        if efa is None or str(t) not in efa:
            return None
        d_f, d_t, d_ev = efa[str(t)](
            features, graph.positions, graph.graph_index, graph.n_atoms, ev
        )
        if d_t is not None:
            d_t = d_t @ self.efa_to_ev.to(d_t.dtype)
            d_ev = d_t if d_ev is None else d_ev + d_t
        return d_f, d_ev

    def atomic_energies(
        self,
        graph: AtomicGraph,
        edge_vectors: torch.Tensor,
        differentiable: bool = True,
    ) -> torch.Tensor:
        """Network atomic energies (n_atoms,) from So3krates features."""
        if self.n_heads > 1 and self.wants_heads:  # training: keep every head
            heads = self.head_atomic_energies(graph, edge_vectors, differentiable)
            self._keep_heads(graph, heads)
            return heads.mean(-1)
        features = self.node_features(graph, edge_vectors, differentiable)
        return self.readout_energies(graph.atomic_numbers, features)

    def head_atomic_energies(
        self, graph: AtomicGraph, edge_vectors: torch.Tensor, differentiable: bool
    ) -> torch.Tensor:
        """Every readout head's atomic energies (n_atoms, K) (one head: K = 1)."""
        features = self.node_features(graph, edge_vectors, differentiable)
        return self.head_energies(graph.atomic_numbers, features)

    def head_energies(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Each head's atomic energies (n_atoms, K) from the final features."""
        if self.n_heads == 1:
            return self.readout_energies(z, features)[:, None]
        e = self.readout(features)  # (n_atoms, K)
        if self.scale is not None:
            e = self.scale[z][:, None] * e + self.shift[z][:, None]
        return e

    def forward(self, graph: AtomicGraph, *args, **kwargs) -> dict[str, torch.Tensor]:
        """:meth:`PotentialModel.forward`, plus ``energy_heads`` when training heads."""
        if self.n_heads > 1:
            return self.forward_with_heads(super().forward, graph, *args, **kwargs)
        return super().forward(graph, *args, **kwargs)

    def embed(self, graph: AtomicGraph) -> torch.Tensor:
        """Initial invariant features f⁰ (n_atoms, F) (SO3LR adds charge and spin)."""
        return self.embedding(graph.atomic_numbers)

    def readout_energies(self, z: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Atomic energies (n_atoms,) from the final features (n_atoms, F)."""
        if self.n_heads > 1:  # the mean of the heads (one affine map if linear)
            e = self.readout.mean(features)  # (n_atoms,)
        else:
            e = self.readout(features).squeeze(-1)  # (n_atoms,)
        if self.scale is not None:
            e = self.scale[z] * e + self.shift[z]
        return e

    def node_features(
        self,
        graph: AtomicGraph,
        edge_vectors: torch.Tensor,
        differentiable: bool = True,
    ) -> torch.Tensor:
        """Final invariant features f^T (n_atoms, F) of every atom."""
        idx_i, idx_j = graph.edge_index[0], graph.edge_index[1]
        # symmetric per-edge quantities once per unordered pair when edges are paired
        n_dir = 2 if graph.edges_paired else 1
        n_pairs = idx_i.shape[0] // n_dir
        d = safe_norm(edge_vectors[:n_pairs])  # (n_pairs,)
        chunk = self._edge_chunk(idx_i.shape[0], differentiable)
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
        features = self.embed(graph)  # (n_atoms, F)
        n_atoms = features.shape[0]
        sph = None if chunked else self._harmonics(edge_vectors)  # (n_edges, m_tot)
        ev = features.new_zeros((n_atoms, self.m_tot))
        maps = self._active_projections
        if self.global_attention is not None and not is_tracing():
            self.check_graph(graph)  # traced callers check before the call
        for t, layer in enumerate(self.layers):
            branch = self._global_branch(t, features, ev, graph)  # parallel to layer t
            if maps is None:
                q, kv = layer.node_maps(features)
            else:  # the first layer's maps depend on the element alone
                by_element = t == 0 and maps.first_layer is not None
                proj = maps.first_layer[z] if by_element else None
                q, kv = layer.node_maps(features, maps.projections[t], proj)
            # the branch's Euclidean-variable update joins the messages' (before
            # the exchange block); its feature update is added after the layer
            d_f_global, d_ev_global = (None, None) if branch is None else branch
            if chunked:
                table = None if tables is None else tables[t]
                features, ev = self._chunked_layer(
                    layer, features, ev, q, kv, d, edge_vectors, phi, idx_i, idx_j,
                    chunk, n_dir, table, differentiable, d_ev_global,
                )  # fmt: skip
                if d_f_global is not None:
                    features = features + d_f_global
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
            if d_ev_global is not None:
                d_ev = d_ev + d_ev_global
            features, ev = layer.update(features, ev, d_f, d_ev)
            if d_f_global is not None:
                features = features + d_f_global
        return features


def efa_placement(
    efa_degrees: tuple[int, ...], ev_degrees: tuple[int, ...]
) -> torch.Tensor:
    """(Σ_{l∈efa}(2l+1), m_tot) 0/1 matrix putting EFA degree-l components on EV degree l."""
    rows = sum(2 * l + 1 for l in efa_degrees)
    mat = torch.zeros(rows, sum(2 * l + 1 for l in ev_degrees), dtype=torch.float64)
    row = 0
    for l in efa_degrees:
        col = sum(2 * k + 1 for k in ev_degrees[: ev_degrees.index(l)])
        mat[row : row + 2 * l + 1, col : col + 2 * l + 1] = torch.eye(2 * l + 1)
        row += 2 * l + 1
    return mat
