"""SO3LR: the contract suite on a tiny SO3LR, and the shipped pretrained model.

The pretrained tests load ``equiforce/pretrained/so3lr.pt`` (no extra package);
the reproduction and regeneration tests also need so3krates-torch (the
``references`` extra) and skip with that reason without it.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch
from ase.build import molecule

from equiforce import keys
from equiforce.calculator import EquiforceCalculator
from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import load_model
from equiforce.models.so3lr.model import CHARGES, DIPOLE, HIRSHFELD
from equiforce.potential import Potential
from equiforce.structures import acetate
from equiforce.testing import (
    TINY_SO3KRATES,
    ModelContractTests,
    assert_close,
    random_molecule,
    random_orthogonal,
)

HAVE_REFERENCE = importlib.util.find_spec("so3krates_torch") is not None
needs_reference = pytest.mark.skipif(
    not HAVE_REFERENCE, reason="so3krates-torch is not installed (references extra)"
)
TERMS = ("local", "zbl", "electrostatics", "dispersion")


class TestSO3LRContract(ModelContractTests):
    """The shared suite with the long-range pairs in every graph (r_lr = 6 Å)."""

    model_name = "so3lr"
    overrides = {**TINY_SO3KRATES, "lr_cutoff": 6.0, "head_hidden": 16}

    def graph(self, pos, z, model, dtype, cell=None, pbc=None, extra_cutoff=0.0):
        return AtomicGraph.from_arrays(
            pos, z, model.cutoff + extra_cutoff, cell=cell, pbc=pbc, dtype=dtype,
            lr_cutoff=model.lr_cutoff + extra_cutoff,
        )  # fmt: skip

    @pytest.mark.parametrize(
        ("compile", "dtype"),
        [
            pytest.param(False, torch.float32, id="func-float32"),
            pytest.param(False, torch.float64, id="func-float64"),
            # two Inductor builds (with and without stress): ~4.5 min on the
            # shared 2-core machine; test_so3lr_compiled.py builds one instead
            pytest.param(
                True, torch.float64, id="compiled-float64", marks=pytest.mark.slow
            ),
        ],
    )
    def test_compiled_backend_equals_eager(self, compile, dtype):
        """The suite's test (compiled = eager, stress too), its builds marked slow."""
        super().test_compiled_backend_equals_eager(compile, dtype)

    def test_far_apart_molecules_are_additive(self, dtype):
        """Additive without electrostatics (see test_charge_spreads_over_the_structure)."""
        self.overrides = {**self.overrides, "electrostatics": False}
        super().test_far_apart_molecules_are_additive(dtype)

    def test_charge_spreads_over_the_structure(self):
        """SO3LR shares a structure's excess charge over all its atoms (§3.1).

        Two neutral molecules 50 Å apart in one structure are therefore not
        additive with electrostatics on: each gets a share of the other's charge
        excess. This documents the released model's property (and fails if the
        conservation became per fragment).
        """
        dtype = torch.float64
        model = self.make_model(dtype)
        rng = np.random.default_rng(7)
        (pa, za), (pb, zb) = (random_molecule(rng) for _ in range(2))
        both = np.concatenate([pa, pb + np.array([50.0, 0.0, 0.0])])
        g = self.graph(both, np.concatenate([za, zb]), model, dtype)
        q = model.atomic_properties(g)[CHARGES]
        qa = model.atomic_properties(self.graph(pa, za, model, dtype))[CHARGES]
        assert abs(float(q.sum())) < 1e-12
        # molecule a alone is neutral; in the pair it carries part of b's excess
        assert abs(float(qa.sum())) < 1e-12
        assert abs(float(q[: len(za)].sum())) > 1e-6


@pytest.fixture(scope="module")
def pretrained() -> torch.nn.Module:
    torch.set_num_threads(1)
    return load_model("so3lr", dtype=torch.float64)


