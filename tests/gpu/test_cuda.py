"""GPU checks (run on a CUDA machine: `pytest -m gpu`); skipped without CUDA."""

import numpy as np
import pytest
import torch

import equiforce
from equiforce.bench import make_system
from equiforce.data.graph import AtomicGraph
from equiforce.models.compiled import CompiledPotential

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA"),
]


@pytest.mark.parametrize("system", ["ethanol", "water96", "box1029"])
def test_cuda_equals_cpu_float64(system):
    model = equiforce.build_model(
        "so3krates", "default", dtype=torch.float64, zero_init_readout=False
    )
    g = AtomicGraph.from_atoms(make_system(system), model.cutoff, dtype=torch.float64)
    cpu = model(g)
    gpu = model.to("cuda")(g.to("cuda"))
    torch.testing.assert_close(
        gpu["energy"].cpu(), cpu["energy"], rtol=1e-10, atol=1e-8
    )
    torch.testing.assert_close(gpu["forces"].cpu(), cpu["forces"], rtol=1e-9, atol=1e-9)


def test_cuda_compiled_equals_eager_float32():
    model = equiforce.build_model("so3krates", "default", zero_init_readout=False).to(
        "cuda"
    )
    fast = CompiledPotential(model)
    for system in ("ethanol", "benzene", "water96"):
        g = AtomicGraph.from_atoms(
            make_system(system), model.cutoff, dtype=torch.float32
        )
        g = g.to("cuda")
        ref, out = model(g), fast(g)
        scale = ref["forces"].abs().max()
        assert (out["forces"] - ref["forces"]).abs().max() <= 1e-5 * scale
    assert fast.compiled and fast.n_compiles <= 2


def test_cuda_rotation_invariance():
    rng = np.random.default_rng(0)
    model = equiforce.build_model(
        "so3krates", "default", dtype=torch.float64, zero_init_readout=False
    ).to("cuda")
    atoms = make_system("water96")
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    g1 = AtomicGraph.from_atoms(atoms, 5.0).to("cuda")
    rotated = atoms.copy()
    rotated.positions = atoms.positions @ q.T
    g2 = AtomicGraph.from_atoms(rotated, 5.0).to("cuda")
    o1, o2 = model(g1), model(g2)
    torch.testing.assert_close(o2["energy"], o1["energy"], rtol=1e-12, atol=1e-9)
    rot = torch.as_tensor(q, device="cuda")
    torch.testing.assert_close(o2["forces"], o1["forces"] @ rot.T, rtol=1e-9, atol=1e-9)
