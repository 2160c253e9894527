"""Training loss (so3krates-spec §5.1).

L = w_E · L_E + w_F · L_F + w_S · L_S (+ w_μ · L_μ + w_H · L_H) with

* L_E = mean over graphs of (E_pred − E_ref)², total energy in eV (or E/n_atoms
  when ``energy_per_atom``);
* L_F = mean over graphs of [mean over the graph's atoms and x, y, z of
  (F_pred − F_ref)²]: every structure counts equally whatever its size;
* L_S = mean over graphs of the mean over the 3×3 components of (σ_pred − σ_ref)²;
* L_μ = mean over graphs of the mean over x, y, z of (μ_pred − μ_ref)², e·Å
  (``dipole_weight``, models with charge heads such as SO3LR);
* L_H = mean over graphs of the mean over their atoms of (h_pred − h_ref)²,
  Hirshfeld volume ratios (``hirshfeld_weight``).

Missing (NaN) labels are masked: a graph without an energy label does not
count in L_E, a NaN force component does not count in its graph's mean.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.models.heads import head_spread
from equiforce.nn.scatter import scatter_sum


def _masked_mean(sq: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Mean of ``sq`` over ``valid`` entries (0 if none)."""
    n = valid.sum()
    return torch.where(valid, sq, torch.zeros_like(sq)).sum() / n.clamp(min=1)


def energy_loss(
    pred: torch.Tensor, ref: torch.Tensor, n_atoms: torch.Tensor, per_atom: bool = False
) -> torch.Tensor:
    """Mean squared energy error over graphs with a label.

    Args:
        pred: (n_graphs,) predicted energies, eV.
        ref: (n_graphs,) reference energies, eV (NaN = missing).
        n_atoms: (n_graphs,) atoms per graph.
        per_atom: divide both energies by n_atoms first.

    Returns:
        Scalar loss in eV² (float64).
    """
    diff = pred.to(torch.float64) - ref.to(torch.float64)  # (n_graphs,)
    if per_atom:
        diff = diff / n_atoms.to(torch.float64)
    valid = torch.isfinite(ref)
    return _masked_mean(torch.nan_to_num(diff) ** 2, valid)


def forces_loss(
    pred: torch.Tensor, ref: torch.Tensor, graph_index: torch.Tensor, n_graphs: int
) -> torch.Tensor:
    """Per-graph mean of squared force-component errors, averaged over graphs.

    Args:
        pred: (n_atoms, 3) predicted forces, eV/Å.
        ref: (n_atoms, 3) reference forces (NaN = missing component).
        graph_index: (n_atoms,) graph of each atom.
        n_graphs: number of graphs.

    Returns:
        Scalar loss in (eV/Å)².
    """
    valid = torch.isfinite(ref)  # (n_atoms, 3)
    sq = torch.where(valid, (pred - torch.nan_to_num(ref)) ** 2, torch.zeros_like(pred))
    per_graph_sum = scatter_sum(sq.sum(dim=1), graph_index, n_graphs)  # (n_graphs,)
    per_graph_n = scatter_sum(valid.sum(dim=1).to(pred.dtype), graph_index, n_graphs)
    has = per_graph_n > 0
    per_graph = per_graph_sum / per_graph_n.clamp(min=1)  # (n_graphs,)
    return _masked_mean(per_graph, has)


