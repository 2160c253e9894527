"""Small OpenMM systems for the equiforce/OpenMM tests: ethanol, water, peptide."""

import numpy as np
import openmm
import openmm.app as app
from ase import Atoms
from ase.build import molecule
from openmm import unit

from equiforce.bench import water_positions
from equiforce.testing import tiny_so3krates

NM = unit.nanometer
KJ = unit.kilojoule_per_mole


def tiny_model(e0=None):
    """The shared tiny untrained So3krates (``equiforce.testing``)."""
    return tiny_so3krates(e0)


def topology_of(atoms: Atoms, residue: str = "MOL") -> app.Topology:
    """A one-residue topology with ``atoms``' elements (and box when periodic)."""
    top = app.Topology()
    res = top.addResidue(residue, top.addChain())
    for i, s in enumerate(atoms.get_chemical_symbols()):
        top.addAtom(f"{s}{i}", app.Element.getBySymbol(s), res)
    if atoms.pbc.all():
        top.setPeriodicBoxVectors(np.asarray(atoms.cell) / 10 * NM)
    return top


def ethanol() -> Atoms:
    return molecule("CH3CH2OH")


def water_box(n_mol: int = 27, seed: int = 0) -> tuple[Atoms, app.Topology]:
    """A periodic box of ``n_mol`` waters as Atoms and as an HOH topology."""
    pos, z, edge = water_positions(n_mol, seed=seed)
    atoms = Atoms(numbers=z, positions=pos, cell=np.eye(3) * edge, pbc=True)
    top = app.Topology()
    chain = top.addChain()
    for _ in range(n_mol):
        res = top.addResidue("HOH", chain)
        o = top.addAtom("O", app.element.oxygen, res)
        for name in ("H1", "H2"):
            top.addBond(o, top.addAtom(name, app.element.hydrogen, res))
    top.setPeriodicBoxVectors(np.eye(3) * edge / 10 * NM)
    return atoms, top


def context(system: openmm.System, positions_A: np.ndarray, dt_fs: float = 0.5):
    """A Reference-platform (double precision) context at ``positions_A`` (Å)."""
    integrator = openmm.VerletIntegrator(dt_fs * 1e-3)
    ctx = openmm.Context(
        system, integrator, openmm.Platform.getPlatformByName("Reference")
    )
    ctx.setPositions(positions_A / 10)
    return ctx


def energy_forces(ctx: openmm.Context, groups=-1) -> tuple[float, np.ndarray]:
    """Potential energy (kJ/mol) and forces (n, 3) kJ/mol/nm of ``ctx``."""
    state = ctx.getState(getEnergy=True, getForces=True, groups=groups)
    e = state.getPotentialEnergy().value_in_unit(KJ)
    f = state.getForces(asNumpy=True).value_in_unit(KJ / NM)
    return e, np.asarray(f)


# ------------------------------------------------------------- peptide
def _place(a, b, c, bond, angle, torsion):
    """Position of d with |cd| = bond, angle bcd, torsion abcd (Å, degrees)."""
    angle, torsion = np.radians(angle), np.radians(torsion)
    bc = (c - b) / np.linalg.norm(c - b)
    n = np.cross(b - a, bc)
    n /= np.linalg.norm(n)
    m = np.cross(n, bc)
    d = [
        -np.cos(angle),
        np.sin(angle) * np.cos(torsion),
        np.sin(angle) * np.sin(torsion),
    ]
    return c + bond * (d[0] * bc + d[1] * m + d[2] * n)


def _dipeptide_pdb() -> str:
    """Heavy atoms of ACE-ALA-NME from standard peptide geometry (PDB text)."""
    x = {"CH3": np.zeros(3), "C0": np.array([1.52, 0.0, 0.0])}
    x["N1"] = _place(np.array([0, 1.0, 0]), x["CH3"], x["C0"], 1.33, 116, 180)
    x["CA"] = _place(x["CH3"], x["C0"], x["N1"], 1.46, 122, 180)
    x["C"] = _place(x["C0"], x["N1"], x["CA"], 1.52, 111, -70)
    x["N2"] = _place(x["N1"], x["CA"], x["C"], 1.33, 116, 140)
    x["CN"] = _place(x["CA"], x["C"], x["N2"], 1.46, 122, 180)
    x["O0"] = _place(x["CA"], x["N1"], x["C0"], 1.23, 123, 0)
    x["CB"] = _place(x["C0"], x["N1"], x["CA"], 1.53, 110, 50)
    x["O"] = _place(x["CN"], x["N2"], x["C"], 1.23, 123, 0)
    rows = [
        ("CH3", "ACE", 1, "CH3", "C"),
        ("C", "ACE", 1, "C0", "C"),
        ("O", "ACE", 1, "O0", "O"),
        ("N", "ALA", 2, "N1", "N"),
        ("CA", "ALA", 2, "CA", "C"),
        ("CB", "ALA", 2, "CB", "C"),
        ("C", "ALA", 2, "C", "C"),
        ("O", "ALA", 2, "O", "O"),
        ("N", "NME", 3, "N2", "N"),
        ("C", "NME", 3, "CN", "C"),
    ]
    lines = []
    for i, (name, res, rid, key, el) in enumerate(rows, 1):
        p = x[key]
        lines.append(
            f"ATOM  {i:5d} {name:<4s} {res:3s} A{rid:4d}    "
            f"{p[0]:8.3f}{p[1]:8.3f}{p[2]:8.3f}  1.00  0.00          {el:>2s}"
        )
    return "\n".join(lines + ["END", ""])


def solvated_dipeptide(box_nm: float = 1.8):
    """Alanine dipeptide (amber14, minimised) in a cubic TIP3P box.

    Returns:
        (forcefield, solute topology, solute positions nm, solvated topology,
        solvated positions nm); the solute's atoms come first in the box.
    """
    import io

    ff = app.ForceField("amber14-all.xml", "amber14/tip3p.xml")
    pdb = app.PDBFile(io.StringIO(_dipeptide_pdb()))
    modeller = app.Modeller(pdb.topology, pdb.positions)
    modeller.addHydrogens(ff)
    system = ff.createSystem(modeller.topology, nonbondedMethod=app.NoCutoff)
    ctx = openmm.Context(
        system,
        openmm.VerletIntegrator(0.001),
        openmm.Platform.getPlatformByName("Reference"),
    )
    ctx.setPositions(modeller.positions)
    openmm.LocalEnergyMinimizer.minimize(ctx, 1.0, 500)
    solute_pos = ctx.getState(getPositions=True).getPositions(asNumpy=True)
    solute_top = modeller.topology
    modeller = app.Modeller(solute_top, solute_pos)
    modeller.addSolvent(
        ff, model="tip3p", boxSize=openmm.Vec3(box_nm, box_nm, box_nm) * NM
    )
    pos = np.asarray(modeller.positions.value_in_unit(NM))
    return (
        ff,
        solute_top,
        np.asarray(solute_pos.value_in_unit(NM)),
        modeller.topology,
        pos,
    )
