"""The strain-aware neighbour-list rule of ``Potential`` (NPT, cell relaxation).

The list built at one cell is reused under a new cell while
(c + 2 max δ) ≤ s_min(M) (c + skin), M = h_old⁻¹ h_new, δ the non-affine
displacements. Reuse must never change a result: every call is compared with a
fresh build (skin 0) in float64.
"""

import numpy as np
import torch

from equiforce import keys
from equiforce.models.registry import build_model
from equiforce.potential import Potential
from equiforce.testing import TINY_SO3KRATES, random_crystal

OUTPUTS = (keys.ENERGY, keys.FORCES, keys.STRESS)


def tiny():
    model = build_model("so3krates", dtype=torch.float64, seed=3, **TINY_SO3KRATES)
    return model.eval()


def _fresh(model, pos, z, cell):
    return Potential(model, skin=0.0, compile=False).compute(
        pos, z, cell, [True] * 3, stress=True
    )


def _assert_same(out, ref):
    for key in OUTPUTS:
        torch.testing.assert_close(out[key], ref[key], rtol=1e-10, atol=1e-10)


def _crystal(seed: int):
    # a small triclinic cell (< 2 cutoffs): many periodic images per pair, so a
    # wrong image shift S·Δcell would show at once
    pos, z, cell = random_crystal(np.random.default_rng(seed), 5)
    return pos, z, cell


def test_list_reused_under_small_strains_gives_fresh_results():
    """Catches: a reused list whose cell is not updated, or a rule that rebuilds
    at every cell change (no reuse under NPT)."""
    model = tiny()
    pos, z, cell = _crystal(0)
    rng = np.random.default_rng(1)
    potential = Potential(model, skin=0.5, compile=False)
    potential.compute(pos, z, cell, [True] * 3, stress=True)
    for _ in range(3):
        strain = rng.normal(0, 0.004, (3, 3))
        deform = np.eye(3) + 0.5 * (strain + strain.T)
        cell = cell @ deform
        pos = pos @ deform + rng.normal(0, 0.01, pos.shape)  # affine + small noise
        out = potential.compute(pos, z, cell, [True] * 3, stress=True)
        _assert_same(out, _fresh(model, pos, z, cell))
    assert potential.n_builds == 1  # all three strained calls reused the list


def test_compression_beyond_the_skin_rebuilds_and_stays_exact():
    """A cumulative 1 %-per-call compression: the rule must rebuild once the
    compressed skin no longer covers the cutoff, and every call stays exact."""
    model = tiny()
    pos, z, cell = _crystal(2)
    potential = Potential(model, skin=0.5, compile=False)
    for k in range(12):
        scale = 0.99**k
        out = potential.compute(pos * scale, z, cell * scale, [True] * 3, stress=True)
        _assert_same(out, _fresh(model, pos * scale, z, cell * scale))
    # 0.99^k·(c + skin) < c from k = 10 (c = 5 Å, skin 0.5 Å): at least one rebuild
    assert 2 <= potential.n_builds < 12


def test_stale_list_under_large_compression_would_be_wrong():
    """The bound is needed: forcing reuse after a 12 % compression (s_min·(c+skin)
    = 4.84 Å < c) misses pairs that entered the cutoff, and the rule rebuilds."""
    model = tiny()
    pos, z, cell = _crystal(4)
    potential = Potential(model, skin=0.5, compile=False)
    potential.compute(pos, z, cell, [True] * 3)
    small_pos, small_cell = 0.88 * pos, 0.88 * cell
    ref = _fresh(model, small_pos, z, small_cell)
    stale = Potential(model, skin=0.5, compile=False)
    stale.compute(pos, z, cell, [True] * 3)
    stale._needs_rebuild = lambda *a: False  # what a too-loose rule would do
    wrong = stale.compute(small_pos, z, small_cell, [True] * 3, stress=True)
    assert not torch.allclose(wrong[keys.ENERGY], ref[keys.ENERGY], atol=1e-6)
    out = potential.compute(small_pos, z, small_cell, [True] * 3, stress=True)
    assert potential.n_builds == 2
    _assert_same(out, ref)


def test_cell_change_of_an_open_system_rebuilds():
    """Open structures have no lattice to deform: any cell change rebuilds."""
    model = tiny()
    pos, z, _ = _crystal(5)
    potential = Potential(model, skin=0.5, compile=False)
    potential.compute(pos, z, np.zeros((3, 3)), [False] * 3)
    potential.compute(pos, z, np.eye(3) * 20.0, [False] * 3)
    assert potential.n_builds == 2
