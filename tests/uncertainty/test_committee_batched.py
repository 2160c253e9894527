"""A committee's members as one vectorised call equal the members one by one."""

import logging

import numpy as np
import pytest
import torch
from ase.build import molecule

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model
from equiforce.nn.scatter import batched_rows, batched_sum
from equiforce.potential import Potential
from equiforce.testing import TINY_SO3KRATES, random_crystal
from equiforce.uncertainty import Committee

#: what both paths must agree on (the outputs of every front end)
COMPARED = (
    keys.ENERGY,
    keys.FORCES,
    keys.ATOMIC_ENERGIES,
    keys.ENERGY_STD,
    keys.FORCES_STD,
    keys.FORCES_STD_MAX,
    keys.ENERGY_MEMBERS,
    keys.FORCES_MEMBERS,
)


def _members(n: int = 3, filter_table: str = "auto", **overrides):
    """``n`` differently seeded float64 So3krates with different E0 each."""
    members = []
    for seed in range(n):
        e0 = torch.zeros(119, dtype=torch.float64)
        e0[[1, 6, 8]] = torch.tensor([-13.6, -1029.0, -2041.0], dtype=torch.float64)
        e0 *= 1 + 0.01 * seed
        cfg = {**TINY_SO3KRATES, **overrides}
        m = build_model("so3krates", **cfg, seed=seed, dtype=torch.float64, e0=e0)
        m.filter_table = filter_table
        members.append(m)
    return members


def _both(committee: Committee, **compute) -> tuple[dict, dict]:
    """Outputs with the members batched and one by one."""
    pot = Potential(committee, dtype=torch.float64, compile=False, skin=0.0)
    committee.batched = "on"
    batched = pot.compute(**compute)
    committee.batched = "off"
    return batched, pot.compute(**compute)


def _assert_equal(batched: dict, sequential: dict, names=COMPARED) -> None:
    for key in names:
        torch.testing.assert_close(
            batched[key], sequential[key], rtol=1e-12, atol=1e-11, msg=key
        )


@pytest.mark.parametrize("filter_table", ["auto", "on"])
def test_batched_members_equal_sequential_on_a_mixed_batch(filter_table):
    # catches a member reading another's weights, tables or projections, a
    # member's E0 lost, per-member forces summed over members (the wrong
    # gradient), and outputs of the two structures mixed up; "on": each
    # member's filter tables (float32's default) through the batched lookup
    torch.set_num_threads(1)
    committee = Committee(_members(filter_table=filter_table))
    a, b = molecule("CH3CH2OH"), molecule("H2O")
    b.positions += 20.0
    compute = {
        "positions": np.concatenate([a.positions, b.positions]),
        "atomic_numbers": np.concatenate([a.numbers, b.numbers]),
        "system_idx": [0] * len(a) + [1] * len(b),
    }
    batched, sequential = _both(committee, **compute)
    assert committee._stacked is not None and committee._batch_off is None
    _assert_equal(batched, sequential)
    assert batched[keys.ENERGY].shape == (2,)
    assert float(batched[keys.FORCES_STD].min()) > 0  # the members differ


def test_batched_stress_equals_sequential():
    # the per-member strain copies: catches a virial summed over members or
    # taken from the wrong copy
    torch.set_num_threads(1)
    pos, numbers, cell = random_crystal(np.random.default_rng(3), n_atoms=4)
    committee = Committee(_members())
    batched, sequential = _both(
        committee,
        positions=pos,
        atomic_numbers=numbers,
        cell=cell,
        pbc=[True] * 3,
        stress=True,
    )
    assert committee._batch_off is None
    _assert_equal(batched, sequential, (*COMPARED, keys.STRESS))
    assert float(batched[keys.STRESS].abs().max()) > 1e-4


def test_members_of_different_architectures_fall_back_once(caplog):
    # members that cannot share one module structure: the committee says why
    # once and still gives the members' mean (fails if the batched path
    # stacks mismatched weights or the fallback loses a member)
    torch.set_num_threads(1)
    members = _members(2) + _members(1, num_features=24)
    committee = Committee(members)
    committee.batched = "on"
    atoms = molecule("CH3CH2OH")
    pot = Potential(committee, dtype=torch.float64, compile=False, skin=0.0)
    with caplog.at_level(logging.INFO, logger="equiforce.uncertainty.committee"):
        out = pot.compute(atoms.positions, atoms.numbers)
        pot.compute(atoms.positions + 0.01, atoms.numbers)
    reasons = [r.getMessage() for r in caplog.records if "one after" in r.getMessage()]
    assert len(reasons) == 1 and "differs from member 0" in reasons[0]
    singles = [
        Potential(m, dtype=torch.float64, compile=False).compute(
            atoms.positions, atoms.numbers
        )[keys.ENERGY]
        for m in members
    ]
    torch.testing.assert_close(out[keys.ENERGY], torch.stack(singles).mean(0))