def stress_loss(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean over graphs with a label of the mean squared 3×3 stress error, (eV/Å³)².

    Args:
        pred: (n_graphs, 3, 3) predicted stress.
        ref: (n_graphs, 3, 3) reference stress (NaN = missing).
    """
    valid = torch.isfinite(ref).all(dim=(1, 2))  # (n_graphs,)
    sq = ((pred - torch.nan_to_num(ref)) ** 2).mean(dim=(1, 2))
    return _masked_mean(sq, valid)


def dipole_loss(pred: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean over graphs with a label of the mean squared dipole component error.

    Args:
        pred: (n_graphs, 3) predicted dipoles, e·Å.
        ref: (n_graphs, 3) reference dipoles (NaN = missing).

    Returns:
        Scalar loss in (e·Å)².
    """
    valid = torch.isfinite(ref).all(dim=1)  # (n_graphs,)
    sq = ((pred - torch.nan_to_num(ref)) ** 2).mean(dim=1)
    return _masked_mean(sq, valid)


def hirshfeld_loss(
    pred: torch.Tensor, ref: torch.Tensor, graph_index: torch.Tensor, n_graphs: int
) -> torch.Tensor:
    """Per-graph mean of squared Hirshfeld-ratio errors, averaged over graphs.

    Args:
        pred: (n_atoms,) predicted ratios.
        ref: (n_atoms,) reference ratios (NaN = missing).
        graph_index: (n_atoms,) graph of each atom.
        n_graphs: number of graphs.
    """
    return forces_loss(pred[:, None], ref[:, None], graph_index, n_graphs)


@dataclass(frozen=True)
class WeightedLoss:
    """The weighted sum of energy, force and stress losses.

    Args:
        energy_weight: w_E (eV⁻²).
        forces_weight: w_F ((eV/Å)⁻²).
        stress_weight: w_S ((eV/Å³)⁻²); stress is predicted only when > 0.
        energy_per_atom: energy term on E / n_atoms.
        dipole_weight: w_μ ((e·Å)⁻²); needs ``dipole`` in the model outputs.
        hirshfeld_weight: w_H; needs ``hirshfeld_ratios`` in the model outputs.
    """

    energy_weight: float = 0.01
    forces_weight: float = 0.99
    stress_weight: float = 0.0
    energy_per_atom: bool = False
    dipole_weight: float = 0.0
    hirshfeld_weight: float = 0.0

    @property
    def part_names(self) -> tuple[str, ...]:
        """Names :meth:`terms` can report, for terms with a weight (and ``loss``).

        A batch without a label leaves its term out of :meth:`terms`; processes
        that sum parts need the full list.
        """
        named = (
            ("loss_energy", self.energy_weight),
            ("loss_forces", self.forces_weight),
            ("loss_stress", self.stress_weight),
            ("loss_dipole", self.dipole_weight),
            ("loss_hirshfeld", self.hirshfeld_weight),
        )
        return ("loss", *(name for name, w in named if w > 0))

    @property
    def needs_stress(self) -> bool:
        """Whether the model must compute stress."""
        return self.stress_weight > 0

    @property
    def needs_properties(self) -> bool:
        """Whether the model must return dipoles and Hirshfeld ratios."""
        return self.dipole_weight > 0 or self.hirshfeld_weight > 0

    def terms(
        self, out: dict[str, torch.Tensor], batch: AtomicGraph
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Total loss (float64 scalar, differentiable) and its parts as tensors.

        No host synchronisation, so it can run inside a compiled training step.
        """
        tgt = batch.targets
        total = torch.zeros((), dtype=torch.float64, device=batch.positions.device)
        parts: dict[str, torch.Tensor] = {}
        if self.energy_weight > 0 and keys.ENERGY in tgt:
            le = energy_loss(
                out[keys.ENERGY], tgt[keys.ENERGY], batch.n_atoms, self.energy_per_atom
            )
            if keys.ENERGY_HEADS in out:  # readout heads: each head's own error
                le = le + head_spread(
                    out[keys.ENERGY_HEADS],
                    tgt[keys.ENERGY],
                    batch.n_atoms,
                    self.energy_per_atom,
                )
            total = total + self.energy_weight * le
            parts["loss_energy"] = le
        if self.forces_weight > 0 and keys.FORCES in tgt:
            lf = forces_loss(
                out[keys.FORCES], tgt[keys.FORCES], batch.graph_index, batch.n_graphs
            )
            total = total + self.forces_weight * lf.to(torch.float64)
            parts["loss_forces"] = lf
        if self.needs_stress and keys.STRESS in tgt:
            ls = stress_loss(out[keys.STRESS], tgt[keys.STRESS])
            total = total + self.stress_weight * ls.to(torch.float64)
            parts["loss_stress"] = ls
        if self.dipole_weight > 0 and keys.DIPOLE in tgt:
            ld = dipole_loss(out[keys.DIPOLE], tgt[keys.DIPOLE])
            total = total + self.dipole_weight * ld.to(torch.float64)
            parts["loss_dipole"] = ld
        if self.hirshfeld_weight > 0 and keys.HIRSHFELD_RATIOS in tgt:
            lh = hirshfeld_loss(
                out[keys.HIRSHFELD_RATIOS],
                tgt[keys.HIRSHFELD_RATIOS],
                batch.graph_index,
                batch.n_graphs,
            )
            total = total + self.hirshfeld_weight * lh.to(torch.float64)
            parts["loss_hirshfeld"] = lh
        parts["loss"] = total
        return total, parts

    def __call__(
        self, out: dict[str, torch.Tensor], batch: AtomicGraph
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (float64 scalar, differentiable) and its detached parts."""
        total, parts = self.terms(out, batch)
        return total, {k: float(v.detach()) for k, v in parts.items()}
