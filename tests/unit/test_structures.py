"""The hand-built structures have the intended formula, bonds and charge.

Catches a wrong substituent direction (atoms on top of each other or a bond
to the wrong atom), a wrong H count, or a popped atom other than the acid H.
"""

import numpy as np
import pytest
from ase.neighborlist import natural_cutoffs, neighbor_list

from equiforce import structures


def bonds(atoms):
    """Sorted (symbol, symbol) of every bond (ASE covalent radii × 1.2)."""
    i, j = neighbor_list("ij", atoms, natural_cutoffs(atoms, mult=1.2))
    s = atoms.get_chemical_symbols()
    return sorted(
        tuple(sorted((s[a], s[b]))) for a, b in zip(i, j, strict=True) if a < b
    )


@pytest.mark.parametrize(
    ("build", "formula", "charge", "expected"),
    [
        (structures.acetate, "C2H3O2", -1, {("C", "C"): 1, ("C", "H"): 3, ("C", "O"): 2}),
        (
            structures.glycine_zwitterion, "C2H5NO2", 0,
            {("C", "C"): 1, ("C", "H"): 2, ("C", "N"): 1, ("C", "O"): 2, ("H", "N"): 3},
        ),
        (
            structures.methylammonium_acetate, "C3H9NO2", 0,
            {("C", "C"): 1, ("C", "H"): 6, ("C", "N"): 1, ("C", "O"): 2, ("H", "N"): 3},
        ),
    ],
)  # fmt: skip
def test_molecules_have_their_bonds(build, formula, charge, expected):
    atoms = build()
    assert atoms.get_chemical_formula(mode="hill") == formula
    assert atoms.info["charge"] == charge
    got = {}
    for pair in bonds(atoms):
        got[pair] = got.get(pair, 0) + 1
    assert got == expected
    d = atoms.get_all_distances()[np.triu_indices(len(atoms), 1)]
    assert d.min() > 0.95  # no clash (shortest bond: N-H 1.03 Å)


def test_alkane_and_water_box():
    chain = structures.alkane(70)
    assert len(chain) == 212 and chain.get_chemical_formula(mode="hill") == "C70H142"
    assert len(bonds(chain)) == 69 + 142  # a tree: C-C and C-H bonds only
    box = structures.water_box(2)
    assert len(box) == 24 and box.pbc.all()
    assert len(bonds(box)) == 16  # two O-H per water, none across molecules
