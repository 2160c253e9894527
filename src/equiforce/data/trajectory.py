"""Trajectory files appended frame by frame, and a tolerant reader.

The MD runner (:mod:`equiforce.md.runner`) writes them; :mod:`equiforce.analysis`
reads them.

Two formats, one file per system (replica):

- extended XYZ (``.xyz``/``.extxyz``, short runs): each frame is formatted in
  memory and written with one ``write`` + ``flush``, with positions, velocities
  (ASE units in ``momenta``), forces, energy and ``step``/``time_fs`` in the
  comment line. A killed run leaves at most one partial frame at the end, which
  :func:`read_trajectory` skips.
- HDF5 (``.h5``/``.hdf5``, long runs): resizable datasets ``positions``,
  ``velocities`` (Å/fs), ``forces`` (T, n_atoms, 3), ``energy``, ``kinetic``
  (T,) eV, ``step`` (T,), ``time_fs`` (T,), static ``atomic_numbers``, ``masses``,
  ``cell`` (the first frame's), ``pbc``, and ``cells`` (T, 3, 3) Å, the cell of
  every frame (it changes under NPT); written in SWMR mode and flushed after every frame, so the file
  stays readable after SIGKILL. ``step`` is written last; frames whose step is still
  the fill value −1 are incomplete and ignored.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from equiforce.errors import writing

H5_SUFFIXES = (".h5", ".hdf5")
_FRAME_FIELDS = ("positions", "velocities", "forces")


@dataclass
class Trajectory:
    """Frames of one system (arrays in equiforce units).

    Attributes:
        atomic_numbers: (n_atoms,).
        masses: (n_atoms,) amu.
        positions: (n_frames, n_atoms, 3) Å.
        velocities: (n_frames, n_atoms, 3) Å/fs, or None.
        forces: (n_frames, n_atoms, 3) eV/Å, or None.
        energy: (n_frames,) potential energy, eV (NaN if unknown).
        step: (n_frames,) integrator step.
        time_fs: (n_frames,) simulated time, fs.
        cell: (3, 3) Å rows (of the first frame).
        pbc: (3,) bool.
        cells: (n_frames, 3, 3) Å, every frame's cell (None in files written
            before it was stored: then every frame has ``cell``).
    """

    atomic_numbers: np.ndarray
    masses: np.ndarray
    positions: np.ndarray
    velocities: np.ndarray | None
    forces: np.ndarray | None
    energy: np.ndarray
    step: np.ndarray
    time_fs: np.ndarray
    cell: np.ndarray
    pbc: np.ndarray
    cells: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.positions.shape[0])

    @property
    def dt_fs(self) -> float:
        """Spacing between frames, fs (from the first two frames)."""
        if len(self) < 2:
            raise ValueError("a trajectory needs two frames to define its time step")
        return float(self.time_fs[1] - self.time_fs[0])


class ExtxyzWriter:
    """Append frames to an extended XYZ file.

    Args:
        path: output file; opened in append mode.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._fh = open(self.path, "a")  # noqa: SIM115 - kept open for appends

    def write(self, frame: dict, flush: bool = True) -> None:
        """Append one frame (see :func:`_frame_atoms` for the keys).

        A text frame is one ``write`` and is always flushed (cheap); ``flush`` is
        accepted for the writers' common signature.
        """
        from ase.io import write

        buf = io.StringIO()
        write(buf, _frame_atoms(frame), format="extxyz")
        with writing(self.path):
            self._fh.write(buf.getvalue())
            self._fh.flush()

    def flush(self) -> None:
        """Frames are flushed as they are written."""
        self._fh.flush()

    def close(self) -> None:
        """Close the file."""
        self._fh.close()


def _frame_atoms(frame: dict):
    from ase import Atoms, units
    from ase.calculators.singlepoint import SinglePointCalculator

    atoms = Atoms(
        numbers=frame["atomic_numbers"],
        positions=frame["positions"],
        cell=frame["cell"],
        pbc=frame["pbc"],
        masses=frame["masses"],
    )
    atoms.set_velocities(frame["velocities"] / units.fs)
    atoms.info.update(step=int(frame["step"]), time_fs=float(frame["time_fs"]))
    atoms.info["kinetic_energy"] = float(frame["kinetic"])
    atoms.calc = SinglePointCalculator(
        atoms, energy=float(frame["energy"]), forces=frame["forces"]
    )
    return atoms


