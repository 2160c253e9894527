"""Reference data for global interactions (GFN2-xTB via tblite), four scans.

Every set is seeded and fully described by its settings dict (stored next to
the data); labels: GFN2-xTB energy and forces (tblite, accuracy 1.0, electronic
temperature 9.5e-4 Eh ≈ 300 K Fermi smearing, SAD guess), total charge and
unpaired electrons in every frame's info (``charge``, ``uhf``).

- ``cumulene_c9h4_twist``: linear cumulene H₂C=(C=)₇CH₂ (C–C 1.28 Å, C–H
  1.09 Å, H–C–H 120°, chain on the x axis); one CH₂ end rotated rigidly about the
  axis by a twist angle uniform in [0°, 90°] (``twist_deg``), then Gaussian noise
  (σ = 0.02 Å) on every coordinate. Odd chain: perpendicular ends preferred,
  ΔE(90°) ≈ −0.85 eV (``shared/docs/global-interactions.md`` §5.2).
- ``cumulene_c17h4_twist``: the same construction for H₂C=(C=)₁₅CH₂, 21.6 Å
  end to end (H–H along the axis): longer than twice the receptive field of the
  default So3krates (2 layers × 5 Å), so no atom sees both ends; ΔE(90°) ≈
  −0.43 eV.
- ``nh4_nh4_scan``: two tetrahedral NH₄⁺ (N–H 1.03 Å), each randomly oriented,
  N–N distance uniform in [3, 25] Å (``distance_A``, before the noise), σ =
  0.02 Å noise, total charge +2; orientations with an inter-ion contact below
  1.5 Å are redrawn. Coulomb tail ≈ 14.4/d eV (§5.3).
- ``cyanine_c11_twist``: streptocyanine cation H₂N–(CH=)₁₁NH₂⁺ (all-trans
  planar zigzag, backbone bonds 1.39 Å, 120° angles, C–H 1.09 Å, N–H 1.01 Å),
  one terminal NH₂ rotated about its C–N bond by a twist uniform in [0°, 90°],
  σ = 0.02 Å noise, total charge +1: a 13-bond conjugated path (14.4 Å N…N)
  over which the positive charge is delocalised; the twist breaks the
  conjugation at one end and moves the charge.

Usage (from the repository root)::

    PYTHONPATH=src python examples/global/generate.py --out data/global [--only NAME ...]

writes ``NAME.extxyz`` (energy eV, forces eV/Å; per frame ``charge``, ``uhf``
and the scan variable) and ``NAME.json`` (the settings, the tblite and ASE
versions and the file's SHA-256) for each set, and ``NAME.split.json``: frame
indices ``train``/``valid`` (the ``data.split_file`` format) and ``test`` (the
held-out range of the scan variable, ``SPLITS``).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path

import numpy as np

#: Everything that determines the C₉H₄ data set (stored next to it).
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
_XTB = {k: SETTINGS[k] for k in ("method", "accuracy", "electronic_temperature_Eh")}

#: The sets by file stem; ``system`` selects the geometry builder (default cumulene).
DATASETS: dict[str, dict] = {
    "cumulene_c9h4_twist": SETTINGS,
    "cumulene_c17h4_twist": {
        **SETTINGS,
        "molecule": "C17H4",
        "n_carbons": 17,
        "n_frames": 200,
        "seed": 2027,
    },
    "nh4_nh4_scan": {
        "system": "ion_pair",
        "molecule": "NH4+ NH4+",
        "nh_bond_A": 1.03,
        "distance_range_A": [3.0, 25.0],
        "min_contact_A": 1.5,
        "noise_sigma_A": 0.02,
        "n_frames": 300,
        "seed": 2028,
        **_XTB,
        "charge": 2,
        "uhf": 0,
    },
    "cyanine_c11_twist": {
        "system": "cyanine",
        "molecule": "H2N-(CH=)11-NH2+ (C11H15N2+)",
        "n_methine": 11,
        "backbone_bond_A": 1.39,
        "ch_bond_A": 1.09,
        "nh_bond_A": 1.01,
        "twist_range_deg": [0.0, 90.0],
        "noise_sigma_A": 0.02,
        "n_frames": 150,
        "seed": 2029,
        **_XTB,
        "charge": 1,
        "uhf": 0,
    },
}
#: Held-out test ranges (open intervals of the scan variable) per set: train
#: outside them (every 10th of those frames validates), test inside.
SPLITS: dict[str, tuple[str, list[tuple[float, float]]]] = {
    "cumulene_c9h4_twist": ("twist_deg", [(60.0, 75.0)]),
    "cumulene_c17h4_twist": ("twist_deg", [(60.0, 75.0)]),
    "nh4_nh4_scan": ("distance_A", [(11.0, 16.0)]),
    "cyanine_c11_twist": ("twist_deg", [(60.0, 75.0)]),
}
HARTREE_EV = 27.211386245988  # CODATA 2018, as ase.units.Hartree
BOHR_A = 0.529177210903  # CODATA 2018, as ase.units.Bohr


def _rotate(v: np.ndarray, axis: np.ndarray, phi: float) -> np.ndarray:
    """Rotate vectors ``v`` (..., 3) by ``phi`` (rad) about the unit ``axis`` (Rodrigues)."""
    k = axis / np.linalg.norm(axis)
    c, s = math.cos(phi), math.sin(phi)
    return v * c + np.cross(k, v) * s + np.outer(v @ k, k) * (1 - c)


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


def ammonium_pair(distance: float, rot_a, rot_b, s: dict) -> tuple:
    """Two NH₄⁺ (N at the origin and at (d, 0, 0)), each rotated by a scipy Rotation."""
    tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / math.sqrt(3)
    h = tet * s["nh_bond_A"]
    shift = np.array([distance, 0.0, 0.0])
    pos = np.concatenate(
        [[[0.0, 0.0, 0.0]], rot_a.apply(h), [shift], rot_b.apply(h) + shift]
    )
    return pos, np.array([7, 1, 1, 1, 1, 7, 1, 1, 1, 1])


def cyanine(n_methine: int, twist_deg: float, s: dict) -> tuple:
    """Planar all-trans H₂N–(CH=)ₙNH₂⁺ (n odd), the last NH₂ twisted about C–N.

    Backbone atoms k = 0 … n+1 (N, n carbons, N) zigzag in the xy plane with
    120° angles; each CH hydrogen points along the outer bisector (∓y).
    """
    if n_methine % 2 == 0:
        raise ValueError(f"n_methine={n_methine} must be odd (symmetric cyanine)")
    b, ch, nh = s["backbone_bond_A"], s["ch_bond_A"], s["nh_bond_A"]
    n_back = n_methine + 2
    back = np.array(
        [[k * b * math.cos(math.pi / 6), (k % 2) * b / 2, 0.0] for k in range(n_back)]
    )
    outward = np.array([[0.0, -1.0 if k % 2 == 0 else 1.0, 0.0] for k in range(n_back)])
    h_c = back[1:-1] + ch * outward[1:-1]

    def nh2(k: int, j: int, phi: float) -> np.ndarray:
        """Two H on N_k (neighbour C_j): ±120° from N→C in plane, then twisted by phi."""
        bond = (back[j] - back[k]) / b
        z_axis = np.array([0.0, 0.0, 1.0])
        dirs = np.concatenate(
            [
                _rotate(bond[None], z_axis, a)
                for a in (2 * math.pi / 3, -2 * math.pi / 3)
            ]
        )
        return back[k] + nh * _rotate(dirs, bond, phi)

    h_n = np.concatenate(
        [nh2(0, 1, 0.0), nh2(n_back - 1, n_back - 2, math.radians(twist_deg))]
    )
    pos = np.concatenate([back, h_c, h_n])
    z = np.array([7] + [6] * n_methine + [7] + [1] * (n_methine + 4))
    return pos, z


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


def _twist_frames(
    s: dict, build: Callable[[float], tuple[np.ndarray, np.ndarray]]
) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """``n_frames`` twist angles drawn in ``twist_range_deg``, geometry noise added."""
    rng = np.random.default_rng(s["seed"])
    lo, hi = s["twist_range_deg"]
    out = []
    for angle in rng.uniform(lo, hi, size=s["n_frames"]):
        pos, z = build(float(angle))
        pos = pos + rng.normal(scale=s["noise_sigma_A"], size=pos.shape)
        out.append(({"twist_deg": round(float(angle), 6)}, pos, z))
    return out


def _cumulene_frames(s: dict) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    return _twist_frames(s, lambda angle: cumulene(s["n_carbons"], angle, s))


def _ion_pair_frames(s: dict) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    from scipy.spatial.transform import Rotation

    rng = np.random.default_rng(s["seed"])
    lo, hi = s["distance_range_A"]
    out = []
    for d in rng.uniform(lo, hi, size=s["n_frames"]):
        while True:  # redraw orientations with an inter-ion contact
            rot_a, rot_b = Rotation.random(2, random_state=rng)
            pos, z = ammonium_pair(float(d), rot_a, rot_b, s)
            gap = np.linalg.norm(pos[:5, None] - pos[None, 5:], axis=-1).min()
            if gap >= s["min_contact_A"]:
                break
        pos = pos + rng.normal(scale=s["noise_sigma_A"], size=pos.shape)
        out.append(({"distance_A": round(float(d), 6)}, pos, z))
    return out


def _cyanine_frames(s: dict) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    return _twist_frames(s, lambda angle: cyanine(s["n_methine"], angle, s))


_BUILDERS = {
    "cumulene": _cumulene_frames,
    "ion_pair": _ion_pair_frames,
    "cyanine": _cyanine_frames,
}


def frames(s: dict = SETTINGS) -> list[tuple[dict, np.ndarray, np.ndarray]]:
    """(scan variables, positions, numbers) of every frame of a set, seeded."""
    return _BUILDERS[s.get("system", "cumulene")](s)


def labelled_frame(index: int, s: dict = SETTINGS):
    """Frame ``index`` of the set ``s`` as an ``ase.Atoms`` with GFN2-xTB labels."""
    return _label(*frames(s)[index], s)


def _label(info: dict, pos: np.ndarray, z: np.ndarray, s: dict):
    from ase import Atoms
    from ase.calculators.singlepoint import SinglePointCalculator

    energy, forces = gfn2(pos, z, s)
    atoms = Atoms(numbers=z, positions=pos)
    atoms.info.update(charge=s["charge"], uhf=s["uhf"], **info)
    atoms.calc = SinglePointCalculator(atoms, energy=energy, forces=forces)
    return atoms


def write_set(name: str, out: Path) -> Path:
    """Label every frame of ``DATASETS[name]``; write ``NAME.extxyz`` and ``NAME.json``."""
    import ase.io

    s = DATASETS[name]
    path = out / f"{name}.extxyz"
    atoms = [_label(*frame, s) for frame in frames(s)]
    ase.io.write(path, atoms, format="extxyz")
    meta = {
        "settings": s,
        "tblite_version": version("tblite"),
        "ase_version": version("ase"),
        "generator": "examples/global/generate.py",
        "sha256": hashlib.sha256(path.read_bytes()).hexdigest(),
    }
    path.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n")
    energies = np.array([a.get_potential_energy() for a in atoms])
    print(f"{path}: {len(atoms)} frames, energy range {np.ptp(energies):.3f} eV")
    return path


def split(values: np.ndarray, test_ranges: list[tuple[float, float]]) -> dict:
    """Frame indices: ``test`` inside any open range, the rest ``train``/``valid``."""
    inside = np.zeros(len(values), bool)
    for lo, hi in test_ranges:
        inside |= (values > lo) & (values < hi)
    rest = np.nonzero(~inside)[0]
    return {
        "train": [int(i) for k, i in enumerate(rest) if k % 10],
        "valid": [int(i) for k, i in enumerate(rest) if k % 10 == 0],
        "test": np.nonzero(inside)[0].tolist(),
    }


def write_split(name: str, out: Path) -> Path:
    """``NAME.split.json`` (``data.split_file`` format, plus ``test``) from the data."""
    import ase.io

    key, ranges = SPLITS[name]
    atoms = ase.io.read(out / f"{name}.extxyz", index=":")
    values = np.array([a.info[key] for a in atoms])
    idx = split(values, ranges)
    path = out / f"{name}.split.json"
    rule = f"test: {key} in " + " or ".join(f"({lo:g}, {hi:g})" for lo, hi in ranges)
    path.write_text(json.dumps({"rule": rule, **idx}) + "\n")
    return path


def main(argv: list[str] | None = None) -> int:
    """Generate the chosen sets (default: all) into ``--out``."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, default=Path("data/global"))
    p.add_argument("--only", nargs="+", choices=sorted(DATASETS), default=None)
    p.add_argument(
        "--splits-only", action="store_true", help="rewrite the split files only"
    )
    args = p.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for name in args.only or DATASETS:
        if not args.splits_only:
            write_set(name, args.out)
        write_split(name, args.out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
