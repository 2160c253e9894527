"""Datasets of labelled structures.

Compact storage, lazy cached graphs, seeded splits, frame filters and statistics
(E0, average neighbours, force RMS).

Frames are kept as concatenated numpy arrays (:class:`FrameStore`), so 100,000
small structures cost a few arrays rather than 100,000 Python objects, and every
statistic is one vectorised pass. Graphs (neighbour lists) are built on first
use and cached (:class:`GraphDataset`): loading is linear in the number of
frames.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.data.neighbors import neighbor_list

#: Rows of per-element tables (index = atomic number).
NUM_ELEMENTS = 119

ProgressFn = Callable[[int], None]


@dataclass(frozen=True)
class FrameStore:
    """Many structures as concatenated arrays (eV, Å); missing labels are NaN.

    Attributes:
        numbers: (n_total,) atomic numbers.
        positions: (n_total, 3) Å.
        offsets: (n_frames + 1,) start of each frame in the atom arrays.
        energy: (n_frames,) eV, NaN where missing.
        forces: (n_total, 3) eV/Å, NaN where missing; None if no frame has forces.
        stress: (n_frames, 3, 3) eV/Å³, NaN where missing; None if no frame has any.
        cell: (n_frames, 3, 3) rows, Å.
        pbc: (n_frames, 3) bool.
        charge: (n_frames,) total charge, e, NaN where not given (neutral);
            None if no frame has one. ``spin``: the same for the total spin S.
        dipole: (n_frames, 3) e·Å, NaN where missing; None if no frame has one.
        hirshfeld: (n_total,) Hirshfeld ratios, NaN where missing; None if none.
    """

    numbers: np.ndarray
    positions: np.ndarray
    offsets: np.ndarray
    energy: np.ndarray
    forces: np.ndarray | None
    stress: np.ndarray | None
    cell: np.ndarray
    pbc: np.ndarray
    charge: np.ndarray | None = None
    spin: np.ndarray | None = None
    dipole: np.ndarray | None = None
    hirshfeld: np.ndarray | None = None

    def __len__(self) -> int:
        return len(self.energy)

    @property
    def n_atoms(self) -> np.ndarray:
        """(n_frames,) atoms per frame."""
        return np.diff(self.offsets)

    def labelled(self) -> dict[str, int]:
        """Number of frames carrying each label."""
        has_f = (
            np.zeros(len(self), bool)
            if self.forces is None
            else np.bincount(
                self.frame_index[np.isfinite(self.forces).all(1)], minlength=len(self)
            )
            == self.n_atoms
        )
        has_s = (
            np.zeros(len(self), bool)
            if self.stress is None
            else np.isfinite(self.stress).all((1, 2))
        )
        out = {
            "energy": int(np.isfinite(self.energy).sum()),
            "forces": int(has_f.sum()),
            "stress": int(has_s.sum()),
        }
        if self.dipole is not None:
            out[keys.DIPOLE] = int(np.isfinite(self.dipole).all(1).sum())
        if self.hirshfeld is not None:
            per_frame = np.bincount(
                self.frame_index[np.isfinite(self.hirshfeld)], minlength=len(self)
            )
            out[keys.HIRSHFELD_RATIOS] = int((per_frame == self.n_atoms).sum())
        return out

    @property
    def frame_index(self) -> np.ndarray:
        """(n_total,) frame of each atom."""
        return np.repeat(np.arange(len(self)), self.n_atoms)

    @classmethod
    def from_atoms(
        cls, frames: Sequence, progress: ProgressFn | None = None
    ) -> FrameStore:
        """Pack ``ase.Atoms`` with single-point results (as returned by ``io.read``)."""
        n = len(frames)
        n_atoms = np.fromiter((len(a) for a in frames), dtype=np.int64, count=n)
        offsets = np.concatenate([[0], np.cumsum(n_atoms)])
        numbers = np.empty(offsets[-1], dtype=np.int64)
        positions = np.empty((offsets[-1], 3))
        forces = np.full((offsets[-1], 3), np.nan)
        energy = np.full(n, np.nan)
        stress = np.full((n, 3, 3), np.nan)
        cell = np.zeros((n, 3, 3))
        pbc = np.zeros((n, 3), dtype=bool)
        has_f = has_s = False
        extra = _extra_fields(frames, offsets)
        for k, atoms in enumerate(frames):
            sl = slice(offsets[k], offsets[k + 1])
            numbers[sl] = atoms.numbers
            positions[sl] = atoms.positions
            cell[k] = np.asarray(atoms.cell)
            pbc[k] = atoms.pbc
            res = atoms.calc.results if atoms.calc is not None else {}
            if res.get("energy") is not None:
                energy[k] = res["energy"]
            if res.get("forces") is not None:
                forces[sl] = res["forces"]
                has_f = True
            if res.get("stress") is not None:
                stress[k] = _full_stress(np.asarray(res["stress"]))
                has_s = True
            if progress is not None and k % 1000 == 999:
                progress(1000)
        if progress is not None:
            progress(n % 1000)
        return cls(
            numbers,
            positions,
            offsets,
            energy,
            forces if has_f else None,
            stress if has_s else None,
            cell,
            pbc,
            **extra,
        )

    def subset(self, indices: Sequence[int] | np.ndarray) -> FrameStore:
        """Frames ``indices`` (in that order) as a new store."""
        idx = np.asarray(indices, dtype=np.int64)
        n_atoms = self.n_atoms[idx]
        starts = self.offsets[idx]
        # atom indices of the selected frames, vectorised: start + arange within frame
        offsets = np.concatenate([[0], np.cumsum(n_atoms)])
        atom_idx = np.repeat(starts - offsets[:-1], n_atoms) + np.arange(offsets[-1])
        return FrameStore(
            self.numbers[atom_idx],
            self.positions[atom_idx],
            offsets,
            self.energy[idx],
            None if self.forces is None else self.forces[atom_idx],
            None if self.stress is None else self.stress[idx],
            self.cell[idx],
            self.pbc[idx],
            *(None if a is None else a[idx] for a in (self.charge, self.spin)),
            None if self.dipole is None else self.dipole[idx],
            None if self.hirshfeld is None else self.hirshfeld[atom_idx],
        )

    def graph(
        self,
        k: int,
        cutoff: float,
        dtype: torch.dtype,
        lr_cutoff: float | None = None,
    ) -> AtomicGraph:
        """Frame ``k`` as a one-structure :class:`AtomicGraph` with its labels.

        With ``lr_cutoff`` (Å) the graph also gets the long-range pairs; the
        total charge and spin become ``graph.charge``/``spin`` when given.
        """
        sl = slice(self.offsets[k], self.offsets[k + 1])
        targets: dict[str, np.ndarray] = {keys.ENERGY: self.energy[k]}
        if self.forces is not None:
            targets[keys.FORCES] = self.forces[sl]
        if self.stress is not None:
            targets[keys.STRESS] = self.stress[k]
        if self.dipole is not None:
            targets[keys.DIPOLE] = self.dipole[k]
        if self.hirshfeld is not None:
            targets[keys.HIRSHFELD_RATIOS] = self.hirshfeld[sl]
        charge, spin = (
            None if a is None or np.isnan(a[k]) else float(a[k])
            for a in (self.charge, self.spin)
        )
        return AtomicGraph.from_arrays(
            self.positions[sl],
            self.numbers[sl],
            cutoff,
            cell=self.cell[k],
            pbc=self.pbc[k],
            targets=targets,
            dtype=dtype,
            lr_cutoff=lr_cutoff,
            charge=charge,
            spin=spin,
        )


def _extra_fields(frames: Sequence, offsets: np.ndarray) -> dict[str, np.ndarray]:
    """Total charge, spin, dipoles and Hirshfeld ratios of the frames that have them.

    Read from where :func:`equiforce.data.io.read` puts them
    (:mod:`equiforce.data.extra_labels`); NaN where a frame has none, and
    a field no frame has is left out.
    """
    n = len(frames)
    out = {
        "charge": np.full(n, np.nan),
        "spin": np.full(n, np.nan),
        "dipole": np.full((n, 3), np.nan),
        "hirshfeld": np.full(offsets[-1], np.nan),
    }
    seen: set[str] = set()
    for k, atoms in enumerate(frames):
        for field, name in (
            ("charge", keys.CHARGE),
            ("spin", keys.SPIN),
            ("dipole", keys.DIPOLE),
        ):
            if atoms.info.get(name) is not None:
                out[field][k] = atoms.info[name]
                seen.add(field)
        h = atoms.arrays.get(keys.HIRSHFELD_RATIOS)
        if h is not None:
            out["hirshfeld"][offsets[k] : offsets[k + 1]] = h
            seen.add("hirshfeld")
    return {field: a for field, a in out.items() if field in seen}


def _full_stress(s: np.ndarray) -> np.ndarray:
    if s.shape == (3, 3):
        return s
    xx, yy, zz, yz, xz, xy = s
    return np.array([[xx, xy, xz], [xy, yy, yz], [xz, yz, zz]])


class GraphDataset:
    """Graphs of a :class:`FrameStore`, built on first access and cached.

    Args:
        store: the frames.
        cutoff: neighbour cutoff, Å (the model's).
        dtype: float dtype of positions and force targets (energies stay float64).
        lr_cutoff: cutoff of the long-range pairs, Å (the model's ``lr_cutoff``,
            SO3LR); None: none.
    """

    def __init__(
        self,
        store: FrameStore,
        cutoff: float,
        dtype: torch.dtype = torch.float32,
        lr_cutoff: float | None = None,
    ):
        self.store = store
        self.cutoff = float(cutoff)
        self.dtype = dtype
        self.lr_cutoff = lr_cutoff
        self._cache: list[AtomicGraph | None] = [None] * len(store)

    def __len__(self) -> int:
        return len(self.store)

    def __getitem__(self, k: int) -> AtomicGraph:
        g = self._cache[k]
        if g is None:
            g = self._cache[k] = self.store.graph(
                k, self.cutoff, self.dtype, self.lr_cutoff
            )
        return g

    def batch(self, indices: Sequence[int]) -> AtomicGraph:
        """Collate frames ``indices`` into one batch."""
        return AtomicGraph.collate([self[int(k)] for k in indices])

    def build_all(self, progress: ProgressFn | None = None) -> None:
        """Build every graph now (e.g. behind a progress bar)."""
        for k in range(len(self)):
            self[k]
            if progress is not None:
                progress(1)

    def n_edges(self) -> np.ndarray:
        """(n_frames,) directed edges per frame (builds the graphs)."""
        return np.array([self[k].n_edges for k in range(len(self))], dtype=np.int64)


# ----------------------------------------------------------------- filters
def frame_filter_mask(
    store: FrameStore, min_distance: float | None, max_force: float | None
) -> tuple[np.ndarray, dict[str, int]]:
    """Frames to keep under the spec §5.1 filters.

    Args:
        store: frames.
        min_distance: drop frames with two atoms closer than this (Å); None: off.
        max_force: drop frames with any |force component| above this (eV/Å); None: off.

    Returns:
        (n_frames,) bool keep-mask and the number dropped per reason.
    """
    keep = np.ones(len(store), dtype=bool)
    dropped = {"min_distance": 0, "max_force": 0}
    if max_force is not None and store.forces is not None:
        big = np.abs(np.nan_to_num(store.forces)).max(axis=1) > max_force  # (n_total,)
        bad = np.bincount(store.frame_index[big], minlength=len(store)) > 0
        dropped["max_force"] = int(bad.sum())
        keep &= ~bad
    if min_distance:
        for k in range(len(store)):
            sl = slice(store.offsets[k], store.offsets[k + 1])
            if store.offsets[k + 1] - store.offsets[k] < 2:
                continue
            cell = store.cell[k] if store.pbc[k].any() else None
            edges, _ = neighbor_list(
                store.positions[sl], min_distance, cell, store.pbc[k]
            )
            if edges.shape[1] and keep[k]:
                keep[k] = False
                dropped["min_distance"] += 1
    return keep, dropped


# ------------------------------------------------------------------ splits
def random_split(
    n_frames: int, n_train: int | None, n_valid: int, seed: int
) -> dict[str, np.ndarray]:
    """Seeded random split of ``range(n_frames)`` into train and valid indices.

    Raises:
        ValueError: more frames requested than available.
    """
    n_train = n_frames - n_valid if n_train is None else n_train
    if n_train + n_valid > n_frames or n_train <= 0:
        raise ValueError(
            f"n_train={n_train} + n_valid={n_valid} frames requested but the file has "
            f"{n_frames} (after filters)"
        )
    perm = np.random.default_rng(seed).permutation(n_frames)
    return {
        "train": np.sort(perm[n_valid : n_valid + n_train]),
        "valid": np.sort(perm[:n_valid]),
    }


def read_split_file(path: str | Path, n_frames: int) -> dict[str, np.ndarray]:
    """Read ``{"train": [...], "valid": [...]}`` index lists and check them."""
    try:
        raw = json.loads(Path(path).read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"{path}: cannot read split file ({err})") from None
    out = {}
    for name in ("train", "valid"):
        idx = np.asarray(raw.get(name, []), dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_frames):
            raise ValueError(
                f"{path}: {name}: index out of range for {n_frames} frames"
            )
        out[name] = idx
    if not out["train"].size:
        raise ValueError(f"{path}: train: no indices")
    if np.intersect1d(out["train"], out["valid"]).size:
        raise ValueError(f"{path}: train and valid indices overlap")
    return out


# -------------------------------------------------------------- statistics
def e0_least_squares(store: FrameStore) -> dict[int, float]:
    """Per-element E0 (eV) minimising Σ_frames (E − Σ_i E0[Z_i])²."""
    ok = np.isfinite(store.energy)
    if not ok.any():
        raise ValueError("no frame has an energy label; cannot fit E0")
    elements = np.unique(store.numbers)
    col = np.searchsorted(elements, store.numbers)  # (n_total,)
    counts = np.zeros((len(store), len(elements)))
    np.add.at(counts, (store.frame_index, col), 1.0)
    sol, *_ = np.linalg.lstsq(counts[ok], store.energy[ok], rcond=None)
    return {int(z): float(e) for z, e in zip(elements, sol, strict=True)}


def e0_from_isolated_atoms(frames: Sequence) -> dict[int, float]:
    """E0 from single-atom frames with energies (e.g. ``isolated_atoms.xyz``)."""
    out = {}
    for atoms in frames:
        if (
            len(atoms) == 1
            and atoms.calc is not None
            and "energy" in atoms.calc.results
        ):
            out[int(atoms.numbers[0])] = float(atoms.calc.results["energy"])
    return out


def e0_table(e0: dict[int, float]) -> torch.Tensor:
    """(119,) float64 table from ``{Z: eV}``."""
    table = torch.zeros(NUM_ELEMENTS, dtype=torch.float64)
    for z, v in e0.items():
        table[int(z)] = float(v)
    return table


def statistics(
    dataset: GraphDataset, e0: dict[int, float]
) -> dict[str, float | int | dict[str, float]]:
    """Statistics of a (training) dataset after subtracting ``e0``.

    Returns:
        ``n_frames``, ``avg_num_neighbors``, ``force_rms`` (eV/Å),
        ``energy_residual_mean/std_per_atom`` (eV) and ``e0`` ({"Z": eV}).
    """
    store = dataset.store
    missing = sorted(set(np.unique(store.numbers).tolist()) - set(e0))
    if missing:
        raise ValueError(
            f"no E0 for elements Z={missing}; add them to the isolated-atoms file"
        )
    table = e0_table(e0).numpy()
    shift = np.bincount(
        store.frame_index, weights=table[store.numbers], minlength=len(store)
    )
    resid = (store.energy - shift) / store.n_atoms  # (n_frames,)
    resid = resid[np.isfinite(resid)]
    n_edges = dataset.n_edges()
    forces = (
        store.forces[np.isfinite(store.forces)]
        if store.forces is not None
        else np.zeros(0)
    )
    return {
        "n_frames": len(store),
        "avg_num_neighbors": float(n_edges.sum() / max(store.n_atoms.sum(), 1)),
        "force_rms": float(np.sqrt(np.mean(forces**2)))
        if forces.size
        else float("nan"),
        "energy_residual_mean_per_atom": float(resid.mean())
        if resid.size
        else float("nan"),
        "energy_residual_std_per_atom": float(resid.std())
        if resid.size
        else float("nan"),
        "e0": {str(z): float(v) for z, v in sorted(e0.items())},
    }