#: free bytes kept beyond what an HDF5 append needs (metadata, the checkpoint)
HDF5_SPARE_BYTES = 1 << 20


class HDF5Writer:
    """Append frames to an HDF5 file (SWMR, flushed per frame unless told not to).

    Args:
        path: output file; created if missing, otherwise appended to.
        frame: the first frame (to size datasets and store the static fields).
    """

    def __init__(self, path: str | Path, frame: dict) -> None:
        import h5py

        self.path = Path(path)
        n = len(frame["atomic_numbers"])
        exists = self.path.exists()
        self._f = h5py.File(self.path, "a" if exists else "w", libver="latest")
        f = self._f
        if not exists:
            for key in ("atomic_numbers", "masses", "cell", "pbc"):
                f.create_dataset(key, data=np.asarray(frame[key]))
            for key in _FRAME_FIELDS:
                f.create_dataset(
                    key, (0, n, 3), maxshape=(None, n, 3), chunks=(16, n, 3), dtype="f8"
                )
            f.create_dataset(
                "cells", (0, 3, 3), maxshape=(None, 3, 3), chunks=(64, 3, 3), dtype="f8"
            )
            for key, dt, fill in (
                ("energy", "f8", np.nan),
                ("kinetic", "f8", np.nan),
                ("time_fs", "f8", np.nan),
                ("step", "i8", -1),
            ):
                f.create_dataset(
                    key, (0,), maxshape=(None,), chunks=(256,), dtype=dt, fillvalue=fill
                )
        f.swmr_mode = True
        #: frames held back by ``write(..., flush=False)`` (written at the next flush)
        self._pending: list[dict] = []
        self.max_pending = 256

    def write(self, frame: dict, flush: bool = True) -> None:
        """Append one frame; with ``flush`` write it (and any held back) to disk.

        Frames written with ``flush=False`` are held in memory until the next
        flush: resizing and writing every dataset costs ~2 ms per call, so
        frames go to the file in blocks.
        """
        pending = {k: frame[k] for k in (*_FRAME_FIELDS, "energy", "kinetic")}
        if "cells" in self._f:  # files from before per-frame cells have none
            pending["cells"] = frame["cell"]
        pending.update(time_fs=frame["time_fs"], step=frame["step"])  # step last
        self._pending.append(pending)
        if flush or len(self._pending) >= self.max_pending:
            self.flush()

    def flush(self) -> None:
        """Write the held-back frames and make them visible and durable (SWMR)."""
        if self._pending:
            f, frames = self._f, self._pending
            self._check_space(frames)
            n = f["step"].shape[0]
            for key in frames[0]:
                ds = f[key]
                ds.resize(n + len(frames), axis=0)
                ds[n:] = np.stack([np.asarray(fr[key]) for fr in frames])
            self._pending = []
        self._f.flush()

    def _check_space(self, frames: list[dict]) -> None:
        """Refuse a write the disk may not hold: HDF5 cannot recover from a full disk.

        A write that fails inside the HDF5 library leaves the file's metadata
        inconsistent (and h5py may crash at exit); this check keeps the file valid,
        at its last flushed frame, so that the run resumes after space is freed.
        """
        n_bytes = sum(np.asarray(v).nbytes for fr in frames for v in fr.values())
        chunk = sum(
            ds.chunks and int(np.prod(ds.chunks)) * ds.dtype.itemsize or 0
            for ds in self._f.values()
        )  # a new chunk of every dataset may be allocated at once
        need = 2 * (n_bytes + chunk) + HDF5_SPARE_BYTES
        free = shutil.disk_usage(self.path.parent).free
        if free < need:
            raise OSError(
                errno.ENOSPC,
                f"No space left on device: {free} bytes free, {need} needed to "
                "append safely",
                str(self.path),
            )

    def close(self) -> None:
        """Write the held-back frames and close the file."""
        try:
            self.flush()
        finally:
            self._f.close()


def open_writer(path: str | Path, frame: dict) -> ExtxyzWriter | HDF5Writer:
    """Writer for ``path`` chosen by its suffix."""
    if Path(path).suffix in H5_SUFFIXES:
        return HDF5Writer(path, frame)
    return ExtxyzWriter(path)