def _charged_and_sulfur() -> list:
    """Neutral ethanol, acetate (−1), dimethyl sulfide and chloromethane, distorted."""
    rng = np.random.default_rng(0)
    mols = [molecule("CH3CH2OH"), acetate(), molecule("CH3SCH3"), molecule("CH3Cl")]
    for atoms in mols:
        atoms.positions += rng.normal(0.0, 0.05, atoms.positions.shape)
    return mols


#: measured maxima over the set (benchmarks/so3lr_reproduction.py, docs/so3lr.md)
#: float64: ΔE 1.5e-7 eV/atom (PME; 6e-8 without), ΔF 4.2e-6 eV/Å (PME; 1.4e-6
#: without), each term 9.6e-8 eV/atom, Δq 1.7e-8 e, Δ Hirshfeld 5.1e-8: the
#: limits are ~7x / 2.4x / 10x / 60x / 20x above, and 10x / 10x below the issue's
#: 1e-5 eV/atom and 1e-4 eV/Å. float32: |ΔE|/|E| 6.8e-8, below float32's
#: epsilon (1.2e-7; |E|/N ≈ 160 eV, so ΔE/atom up to 1.1e-5 is the rounding of
#: the total), ΔF 2.1e-5 (PME; 8.7e-6 without), Δq 4.8e-7, Δ Hirshfeld 2.7e-6:
#: limits 2 ulps of E, 2.4x, 4x, 4x.
TOLERANCES = {
    # dtype: (ΔE relative, ΔE per atom eV, ΔF eV/Å, Δq e, Δ Hirshfeld)
    torch.float64: (None, 1e-6, 1e-5, 1e-6, 1e-6),
    torch.float32: (2.5e-7, None, 5e-5, 2e-6, 1e-5),
}
RMD17 = Path(__file__).resolve().parents[2] / "data" / "rmd17"


@needs_reference
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_reproduces_so3krates_torch(dtype):
    """Every structure of the reproduction set equals so3krates-torch's SO3LR.

    Neutral molecules and rMD17 frames, acetate (Q = −1), a contact ion pair,
    the glycine zwitterion, C70H142 (212 atoms) and a periodic water box
    (so3krates-torch's default electrostatics, and its PME with two bugs
    patched): energy, forces, each term (local, ZBL, electrostatics,
    dispersion), partial charges and Hirshfeld ratios. Catches any error in
    the conversion or in the maths of a term: a wrong weight layout, head,
    embedding, switch, constant, charge handling or periodic image moves
    energies by ≫ 1e-6 eV/atom.
    """
    from equiforce.models.so3lr.reproduction import (
        PME,
        compare,
        equiforce_model,
        reference_calculator,
        reproduction_set,
    )

    torch.set_num_threads(1)
    rel_e, tol_e, tol_f, tol_q, tol_h = TOLERANCES[dtype]
    models = {pme: equiforce_model(dtype, pme) for pme in (False, True)}
    calcs = {pme: reference_calculator(dtype, pme) for pme in (False, True)}
    structures = reproduction_set(RMD17)
    assert {"glycine zwitterion", "methylammonium acetate", PME} <= structures.keys()
    assert max(len(a) for a in structures.values()) >= 200
    for name, atoms in structures.items():
        pme = name == PME
        d = compare(atoms, models[pme], calcs[pme])
        e_tol = tol_e if tol_e is not None else rel_e * abs(d.energy_ref) / d.n_atoms
        assert d.energy <= e_tol, f"{name}: energy {d.energy:.2e} eV/atom"
        assert d.forces <= tol_f, f"{name}: forces {d.forces:.2e} eV/Å"
        for term, dev in d.terms.items():
            assert dev <= e_tol, f"{name}: term {term} {dev:.2e} eV/atom"
        assert set(d.terms) == set(TERMS), name
        assert d.charges <= tol_q, f"{name}: partial charges {d.charges:.2e}"
        assert d.hirshfeld <= tol_h, f"{name}: Hirshfeld ratios {d.hirshfeld:.2e}"


