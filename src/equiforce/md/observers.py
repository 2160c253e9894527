"""Observers called at output intervals: ``thermo.csv`` and the stability monitor.

The stability monitor follows ``docs/md-protocol.md`` §3.1: a system is unstable at
the first checked frame where

1. a bond (ASE ``natural_cutoffs`` connectivity of the initial frame) deviates
   from its reference length by more than ``bond_tolerance`` (0.5 Å);
2. any pair distance is below ``min_distance`` (0.6 Å);
3. the instantaneous temperature exceeds ``max_temperature_factor`` (3) × target;
4. any energy, force or position is not finite.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from equiforce.atomic import atomic_write_text
from equiforce.errors import writing
from equiforce.md.state import MDState

THERMO_COLUMNS = (
    "step",
    "time_fs",
    "system",
    "potential_eV",
    "kinetic_eV",
    "total_eV",
    "conserved_eV",
    "temperature_K",
)

#: Columns NPT runs add: volume, instantaneous pressure (kinetic + virial) and
#: the lengths of the three cell vectors.
NPT_COLUMNS = ("volume_A3", "pressure_bar", "a_A", "b_A", "c_A")


class ThermoWriter:
    """Append rows (one per system and output frame) to ``thermo.csv``.

    Args:
        path: CSV file; the header is written when the file is new or empty.
        columns: the header (default :data:`THERMO_COLUMNS`; NPT runs add
            :data:`NPT_COLUMNS`).
    """

    def __init__(
        self, path: str | Path, columns: tuple[str, ...] = THERMO_COLUMNS
    ) -> None:
        self.path = Path(path)
        self.columns = columns
        new = not self.path.exists() or self.path.stat().st_size == 0
        self._fh = open(self.path, "a", newline="")  # noqa: SIM115
        self._csv = csv.writer(self._fh)
        if new:
            self._csv.writerow(columns)
            self._fh.flush()

    def write(self, step: int, time_fs: float, values: dict[str, np.ndarray]) -> None:
        """Write one row per system; ``values`` maps column names to (n_systems,)."""
        n = len(values["potential_eV"])
        with writing(self.path):
            for s in range(n):
                row = [step, f"{time_fs:.6g}", s]
                row += [f"{float(values[c][s]):.10g}" for c in self.columns[3:]]
                self._csv.writerow(row)
            self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


def truncate_thermo(path: str | Path, max_step: int) -> None:
    """Drop rows with ``step > max_step`` (and a partial last line), atomically."""
    path = Path(path)
    if not path.exists():
        return
    lines = path.read_text().splitlines(keepends=True)
    keep = lines[:1]
    n_columns = len(lines[0].split(",")) if lines else len(THERMO_COLUMNS)
    for line in lines[1:]:
        parts = line.rstrip("\n").split(",")
        if not line.endswith("\n") or len(parts) != n_columns:
            break
        if int(parts[0]) <= max_step:
            keep.append(line)
    atomic_write_text(path, "".join(keep))


@dataclass
class StabilityEvent:
    """Why and when a system became unstable."""

    system: int
    step: int
    time_fs: float
    reason: str


class StabilityMonitor:
    """Flag systems whose structure or temperature has become unphysical.

    Args:
        atoms_list: initial structure of each system (``ase.Atoms``), in the
            state's order; bonds come from its ``natural_cutoffs`` connectivity.
        temperature: target temperature, K (float or per system); None disables
            the temperature criterion.
        bond_tolerance: maximum bond-length deviation, Å.
        min_distance: minimum allowed pair distance, Å.
        max_temperature_factor: maximum T / T_target.
        reference_lengths: optional per-system arrays of reference bond lengths
            (e.g. means over a reference trajectory), in the order of
            :meth:`bonds_of`; default: the initial lengths.
    """

    def __init__(
        self,
        atoms_list,
        temperature: float | list[float] | None = None,
        bond_tolerance: float = 0.5,
        min_distance: float = 0.6,
        max_temperature_factor: float = 3.0,
        reference_lengths: list[np.ndarray] | None = None,
    ) -> None:
        self.bond_tolerance = float(bond_tolerance)
        self.min_distance = float(min_distance)
        self.max_temperature_factor = float(max_temperature_factor)
        n_sys = len(atoms_list)
        if temperature is None:
            self.t_max = np.full(n_sys, np.inf)
        else:
            self.t_max = np.broadcast_to(
                np.asarray(temperature, float), (n_sys,)
            ).copy()
            self.t_max *= self.max_temperature_factor
        pairs, shifts, ref, sys = [], [], [], []
        offset = 0
        for s, atoms in enumerate(atoms_list):
            i, j, shift, length = self.bonds_of(atoms)
            if reference_lengths is not None:
                length = np.asarray(reference_lengths[s], float)
            pairs.append(np.stack([i, j], 1) + offset)
            shifts.append(shift)
            ref.append(length)
            sys.append(np.full(len(i), s))
            offset += len(atoms)
        self.pairs = torch.as_tensor(np.concatenate(pairs), dtype=torch.long)
        self.shifts = torch.as_tensor(np.concatenate(shifts), dtype=torch.float64)
        self.reference = torch.as_tensor(np.concatenate(ref), dtype=torch.float64)
        self.bond_system = torch.as_tensor(np.concatenate(sys), dtype=torch.long)
        self.n_systems = n_sys

    @staticmethod
    def bonds_of(atoms) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Bonds (i < j) of ``atoms`` from ASE ``natural_cutoffs``.

        Returns:
            i, j (n_bonds,), shifts (n_bonds, 3), lengths (n_bonds,) Å.
        """
        from ase.neighborlist import natural_cutoffs, neighbor_list

        i, j, shift, d = neighbor_list("ijSd", atoms, natural_cutoffs(atoms))
        keep = i < j
        return i[keep], j[keep], shift[keep].reshape(-1, 3), d[keep]

    def bond_deviation(self, state: MDState) -> torch.Tensor:
        """(n_systems,) largest |bond length − reference|, Å (0 without bonds)."""
        pos = state.positions.detach().to(torch.float64)
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        cell = state.cell.detach().to(torch.float64)[
            self.bond_system
        ]  # (n_bonds, 3, 3)
        vec = pos[j] - pos[i] + torch.einsum("bk,bkl->bl", self.shifts, cell)
        dev = (vec.norm(dim=-1) - self.reference).abs()
        out = torch.zeros(self.n_systems, dtype=torch.float64)
        return out.scatter_reduce_(0, self.bond_system, dev, "amax", include_self=True)

    def min_pair_distance(self, state: MDState) -> np.ndarray:
        """(n_systems,) smallest pair distance below ``min_distance`` (else inf)."""
        from equiforce.data.neighbors import neighbor_list

        pos = state.positions.detach().cpu().double().numpy()
        idx = state.system_idx.cpu().numpy()
        out = np.full(state.n_systems, np.inf)
        for s in range(state.n_systems):
            p = pos[idx == s]
            cell = state.cell[s].detach().cpu().double().numpy()
            ei, sh = neighbor_list(
                p, self.min_distance, cell, state.pbc[s].cpu().numpy()
            )
            if ei.shape[1]:
                d = p[ei[1]] - p[ei[0]] + sh @ cell
                out[s] = np.linalg.norm(d, axis=1).min()
        return out

    def check(self, state: MDState, time_fs: float) -> list[StabilityEvent]:
        """Events for every system that is unstable now (empty list if none)."""
        events: list[StabilityEvent] = []
        idx = state.system_idx
        finite_pos = torch.isfinite(state.positions).all(-1)
        finite_f = (
            torch.isfinite(state.forces).all(-1)
            if state.forces is not None
            else finite_pos
        )
        bad_atoms = ~(finite_pos & finite_f)
        nonfinite = torch.zeros(state.n_systems, dtype=torch.bool).index_put_(
            (idx[bad_atoms].cpu(),), torch.tensor(True), accumulate=False
        )
        if state.energy is not None:
            nonfinite |= ~torch.isfinite(state.energy.detach().cpu())
        temps = state.temperature().detach().cpu().numpy()
        dev = self.bond_deviation(state).numpy() if len(self.pairs) else None
        dmin = None if bool(nonfinite.any()) else self.min_pair_distance(state)
        for s in range(state.n_systems):
            reason = None
            if nonfinite[s]:
                reason = "non-finite energy, forces or positions"
            elif dev is not None and dev[s] > self.bond_tolerance:
                reason = f"bond deviates by {dev[s]:.3f} Å > {self.bond_tolerance} Å"
            elif dmin is not None and dmin[s] < self.min_distance:
                reason = f"pair distance {dmin[s]:.3f} Å < {self.min_distance} Å"
            elif temps[s] > self.t_max[s]:
                reason = f"temperature {temps[s]:.0f} K > {self.t_max[s]:.0f} K"
            if reason is not None:
                events.append(StabilityEvent(s, state.step, time_fs, reason))
        return events