# ------------------------------------------------------------------- reading
def read_trajectory(path: str | Path) -> Trajectory:
    """Read every complete frame of an equiforce trajectory (extxyz or HDF5).

    Raises:
        FileNotFoundError: missing file.
        ValueError: no complete frame, naming the file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: trajectory file does not exist")
    if path.suffix in H5_SUFFIXES:
        return _read_h5(path)
    return _read_extxyz(path)


def _read_h5(path: Path) -> Trajectory:
    import h5py

    with h5py.File(path, "r", swmr=True) as f:
        step = f["step"][:]
        n = len(step)
        for key in (*_FRAME_FIELDS, "energy", "time_fs", "cells"):
            if key in f:
                n = min(n, f[key].shape[0])
        valid = np.nonzero(step[:n] < 0)[0]
        n = int(valid[0]) if len(valid) else n
        if n == 0:
            raise ValueError(f"{path}: no complete frame in the trajectory")
        data = {key: f[key][:n] for key in (*_FRAME_FIELDS, "energy", "time_fs")}
        return Trajectory(
            atomic_numbers=f["atomic_numbers"][:],
            masses=f["masses"][:],
            step=step[:n],
            cell=f["cell"][:],
            pbc=f["pbc"][:],
            cells=f["cells"][:n] if "cells" in f else None,
            **data,
        )


def _read_extxyz(path: Path) -> Trajectory:
    from ase import units
    from ase.io import iread

    frames = []
    try:
        for atoms in iread(path, index=":", format="extxyz"):
            frames.append(atoms)
    except Exception:  # noqa: BLE001 - a partial last frame after a kill
        pass
    if not frames:
        raise ValueError(f"{path}: no complete frame in the trajectory")
    first = frames[0]
    pos = np.stack([a.get_positions() for a in frames])
    vel = np.stack([a.get_velocities() * units.fs for a in frames])
    forces, energy = None, np.full(len(frames), np.nan)
    if first.calc is not None and "forces" in first.calc.results:
        forces = np.stack([a.calc.results["forces"] for a in frames])
        energy = np.array([a.calc.results.get("energy", np.nan) for a in frames])
    step = np.array([a.info.get("step", i) for i, a in enumerate(frames)])
    time = np.array([a.info.get("time_fs", np.nan) for a in frames], dtype=float)
    return Trajectory(
        atomic_numbers=first.get_atomic_numbers(),
        masses=first.get_masses(),
        positions=pos,
        velocities=vel,
        forces=forces,
        energy=energy,
        step=step,
        time_fs=time,
        cell=np.asarray(first.get_cell()),
        pbc=first.get_pbc(),
        cells=np.stack([np.asarray(a.get_cell()) for a in frames]),
    )


def truncate_trajectory(path: str | Path, max_step: int) -> int:
    """Keep the frames with ``step <= max_step`` (rewritten atomically).

    Used by ``--resume``: the checkpoint may be one frame behind the trajectory.

    Returns:
        The number of frames kept.
    """
    path = Path(path)
    traj = read_trajectory(path)
    keep = int(np.sum(traj.step <= max_step))
    tmp = path.with_name(f".{path.name}.resume.tmp{path.suffix}")
    tmp.unlink(missing_ok=True)
    static = {
        "atomic_numbers": traj.atomic_numbers,
        "masses": traj.masses,
        "cell": traj.cell,
        "pbc": traj.pbc,
    }
    writer = None
    for t in range(keep):
        frame = dict(
            static,
            positions=traj.positions[t],
            velocities=traj.velocities[t],
            forces=traj.forces[t]
            if traj.forces is not None
            else np.zeros_like(traj.positions[t]),
            energy=traj.energy[t],
            kinetic=_kinetic(traj.masses, traj.velocities[t]),
            step=traj.step[t],
            time_fs=traj.time_fs[t],
        )
        if traj.cells is not None:
            frame["cell"] = traj.cells[t]
        writer = writer or open_writer(tmp, frame)
        writer.write(frame)
    if writer is not None:
        writer.close()
        os.replace(tmp, path)
    else:
        path.unlink()
    return keep


def _kinetic(masses: np.ndarray, velocities: np.ndarray) -> float:
    from equiforce.units import AMU_A2_PER_FS2_TO_EV

    return float(0.5 * np.sum(masses[:, None] * velocities**2) * AMU_A2_PER_FS2_TO_EV)
