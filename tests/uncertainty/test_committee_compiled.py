"""A committee on its members' compiled backends equals the eager committee."""

import warnings

import numpy as np
import torch
from _ensemble_helpers import distorted, labelled_frames, tiny

from equiforce import keys
from equiforce.accel.compiled import CompiledPotential
from equiforce.data.graph import AtomicGraph
from equiforce.potential import Potential
from equiforce.testing import random_crystal
from equiforce.uncertainty import Committee
from equiforce.uncertainty.compiled import CompiledCommittee

#: what the eager and the compiled committee must agree on
COMPARED = (
    keys.ENERGY,
    keys.ATOMIC_ENERGIES,
    keys.FORCES,
    keys.ENERGY_STD,
    keys.FORCES_STD,
    keys.FORCES_STD_MAX,
    keys.ENERGY_MEMBERS,
    keys.FORCES_MEMBERS,
)


def _functional(model):
    """The compiled backend's traced function, run eagerly (no compilation)."""
    return CompiledPotential(model, compile=False)


def _assert_equal(got: dict, ref: dict, names=COMPARED, rtol=1e-10, atol=1e-12):
    assert set(ref) <= set(got), set(ref) - set(got)
    for key in names:
        torch.testing.assert_close(got[key], ref[key], rtol=rtol, atol=atol, msg=key)


def _graph(frames) -> AtomicGraph:
    return AtomicGraph.collate(
        [
            AtomicGraph.from_arrays(a.positions, a.numbers, 4.0, dtype=torch.float64)
            for a in frames
        ]
    )


def test_members_compiled_one_by_one_equal_the_eager_committee(committee_models):
    # fails if a member's outputs are stacked in the wrong order or under the wrong
    # key, the spread is taken over the wrong axis or per structure in a batch
    near = labelled_frames(2, 0.05, seed=41)
    graph = _graph([*near, distorted(near[0])])
    committee = Committee(committee_models)
    ref = committee(graph)
    fast = CompiledCommittee(committee, backend=_functional)
    assert all(isinstance(m, CompiledPotential) for m in fast.members)
    assert [m.model for m in fast.members] == list(committee.members)
    _assert_equal(fast(graph), ref)
    # the distorted third structure is the uncertain one: not a vacuous comparison
    worst = ref[keys.FORCES_STD_MAX]
    assert float(worst[2]) > 2 * float(worst[:2].max())


def test_compiled_committee_stress_equals_the_eager_one():
    # fails if the members' virials are not stacked and averaged like the forces
    torch.set_num_threads(1)
    pos, numbers, cell = random_crystal(np.random.default_rng(5), n_atoms=4)
    committee = Committee([tiny(s, zero_init_readout=False) for s in range(2)])
    eager = Potential(committee, compile=False, skin=0.0)
    ref = eager.compute(pos, numbers, cell, [True] * 3, stress=True)
    fast = CompiledCommittee(committee, backend=_functional)
    out = fast(eager.graph, stress=True)
    _assert_equal(out, ref, (*COMPARED, keys.STRESS))
    assert float(out[keys.STRESS].abs().max()) > 1e-4


def test_potential_switches_a_committee_to_its_compiled_members(
    committee_models, monkeypatch
):
    # fails if Potential keeps a committee eager (K eager calls per MD step) or
    # compiles it as one model; the functional path stands in for the compiler
    monkeypatch.setattr(
        CompiledPotential, "for_device", classmethod(lambda cls, m: _functional(m))
    )
    committee = Committee(committee_models)
    frame = labelled_frames(1, 0.05, seed=43)[0]
    eager = Potential(committee, compile=False, skin=0.0)
    pot = Potential(committee, compile_after=2, skin=0.0)
    for step in range(4):
        positions = frame.positions + 0.01 * step
        ref = eager.compute(positions, frame.numbers)
        out = pot.compute(positions, frame.numbers)
        _assert_equal(out, ref)
        assert (pot.compiled is None) == (step < 2)
    assert isinstance(pot.compiled, CompiledCommittee)
    assert pot.compiled.backend == "eager"  # the stand-in compiles nothing


def test_compiled_members_compile_and_match_eager():
    # fails if a second member reuses the first one's compiled graph (its weights
    # baked in) or falls back to eager with a warning
    torch.set_num_threads(1)
    committee = Committee([tiny(s, zero_init_readout=False) for s in range(2)])
    frames = labelled_frames(2, 0.05, seed=44)
    graph = _graph(frames)
    ref = committee(graph)
    fast = CompiledCommittee(
        committee, backend=lambda m: CompiledPotential(m, backend="inductor")
    )
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback warns
        out = fast(graph)
    assert fast.backend == "inductor" and fast.compiled
    assert fast.compile_seconds is not None and fast.compile_seconds > 0
    _assert_equal(out, ref, rtol=1e-9, atol=1e-10)
    assert float(out[keys.FORCES_STD].min()) > 0  # the members differ


def test_a_member_that_cannot_compile_runs_eagerly_and_none_keeps_it_eager(
    monkeypatch,
):
    # fails if a not-compilable member is handed to the compiler, or if a committee
    # with no compilable member leaves its (vectorised) eager path for K eager calls
    monkeypatch.setattr(
        CompiledPotential, "for_device", classmethod(lambda cls, m: _functional(m))
    )
    models = [tiny(s, zero_init_readout=False) for s in range(2)]
    models[1].compilable = False
    mixed = Committee(models)
    graph = _graph(labelled_frames(2, 0.05, seed=45))
    fast = mixed.compiled_backend()
    assert isinstance(fast.members[0], CompiledPotential)
    assert not isinstance(fast.members[1], CompiledPotential)
    assert fast.backend == "eager"  # the stand-in and the eager member
    _assert_equal(fast(graph), mixed(graph))

    models[0].compilable = False
    assert not mixed.compilable
    frame = labelled_frames(1, 0.05, seed=46)[0]
    pot = Potential(mixed, compile_after=0, skin=0.0)
    pot.compute(frame.positions, frame.numbers)
    pot.compute(frame.positions, frame.numbers)
    assert pot.compiled is None


def test_replacing_a_member_rebuilds_the_compiled_members():
    # fails if the compiled committee keeps evaluating a member that was replaced
    committee = Committee([tiny(s, zero_init_readout=False) for s in range(2)])
    graph = _graph(labelled_frames(1, 0.05, seed=47))
    fast = CompiledCommittee(committee, backend=_functional)
    before = fast(graph)
    committee.members[1] = tiny(7, zero_init_readout=False)
    after = fast(graph)
    assert fast.members[1].model is committee.members[1]
    _assert_equal(after, committee(graph))
    assert not torch.allclose(after[keys.ENERGY], before[keys.ENERGY])
