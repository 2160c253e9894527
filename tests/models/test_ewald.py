"""Periodic electrostatics (Ewald/PME through torch-pme) and its SO3LR hook.

All in float64. The unit tests drive :class:`PeriodicCoulomb` directly with
hand-made charges; the SO3LR tests run the shipped model on a small water box.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from ase.build import bulk

from equiforce.data.graph import AtomicGraph
from equiforce.data.neighbors import neighbor_list
from equiforce.errors import EquiforceError
from equiforce.models.longrange.electrostatics import Electrostatics
from equiforce.models.longrange.ewald import PeriodicCoulomb
from equiforce.models.longrange.switch import KE
from equiforce.structures import water_box

pytest.importorskip("torchpme")
DT = torch.float64
SIGMA = 4.0  # SO3LR's erf damping length
#: Madelung constant of rock salt (per ion pair, nearest-neighbour distance)
MADELUNG_NACL = 1.747565


def _pairs(pos: torch.Tensor, cell: torch.Tensor, cutoff: float):
    """Full pair list (2, n) and differentiable vectors (n, 3) within ``cutoff``."""
    index, shifts = neighbor_list(
        pos.detach().numpy(), cutoff, cell.detach().numpy(), np.ones(3, bool)
    )
    index = torch.as_tensor(index)
    vec = pos[index[1]] - pos[index[0]] + torch.as_tensor(shifts, dtype=DT) @ cell
    return index, vec


def _energy(term, pos, q, cell, cutoff=None):
    """Total energy (eV) of one periodic cell through ``term``."""
    pairs = vec = None
    if term.needs_pairs:
        pairs, vec = _pairs(pos, cell, cutoff)
    return term(pos, q, cell[None], [len(q)], [True], pairs, vec).sum()


def _random_cell(seed: int, n: int = 10, charged: float = 0.0):
    """A triclinic cell (≈ 8 Å) with ``n`` random charges summing to ``charged``."""
    rng = np.random.default_rng(seed)
    cell = np.array([[8.0, 0.0, 0.0], [0.9, 8.6, 0.0], [-0.6, 0.8, 7.4]])
    pos = rng.uniform(0, 1, (n, 3)) @ cell
    q = rng.normal(0, 0.5, n)
    q += (charged - q.sum()) / n
    return (torch.tensor(pos, dtype=DT), torch.tensor(q, dtype=DT)), torch.tensor(
        cell, dtype=DT
    )


TERMS = {  # name: (term, real-space cutoff)
    "erf-pme": (PeriodicCoulomb(SIGMA, "pme"), None),
    "erf-ewald": (PeriodicCoulomb(SIGMA, "ewald"), None),
    "point-pme": (PeriodicCoulomb(0.0, "pme", real_cutoff=9.0), 9.0),
    "point-ewald": (PeriodicCoulomb(0.0, "ewald", real_cutoff=9.0), 9.0),
}


@pytest.mark.parametrize("method", ["pme", "ewald"])
def test_madelung_constant_of_rock_salt(method):
    """Unit point charges in NaCl give −M/r0 per ion pair (M = 1.747565).

    Catches a wrong factor (so3krates-torch 0.2.1 is off by ½ here), a wrong
    self term or a missing real-space part.
    """
    atoms = bulk("NaCl", "rocksalt", a=5.64, cubic=True)
    pos, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    q = torch.tensor([1.0 if z == 11 else -1.0 for z in atoms.numbers], dtype=DT)
    term = PeriodicCoulomb(0.0, method, real_cutoff=10.0)
    e = float(_energy(term, pos, q, cell, 10.0))
    madelung = -e / KE / (len(q) / 2) * (5.64 / 2)
    assert abs(madelung / MADELUNG_NACL - 1) < 1e-5, madelung


@pytest.mark.parametrize("name", TERMS)
def test_supercell_atom_order_and_images(name):
    """A 2×2×2 supercell has 8× the energy; atom order and images change nothing.

    Catches energies that depend on the cell replica (a wrong volume factor or
    background term), on the order of atoms, or on wrapping into the cell.
    """
    term, cutoff = TERMS[name]
    (pos, q), cell = _random_cell(1, charged=0.3)
    e = _energy(term, pos, q, cell, cutoff)
    shifts = torch.tensor(
        [[a, b, c] for a in (0, 1) for b in (0, 1) for c in (0, 1)], dtype=DT
    )
    pos8 = (pos[None] + (shifts @ cell)[:, None]).reshape(-1, 3)
    e8 = _energy(term, pos8, q.repeat(8), 2 * cell, cutoff)
    assert abs(float(e8 / e) - 8.0) < 1e-6, float(e8 / e)
    perm = torch.randperm(len(q), generator=torch.Generator().manual_seed(0))
    images = torch.tensor(np.random.default_rng(2).integers(-2, 3, (len(q), 3)))
    moved = pos[perm] + images.to(DT) @ cell
    e_moved = _energy(term, moved, q[perm], cell, cutoff)
    assert abs(float(e_moved - e)) < 1e-6 * abs(float(e))


@pytest.mark.parametrize("charge", [0.0, 1.3])
def test_erf_kernel_equals_screened_direct_sum(charge):
    """The Ewald energy of erf(d/σ)/d is the direct sum over images, background in.

    Direct sum of [erf(d/σ) − erf(d/R)]/d over all pairs and images (R = 9 Å,
    pairs to 6R) − the Gaussian self term k_e Σq²/(√π R) − the background
    k_e π (R² − σ²) Q²/(2V); the left-out erf(d/R)/d has only k-vectors of weight
    exp(−k²R²/4) < 1e-13. Catches a wrong self or background term (charged
    cell) independent of torch-pme; also checks that a different split
    (smearing 4 Å with a real-space part) gives the same energy.
    """
    (pos, q), cell = _random_cell(3, n=6, charged=charge)
    R = 9.0
    pairs, vec = _pairs(pos, cell, 6 * R)
    d = vec.norm(dim=1)
    i, j = pairs
    kernel = (torch.erf(d / SIGMA) - torch.erf(d / R)) / d
    volume = float(torch.linalg.det(cell))
    direct = 0.5 * KE * float((q[i] * q[j] * kernel).sum())
    direct -= KE * float((q**2).sum()) / (math.sqrt(math.pi) * R)
    direct -= KE * math.pi * (R**2 - SIGMA**2) * float(q.sum()) ** 2 / (2 * volume)
    for term, cutoff in [
        (PeriodicCoulomb(SIGMA, "ewald"), None),
        (PeriodicCoulomb(SIGMA, "pme"), None),
        (PeriodicCoulomb(SIGMA, "ewald", smearing=4.0, real_cutoff=24.0), 24.0),
    ]:
        e = float(_energy(term, pos, q, cell, cutoff))
        assert abs(e - direct) < 1e-5 * abs(direct), (term, e, direct)


@pytest.mark.parametrize("name", TERMS)
def test_forces_and_stress_are_derivatives(name):
    """Autograd forces = −∂E/∂r and virial = ∂E/∂ε by central differences.

    Catches a gradient lost in torch-pme's cell handling (stress for NPT) or a
    real-space part that ignores the cell.
    """
    term, cutoff = TERMS[name]
    (pos, q), cell = _random_cell(4, n=6, charged=0.4)

    def energy(p, c):
        return _energy(term, p, q, c, cutoff)

    p = pos.clone().requires_grad_(True)
    strain = torch.zeros(3, 3, dtype=DT, requires_grad=True)
    deform = torch.eye(3, dtype=DT) + 0.5 * (strain + strain.T)
    grad_r, virial = torch.autograd.grad(energy(p @ deform, cell @ deform), [p, strain])
    h = 1e-4
    for a, k in [(0, 0), (2, 1), (5, 2)]:
        dp = torch.zeros_like(pos)
        dp[a, k] = h
        fd = (energy(pos + dp, cell) - energy(pos - dp, cell)) / (2 * h)
        assert abs(float(fd - grad_r[a, k])) < 1e-6, (a, k)
    for a, b in [(0, 0), (1, 2), (2, 0)]:
        eps = torch.zeros(3, 3, dtype=DT)
        eps[a, b] = eps[b, a] = h / 2 if a != b else h
        plus, minus = torch.eye(3, dtype=DT) + eps, torch.eye(3, dtype=DT) - eps
        fd = (energy(pos @ plus, cell @ plus) - energy(pos @ minus, cell @ minus)) / (
            2 * h
        )
        assert abs(float(fd - virial[a, b])) < 1e-6, (a, b)  # symmetric ε


@pytest.mark.parametrize("point", [False, True])
def test_batched_equals_single_with_mixed_cells(point):
    """A batch of two cells and an open molecule equals each structure alone.

    Catches charges or atoms of one structure leaking into another's mesh sum,
    pairs of periodic structures also summed with the shifted kernel, or the
    open molecule losing its shifted-kernel energy.
    """
    periodic = PeriodicCoulomb(
        0.0 if point else SIGMA, real_cutoff=12.0 if point else None
    )
    term = Electrostatics(SIGMA, 12.0, periodic)
    rng = np.random.default_rng(5)
    graphs, charges = [], []
    for k, (cell, pbc) in enumerate(
        [(np.diag([7.0, 8.0, 9.0]), True), (None, False), (np.diag([6.5] * 3), True)]
    ):
        n = 5 + k
        pos = rng.uniform(0, 6.5, (n, 3))
        graphs.append(
            AtomicGraph.from_arrays(
                pos,
                rng.integers(1, 9, n),
                4.0,
                cell=cell,
                pbc=np.full(3, pbc),
                dtype=DT,
                lr_cutoff=12.0,
            )  # fmt: skip
        )
        charges.append(torch.tensor(rng.normal(0, 0.4, n), dtype=DT))
    single = [
        term(g, g.lr_edge_vectors(), q) for g, q in zip(graphs, charges, strict=True)
    ]
    batch = AtomicGraph.collate(graphs)
    together = term(batch, batch.lr_edge_vectors(), torch.cat(charges))
    assert torch.allclose(together, torch.cat(single), rtol=0, atol=1e-12)
    # the open molecule keeps exactly the shifted form
    plain = Electrostatics(SIGMA, 12.0)
    g = graphs[1]
    assert torch.equal(single[1], plain(g, g.lr_edge_vectors(), charges[1]))


def test_zero_volume_cell_is_a_clear_error():
    """3D pbc with a cell of zero volume names the problem."""
    pos = torch.zeros(2, 3, dtype=DT)
    with pytest.raises(EquiforceError, match="zero volume"):
        PeriodicCoulomb(SIGMA)(
            pos, torch.tensor([1.0, -1.0], dtype=DT), torch.zeros(1, 3, 3, dtype=DT),
            [2], [True],
        )  # fmt: skip


# ------------------------------------------------------------- SO3LR itself


def _so3lr(**overrides):
    from equiforce.models.checkpoint import load_checkpoint
    from equiforce.models.registry import model_from_payload, pretrained_path

    payload = load_checkpoint(pretrained_path("so3lr"))
    payload["model_config"] = {**payload["model_config"], **overrides}
    return model_from_payload(payload, dtype=DT)


# so3krates-torch's point-charge PME on the same water box (its two bugs
# patched): tests/models/test_so3lr.py::test_reproduces_so3krates_torch


def test_so3lr_water_box_learned_charges():
    """SO3LR's periodic term is the Ewald energy of its learned charges.

    On a periodic water box: the ``electrostatics`` term equals the screened
    direct sum (see test_erf_kernel_equals_screened_direct_sum) of the charges
    the model predicts, PME equals Ewald in energy and forces, and the old
    'direct' option (shifted kernel over images within r_lr) differs from it by
    far more. Catches the hook not being used for periodic structures, or
    charges/positions of the wrong atoms reaching the mesh.
    """
    from equiforce import keys
    from equiforce.potential import Potential

    atoms = water_box(2)
    out, q = {}, None
    for mode in ("pme", "ewald", "direct"):
        model = _so3lr(periodic_electrostatics=mode)
        pot = Potential(model, dtype=DT, skin=0.0)
        out[mode] = pot.compute(
            torch.tensor(atoms.positions), torch.tensor(atoms.numbers),
            torch.tensor(atoms.cell.array), torch.ones(3, dtype=torch.bool),
            stress=True,
        )  # fmt: skip
        if q is None:
            g = AtomicGraph.from_atoms(atoms, model.cutoff, lr_cutoff=12.0, dtype=DT)
            q = model.atomic_properties(g)["charges"]
    key = keys.term_energy("electrostatics")
    pos, cell = torch.tensor(atoms.positions), torch.tensor(atoms.cell.array)
    R = 8.0
    pairs, vec = _pairs(pos, cell, 6 * R)
    d = vec.norm(dim=1)
    direct = 0.5 * KE * float(
        (
            q[pairs[0]] * q[pairs[1]] * (torch.erf(d / SIGMA) - torch.erf(d / R)) / d
        ).sum()
    ) - KE * float((q**2).sum()) / (math.sqrt(math.pi) * R)
    e_pme = float(out["pme"][key].sum())
    assert abs(e_pme - direct) / len(atoms) < 1e-6, (e_pme, direct)
    assert abs(float(out["ewald"][key].sum()) - direct) / len(atoms) < 1e-8
    f_pme, f_ewald = out["pme"][keys.FORCES], out["ewald"][keys.FORCES]
    assert float((f_pme - f_ewald).abs().max()) < 1e-4
    assert (
        float((out["pme"][keys.STRESS] - out["ewald"][keys.STRESS]).abs().max()) < 1e-6
    )
    assert abs(float(out["direct"][key].sum()) - e_pme) > 0.1