@needs_reference
def test_regenerated_file_equals_shipped(tmp_path):
    """Converting so3krates-torch's file again gives the shipped config and weights."""
    from equiforce.models.checkpoint import load_checkpoint
    from equiforce.models.registry import make_config
    from equiforce.models.so3lr.convert import SHIPPED, write

    new = load_checkpoint(write(tmp_path / "so3lr.pt"))
    old = load_checkpoint(SHIPPED)
    # compared as validated configs: options added later (defaults) don't count
    assert make_config("so3lr", **new["model_config"]) == make_config(
        "so3lr", **old["model_config"]
    )
    assert new["train_config"]["source_sha256"] == old["train_config"]["source_sha256"]
    assert new["state_dict"].keys() == old["state_dict"].keys()
    for key, value in new["state_dict"].items():
        assert torch.equal(value, old["state_dict"][key]), key


def test_terms_and_charge_conservation(pretrained):
    """Each term is a named output; charges sum to the total charge; Q matters."""
    atoms = _charged_and_sulfur()[1]  # acetate, Q = -1
    g = AtomicGraph.from_atoms(atoms, pretrained.cutoff, lr_cutoff=pretrained.lr_cutoff)
    out = pretrained(g)
    total = sum(out[keys.term_energy(t)] for t in (*TERMS, "e0"))
    assert torch.allclose(total, out[keys.ENERGY], rtol=1e-12)
    for term in TERMS[1:]:
        assert abs(float(out[keys.term_energy(term)][0])) > 1e-4, term
    props = pretrained.atomic_properties(g)
    assert float(props[CHARGES].sum()) == pytest.approx(-1.0, abs=1e-12)
    assert (props[HIRSHFELD] > 0).all() and props[DIPOLE].shape == (1, 3)
    neutral = AtomicGraph.from_atoms(atoms, pretrained.cutoff, lr_cutoff=12.0)
    neutral.charge = torch.zeros(1, dtype=torch.float64)
    assert float(pretrained.atomic_properties(neutral)[CHARGES].sum()) == pytest.approx(
        0.0, abs=1e-12
    )
    # the charge enters the embedding: the local term changes too
    e_neutral = pretrained(neutral)[keys.term_energy("local")]
    assert abs(float(e_neutral - out[keys.term_energy("local")])) > 1e-3


def test_forces_are_minus_gradient_with_long_range(pretrained):
    """Forces of every term (charged molecule) = central differences, float64."""
    atoms = _charged_and_sulfur()[1]
    z = atoms.numbers
    pos = atoms.positions.copy()

    def energy_forces(p):
        g = AtomicGraph.from_arrays(p, z, pretrained.cutoff, lr_cutoff=12.0, charge=-1)
        out = pretrained(g)
        return out[keys.ENERGY].item(), out[keys.FORCES].numpy()

    _, f = energy_forces(pos)
    h = 1e-5
    for a, k in ((0, 0), (1, 1), (3, 2), (5, 2)):  # C, O of COO⁻, methyl C, an H
        p, m = pos.copy(), pos.copy()
        p[a, k] += h
        m[a, k] -= h
        fd = -(energy_forces(p)[0] - energy_forces(m)[0]) / (2 * h)
        assert abs(f[a, k] - fd) < 1e-6 * max(1.0, abs(fd)), (a, k, f[a, k], fd)


def test_rotation_translation_invariance(pretrained):
    """E invariant, F rotating with the molecule, every term, Q = -1 (float64)."""
    atoms = _charged_and_sulfur()[1]
    rot = random_orthogonal(np.random.default_rng(3), reflect=False)
    moved = atoms.positions @ rot.T + np.array([3.0, -7.0, 1.5])
    outs = [
        pretrained(
            AtomicGraph.from_arrays(p, atoms.numbers, 4.5, lr_cutoff=12.0, charge=-1)
        )
        for p in (atoms.positions, moved)
    ]
    for term in TERMS:
        key = keys.term_energy(term)
        assert_close(outs[1][key], outs[0][key], 1e-10, key)
    assert_close(outs[1][keys.FORCES], outs[0][keys.FORCES] @ rot.T, 1e-9, "forces")


