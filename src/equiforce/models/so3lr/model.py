"""SO3LR: So3krates with charge/spin inputs and physical long-range terms.

E = Σ_i [E0 + e_i^local + e_i^zbl + e_i^electrostatics + e_i^dispersion]; each term
is a named output (``energy:<term>``, ``atomic_energies:<term>``) through
:mod:`equiforce.energy`. The backbone is :class:`So3krates` (short-range pairs,
r_c = 4.5 Å); its final features f^T also feed the charge and Hirshfeld heads,
whose outputs drive the long-range terms on the long-range pairs
(``graph.lr_edge_index``, r_lr = 12 Å by default).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.energy import LOCAL
from equiforce.models.longrange import (
    Dispersion,
    Electrostatics,
    ZBLRepulsion,
    conserve_charge,
)
from equiforce.models.longrange.ewald import periodic_coulomb
from equiforce.models.longrange.free_atoms import MAX_Z
from equiforce.models.longrange.pair_chunks import pair_energy_sums
from equiforce.models.so3krates.fast import NodeProjections
from equiforce.models.so3krates.model import So3krates
from equiforce.models.so3lr.config import SO3LRConfig
from equiforce.models.so3lr.embedding import ChargeSpinEmbedding
from equiforce.models.so3lr.heads import ChargeHead, HirshfeldHead
from equiforce.nn.efa import is_tracing
from equiforce.nn.scatter import scatter_sum

#: Names of the terms beside ``local``, and of the per-atom properties.
ZBL, ELECTROSTATICS, DISPERSION = "zbl", "electrostatics", "dispersion"
CHARGES, HIRSHFELD, DIPOLE = keys.CHARGES, keys.HIRSHFELD_RATIOS, keys.DIPOLE


class SO3LR(So3krates):
    """SO3LR potential (see the module docstring).

    Attributes:
        lr_cutoff: cutoff of the long-range pairs, Å (None without long-range
            terms); :class:`~equiforce.potential.Potential` and the datasets build
            ``graph.lr_edge_index`` with it.
        compiled_inputs: the graph fields beyond the short-range ones that the
            compiled backends (:mod:`equiforce.accel.compiled`) pass through:
            the long-range pairs (when there are long-range terms), charge, spin.
        property_outputs: what ``forward(..., properties=True)`` adds (the
            labels ``training.dipole_weight``/``hirshfeld_weight`` train).
        graph_inputs: per-structure inputs it reads (``graph.charge``/``spin``).
    """

    property_outputs: tuple[str, ...] = (CHARGES, HIRSHFELD, DIPOLE)
    graph_inputs: tuple[str, ...] = (keys.CHARGE, keys.SPIN)

    def __init__(self, config: SO3LRConfig, e0: torch.Tensor | None = None) -> None:
        super().__init__(config, e0=e0)
        cfg = config
        for layer in self.layers:
            for norm in (layer.norm1, layer.norm2):
                if isinstance(norm, nn.LayerNorm):
                    norm.eps = cfg.layer_norm_eps
        F = cfg.num_features
        self.charge_embedding = ChargeSpinEmbedding(F) if cfg.charge_embedding else None
        self.spin_embedding = ChargeSpinEmbedding(F) if cfg.spin_embedding else None
        n_embeddings = (
            1 + (self.charge_embedding is not None) + (self.spin_embedding is not None)
        )
        self.embedding_scale = 1.0 / math.sqrt(n_embeddings)
        self.charge_head = ChargeHead(F, cfg.head_hidden)
        self.hirshfeld_head = HirshfeldHead(F, cfg.head_hidden)
        if cfg.zbl:
            self.terms[ZBL] = ZBLRepulsion(cfg.cutoff, cfg.cutoff_fn)
        if cfg.electrostatics:
            self.terms[ELECTROSTATICS] = Electrostatics(
                cfg.electrostatics_sigma, cfg.lr_cutoff, periodic_coulomb(cfg)
            )
        if cfg.dispersion:
            self.terms[DISPERSION] = Dispersion(
                cfg.dispersion_beta, cfg.lr_cutoff, cfg.dispersion_damping
            )
        self.lr_cutoff = cfg.long_range_cutoff
        pairs = () if self.lr_cutoff is None else ("lr_edge_index", "lr_edge_shifts")
        self.compiled_inputs: tuple[str, ...] = (*pairs, keys.CHARGE, keys.SPIN)
        #: filled by :meth:`energy_terms` during ``forward(properties=True)``
        self._captured: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------ backbone
    def embed(self, graph: AtomicGraph) -> torch.Tensor:
        """f⁰ = (E(Z) + e_Q + e_S)/√(number of embeddings), (n_atoms, F)."""
        z, gi = graph.atomic_numbers, graph.graph_index
        f = self.embedding(z)  # (n_atoms, F)
        n_graphs = graph.n_atoms.shape[0]
        if self.charge_embedding is not None:
            charge = f.new_zeros(n_graphs) if graph.charge is None else graph.charge
            f = f + self.charge_embedding(z, charge, gi)
        if self.spin_embedding is not None:
            spin = f.new_zeros(n_graphs) if graph.spin is None else graph.spin
            f = f + self.spin_embedding(z, 2.0 * spin, gi)  # unpaired electrons
        return f * self.embedding_scale

    def node_projections(self) -> NodeProjections:
        """As So3krates', without per-element first-layer maps (f⁰ depends on Q, S)."""
        return super().node_projections()._replace(first_layer=None)

    def check_graph(self, graph: AtomicGraph) -> None:
        """Elements with dispersion data; long-range pairs when the model needs them.

        Called eagerly before traced calls (which cannot raise on data).
        """
        super().check_graph(graph)
        z = graph.atomic_numbers
        if z.numel() and int(z.max()) > MAX_Z:
            raise ValueError(
                f"SO3LR has free-atom dispersion data for Z ≤ {MAX_Z}, got Z={int(z.max())}"
            )
        if self.lr_cutoff is not None and graph.lr_edge_index is None:
            graph.lr_edge_vectors()  # raises, naming what is missing

    def compiled_accepts(self, graph: AtomicGraph) -> bool:
        """Whether the compiled backends can take ``graph``.

        Not with 3D-periodic structures under Ewald/PME electrostatics (the
        periodic sum runs eagerly, with a data-dependent split of the batch).
        """
        term = self.terms[ELECTROSTATICS] if ELECTROSTATICS in self.terms else None
        if term is None or term.periodic is None:
            return True
        return not bool(graph.pbc.all(dim=1).any())

    @property
    def pair_chunk_bytes(self) -> int | None:
        """Memory budget of one chunk of long-range pairs, bytes (None: no terms).

        Electrostatics and dispersion evaluate their pairs in chunks of this
        many bytes of intermediates (:mod:`equiforce.models.longrange.pair_chunks`;
        default 256 MiB ≈ 10⁶ float32 pairs); a structure whose pairs fit in one
        chunk runs as one. Set it to trade memory for per-chunk overhead.
        """
        sizes = [
            t.chunk_bytes for t in self.terms.values() if hasattr(t, "chunk_bytes")
        ]
        return sizes[0] if sizes else None

    @pair_chunk_bytes.setter
    def pair_chunk_bytes(self, value: int) -> None:
        if int(value) < 1:
            raise ValueError(f"pair_chunk_bytes must be ≥ 1, got {value}")
        for term in self.terms.values():
            if hasattr(term, "chunk_bytes"):
                term.chunk_bytes = int(value)

    # ------------------------------------------------------------- outputs
    def charges(self, graph: AtomicGraph, features: torch.Tensor) -> torch.Tensor:
        """Partial charges (n_atoms,) e, summing to ``graph.charge`` per structure."""
        raw = self.charge_head(graph.atomic_numbers, features)
        return conserve_charge(raw, graph.graph_index, graph.n_atoms, graph.charge)

    def energy_terms(
        self, graph: AtomicGraph, differentiable: bool
    ) -> dict[str, torch.Tensor]:
        """Per-atom energies of ``local`` and every long-range term, by name."""
        z = graph.atomic_numbers
        if not is_tracing():  # traced callers check before the call
            self.check_graph(graph)
        vectors = graph.edge_vectors()  # (n_edges, 3)
        features = self.node_features(graph, vectors, differentiable)
        out = {LOCAL: self.readout_energies(z, features)}
        if ZBL in self.terms:
            out[ZBL] = self.terms[ZBL](graph, vectors)
        q = h = None
        if self.lr_cutoff is not None:
            # electrostatics (shifted kernel) and dispersion are symmetric in
            # (i, j): of a paired list (pair P + k reverses pair k) only the
            # first half is evaluated, each pair's energy going to both atoms
            # (half the pair work); both share one pass over the pairs, which
            # computes each pair's distance once, in chunks for large
            # structures (longrange/pair_chunks.py)
            energies, names = [], []
            if ELECTROSTATICS in self.terms:
                q = self.charges(graph, features)
                term = self.terms[ELECTROSTATICS]
                if term.periodic_graphs(graph) is None:
                    energies.append(term.pair_energy(q))
                    names.append(ELECTROSTATICS)
                else:  # Ewald/PME (eager): its own pass, on the full list or none
                    out[ELECTROSTATICS] = term(graph, None, q)
            if DISPERSION in self.terms:
                h = self.hirshfeld_head(z, features)
                energies.append(self.terms[DISPERSION].pair_energy(z, h))
                names.append(DISPERSION)
            if energies:
                both_ways = graph.edges_paired
                index, shifts = graph.lr_edge_index, graph.lr_edge_shifts
                if both_ways:  # views: no copy of the pair list
                    half = index.shape[1] // 2
                    index, shifts = index[:, :half], shifts[:half]
                sums = pair_energy_sums(
                    energies, graph, index, shifts, None, self.pair_chunk_bytes,
                    both_ways,
                )  # fmt: skip
                out.update(zip(names, sums, strict=True))
        if self._captured is not None:  # forward(properties=True): same features
            props = self._properties(graph, features, q, h)
            if not differentiable:
                props = {k: v.detach() for k, v in props.items()}
            self._captured.update(props)
        return out

    def _properties(
        self,
        graph: AtomicGraph,
        features: torch.Tensor,  # (n_atoms, F)
        q: torch.Tensor | None = None,
        h: torch.Tensor | None = None,
    ) -> dict[str, torch.Tensor]:
        """Charges and Hirshfeld ratios (n_atoms,) and dipoles (n_graphs, 3)."""
        q = self.charges(graph, features) if q is None else q
        h = self.hirshfeld_head(graph.atomic_numbers, features) if h is None else h
        dipole = scatter_sum(
            q[:, None] * graph.positions, graph.graph_index, graph.n_graphs
        )
        return {CHARGES: q, HIRSHFELD: h, DIPOLE: dipole}

    def forward(
        self,
        graph: AtomicGraph,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool | None = None,
        properties: bool = False,
    ) -> dict[str, torch.Tensor]:
        """As :meth:`PotentialModel.forward`; ``properties`` adds charges and more.

        Args:
            graph: batch of structures.
            compute_forces: return ``forces`` (n_atoms, 3) eV/Å.
            compute_stress: return ``stress`` (n_graphs, 3, 3) eV/Å³.
            create_graph: keep the autograd graph (default: ``self.training``).
            properties: also return ``charges`` and ``hirshfeld_ratios``
                (n_atoms,) and ``dipole`` (n_graphs, 3) e·Å, computed from the
                features of the energy (one backbone pass); differentiable
                with respect to the weights when ``create_graph`` is.
        """
        if not properties:
            return super().forward(graph, compute_forces, compute_stress, create_graph)
        self._captured = {}
        try:
            out = super().forward(graph, compute_forces, compute_stress, create_graph)
            props = self._captured
        finally:
            self._captured = None
        order = self.atom_order(graph)  # the order the call ran in (large batches)
        if order is not None:
            inv = order[1]
            props = props | {
                k: props[k].index_select(0, inv) for k in (CHARGES, HIRSHFELD)
            }
        return out | props

    @torch.no_grad()
    def atomic_properties(self, graph: AtomicGraph) -> dict[str, torch.Tensor]:
        """Partial charges (n_atoms,) e, Hirshfeld ratios (n_atoms,) and dipoles.

        ``dipole`` (n_graphs, 3) e·Å is Σ_i q_i r_i (meaningful for open
        structures; origin-dependent for charged ones).
        """
        features = self.node_features(graph, graph.edge_vectors(), False)
        return self._properties(graph, features)
