"""GPU checks (run on a CUDA machine: `pytest -m gpu`); skipped without CUDA."""

import numpy as np
import pytest
import torch

import equiforce
from equiforce.accel.compiled import CompiledPotential
from equiforce.bench import make_system
from equiforce.data.graph import AtomicGraph

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


def test_cuda_graph_path_equals_eager_float32():
    """The path MD and the calculator take on CUDA: static bucketed shapes + CUDA graphs.

    MD-like calls (the edge count changes between calls) replay few graphs, and the
    outputs of one call survive the next replay.
    """
    model = equiforce.build_model("so3krates", "default", zero_init_readout=False).to(
        "cuda"
    )
    fast = CompiledPotential.for_device(model)
    assert fast.pad and fast.cudagraphs
    rng = np.random.default_rng(1)
    kept, counts = [], set()
    for system in ("ethanol", "benzene", "water96"):
        atoms = make_system(system)
        for _ in range(3):
            moved = atoms.copy()
            moved.positions += rng.normal(scale=0.05, size=moved.positions.shape)
            g = AtomicGraph.from_atoms(moved, model.cutoff, dtype=torch.float32)
            counts.add((system, g.n_edges))
            g = g.to("cuda")
            ref, out = model(g), fast(g)
            scale = ref["forces"].abs().max()
            assert (out["forces"] - ref["forces"]).abs().max() <= 1e-5 * scale
            torch.testing.assert_close(
                out["energy"], ref["energy"], rtol=1e-5, atol=1e-4
            )
            kept.append((out["forces"], ref["forces"].clone()))
    for out_f, ref_f in kept:  # not overwritten by later replays
        assert (out_f - ref_f).abs().max() <= 1e-5 * ref_f.abs().max()
    assert len(counts) > 3, "edge counts never changed: nothing is tested"
    assert fast.compiled and fast.n_compiles <= 6


def test_md_on_cuda_matches_cpu_float64():
    """Native NVE, seeded velocities: the CUDA trajectory equals the CPU one."""
    from equiforce.md.forcefield import ModelForceField
    from equiforce.md.integrators import VelocityVerlet
    from equiforce.md.state import maxwell_boltzmann, state_from_atoms

    model = equiforce.build_model(
        "so3krates", "default", dtype=torch.float64, zero_init_readout=False
    )
    atoms = make_system("ethanol")
    paths = {}
    for device in ("cpu", "cuda"):
        state = state_from_atoms([atoms, atoms], dtype=torch.float64, device=device)
        maxwell_boltzmann(state, 300.0, torch.Generator().manual_seed(0))
        ff = ModelForceField(model.to(device), skin=0.5, compile=False)
        integ = VelocityVerlet(0.5)
        integ.init(state, ff)
        for _ in range(30):
            integ.step(state, ff)
        paths[device] = state.positions.cpu()
    torch.testing.assert_close(paths["cuda"], paths["cpu"], rtol=0, atol=1e-8)
    assert (paths["cpu"][:9] - torch.as_tensor(atoms.positions)).abs().max() > 1e-3


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


def test_cuda_takes_more_edges_at_once_for_forces_only():
    """On CUDA the forces-only chunk limit follows the device memory."""
    from equiforce.models.so3krates.fast import gpu_edge_limit
    from equiforce.testing import TINY_SO3KRATES

    model = equiforce.build_model("so3krates", **TINY_SO3KRATES).to("cuda")
    cfg = model.config
    total = torch.cuda.get_device_properties(0).total_memory
    limit = gpu_edge_limit(total, 4, cfg.num_layers * cfg.num_features / 256)
    assert model._device_edge_limit() == limit
    model.auto_chunk_size_detached = 1000  # chunks smaller than the graphs below
    assert not model.chunks_edges(limit, False) and model.chunks_edges(limit + 1, False)
    assert model.chunks_edges(model.auto_chunk_edges + 1, True)  # training: as on CPU
