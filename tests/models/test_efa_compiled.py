"""So3krates with EFA through the AOTInductor backend's graph: compiled = eager.

The CPU default backend (``accel/aoti.py``) traces the energy+forces function
once with symbolic atom, edge and structure counts and exports it; one library
then serves every size. The EFA reads the structure count (per-structure sums,
centroids), which the local model does not. The default-suite test runs the
exported program in Python (seconds); the slow test builds the library (minutes).
The torch.compile (Inductor) backend is covered by the contract suite
(``test_so3krates_efa.py``, ``test_compiled_backend_equals_eager``).
"""

import math

import pytest
import torch
from ase.build import molecule

import equiforce
from equiforce.accel import aoti
from equiforce.accel.compiled import CompiledPotential
from equiforce.accel.signature import arguments as _arguments
from equiforce.data.graph import AtomicGraph
from equiforce.testing import TINY_SO3KRATES

#: order 23 integrates l = 2 up to phase 3.48π; here 3π (r_max covers the molecules)
EFA = {
    "r_max": 12.0,
    "max_frequency": 3 * math.pi / 12.0,
    "lebedev_order": 23,
    "num_features_qk": 8,
    "num_features_v": 8,
    "zero_init": False,
}


def efa_model(degrees: tuple[int, ...] | None, equivariant_values: int = 0):
    """Tiny float64 So3krates with a live EFA branch of these output degrees
    (None: the local model), optionally carrying Euclidean variables."""
    efa = {**EFA, "degrees": degrees, "equivariant_values": equivariant_values}
    extra = {} if degrees is None else {"global_attention": efa}
    model = equiforce.build_model(
        "so3krates", dtype=torch.float64, seed=3, **TINY_SO3KRATES, **extra
    )
    return model.eval()


def batches() -> list[AtomicGraph]:
    """One, two and three structures of different sizes."""
    ethanol, benzene, water = (
        AtomicGraph.from_atoms(molecule(name), 5.0, dtype=torch.float64)
        for name in ("CH3CH2OH", "C6H6", "H2O")
    )
    return [
        benzene,
        AtomicGraph.collate([ethanol, water]),
        AtomicGraph.collate([water, benzene, ethanol]),
    ]


def assert_matches_eager(atomic_energies, forces, model, graph, rtol=1e-10):
    ref = model(graph)
    scale = ref["forces"].abs().max().item()
    assert scale > 1e-3, "forces vanish: the comparison would prove nothing"
    assert (forces - ref["forces"]).abs().max().item() <= rtol * scale
    energy = torch.zeros_like(ref["energy"]).index_add(
        0, graph.graph_index, atomic_energies.to(ref["energy"].dtype)
    )
    torch.testing.assert_close(energy, ref["energy"], rtol=0, atol=rtol * scale)


@pytest.mark.parametrize(
    ("degrees", "equivariant_values"),
    [
        pytest.param(None, 0, id="local"),
        # the default-suite case covers these two (same summation path)
        pytest.param((0,), 0, id="efa-l0", marks=pytest.mark.slow),
        pytest.param((0, 1, 2), 0, id="efa-l012", marks=pytest.mark.slow),
        pytest.param((0, 1, 2), 2, id="efa-l012-ev"),
    ],
)
def test_exported_graph_serves_every_structure_count_and_equals_eager(
    degrees, equivariant_values
):
    """The graph the AOTInductor backend compiles (traced from two copies of one
    molecule, as ``CompiledPotential`` does, then exported with dynamic sizes)
    equals the eager model for one, two and three structures, float64, to 1e-10
    of the force scale. Catches a structure count fixed at tracing (with duck
    shaping it shared a symbol with edge_index's leading 2, and three structures
    failed in the EFA's one-hot sum; ``one_hot`` and a traced ``n_graphs <= 4``
    also fixed it) and any traced EFA path that differs from eager. The local
    model checks that tracing without duck shaping still exports it; ``-ev``
    carries Euclidean variables as values (``equivariant_values``)."""
    model = efa_model(degrees, equivariant_values)
    fast = CompiledPotential(model, backend="aoti")
    first = batches()[0]
    fn = fast._aoti_function(first.edges_paired)
    example = _arguments(AtomicGraph.collate([first, first]))
    with torch.no_grad(), fn.trace_context():
        gm = aoti.trace(fn.fn, example)
    program = aoti.export(gm, example, fn.dims).module()
    for graph in batches():
        with torch.no_grad():
            e_atom, forces = program(*_arguments(graph))
        assert_matches_eager(e_atom, forces, model, graph)


@pytest.mark.slow
def test_aoti_library_with_efa_equals_eager(tmp_path, monkeypatch):
    """The built library (minutes of C++ compilation): the CPU default backend
    runs the EFA model for every structure count without falling back, and
    equals eager to 1e-10 in float64."""
    monkeypatch.setenv("EQUIFORCE_AOTI_CACHE", str(tmp_path))
    model = efa_model((0, 1, 2))
    fast = CompiledPotential(model, backend="aoti")
    for graph in batches():
        out = fast(graph)
        assert fast.backend == "aoti", "fell back to torch.compile"
        assert_matches_eager(out["atomic_energies"], out["forces"], model, graph)
    assert fast.aoti[batches()[0].edges_paired].n_builds == 1
