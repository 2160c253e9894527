"""``AtomicGraph``: a batch of atomic structures with their neighbour graph.

Field table (see docs/conventions.md):

==================  ========================  =========================================
field               shape / dtype             meaning
==================  ========================  =========================================
positions           (n_atoms, 3) float        Cartesian positions, Å
atomic_numbers      (n_atoms,) int64          Z
graph_index         (n_atoms,) int64          structure of each atom, sorted
edge_index          (2, n_edges) int64        row 0 = centre i, row 1 = neighbour j
edge_shifts         (n_edges, 3) float        image multiples S; r_ij = r_j - r_i + S·cell
cell                (n_graphs, 3, 3) float    lattice vectors as rows; zeros if open
pbc                 (n_graphs, 3) bool        periodic flags
n_atoms             (n_graphs,) int64         atoms per structure
targets             dict[str, Tensor]         energy (n_graphs,), forces (n_atoms, 3), ...
                                              (names and shapes: equiforce.keys)
edges_paired        bool                      edge P+k reverses edge k (P = n_edges/2)
charge              (n_graphs,) float | None  total charge Q, e (None: neutral)
spin                (n_graphs,) float | None  total spin S (2S unpaired electrons; None: 0)
lr_edge_index       (2, n_lr) int64 | None    long-range pairs (same layout as edge_index)
lr_edge_shifts      (n_lr, 3) float | None    image multiples of the long-range pairs
==================  ========================  =========================================

Long-range pairs (optional, for models with long-range terms such as SO3LR:
``model.lr_cutoff``): a second neighbour list with a larger cutoff, built by the
same :func:`~equiforce.data.neighbors.neighbor_list`; None for models without one.
When ``edges_paired`` is True they are paired too (the same layout as the edges,
kept by :meth:`collate`, :meth:`split` and :meth:`permuted`), so that symmetric
pair terms evaluate each unordered pair once.
Total charge and spin are per-structure inputs read from ``atoms.info['charge']``
and ``atoms.info['spin']``; models that do not use them ignore them.

Paired edges: graphs built here (:func:`~equiforce.data.neighbors.neighbor_list`)
store every unordered pair twice, the first half in one direction and the second
half reversed in the same order. :meth:`collate` and :meth:`split` keep that
layout for the whole batch, so a model can compute quantities that are symmetric in
(i, j) once per pair (So3krates' filters: half the dominant cost). Graphs built by
hand default to ``edges_paired=False`` and models then treat every edge separately.

Edge vectors are never stored: models recompute them from positions so that autograd
yields forces and stress.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from typing import ClassVar

import numpy as np
import torch

from equiforce import keys
from equiforce.data.longrange_fields import (
    collate_lr,
    float_tensor,
    graph_values,
    lr_fields,
    paired_halves,
    shift_dtype,
)
from equiforce.data.neighbors import neighbor_list, neighbor_lists

#: Shape of one structure's value of each graph-level target.
_GRAPH_TARGET_SHAPES = {keys.ENERGY: (), keys.STRESS: (3, 3), keys.DIPOLE: (3,)}


@dataclass
class AtomicGraph:
    """A batch of structures (one or more graphs) in the equiforce conventions."""

    positions: torch.Tensor  # (n_atoms, 3)
    atomic_numbers: torch.Tensor  # (n_atoms,)
    graph_index: torch.Tensor  # (n_atoms,)
    edge_index: torch.Tensor  # (2, n_edges)
    edge_shifts: torch.Tensor  # (n_edges, 3)
    cell: torch.Tensor  # (n_graphs, 3, 3)
    pbc: torch.Tensor  # (n_graphs, 3)
    n_atoms: torch.Tensor  # (n_graphs,)
    targets: dict[str, torch.Tensor] = field(default_factory=dict)
    edges_paired: bool = False
    charge: torch.Tensor | None = None  # (n_graphs,)
    spin: torch.Tensor | None = None  # (n_graphs,)
    lr_edge_index: torch.Tensor | None = None  # (2, n_lr)
    lr_edge_shifts: torch.Tensor | None = None  # (n_lr, 3)

    NODE_FIELDS: ClassVar[tuple[str, ...]] = ("positions", "atomic_numbers")
    EDGE_FIELDS: ClassVar[tuple[str, ...]] = ("edge_shifts",)
    GRAPH_FIELDS: ClassVar[tuple[str, ...]] = ("cell", "pbc", "n_atoms")

    def __post_init__(self) -> None:
        n = self.positions.shape[0]
        if self.positions.ndim != 2 or self.positions.shape[1] != 3:
            raise ValueError(
                f"positions must be (n_atoms, 3), got {tuple(self.positions.shape)}"
            )
        if self.atomic_numbers.shape != (n,) or self.graph_index.shape != (n,):
            raise ValueError("atomic_numbers and graph_index must be (n_atoms,)")
        if self.edge_index.ndim != 2 or self.edge_index.shape[0] != 2:
            raise ValueError(
                f"edge_index must be (2, n_edges), got {tuple(self.edge_index.shape)}"
            )
        if self.edge_shifts.shape != (self.edge_index.shape[1], 3):
            raise ValueError("edge_shifts must be (n_edges, 3)")
        if self.edges_paired and self.edge_index.shape[1] % 2:
            raise ValueError("edges_paired=True needs an even number of edges")
        g = self.n_atoms.shape[0]
        if self.cell.shape != (g, 3, 3) or self.pbc.shape != (g, 3):
            raise ValueError("cell must be (n_graphs, 3, 3) and pbc (n_graphs, 3)")
        for name in ("charge", "spin"):
            value = getattr(self, name)
            if value is not None and value.shape != (g,):
                raise ValueError(
                    f"{name} must be (n_graphs,), got {tuple(value.shape)}"
                )
        if (self.lr_edge_index is None) != (self.lr_edge_shifts is None):
            raise ValueError("lr_edge_index and lr_edge_shifts come together")
        if self.lr_edge_index is not None and (
            (self.edges_paired and self.lr_edge_index.shape[-1] % 2)
            or self.lr_edge_index.ndim != 2
            or self.lr_edge_index.shape[0] != 2
            or self.lr_edge_shifts.shape != (self.lr_edge_index.shape[1], 3)
        ):
            raise ValueError(
                "lr_edge_index must be (2, n_lr) and lr_edge_shifts (n_lr, 3), "
                "n_lr even when edges_paired"
            )

    # ------------------------------------------------------------------ sizes
    # (no int(): under symbolic tracing a size is a SymInt, and int() would fix
    # the traced graph to the example's size; eagerly they are ints anyway)
    @property
    def n_graphs(self) -> int:
        """Number of structures in the batch."""
        return self.n_atoms.shape[0]

    @property
    def n_edges(self) -> int:
        """Number of directed edges."""
        return self.edge_index.shape[1]

    @property
    def num_nodes(self) -> int:
        """Total number of atoms."""
        return self.positions.shape[0]

    # --------------------------------------------------------------- building
    @classmethod
    def from_arrays(
        cls,
        positions: np.ndarray,
        atomic_numbers: np.ndarray,
        cutoff: float,
        cell: np.ndarray | None = None,
        pbc: np.ndarray | None = None,
        targets: dict[str, np.ndarray] | None = None,
        dtype: torch.dtype = torch.float64,
        lr_cutoff: float | None = None,
        charge: float | None = None,
        spin: float | None = None,
    ) -> AtomicGraph:
        """Build a one-structure graph, computing the neighbour list.

        Args:
            positions: (n_atoms, 3) Å.
            atomic_numbers: (n_atoms,).
            cutoff: neighbour cutoff, Å.
            cell: (3, 3) rows, Å; None for an open system.
            pbc: (3,) periodic flags.
            targets: optional labels keyed by :mod:`equiforce.keys` names, already in
                eV / Å units: energy (scalar), forces (n_atoms, 3), stress (3, 3).
            dtype: float dtype of positions/cell/targets.
            lr_cutoff: also build the long-range pairs within this cutoff, Å.
            charge: total charge, e (None: not given).
            spin: total spin S (None: not given).
        """
        positions = np.asarray(positions, dtype=np.float64)
        cell = np.zeros((3, 3)) if cell is None else np.asarray(cell, dtype=np.float64)
        pbc = np.zeros(3, bool) if pbc is None else np.asarray(pbc, dtype=bool)
        if lr_cutoff is None:
            edge_index, shifts = neighbor_list(
                positions, cutoff, cell, pbc, shift_dtype(dtype)
            )
            lr = {}
        else:
            # shifts straight in the graph's float dtype: no int64 copy of
            # the largest array (the long-range pairs)
            (edge_index, shifts), lr_list = neighbor_lists(
                positions, cutoff, lr_cutoff, cell, pbc, shift_dtype(dtype)
            )
            lr = lr_fields(*lr_list, dtype)
        n = len(positions)
        tgt: dict[str, torch.Tensor] = {}
        for key, value in (targets or {}).items():
            t = torch.as_tensor(
                np.asarray(value, dtype=np.float64),
                dtype=torch.float64 if key == keys.ENERGY else dtype,
            )
            if key in keys.GRAPH_TARGETS:  # (1,), (1, 3, 3) or (1, 3)
                t = t.reshape(1, *_GRAPH_TARGET_SHAPES[key])
            tgt[key] = t
        return cls(
            positions=float_tensor(positions, dtype),
            atomic_numbers=torch.as_tensor(
                np.asarray(atomic_numbers), dtype=torch.long
            ),
            graph_index=torch.zeros(n, dtype=torch.long),
            edge_index=torch.as_tensor(edge_index, dtype=torch.long),
            edge_shifts=float_tensor(shifts, dtype),
            cell=float_tensor(cell, dtype).reshape(1, 3, 3),
            pbc=torch.as_tensor(pbc).reshape(1, 3),
            n_atoms=torch.tensor([n], dtype=torch.long),
            targets=tgt,
            edges_paired=True,
            charge=None
            if charge is None
            else torch.tensor([float(charge)], dtype=dtype),
            spin=None if spin is None else torch.tensor([float(spin)], dtype=dtype),
            **lr,
        )

    @classmethod
    def from_atoms(
        cls,
        atoms,
        cutoff: float,
        dtype: torch.dtype = torch.float64,
        with_targets: bool = True,
        lr_cutoff: float | None = None,
    ) -> AtomicGraph:
        """Build a graph from an ``ase.Atoms``; labels come from its single-point results.

        Total charge and spin come from ``atoms.info['charge']`` and ``['spin']``.
        """
        targets: dict[str, np.ndarray] = {}
        calc = atoms.calc
        if with_targets and calc is not None:
            res = calc.results
            if "energy" in res:
                targets[keys.ENERGY] = np.asarray(res["energy"])
            if "forces" in res:
                targets[keys.FORCES] = np.asarray(res["forces"])
            if "stress" in res:
                from ase.stress import voigt_6_to_full_3x3_stress

                s = np.asarray(res["stress"])
                targets[keys.STRESS] = (
                    voigt_6_to_full_3x3_stress(s) if s.shape == (6,) else s
                )
        return cls.from_arrays(
            atoms.get_positions(),
            atoms.get_atomic_numbers(),
            cutoff,
            cell=np.asarray(atoms.get_cell()),
            pbc=atoms.get_pbc(),
            targets=targets,
            dtype=dtype,
            lr_cutoff=lr_cutoff,
            charge=atoms.info.get("charge"),
            spin=atoms.info.get("spin"),
        )

    # ------------------------------------------------------------ transforms
    def to(
        self, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> AtomicGraph:
        """Move to ``device`` and cast floating tensors (only) to ``dtype``."""

        def conv(t: torch.Tensor) -> torch.Tensor:
            if dtype is not None and t.is_floating_point():
                return t.to(device=device, dtype=dtype)
            return t.to(device=device)

        kwargs = {
            f.name: None
            if getattr(self, f.name) is None
            else conv(getattr(self, f.name))
            for f in fields(self)
            if f.name not in ("targets", "edges_paired")
        }
        kwargs["edges_paired"] = self.edges_paired
        # Total energies stay float64: an aspirin energy (-17,618 eV) has a float32
        # spacing of 2 meV, the size of the best published errors.
        kwargs["targets"] = {
            k: v.to(device=device) if k == keys.ENERGY else conv(v)
            for k, v in self.targets.items()
        }
        return AtomicGraph(**kwargs)

    def with_positions(self, positions: torch.Tensor) -> AtomicGraph:
        """A shallow copy with new positions (same topology)."""
        return replace(self, positions=positions)

    def permuted(self, perm: torch.Tensor, inv: torch.Tensor) -> AtomicGraph:
        """The same structures with atoms renumbered and edges sorted by new centre.

        Edges are reordered so that the (new) centre index grows along the edge
        list, as a neighbour list built on the renumbered atoms would give: a
        renumbering for memory locality is lost if the edges still visit the
        centres in the old order. Paired graphs stay paired (the first half is
        sorted, the second half follows it). Long-range pairs are renumbered
        and keep their order (their shifts are shared, not copied).

        Args:
            perm: (n_atoms,) atom k of the result is atom ``perm[k]`` of ``self``;
                it must keep every structure's atoms contiguous and in
                structure order (see :func:`equiforce.data.ordering.spatial_order`).
            inv: (n_atoms,) the inverse, ``inv[perm[k]] = k``.
        """
        edge_index = inv[self.edge_index]  # (2, n_edges)
        order = _centre_order(edge_index, self.edges_paired)  # (n_edges,)
        lr = {}
        if self.lr_edge_index is not None:
            # renumbered in place of sorted: sorting copies the largest arrays
            # (10⁸ pairs at 100,000 atoms) while the long-range terms only
            # gather and scatter per-atom values that fit in cache. The pair
            # order is unchanged, so a paired list (pair P+k reverses pair k)
            # stays paired.
            lr = {"lr_edge_index": inv[self.lr_edge_index]}  # (2, n_lr)
        return replace(
            self,
            **lr,
            positions=self.positions.index_select(0, perm),
            atomic_numbers=self.atomic_numbers.index_select(0, perm),
            graph_index=self.graph_index.index_select(0, perm),
            edge_index=edge_index.index_select(1, order),
            edge_shifts=self.edge_shifts.index_select(0, order),
            targets={
                k: v.index_select(0, perm) if k in keys.NODE_TARGETS else v
                for k, v in self.targets.items()
            },
        )

    @staticmethod
    def collate(graphs: list[AtomicGraph]) -> AtomicGraph:
        """Concatenate structures into one batch (offsets edges and graph indices)."""
        if not graphs:
            raise ValueError("cannot collate an empty list of graphs")
        if len(graphs) == 1:
            return graphs[0]
        atom_offsets = np.cumsum([0] + [g.num_nodes for g in graphs[:-1]])
        graph_offsets = np.cumsum([0] + [g.n_graphs for g in graphs[:-1]])
        cat = torch.cat
        target_keys = set(graphs[0].targets)
        for g in graphs[1:]:
            target_keys &= set(g.targets)
        paired = all(g.edges_paired for g in graphs)
        edge_index = [
            g.edge_index + int(o) for g, o in zip(graphs, atom_offsets, strict=True)
        ]
        shifts = [g.edge_shifts for g in graphs]
        if paired:  # all first halves, then all second halves (same graph order)
            halves = [g.n_edges // 2 for g in graphs]
            edge_index = paired_halves(edge_index, halves, dim=1)
            shifts = paired_halves(shifts, halves, dim=0)
        return AtomicGraph(
            positions=cat([g.positions for g in graphs]),
            atomic_numbers=cat([g.atomic_numbers for g in graphs]),
            graph_index=cat(
                [
                    g.graph_index + int(o)
                    for g, o in zip(graphs, graph_offsets, strict=True)
                ]
            ),
            edge_index=cat(edge_index, dim=1),
            edge_shifts=cat(shifts),
            cell=cat([g.cell for g in graphs]),
            pbc=cat([g.pbc for g in graphs]),
            n_atoms=cat([g.n_atoms for g in graphs]),
            targets={
                k: cat([g.targets[k] for g in graphs]) for k in sorted(target_keys)
            },
            edges_paired=paired,
            charge=graph_values(graphs, "charge"),
            spin=graph_values(graphs, "spin"),
            **collate_lr(graphs, atom_offsets, paired),
        )

    def split(self) -> list[AtomicGraph]:
        """Inverse of :meth:`collate`: one graph per structure.

        Edges keep their relative order, so a paired batch splits into paired graphs.
        """
        out = []
        atom_start = 0
        counts = self.n_atoms.tolist()
        edge_graph = (
            self.graph_index[self.edge_index[0]] if self.n_edges else self.edge_index[0]
        )
        for g, n in enumerate(counts):
            sl = slice(atom_start, atom_start + n)
            emask = edge_graph == g
            tg = {}
            for k, v in self.targets.items():
                tg[k] = v[sl] if k in keys.NODE_TARGETS else v[g : g + 1]
            lr = {}
            if self.lr_edge_index is not None:
                lr_mask = self.graph_index[self.lr_edge_index[0]] == g
                lr = {
                    "lr_edge_index": self.lr_edge_index[:, lr_mask] - atom_start,
                    "lr_edge_shifts": self.lr_edge_shifts[lr_mask],
                }
            out.append(
                AtomicGraph(
                    positions=self.positions[sl],
                    atomic_numbers=self.atomic_numbers[sl],
                    graph_index=torch.zeros(
                        n, dtype=torch.long, device=self.positions.device
                    ),
                    edge_index=self.edge_index[:, emask] - atom_start,
                    edge_shifts=self.edge_shifts[emask],
                    cell=self.cell[g : g + 1],
                    pbc=self.pbc[g : g + 1],
                    n_atoms=self.n_atoms[g : g + 1],
                    targets=tg,
                    edges_paired=self.edges_paired,
                    charge=None if self.charge is None else self.charge[g : g + 1],
                    spin=None if self.spin is None else self.spin[g : g + 1],
                    **lr,
                )
            )
            atom_start += n
        return out

    def edge_vectors(
        self, positions: torch.Tensor | None = None, cell: torch.Tensor | None = None
    ) -> torch.Tensor:
        """r_ij = r_j - r_i + S_ij · cell, shape (n_edges, 3), pointing from i to j.

        Args:
            positions: (n_atoms, 3) positions to use (default: ``self.positions``);
                pass a strained copy to get stress by autograd.
            cell: (n_graphs, 3, 3) cell to use (default: ``self.cell``).
        """
        pos = self.positions if positions is None else positions
        cell = self.cell if cell is None else cell
        return _pair_vectors(
            self.edge_index, self.edge_shifts, self.graph_index, pos, cell
        )

    def lr_edge_vectors(self, first_half: bool = False) -> torch.Tensor:
        """r_ij of the long-range pairs (n_lr, 3), as :meth:`edge_vectors`.

        Args:
            first_half: only the first n_lr/2 pairs (of a paired graph: each
                unordered pair once).

        Raises:
            ValueError: the graph has no long-range pairs (built without
                ``lr_cutoff``).
        """
        if self.lr_edge_index is None:
            raise ValueError(
                "this graph has no long-range pairs: build it with lr_cutoff "
                "(Potential and the datasets do so for models with model.lr_cutoff)"
            )
        index, shifts = self.lr_edge_index, self.lr_edge_shifts
        if first_half:
            half = index.shape[1] // 2
            index, shifts = index[:, :half], shifts[:half]
        return _pair_vectors(index, shifts, self.graph_index, self.positions, self.cell)


def _pair_vectors(
    edge_index: torch.Tensor,  # (2, n)
    shifts: torch.Tensor,  # (n, 3)
    graph_index: torch.Tensor,  # (n_atoms,)
    pos: torch.Tensor,  # (n_atoms, 3)
    cell: torch.Tensor,  # (n_graphs, 3, 3)
) -> torch.Tensor:
    """r_ij = r_j - r_i + S_ij · cell (n, 3)."""
    i, j = edge_index[0], edge_index[1]
    vec = pos.index_select(0, j) - pos.index_select(0, i)
    # No branch on pbc (a data-dependent branch breaks compiled graphs); for open
    # structures the shifts are zero and the term adds exactly nothing.
    edge_cell = cell.index_select(0, graph_index.index_select(0, i))  # (n, 3, 3)
    shift = torch.bmm(shifts.to(vec.dtype)[:, None, :], edge_cell)[:, 0]
    return vec + shift


def _centre_order(edge_index: torch.Tensor, paired: bool) -> torch.Tensor:
    """Edge order (n,) by centre; a paired list's second half follows its first."""
    if not paired:
        return torch.argsort(edge_index[0], stable=True)
    half = edge_index.shape[1] // 2
    order = torch.argsort(edge_index[0, :half], stable=True)  # (half,)
    return torch.cat([order, order + half])
