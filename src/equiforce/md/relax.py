"""Geometry (and cell) relaxation with ASE's optimisers over any ASE calculator.

:func:`relax` minimises the energy of one structure with FIRE, BFGS or L-BFGS
(``ase.optimize``). With ``cell=True`` (the default for structures periodic in
all three directions) the optimiser works on ``ase.filters.FrechetCellFilter``,
which adds the cell's deformation (log-strain) to the degrees of freedom, so
the stress is relaxed to ``pressure`` together with the forces; ASE's
convergence test then covers both (forces and V·(σ + P) on the cell variables,
eV/Å). Files in ``out_dir``:

- ``relax_trajectory.xyz``: every step (positions, cell, energy, forces, stress),
  appended and flushed as it goes;
- ``final.xyz``: the last structure (extxyz, written atomically);
- ``relax.json``: converged, steps, final max force (atoms, and the optimiser's
  own max including the cell), energy, stress (eV/Å³ and GPa when the cell was
  relaxed), settings and wall time.
"""

from __future__ import annotations

import io
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from equiforce.atomic import atomic_write_json, atomic_write_text
from equiforce.units import pressure_factor

OPTIMIZERS = ("fire", "bfgs", "lbfgs")
Optimizer = Literal["fire", "bfgs", "lbfgs"]


@dataclass
class RelaxResult:
    """Summary of a relaxation (written to ``relax.json``)."""

    converged: bool
    steps: int
    fmax: float
    fmax_optimizer: float
    energy: float
    stress: list[list[float]] | None
    stress_gpa: list[list[float]] | None
    optimizer: str
    fmax_target: float
    cell_relaxed: bool
    pressure_bar: float
    wall_s: float


def default_cell_relaxation(atoms) -> bool:
    """Relax the cell by default exactly when the structure is periodic in 3-D."""
    return bool(np.all(atoms.pbc))


def _optimizer(name: str, target, logfile):
    from ase.optimize import BFGS, FIRE, LBFGS

    classes = {"fire": FIRE, "bfgs": BFGS, "lbfgs": LBFGS}
    if name not in classes:
        raise ValueError(f"unknown optimizer {name!r}; choose {', '.join(OPTIMIZERS)}")
    return classes[name](target, logfile=logfile)


class _Recorder:
    """Per-step observer: appends the frame to the trajectory, prints progress."""

    def __init__(self, atoms, path: Path | None, every: int, stream) -> None:
        self.atoms, self.every, self.stream = atoms, max(1, every), stream
        self._fh = None if path is None else open(path, "a")  # noqa: SIM115
        self.step = 0

    def __call__(self, optimizer=None, with_stress: bool = False) -> None:
        from ase.calculators.singlepoint import SinglePointCalculator
        from ase.io import write

        atoms = self.atoms
        energy, forces = atoms.get_potential_energy(), atoms.get_forces()
        results = {"energy": energy, "forces": forces}
        if with_stress:
            results["stress"] = atoms.get_stress()
        if self._fh is not None:
            frame = atoms.copy()
            frame.calc = SinglePointCalculator(frame, **results)
            frame.info["step"] = self.step
            buf = io.StringIO()
            write(buf, frame, format="extxyz")
            self._fh.write(buf.getvalue())
            self._fh.flush()
        if self.stream is not None and self.step % self.every == 0:
            fmax = float(np.sqrt((forces**2).sum(1)).max())
            line = f"relax step {self.step:5d}  E = {energy:.6f} eV  max|F| = {fmax:.4g} eV/Å"
            if with_stress:
                p = -np.mean(results["stress"][:3]) / pressure_factor("GPa")
                line += f"  P = {p:.4g} GPa"
            print(line, file=self.stream, flush=True)
        self.step += 1

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()


def relax(
    atoms,
    calculator,
    *,
    optimizer: Optimizer = "fire",
    fmax: float = 0.01,
    steps: int = 1000,
    cell: bool | None = None,
    pressure_bar: float = 0.0,
    out_dir: str | Path | None = None,
    progress_every: int | None = 10,
) -> tuple[RelaxResult, object]:
    """Relax ``atoms`` (a copy) with ``calculator`` until max force < ``fmax``.

    Args:
        atoms: the structure (``ase.Atoms``; not modified).
        calculator: any ASE calculator (e.g. ``EquiforceCalculator``); it must
            give the stress when the cell is relaxed.
        optimizer: "fire", "bfgs" or "lbfgs".
        fmax: convergence threshold on the largest force, eV/Å.
        steps: maximum optimiser steps.
        cell: relax the cell too (default: when periodic in all directions).
        pressure_bar: external pressure of the cell relaxation, bar.
        out_dir: folder for the files (None: no files).
        progress_every: print a progress line every this many steps to stdout
            (None: silent).

    Returns:
        (summary, relaxed ``ase.Atoms``).

    Raises:
        ValueError: an unknown optimiser, or a cell relaxation of a structure
            that is not periodic in all three directions.
    """
    from ase.filters import FrechetCellFilter

    atoms = atoms.copy()
    atoms.calc = calculator
    cell = default_cell_relaxation(atoms) if cell is None else bool(cell)
    if cell and not np.all(atoms.pbc):
        raise ValueError(
            f"cell relaxation needs a structure periodic in 3-D; pbc={atoms.pbc.tolist()}"
        )
    target = (
        FrechetCellFilter(atoms, scalar_pressure=pressure_bar * pressure_factor("bar"))
        if cell
        else atoms
    )
    out = None if out_dir is None else Path(out_dir)
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
    stream = None if progress_every is None else sys.stdout
    recorder = _Recorder(
        atoms,
        None if out is None else out / "relax_trajectory.xyz",
        progress_every or 1,
        stream,
    )
    opt = _optimizer(optimizer, target, logfile=None)
    opt.attach(recorder, interval=1, with_stress=cell)
    t0 = time.perf_counter()
    try:
        converged = bool(opt.run(fmax=fmax, steps=steps))
    finally:
        recorder.close()
    wall = time.perf_counter() - t0
    forces = atoms.get_forces()
    stress = atoms.get_stress(voigt=False) if cell else None
    gpa = pressure_factor("GPa")
    result = RelaxResult(
        converged=converged,
        steps=int(opt.nsteps),
        fmax=float(np.sqrt((forces**2).sum(1)).max()),
        fmax_optimizer=float(np.sqrt((target.get_forces() ** 2).sum(1)).max()),
        energy=float(atoms.get_potential_energy()),
        stress=None if stress is None else stress.tolist(),
        stress_gpa=None if stress is None else (stress / gpa).tolist(),
        optimizer=optimizer,
        fmax_target=float(fmax),
        cell_relaxed=cell,
        pressure_bar=float(pressure_bar),
        wall_s=wall,
    )
    if out is not None:
        _write_final(atoms, out / "final.xyz")
        atomic_write_json(out / "relax.json", asdict(result))
    return result, atoms


def _write_final(atoms, path: Path) -> None:
    from ase.calculators.singlepoint import SinglePointCalculator
    from ase.io import write

    frame = atoms.copy()
    frame.calc = SinglePointCalculator(frame, **atoms.calc.results)
    buf = io.StringIO()
    write(buf, frame, format="extxyz")
    atomic_write_text(path, buf.getvalue())
