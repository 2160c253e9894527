"""Total charge and spin (inputs), dipoles and Hirshfeld ratios (labels) of frames.

Models with charge inputs and charge heads (SO3LR) read the total charge Q and
spin S of each structure and can train on the dipole moment and on Hirshfeld
volume ratios. :func:`equiforce.data.io.read` finds them here and stores them
under the :mod:`equiforce.keys` names: ``atoms.info['charge']``,
``['spin']``, ``['dipole']`` (3,) e·Å and ``atoms.arrays['hirshfeld_ratios']``
(n_atoms,).

Where they are found, per field, the configured key (``DataSource.charge_key``
etc.) or else the first of :data:`ALIASES` present:

- ASE formats (extxyz): ``atoms.info``, ``atoms.arrays``, then the single-point
  results (ASE's extxyz reader moves ``dipole`` there);
- npz: arrays of shape exactly (frames,) for charge and spin, (frames, 3) for
  the dipole and (frames, atoms) for Hirshfeld ratios (never reshaped).

Every problem is a :class:`~equiforce.errors.DataError` naming file, frame and
field: text where a number belongs, a wrong shape, NaN/inf, a negative spin or
ratio.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
from ase import Atoms

from equiforce import keys
from equiforce.errors import DataError

#: The fields, in the order they are read and reported.
FIELDS: tuple[str, ...] = (keys.CHARGE, keys.SPIN, keys.DIPOLE, keys.HIRSHFELD_RATIOS)

#: Per-structure inputs (not labels: a frame without them is neutral, S = 0).
INPUTS: tuple[str, ...] = (keys.CHARGE, keys.SPIN)

#: Training labels among :data:`FIELDS`.
LABELS: tuple[str, ...] = (keys.DIPOLE, keys.HIRSHFELD_RATIOS)

#: Keys tried, in order, when none is configured.
ALIASES: dict[str, tuple[str, ...]] = {
    keys.CHARGE: ("charge", "total_charge", "totcharge"),
    keys.SPIN: ("spin", "total_spin"),
    keys.DIPOLE: ("dipole", "dipole_moment"),
    keys.HIRSHFELD_RATIOS: ("hirshfeld_ratios", "hirshfeld_volume_ratios"),
}

#: What the npz arrays must look like, for the messages.
_NPZ_WHAT = {
    keys.CHARGE: "one per frame",
    keys.SPIN: "one per frame",
    keys.DIPOLE: "one 3-vector per frame",
    keys.HIRSHFELD_RATIOS: "one per atom of each frame",
}


def given_keys(
    charge_key: str | None = None,
    spin_key: str | None = None,
    dipole_key: str | None = None,
    hirshfeld_key: str | None = None,
) -> dict[str, str | None]:
    """The configured key of each field (None: try :data:`ALIASES`)."""
    return {
        keys.CHARGE: charge_key,
        keys.SPIN: spin_key,
        keys.DIPOLE: dipole_key,
        keys.HIRSHFELD_RATIOS: hirshfeld_key,
    }


def _candidates(name: str, given: Mapping[str, str | None]) -> tuple[str, ...]:
    key = given.get(name)
    return (key,) if key else ALIASES[name]


def from_ase(
    atoms: Atoms, results: Mapping, given: Mapping[str, str | None]
) -> dict[str, object]:
    """Raw values of one frame read by ASE (unchecked), by field name.

    Args:
        atoms: the frame (its ``info`` and ``arrays``).
        results: its single-point results (before the calculator is dropped).
        given: configured keys (:func:`given_keys`).
    """
    out: dict[str, object] = {}
    for name in FIELDS:
        for key in _candidates(name, given):
            for where in (atoms.info, atoms.arrays, results):
                if where.get(key) is not None:
                    out[name] = where[key]
                    break
            if name in out:
                break
    return out


def from_npz(
    present: set[str],
    get: Callable[[str], np.ndarray],
    n_frames: int,
    n_atoms: int,
    given: Mapping[str, str | None],
    path,
) -> dict[str, np.ndarray]:
    """The fields' arrays of an npz file, shapes checked (never reshaped).

    Args:
        present: the file's keys.
        get: reads one key as a numeric array (``DataError`` otherwise).
        n_frames: frames of the positions (frames, atoms, 3).
        n_atoms: atoms of the positions.
        given: configured keys (:func:`given_keys`); a configured key the file
            lacks is an error.
        path: the file, for messages.
    """
    out = {}
    for name in FIELDS:
        key = given.get(name)
        if key and key not in present:
            raise DataError(
                path, None, name, f"key {key!r} not in file (found {sorted(present)})"
            )
        key = next((k for k in _candidates(name, given) if k in present), None)
        if key is None:
            continue
        arr = get(key)
        shape = {
            keys.CHARGE: (n_frames,),
            keys.SPIN: (n_frames,),
            keys.DIPOLE: (n_frames, 3),
            keys.HIRSHFELD_RATIOS: (n_frames, n_atoms),
        }[name]
        if arr.shape != shape:
            raise DataError(
                path,
                None,
                f"{name} (key {key!r})",
                f"shape {arr.shape} does not fit {_NPZ_WHAT[name]} (expected {shape})",
            )
        out[name] = arr
    return out


def npz_frame(
    arrays: Mapping[str, np.ndarray], k: int, keep: np.ndarray
) -> dict[str, np.ndarray]:
    """Frame ``k``'s values of :func:`from_npz` arrays (``keep``: its real atoms)."""
    return {
        name: arr[k][keep] if name == keys.HIRSHFELD_RATIOS else arr[k]
        for name, arr in arrays.items()
    }