def test_changed_weights_are_restacked():
    # an optimizer step or a loaded state writes the members' weights in
    # place: a stale stack would keep the old energies
    torch.set_num_threads(1)
    committee = Committee(_members())
    atoms = molecule("CH3CH2OH")
    before, _ = _both(
        committee, positions=atoms.positions, atomic_numbers=atoms.numbers
    )
    with torch.no_grad():
        committee.members[1].readout[-1].weight.mul_(1.5)
    batched, sequential = _both(
        committee, positions=atoms.positions, atomic_numbers=atoms.numbers
    )
    _assert_equal(batched, sequential)
    assert not torch.allclose(batched[keys.ENERGY_STD], before[keys.ENERGY_STD])


def test_auto_batches_small_structures_only():
    # the measured size rule: at most batch_max_edges edges
    committee = Committee(_members())
    atoms = molecule("CH3CH2OH")
    graph = AtomicGraph.from_arrays(
        atoms.positions, atoms.numbers, committee.cutoff, dtype=torch.float64
    )
    n = graph.edge_index.shape[1]
    committee.batch_max_edges = n
    assert committee.batches(graph)
    committee.batch_max_edges = n - 1
    assert not committee.batches(graph)
    committee.batched = "on"
    assert committee.batches(graph)


def test_batching_stops_where_k_members_would_need_edge_chunks():
    # K members in one vmap hold K times the edges' intermediates
    committee = Committee(_members())
    committee.batched = "on"
    atoms = molecule("CH3CH2OH")
    graph = AtomicGraph.from_arrays(
        atoms.positions, atoms.numbers, committee.cutoff, dtype=torch.float64
    )
    k, n = committee.n_members, graph.edge_index.shape[1]
    assert k >= 2 and hasattr(committee.members[0], "chunks_edges")
    committee.members[0].auto_chunk_size_detached = 16  # chunks smaller than n
    committee.members[0].auto_chunk_edges_detached = n * k
    assert committee.batches(graph)
    committee.members[0].auto_chunk_edges_detached = n * k - 1
    assert not committee.batches(graph)


@pytest.mark.parametrize("index_batched", [False, True])
def test_row_ops_batching_rules_equal_the_loop(index_batched):
    # the batching rules of the row gather and sum against a loop over members
    # (catches a member axis moved to the wrong place, or wrong flat offsets
    # when each member has its own index)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 5, 4, dtype=torch.float64, generator=g)  # (K, n, F)
    idx = torch.randint(0, 5, (3, 7) if index_batched else (7,), generator=g)
    in_dims = (0, 0 if index_batched else None)
    rows = torch.func.vmap(batched_rows, in_dims=in_dims)(x, idx)
    sums = torch.func.vmap(batched_sum, in_dims=(*in_dims, None))(rows, idx, 5)
    for k in range(3):
        ik = idx[k] if index_batched else idx
        torch.testing.assert_close(rows[k], x[k].index_select(0, ik))
        ref = torch.zeros(5, 4, dtype=torch.float64).index_add_(0, ik, rows[k])
        torch.testing.assert_close(sums[k], ref)


def test_batched_so3lr_members_equal_sequential_with_charge():
    # SO3LR members: long-range pairs, charge embedding and the electrostatics,
    # dispersion and ZBL terms of each member under the vectorised call
    # (catches a term reading one member's charges or weights for all)
    torch.set_num_threads(1)
    tiny = {"num_features": 16, "num_layers": 1, "degrees": (1, 2), "num_heads": 2}
    members = [
        build_model("so3lr", "small", seed=seed, dtype=torch.float64, **tiny)
        for seed in range(3)
    ]
    committee = Committee(members)
    atoms = molecule("HCOOH")
    compute = {
        "positions": atoms.positions,
        "atomic_numbers": atoms.numbers,
        "charge": -1.0,
    }
    batched, sequential = _both(committee, **compute)
    assert committee._stacked is not None and committee._batch_off is None
    _assert_equal(batched, sequential)
    assert float(batched[keys.ENERGY_STD][0]) > 1e-6


def test_batched_members_in_spatial_order_come_back_in_the_callers_order():
    # large structures run in Morton order; the batched outputs (K, n_atoms, …)
    # must be put back along the atom axis, not the member axis
    torch.set_num_threads(1)
    members = _members()
    for m in members:
        m.spatial_order_min_atoms = 4  # ethanol (9 atoms) is reordered
    committee = Committee(members)
    atoms = molecule("CH3CH2OH")
    graph = AtomicGraph.from_arrays(
        atoms.positions, atoms.numbers, committee.cutoff, dtype=torch.float64
    )
    perm = members[0].atom_order(graph)[0]
    assert not torch.equal(perm, torch.arange(len(atoms)))  # really reordered
    batched, sequential = _both(
        committee, positions=atoms.positions, atomic_numbers=atoms.numbers
    )
    _assert_equal(batched, sequential)
