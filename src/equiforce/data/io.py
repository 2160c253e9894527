"""Readers: extxyz (and anything ASE reads) and npz (rMD17, sGDML, QM7-X, generic keys).

Every reader returns ``list[ase.Atoms]`` with labels attached as single-point
results in eV, eV/Å and eV/Å³; units are converted here and nowhere else.
Each frame is validated, and a problem raises :class:`DataError` naming the file,
the frame and the field.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator
from ase.stress import full_3x3_to_voigt_6_stress

from equiforce import units
from equiforce.data import extra_labels
from equiforce.data.neighbors import neighbor_list
from equiforce.errors import DataError

#: Minimum allowed interatomic distance, Å (closer atoms are almost surely an error).
MIN_DISTANCE = 0.1

#: npz key conventions, tried in order: (positions, numbers, energy, forces).
NPZ_LAYOUTS: dict[str, dict[str, str]] = {
    "rmd17": {
        "positions": "coords",
        "numbers": "nuclear_charges",
        "energy": "energies",
        "forces": "forces",
    },
    "sgdml": {"positions": "R", "numbers": "z", "energy": "E", "forces": "F"},
    "generic": {
        "positions": "positions",
        "numbers": "atomic_numbers",
        "energy": "energy",
        "forces": "forces",
    },
    "qm7x": {
        "positions": "atXYZ",
        "numbers": "atNUM",
        "energy": "ePBE0+MBD",
        "forces": "totFOR",
    },
}


def read(
    path: str | Path,
    index: str | int | slice = ":",
    energy_key: str | None = None,
    forces_key: str | None = None,
    stress_key: str | None = None,
    energy_unit: str = "eV",
    force_unit: str | None = None,
    length_unit: str = "Angstrom",
    format: str | None = None,
    require: Iterable[str] = (),
    charge_key: str | None = None,
    spin_key: str | None = None,
    dipole_key: str | None = None,
    hirshfeld_key: str | None = None,
    dipole_unit: str = "e*Angstrom",
) -> list[Atoms]:
    """Read structures with energy/force/stress labels, converted to eV and Å.

    Args:
        path: file to read (``.npz`` or any format ASE reads; extxyz recommended).
        index: frames to read (ASE syntax: ``":"``, ``"0:100"``, an int or a slice).
        energy_key: where the energy is (npz key, or ``atoms.info`` key such as
            ``REF_energy``); default: auto-detected / calculator results.
        forces_key: npz key or ``atoms.arrays`` key of the forces.
        stress_key: npz key or ``atoms.info`` key of the stress (3x3 or Voigt 6).
        energy_unit: unit of the stored energies (see :mod:`equiforce.units`).
        force_unit: unit of the stored forces; default: ``energy_unit`` per
            ``length_unit`` (e.g. kcal/mol -> kcal/mol/Angstrom).
        length_unit: unit of positions and cell.
        format: ASE format name, or ``"npz"``; default from the file name.
        require: labels that every frame must carry, e.g. ``("energy", "forces")``.
        charge_key: key of the total charge, e; default: the first of
            :data:`equiforce.data.extra_labels.ALIASES` present (the same for
            the three keys below).
        spin_key: key of the total spin S.
        dipole_key: key of the dipole moments.
        hirshfeld_key: key of the Hirshfeld volume ratios (per atom).
        dipole_unit: unit of the stored dipoles (``e*Angstrom``, ``e*Bohr``,
            ``Debye``).

    Returns:
        One ``ase.Atoms`` per frame, labels in ``atoms.calc.results``; total
        charge, spin and dipole (e·Å) in ``atoms.info``, Hirshfeld ratios in
        ``atoms.arrays`` (:mod:`equiforce.data.extra_labels`).

    Raises:
        DataError: unreadable file, unknown unit, invalid frame (names file, frame, field).
    """
    path = Path(path)
    if not path.exists():
        raise DataError(path, None, "path", "file does not exist")
    try:
        e_fac = units.energy_factor(energy_unit)
        l_fac = units.length_factor(length_unit)
        f_fac = _force_factor(force_unit, energy_unit, length_unit)
        d_fac = units.dipole_factor(dipole_unit)
    except ValueError as err:
        raise DataError(path, None, "units", str(err)) from None
    is_npz = (format or path.suffix.lstrip(".")).lower() == "npz"
    reader = _read_npz if is_npz else _read_ase
    given = extra_labels.given_keys(charge_key, spin_key, dipole_key, hirshfeld_key)
    frames = reader(path, index, energy_key, forces_key, stress_key, format, given)
    out = []
    for k, atoms, labels, extra in frames:  # k: the frame as numbered in the file
        atoms.positions *= l_fac
        if atoms.cell.rank:
            atoms.cell = np.asarray(atoms.cell) * l_fac
        results = _numeric_labels(labels, path, k)
        if "energy" in results:
            results["energy"] = float(results["energy"]) * e_fac
        if "forces" in results:
            results["forces"] = results["forces"] * f_fac
        if "stress" in results:
            s = results["stress"] * e_fac / l_fac**3
            results["stress"] = (
                full_3x3_to_voigt_6_stress(s) if s.shape == (3, 3) else s
            )
        validate_atoms(atoms, results, path, k, require)
        extra_labels.attach(
            atoms, extra_labels.checked(extra, len(atoms), path, k, d_fac)
        )
        if results:
            atoms.calc = SinglePointCalculator(atoms, **results)
        atoms.info[SOURCE_FRAME] = k
        out.append(atoms)
    return out


#: ``atoms.info`` key of the frame's number in the file it was read from
SOURCE_FRAME = "source_frame"

#: the labels a frame can carry
LABELS = ("energy", "forces", "stress", *extra_labels.LABELS)


def label_counts(
    frames: Sequence[Atoms], names: Sequence[str] = LABELS
) -> dict[str, list[int]]:
    """For each label (or input in ``names``), the file frames that lack it."""
    missing: dict[str, list[int]] = {name: [] for name in names}
    for k, atoms in enumerate(frames):
        results = atoms.calc.results if atoms.calc is not None else {}
        for name in names:
            if name in extra_labels.FIELDS:
                there = extra_labels.value(atoms, name)
            else:
                there = results.get(name)
            if there is None:
                missing[name].append(int(atoms.info.get(SOURCE_FRAME, k)))
    return missing


def label_summary(path: str | Path, frames: Sequence[Atoms]) -> str:
    """One line: frames read and how many carry each label (first frame lacking it).

    Dipoles, Hirshfeld ratios, total charge and spin are named only when some
    frame has them.
    """
    n = len(frames)
    parts = []
    names = (*LABELS, *extra_labels.INPUTS)
    for name, lacking in label_counts(frames, names).items():
        if name in extra_labels.FIELDS and len(lacking) == n:
            continue
        text = f"{name} {n - len(lacking)}/{n}"
        if lacking and len(lacking) < n:
            text += f" (first missing: frame {lacking[0]})"
        parts.append(text)
    return f"{path}: {n} frames; labels: " + ", ".join(parts)


def _numeric_labels(labels: dict, path: Path, frame: int) -> dict[str, np.ndarray]:
    """The present labels as float64 arrays; text where a number belongs is an error."""
    out = {}
    for name, value in labels.items():
        if value is None:
            continue
        try:
            out[name] = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(
                path, frame, name, f"not a number: {str(value)[:60]!r}"
            ) from None
    if "energy" in out and out["energy"].size != 1:
        raise DataError(
            path, frame, "energy", f"expected one value, got {out['energy'].shape}"
        )
    return out


def _force_factor(force_unit: str | None, energy_unit: str, length_unit: str) -> float:
    if force_unit is not None:
        return units.force_factor(force_unit)
    return units.energy_factor(energy_unit) / units.length_factor(length_unit)


def _index_list(index: str | int | slice, n: int, path: str | Path) -> list[int]:
    """File frame numbers selected by ``index`` (ASE syntax) from ``n`` frames."""
    try:
        if isinstance(index, str):
            text = index.strip()
            if ":" not in text:
                index = int(text)
            else:
                parts = [int(p) if p.strip() else None for p in text.split(":")]
                if len(parts) > 3:
                    raise ValueError(text)
                index = slice(*parts)
    except ValueError:
        raise DataError(
            path,
            None,
            "index",
            f"{index!r} is not an integer or a start:stop:step slice",
        ) from None
    if isinstance(index, int):
        if not -n <= index < n:
            raise DataError(
                path, None, "index", f"frame {index} is out of range: the file has {n}"
            )
        return [range(n)[index]]
    if index.step == 0:
        raise DataError(path, None, "index", "slice step cannot be zero")
    selected = list(range(n))[index]
    if not selected:
        raise DataError(
            path, None, "index", f"{index} selects no frame: the file has {n}"
        )
    return selected


def _detect_layout(keys: set[str]) -> dict[str, str] | None:
    for layout in NPZ_LAYOUTS.values():
        if layout["positions"] in keys and layout["numbers"] in keys:
            return layout
    return None


def _npz_array(data, key: str, path: Path) -> np.ndarray:
    """``data[key]`` as a numeric array; a corrupt member is a :class:`DataError`."""
    try:
        arr = data[key]
    except Exception as err:  # noqa: BLE001 - zipfile/numpy raise many kinds
        raise DataError(
            path,
            None,
            key,
            f"cannot be read (corrupt file? {type(err).__name__}: {err})",
        ) from None
    if arr.dtype.kind not in "biuf":
        raise DataError(path, None, key, f"expected numbers, got dtype {arr.dtype}")
    return arr


def _expect_shape(arr, shapes: list[tuple], key: str, path: Path, what: str) -> None:
    if arr is not None and arr.shape not in shapes:
        raise DataError(
            path,
            None,
            key,
            f"shape {arr.shape} does not fit {what} (expected "
            + " or ".join(str(s) for s in shapes)
            + ")",
        )


def _read_npz(path, index, energy_key, forces_key, stress_key, _format, extra_keys):
    try:
        data = np.load(path, allow_pickle=False)
        keys = set(data.files)
    except Exception as err:  # noqa: BLE001 - any reader error becomes a DataError
        raise DataError(
            path, None, "file", f"not a readable npz file ({err})"
        ) from None
    layout = _detect_layout(keys)
    if layout is None:
        raise DataError(
            path,
            None,
            "keys",
            f"no known key layout (found {sorted(keys)}); expected one of "
            + "; ".join(
                f"{n}: {v['positions']}+{v['numbers']}" for n, v in NPZ_LAYOUTS.items()
            ),
        )
    e_key = energy_key or layout["energy"]
    f_key = forces_key or layout["forces"]
    for name, key, given in (
        ("energy", e_key, energy_key),
        ("forces", f_key, forces_key),
        ("stress", stress_key, stress_key),
    ):
        if given and key not in keys:
            raise DataError(
                path, None, name, f"key {key!r} not in file (found {sorted(keys)})"
            )

    def get(key: str | None) -> np.ndarray | None:
        return _npz_array(data, key, path) if key and key in keys else None

    pos = get(layout["positions"])
    numbers = get(layout["numbers"])
    if pos.ndim == 2:
        pos = pos[None]
    if pos.ndim != 3 or pos.shape[-1] != 3:
        raise DataError(
            path,
            None,
            layout["positions"],
            f"expected (frames, atoms, 3), got {pos.shape}",
        )
    n_frames, n_atoms = pos.shape[:2]
    energies, forces, stress = get(e_key), get(f_key), get(stress_key)
    cell, pbc = get("cell"), get("pbc")
    # every count must match the frames exactly: a reshape would silently read
    # every other value of an array with twice as many entries
    for name, key, arr, shapes, what in (
        ("atomic_numbers", layout["numbers"], numbers,
         [(n_atoms,), (n_frames, n_atoms)], "the atoms"),
        ("energy", e_key, energies, [(n_frames,), (n_frames, 1)], "one per frame"),
        ("forces", f_key, forces, [pos.shape], "the positions"),
        ("stress", stress_key, stress, [(n_frames, 3, 3), (n_frames, 6)], "frames"),
        ("cell", "cell", cell, [(3, 3), (n_frames, 3, 3)], "frames"),
        ("pbc", "pbc", pbc, [(3,), (n_frames, 3)], "frames"),
    ):  # fmt: skip
        _expect_shape(arr, shapes, f"{name} (key {key!r})", path, what)
    if energies is not None:
        energies = energies.reshape(n_frames)
    extra = extra_labels.from_npz(keys, get, n_frames, n_atoms, extra_keys, path)
    for k in _index_list(index, n_frames, path):
        z = numbers if numbers.ndim == 1 else numbers[k]
        keep = z > 0  # zero-padded formats (QM7-X subsets) mark padding with Z = 0
        if numbers.ndim == 1:
            keep = np.ones_like(keep)
        atoms = Atoms(numbers=z[keep].astype(int), positions=pos[k][keep])
        if cell is not None:
            atoms.cell = cell if cell.ndim == 2 else cell[k]
            atoms.pbc = True if pbc is None else (pbc if pbc.ndim == 1 else pbc[k])
        labels = {
            "energy": None if energies is None else energies[k],
            "forces": None if forces is None else forces[k][keep],
            "stress": None if stress is None else stress[k],
        }
        yield k, atoms, labels, extra_labels.npz_frame(extra, k, keep)


def _read_ase(path, index, energy_key, forces_key, stress_key, format, given):
    frames = []
    try:  # frame by frame, so that an unreadable frame is named
        for atoms in ase.io.iread(path, index=":", format=format):
            frames.append(atoms)
    except Exception as err:  # noqa: BLE001
        first = (str(err).splitlines() or [""])[0][:200]
        raise DataError(
            path,
            len(frames),
            "file",
            f"cannot be read by ASE ({type(err).__name__}: {first})",
        ) from None
    if not frames:
        raise DataError(path, None, "file", "no structure in the file")
    for k in _index_list(index, len(frames), path):
        atoms = frames[k]
        results = dict(atoms.calc.results) if atoms.calc is not None else {}
        labels = {
            "energy": atoms.info.get(energy_key)
            if energy_key
            else results.get("energy"),
            "forces": atoms.arrays.get(forces_key)
            if forces_key
            else results.get("forces"),
            "stress": atoms.info.get(stress_key)
            if stress_key
            else results.get("stress"),
        }
        atoms.calc = None
        yield k, atoms, labels, extra_labels.from_ase(atoms, results, given)


def validate_atoms(
    atoms: Atoms,
    results: dict,
    path: str | Path,
    frame: int,
    require: Iterable[str] = (),
) -> None:
    """Check one frame; raise :class:`DataError` naming the offending field.

    Checks: non-empty, known elements, finite positions/labels, label shapes,
    required labels present, non-degenerate periodic cell, no atoms closer
    than :data:`MIN_DISTANCE`.
    """
    n = len(atoms)
    if n == 0:
        raise DataError(path, frame, "positions", "empty structure (no atoms)")
    z = atoms.numbers
    bad = z[(z < 1) | (z > 118)]
    if bad.size:
        raise DataError(
            path, frame, "atomic_numbers", f"unknown element Z={int(bad[0])}"
        )
    if not np.isfinite(atoms.positions).all():
        row = int(np.nonzero(~np.isfinite(atoms.positions).all(1))[0][0])
        raise DataError(
            path, frame, "positions", f"non-finite coordinate (NaN/inf) at atom {row}"
        )
    for name in require:
        if results.get(name) is None:
            raise DataError(
                path, frame, name, f"missing {name} label (required for training)"
            )
    if "energy" in results and not np.isfinite(results["energy"]):
        raise DataError(path, frame, "energy", "non-finite energy")
    if "forces" in results:
        f = results["forces"]
        if f.shape != (n, 3):
            raise DataError(
                path, frame, "forces", f"shape {f.shape} does not match ({n}, 3)"
            )
        if not np.isfinite(f).all():
            raise DataError(path, frame, "forces", "non-finite force component")
    if atoms.pbc.any():
        periodic_rows = np.asarray(atoms.cell)[atoms.pbc]
        if np.linalg.matrix_rank(periodic_rows, tol=1e-6) < int(atoms.pbc.sum()):
            raise DataError(
                path,
                frame,
                "cell",
                f"zero-volume (degenerate) cell {np.asarray(atoms.cell).tolist()} with "
                f"pbc={atoms.pbc.tolist()}",
            )
    if n > 1:
        cell = np.asarray(atoms.cell) if atoms.pbc.any() else None
        edges, shifts = neighbor_list(atoms.positions, MIN_DISTANCE, cell, atoms.pbc)
        if edges.shape[1]:
            i, j = edges[:, 0]
            raise DataError(
                path,
                frame,
                "positions",
                f"atoms {i} and {j} are closer than {MIN_DISTANCE} Å (overlapping atoms)",
            )