def test_charge_from_atoms_info(pretrained):
    """The calculator reads info['charge'] (a change recomputes).

    (Compiled calls: tests/models/test_so3lr_compiled.py.)
    """
    calc = EquiforceCalculator(pretrained, compile=False)
    atoms = molecule("CH3CH2OH")
    atoms.calc = calc
    e0 = atoms.get_potential_energy()
    atoms.info["charge"] = 1
    e1 = atoms.get_potential_energy()
    assert calc.n_calls == 2 and abs(e1 - e0) > 1e-2
    assert calc.potential.graph.lr_edge_index is not None


def test_unknown_element_is_a_clear_error(pretrained):
    g = AtomicGraph.from_arrays(
        np.array([[0.0, 0, 0], [1.5, 0, 0]]), np.array([1, 110]), 4.5, lr_cutoff=12.0
    )
    with pytest.raises(ValueError, match="Z=110"):
        pretrained(g)


def test_potential_compute_takes_charge():
    """Potential.compute: per-structure charge broadcast; long-range pairs built."""
    pot = Potential("so3lr", dtype=torch.float64, compile=False)
    atoms = molecule("H2O")
    a = pot.compute(atoms.positions, atoms.numbers, charge=0)
    b = pot.compute(atoms.positions, atoms.numbers, charge=1)
    assert pot.n_builds == 1 and pot.graph.charge.tolist() == [1.0]
    assert abs(float(a[keys.ENERGY] - b[keys.ENERGY])) > 1e-2


def _assert_lr_paired(g: AtomicGraph) -> None:
    """The second half of the long-range pairs reverses the first, in order."""
    half = g.lr_edge_index.shape[1] // 2
    first, second = g.lr_edge_index[:, :half], g.lr_edge_index[:, half:]
    assert torch.equal(second, first.flip(0))
    assert torch.equal(g.lr_edge_shifts[half:], -g.lr_edge_shifts[:half])


def test_paired_long_range_pairs_equal_the_full_list(pretrained):
    """Each unordered long-range pair once (paired graphs) = every directed pair.

    A batch (acetate Q = -1, dimethyl sulfide), collated and renumbered, keeps its
    long-range pairs paired, and every per-atom term and the forces equal those
    of the same graph evaluated on all directed pairs (``edges_paired=False``).
    Fails if collate/permuted/padding break the pairing or if the half-list
    terms lost or doubled the energy of one end of each pair.
    """
    from dataclasses import replace

    from equiforce.accel.padding import pad_to_buckets

    mols = _charged_and_sulfur()[1:3]
    batch = AtomicGraph.collate(
        [AtomicGraph.from_atoms(a, pretrained.cutoff, lr_cutoff=12.0) for a in mols]
    )
    n0 = len(mols[0])
    rng = np.random.default_rng(5)  # renumber within each structure
    perm = torch.as_tensor(
        np.concatenate([rng.permutation(n0), n0 + rng.permutation(len(mols[1]))])
    )
    shifts = batch.lr_edge_shifts
    batch = batch.permuted(perm, torch.argsort(perm))
    # renumbered in place of sorted: the shifts are shared, not copied
    assert batch.lr_edge_shifts is shifts
    _assert_lr_paired(batch)
    _assert_lr_paired(pad_to_buckets(batch, pretrained.cutoff))
    for g in batch.split():
        _assert_lr_paired(g)
    paired = pretrained(batch)
    full = pretrained(replace(batch, edges_paired=False))
    for key in (keys.FORCES, *(keys.term_atomic_energies(t) for t in TERMS)):
        torch.testing.assert_close(paired[key], full[key], rtol=0, atol=1e-10)
    assert abs(float(paired[keys.term_energy("dispersion")].sum())) > 1e-4
