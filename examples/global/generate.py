"""Reference data for global interactions: cumulene C₉H₄ end-group twist scan.

Linear cumulene H₂C=(C=)₇CH₂ (C–C 1.28 Å, C–H 1.09 Å, H–C–H 120°, chain on the
x axis); one CH₂ end is rotated rigidly about the axis by a twist angle drawn
uniformly from [0°, 90°], then every coordinate gets Gaussian noise (σ = 0.02 Å).
Labels: GFN2-xTB (tblite, default settings: accuracy 1.0, electronic temperature
9.5e-4 Eh ≈ 300 K Fermi smearing, SAD guess), neutral closed shell (total charge
0, no unpaired electrons). An odd chain prefers perpendicular ends: ΔE(90°) ≈
−0.85 eV (``shared/docs/global-interactions.md`` §5.2), a dependence local models
whose receptive field does not span the chain cannot see. Usage::

    PYTHONPATH=src python examples/global/generate.py --out data/global

writes ``cumulene_c9h4_twist.extxyz`` (energy eV, forces eV/Å, per frame
``charge``, ``uhf`` and ``twist_deg``) and ``cumulene_c9h4_twist.json`` (the
settings, the tblite version and the file's SHA-256).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from importlib.metadata import version
from pathlib import Path

import numpy as np

#: Everything that determines the data set (stored next to it).
SETTINGS = {
    "molecule": "C9H4",
    "n_carbons": 9,
    "cc_bond_A": 1.28,
    "ch_bond_A": 1.09,
    "hch_angle_deg": 120.0,
    "twist_range_deg": [0.0, 90.0],
    "noise_sigma_A": 0.02,
    "n_frames": 300,
    "seed": 2026,
    "method": "GFN2-xTB",
    "accuracy": 1.0,
    "electronic_temperature_Eh": 9.5e-4,
    "charge": 0,
    "uhf": 0,
}
HARTREE_EV = 27.211386245988  # CODATA 2018, as ase.units.Hartree
BOHR_A = 0.529177210903  # CODATA 2018, as ase.units.Bohr


def cumulene(n_carbons: int, twist_deg: float, s: dict = SETTINGS) -> tuple:
    """Positions (n, 3) Å and atomic numbers of H₂C=(C=)ₙ₋₂CH₂ with one end twisted."""
    cc, ch = s["cc_bond_A"], s["ch_bond_A"]
    half = math.radians(s["hch_angle_deg"]) / 2
    carbons = [[k * cc, 0.0, 0.0] for k in range(n_carbons)]
    end = (n_carbons - 1) * cc
    hydrogens = []
    for sign in (1, -1):  # first end in the xy plane
        hydrogens.append([-ch * math.cos(half), sign * ch * math.sin(half), 0.0])
    phi = math.radians(twist_deg)
    for sign in (1, -1):  # far end rotated by phi about x
        r = sign * ch * math.sin(half)
        hydrogens.append(
            [end + ch * math.cos(half), r * math.cos(phi), r * math.sin(phi)]
        )
    z = [6] * n_carbons + [1] * 4
    return np.array(carbons + hydrogens), np.array(z)


def gfn2(positions: np.ndarray, numbers: np.ndarray, s: dict = SETTINGS) -> tuple:
    """GFN2-xTB energy (eV) and forces (eV/Å) from tblite."""
    from tblite.interface import Calculator

    calc = Calculator(
        s["method"], numbers, positions / BOHR_A, charge=s["charge"], uhf=s["uhf"]
    )
    calc.set("accuracy", s["accuracy"])
    calc.set("temperature", s["electronic_temperature_Eh"])
    calc.set("verbosity", 0)
    res = calc.singlepoint()
    energy = float(res.get("energy")) * HARTREE_EV
    forces = -np.asarray(res.get("gradient")) * HARTREE_EV / BOHR_A
    return energy, forces


def frames(s: dict = SETTINGS) -> list[tuple[float, np.ndarray, np.ndarray]]:
    """(twist angle, positions, numbers) of every frame, seeded."""
    rng = np.random.default_rng(s["seed"])
    lo, hi = s["twist_range_deg"]
    out = []
    for angle in rng.uniform(lo, hi, size=s["n_frames"]):
        pos, z = cumulene(s["n_carbons"], float(angle), s)
        pos = pos + rng.normal(scale=s["noise_sigma_A"], size=pos.shape)
        out.append((float(angle), pos, z))
    return out


def labelled_frame(index: int, s: dict = SETTINGS):
    """Frame ``index`` as an ``ase.Atoms`` with its GFN2-xTB labels."""
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    angle, pos, z = frames(s)[index]
    energy, forces = gfn2(pos, z, s)
    atoms = Atoms(numbers=z, positions=pos)
    atoms.info.update(charge=s["charge"], uhf=s["uhf"], twist_deg=round(angle, 6))
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def main(argv: list[str] | None = None) -> int:
    """Generate the scan into ``--out`` (extxyz + JSON settings)."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("data/global"))
    args = p.parse_args(argv)
    import ase.io

    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "cumulene_c9h4_twist.extxyz"
    atoms = [labelled_frame(k) for k in range(SETTINGS["n_frames"])]
    ase.io.write(path, atoms, format="extxyz")
    meta = {
        "settings": SETTINGS,
        "tblite_version": version("tblite"),
        "ase_version": version("ase"),
        "generator": "examples/global/generate.py",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    (args.out / "cumulene_c9h4_twist.json").write_text(
        json.dumps(meta, indent=2) + "\n"
    )
    energies = np.array([a.get_potential_energy() for a in atoms])
    print(f"{path}: {len(atoms)} frames, energy range {np.ptp(energies):.3f} eV")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