def checked(
    raw: Mapping[str, object], n_atoms: int, path, frame: int, dipole_factor: float
) -> dict[str, float | np.ndarray]:
    """Validate one frame's raw values; dipoles converted to e·Å.

    Returns:
        ``charge``/``spin`` as floats, ``dipole`` (3,) e·Å and
        ``hirshfeld_ratios`` (n_atoms,), for the fields present.

    Raises:
        DataError: not a number, wrong shape, NaN/inf, negative spin or ratio.
    """
    out: dict[str, float | np.ndarray] = {}
    for name, value in raw.items():
        try:
            arr = np.asarray(value, dtype=np.float64)
        except (TypeError, ValueError):
            raise DataError(
                path, frame, name, f"not a number: {str(value)[:60]!r}"
            ) from None
        expected = {keys.DIPOLE: (3,), keys.HIRSHFELD_RATIOS: (n_atoms,)}.get(name, ())
        if name in INPUTS and arr.shape == (1,):  # a one-element list in the file
            arr = arr.reshape(())
        if arr.shape != expected:
            raise DataError(
                path, frame, name, f"shape {arr.shape} does not match {expected}"
            )
        if not np.isfinite(arr).all():
            raise DataError(path, frame, name, f"non-finite {name} (NaN/inf)")
        if name in (keys.SPIN, keys.HIRSHFELD_RATIOS) and (arr < 0).any():
            raise DataError(path, frame, name, f"negative {name}: {arr.min():g}")
        if name in INPUTS:
            out[name] = float(arr)
        else:
            out[name] = arr * dipole_factor if name == keys.DIPOLE else arr
    return out


def attach(atoms: Atoms, values: Mapping[str, float | np.ndarray]) -> None:
    """Store :func:`checked` values under the :mod:`equiforce.keys` names.

    Values the file had under those names but that were not read (another key
    was configured) are removed, so :func:`value` sees only checked ones.
    """
    for name in FIELDS:
        atoms.info.pop(name, None)
    atoms.arrays.pop(keys.HIRSHFELD_RATIOS, None)
    for name, value in values.items():
        if name == keys.HIRSHFELD_RATIOS:
            atoms.arrays[name] = np.asarray(value, dtype=np.float64)
        else:
            atoms.info[name] = value


def value(atoms: Atoms, name: str) -> object | None:
    """The stored value of field ``name`` of a frame :func:`attach` filled (or None)."""
    where = atoms.arrays if name == keys.HIRSHFELD_RATIOS else atoms.info
    return where.get(name)
