"""Small structures built from scratch, for tests, benchmarks and reproductions.

Geometries are idealised (standard bond lengths, tetrahedral or trigonal angles),
not relaxed: good enough for single-point comparisons and timing, where what
matters is that every pair distance is chemically sensible. Imports ASE and
NumPy only.
"""

from __future__ import annotations

import numpy as np
from ase import Atoms
from ase.build import molecule

#: cos of the tetrahedral angle and the length of its perpendicular part
_TET_COS, _TET_SIN = -1.0 / 3.0, float(np.sqrt(8.0 / 9.0))


def _frame(b: np.ndarray, hint: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two unit vectors perpendicular to unit ``b`` and to each other."""
    p = hint - (hint @ b) * b
    if np.linalg.norm(p) < 1e-6:  # hint along b: any other axis
        p = np.roll(b, 1) - (np.roll(b, 1) @ b) * b
    p /= np.linalg.norm(p)
    return p, np.cross(b, p)


def tetrahedral(
    centre: np.ndarray, bond: np.ndarray, length: float, hint=(0.0, 0.0, 1.0)
) -> list[np.ndarray]:
    """The three other sp³ positions (Å) around ``centre``, ``bond`` its known bond.

    Args:
        centre: (3,) the sp³ atom.
        bond: (3,) direction from ``centre`` to its known neighbour.
        length: bond length of the three new substituents, Å.
        hint: (3,) fixes the rotation about the bond (first substituent in the
            plane of ``bond`` and ``hint``).
    """
    b = np.asarray(bond, float) / np.linalg.norm(bond)
    p, q = _frame(b, np.asarray(hint, float))
    out = []
    for phi in (0.0, 2 * np.pi / 3, 4 * np.pi / 3):
        d = _TET_COS * b + _TET_SIN * (np.cos(phi) * p + np.sin(phi) * q)
        out.append(centre + length * d)
    return out


def alkane(n_carbons: int) -> Atoms:
    """All-trans CnH2n+2: zigzag carbons (C-C 1.54 Å), tetrahedral H (C-H 1.09 Å).

    C70H142 has 212 atoms, C33H68 101.
    """
    cc, ch = 1.54, 1.09
    half = np.radians(109.47) / 2
    dx, dy = cc * np.sin(half), cc * np.cos(half)
    carbons = np.array([[k * dx, (k % 2) * dy, 0.0] for k in range(n_carbons)])
    symbols, positions = [], []
    for k, c in enumerate(carbons):
        symbols.append("C")
        positions.append(c)
        out = np.array([0.0, -1.0 if k % 2 == 0 else 1.0, 0.0])  # away from the chain
        # two H in the plane through ``out`` and z, tetrahedral around the carbon
        for sz in (1.0, -1.0):
            d = out * np.cos(half) + np.array([0.0, 0.0, sz * np.sin(half)])
            symbols.append("H")
            positions.append(c + ch * d)
        if k in (0, n_carbons - 1):  # the chain ends: a third H along the axis
            axis = np.array([-1.0 if k == 0 else 1.0, 0.0, 0.0])
            d = axis * np.sin(half) - out * np.cos(half)
            symbols.append("H")
            positions.append(c + ch * d / np.linalg.norm(d))
    return Atoms(symbols, positions=np.array(positions))


def glycine_zwitterion() -> Atoms:
    """⁺H3N-CH2-COO⁻ (total charge 0, ``info['charge'] = 0``), 10 atoms.

    Cα tetrahedral (N-Cα 1.48, Cα-C 1.53, C-H 1.09 Å), NH3⁺ staggered
    (N-H 1.03 Å), planar carboxylate (C-O 1.25 Å, O-C-O 125°) in the N-Cα-C
    plane; one ammonium H is 2.0 Å from a carboxylate O.
    """
    ca = np.zeros(3)
    tet = np.array([[1, 1, 1], [1, -1, -1], [-1, 1, -1], [-1, -1, 1]]) / np.sqrt(3)
    n, c = ca + 1.48 * tet[0], ca + 1.53 * tet[1]
    h_ca = [ca + 1.09 * tet[2], ca + 1.09 * tet[3]]
    h_n = tetrahedral(n, ca - n, 1.03, hint=c - ca)
    # carboxylate: O's in the N-Cα-C plane, ±(180° − 125°/2) from the C→Cα bond
    b = (ca - c) / np.linalg.norm(ca - c)
    p, _ = _frame(b, n - ca)
    half = np.radians(180.0 - 125.0 / 2)
    o = [c + 1.25 * (np.cos(half) * b + s * np.sin(half) * p) for s in (1.0, -1.0)]
    atoms = Atoms("NCCOOHHHHH", positions=np.array([n, ca, c, *o, *h_ca, *h_n]))
    atoms.info["charge"] = 0
    return atoms


def methylammonium_acetate(h_bond: float = 1.75) -> Atoms:
    """The contact ion pair CH3NH3⁺ ··· ⁻OOC-CH3 (total charge 0), 15 atoms.

    Acetate is ASE's acetic acid without its acid H; one ammonium N-H points
    at a carboxylate O along that O's C=O axis, H···O = ``h_bond`` Å.
    """
    anion = acetate()
    c_carboxyl, o = 0, 1  # ASE's CH3COOH order: C, O, O, (H popped), C, H, H, H
    axis = anion.positions[o] - anion.positions[c_carboxyl]
    axis /= np.linalg.norm(axis)
    h = anion.positions[o] + h_bond * axis
    n = h + 1.03 * axis  # N-H pointing back at the O
    h_n = tetrahedral(n, h - n, 1.03)  # the C and two more H
    c_me = n + (1.47 / 1.03) * (h_n[0] - n)
    h_c = tetrahedral(c_me, n - c_me, 1.09)
    cation = Atoms("NHHHCHHH", positions=np.array([n, h, h_n[1], h_n[2], c_me, *h_c]))
    pair = anion + cation
    pair.info["charge"] = 0
    return pair


def acetate() -> Atoms:
    """CH3COO⁻ (``info['charge'] = -1``): ASE's acetic acid without the acid H.

    (ASE orders CH3COOH as C, O, O, H, C, H, H, H: the acid H is index 3, not
    the last atom, which is a methyl H.)
    """
    atoms = molecule("CH3COOH")
    atoms.pop(3)
    atoms.info["charge"] = -1
    return atoms


def water_box(n_side: int, spacing: float = 3.1, seed: int = 0) -> Atoms:
    """n_side³ randomly oriented water molecules on a cubic lattice, jiggled.

    A periodic cubic cell of side ``n_side * spacing`` Å (3.1 Å: ≈ 1 g/cm³);
    positions get N(0, 0.05 Å) noise.
    """
    rng = np.random.default_rng(seed)
    atoms = Atoms(cell=np.eye(3) * n_side * spacing, pbc=True)
    for a in range(n_side):
        for b in range(n_side):
            for c in range(n_side):
                w = molecule("H2O")
                w.rotate(rng.uniform(0, 360), rng.normal(size=3))
                w.positions += (np.array([a, b, c]) + 0.5) * spacing
                atoms += w
    atoms.positions += rng.normal(0, 0.05, atoms.positions.shape)
    return atoms
