"""The inference Potential (neighbour list reuse, adapters) and energy terms."""

import numpy as np
import pytest
import torch
from ase import Atoms

from equiforce import keys
from equiforce.accel.compiled import CompiledPotential
from equiforce.calculator import EquiforceCalculator
from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model
from equiforce.nn.scatter import scatter_sum
from equiforce.potential import Potential
from equiforce.testing import TINY_SO3KRATES, random_crystal, random_molecule


def tiny(dtype=torch.float64):
    model = build_model(
        "so3krates",
        dtype=dtype,
        seed=1,
        e0={1: -13.6, 6: -1000.0, 8: -2000.0},
        **TINY_SO3KRATES,
    )
    return model.eval()


def test_compute_equals_model_for_several_systems_with_stress():
    model = tiny()
    rng = np.random.default_rng(0)
    pos, z = random_molecule(rng, 6)
    cpos, cz, cell = random_crystal(rng, 4)
    potential = Potential(model, compile=False)
    cells = np.stack([np.zeros((3, 3)), cell])
    pbc = np.array([[False] * 3, [True] * 3])
    out = potential.compute(
        np.concatenate([pos, cpos]), np.concatenate([z, cz]), cells, pbc,
        system_idx=np.repeat([0, 1], [6, 4]), stress=True,
    )  # fmt: skip
    ref = model(
        AtomicGraph.collate(
            [
                AtomicGraph.from_arrays(pos, z, model.cutoff),
                AtomicGraph.from_arrays(
                    cpos, cz, model.cutoff, cell=cell, pbc=[True] * 3
                ),
            ]
        ),
        compute_stress=True,
    )
    for key in (keys.ENERGY, keys.FORCES, keys.STRESS, keys.ATOMIC_ENERGIES):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-10, atol=1e-10)


def test_neighbour_list_reused_inside_the_skin_and_rebuilt_outside():
    potential = Potential(tiny(), skin=0.4, compile=False)
    pos, z = random_molecule(np.random.default_rng(1), 6)
    potential.compute(pos, z)
    moved = pos.copy()
    moved[0, 0] += 0.19  # < skin/2
    potential.compute(moved, z)
    assert potential.n_builds == 1
    moved[0, 0] += 0.02  # now 0.21 > skin/2 from the reference
    potential.compute(moved, z)
    assert potential.n_builds == 2


def test_arrays_changed_in_place_are_seen():
    """Callers change numbers and cell in place: the reference must be a copy."""
    rng = np.random.default_rng(2)
    cpos, cz, cell = random_crystal(rng, 4)
    z = np.array(cz)
    potential = Potential(tiny(), compile=False)
    potential.compute(cpos, z, cell, [True] * 3)
    z[0] = 1 if z[0] != 1 else 6
    potential.compute(cpos, z, cell, [True] * 3)
    assert potential.n_builds == 2
    cell *= 0.8  # beyond what the strain-aware rule may reuse the list for
    e = potential.compute(cpos, z, cell, [True] * 3)[keys.ENERGY]
    assert potential.n_builds == 3
    fresh = Potential(tiny(), compile=False).compute(cpos, z, cell, [True] * 3)
    torch.testing.assert_close(e, fresh[keys.ENERGY], rtol=1e-12, atol=0)


def test_calculator_wraps_a_given_potential():
    potential = Potential(tiny(), compile=False)
    pos, z = random_molecule(np.random.default_rng(5), 5)
    atoms = Atoms(numbers=z, positions=pos)
    atoms.calc = EquiforceCalculator(potential)
    e = atoms.get_potential_energy()
    assert atoms.calc.potential is potential and potential.n_calls == 1
    assert e == pytest.approx(float(potential.compute(pos, z)[keys.ENERGY][0]))


def test_non_finite_positions_name_the_atom():
    """Also when the list would be reused: a NaN displacement is no small move."""
    pos, z = random_molecule(np.random.default_rng(3), 5)
    potential = Potential(tiny(), compile=False)
    potential.compute(pos, z)
    pos[3, 1] = np.nan
    with pytest.raises(FloatingPointError, match="atom 3"):
        potential.compute(pos, z)
    with pytest.raises(FloatingPointError, match="atom 3"):
        Potential(tiny(), compile=False).compute(pos, z)


class PairTerm(torch.nn.Module):
    """E_i = ½ k Σ_j |r_ij|² over i's edges (a smooth term for the tests)."""

    def forward(self, graph, vectors):
        e_edge = 0.05 * vectors.square().sum(-1)  # (n_edges,)
        return scatter_sum(e_edge, graph.edge_index[0], graph.num_nodes)


