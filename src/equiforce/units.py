"""Unit conversions at the boundary of the library.

Inside equiforce everything is eV, Å, fs, amu and e. Readers convert with the
factors here; the factors come from ASE (CODATA 2014) so that equiforce agrees
with ASE bit for bit.
"""

from __future__ import annotations

from ase import units as _u

#: Energy units -> factor to eV.
ENERGY_UNITS: dict[str, float] = {
    "eV": 1.0,
    "meV": 1e-3,
    "kcal/mol": _u.kcal / _u.mol,
    "kJ/mol": _u.kJ / _u.mol,
    "Hartree": _u.Hartree,
    "Ha": _u.Hartree,
    "Ry": _u.Rydberg,
}

#: Length units -> factor to Å.
LENGTH_UNITS: dict[str, float] = {
    "Angstrom": 1.0,
    "Å": 1.0,
    "A": 1.0,
    "Bohr": _u.Bohr,
    "nm": 10.0,
}

#: Force units -> factor to eV/Å.
FORCE_UNITS: dict[str, float] = {
    "eV/Angstrom": 1.0,
    "eV/Å": 1.0,
    "eV/A": 1.0,
    "kcal/mol/Angstrom": _u.kcal / _u.mol,
    "kcal/mol/Å": _u.kcal / _u.mol,
    "kcal/mol/A": _u.kcal / _u.mol,
    "Hartree/Bohr": _u.Hartree / _u.Bohr,
    "Ha/Bohr": _u.Hartree / _u.Bohr,
    "kJ/mol/Angstrom": _u.kJ / _u.mol,
}

#: Pressure units -> factor to eV/Å³ (the unit of stress inside equiforce).
PRESSURE_UNITS: dict[str, float] = {
    "eV/Å^3": 1.0,
    "eV/A^3": 1.0,
    "GPa": _u.GPa,
    "bar": _u.bar,
    "atm": 1.01325 * _u.bar,
}

#: Dipole units -> factor to e·Å.
DIPOLE_UNITS: dict[str, float] = {
    "e*Angstrom": 1.0,
    "e*Å": 1.0,
    "e*A": 1.0,
    "e*Bohr": _u.Bohr,
    "Debye": _u.Debye,
    "D": _u.Debye,
}

#: Derived constants (internal units).
FS: float = _u.fs  # one femtosecond in ASE time units
KB_EV: float = _u.kB  # Boltzmann constant, eV/K
#: amu·Å²/fs² -> eV  (kinetic energy of momenta in amu·Å/fs)
AMU_A2_PER_FS2_TO_EV: float = _u._amu * 1e-20 / 1e-30 / _u._e
#: Speed of light in cm/fs (for wavenumbers).
C_CM_PER_FS: float = 2.99792458e-5


def _lookup(table: dict[str, float], name: str, kind: str) -> float:
    try:
        return table[name]
    except KeyError:
        known = ", ".join(sorted(table))
        raise ValueError(f"unknown {kind} unit {name!r}; known: {known}") from None


def energy_factor(name: str) -> float:
    """Factor converting an energy in unit ``name`` to eV.

    Raises:
        ValueError: for an unknown unit name (the message lists the known ones).
    """
    return _lookup(ENERGY_UNITS, name, "energy")


def length_factor(name: str) -> float:
    """Factor converting a length in unit ``name`` to Å."""
    return _lookup(LENGTH_UNITS, name, "length")


def force_factor(name: str) -> float:
    """Factor converting a force in unit ``name`` to eV/Å."""
    return _lookup(FORCE_UNITS, name, "force")


def pressure_factor(name: str) -> float:
    """Factor converting a pressure in unit ``name`` to eV/Å³."""
    return _lookup(PRESSURE_UNITS, name, "pressure")


def dipole_factor(name: str) -> float:
    """Factor converting a dipole moment in unit ``name`` to e·Å."""
    return _lookup(DIPOLE_UNITS, name, "dipole")