def test_an_added_term_enters_energy_forces_stress_and_its_own_outputs():
    model = tiny()
    rng = np.random.default_rng(4)
    pos, z = random_molecule(rng, 5)
    g = AtomicGraph.from_arrays(pos, z, model.cutoff)
    base = model(g)
    model.terms["pair"] = PairTerm()
    out = model(g)
    pair = PairTerm()(g, g.edge_vectors())
    torch.testing.assert_close(out[keys.ENERGY], base[keys.ENERGY] + pair.sum())
    torch.testing.assert_close(out[keys.term_energy("pair")], pair.sum()[None])
    torch.testing.assert_close(
        out[keys.term_energy("local")] + out[keys.term_energy("e0")], base[keys.ENERGY]
    )
    # forces: central finite differences of the total energy (float64)
    h, fd = 1e-5, np.zeros_like(pos)
    for a in range(len(pos)):
        for c in range(3):
            e = []
            for s in (1, -1):
                p = pos.copy()
                p[a, c] += s * h
                e.append(
                    float(
                        model(
                            AtomicGraph.from_arrays(p, z, model.cutoff),
                            compute_forces=False,
                        )[keys.ENERGY][0]
                    )
                )
            fd[a, c] = -(e[0] - e[1]) / (2 * h)
    np.testing.assert_allclose(out[keys.FORCES].numpy(), fd, atol=1e-6)
    # the compiled backend's path (torch.func) agrees, stress included
    cpos, cz, cell = random_crystal(rng, 4)
    cg = AtomicGraph.from_arrays(cpos, cz, model.cutoff, cell=cell, pbc=[True] * 3)
    ref = model(cg, compute_stress=True)
    fast = CompiledPotential(model, compile=False)(cg, stress=True)
    for key in (keys.ENERGY, keys.FORCES, keys.STRESS):
        torch.testing.assert_close(fast[key], ref[key], rtol=1e-10, atol=1e-10)


def test_calculator_check_state_sees_every_change():
    """The exact comparison that replaces ASE's allclose misses no change."""
    cpos, cz, cell = random_crystal(np.random.default_rng(6), 4)
    atoms = Atoms(numbers=cz, positions=cpos, cell=cell, pbc=True)
    atoms.calc = EquiforceCalculator(tiny(), compile=False)
    atoms.get_potential_energy()
    calc = atoms.calc
    assert calc.check_state(atoms) == []

    def moved(pos=None, numbers=None, cell=None, pbc=None, charges=None):
        a = atoms.copy()
        if pos is not None:
            a.positions[0, 0] += 1e-12
        if numbers is not None:
            a.numbers[1] = 1 if a.numbers[1] != 1 else 6
        if cell is not None:
            a.cell[1, 1] += 1e-9
        if pbc is not None:
            a.pbc = [True, False, True]
        if charges is not None:
            a.set_initial_charges([0.1] * len(a))
        return calc.check_state(a)

    assert moved(pos=1) == ["positions"]
    assert moved(numbers=1) == ["numbers"]
    assert moved(cell=1) == ["cell"]
    assert moved(pbc=1) == ["pbc"]
    assert moved(charges=1) == ["initial_charges"]


def test_an_element_the_model_was_not_trained_on_is_refused_by_every_front_end():
    # E0 set for H, C, O (as training does): chlorine is named with its atom, through
    # the potential and therefore through the ASE calculator and the engine adapters
    from equiforce.potential import UnknownElementError

    model = tiny()
    model.e0[[1, 6, 8]] = torch.tensor([-13.6, -1029.0, -2041.0], dtype=torch.float64)
    assert model.known_elements() == frozenset({1, 6, 8})
    atoms = Atoms("CH3Cl", positions=[[0, 0, 0], [1.09, 0, 0], [-0.36, 1.03, 0],
                                      [-0.36, -0.51, 0.89], [-0.6, -0.5, -1.5]])  # fmt: skip
    atoms.calc = EquiforceCalculator(model)
    with pytest.raises(UnknownElementError, match=r"Cl \(Z=17\) \(first at atom 4\)"):
        atoms.get_potential_energy()
    atoms.numbers[4] = 8  # known elements pass
    assert np.isfinite(atoms.get_potential_energy())
    model.e0.zero_()  # a model that cannot tell accepts anything
    assert Potential(model).compute(atoms.positions, [1] * 4 + [17])[
        "energy"
    ].shape == (1,)
