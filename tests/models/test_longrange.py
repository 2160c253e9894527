"""Physical long-range terms against closed forms (ZBL, Coulomb tail, C6 mixing)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from equiforce.data.graph import AtomicGraph
from equiforce.models.longrange import (
    Dispersion,
    Electrostatics,
    ZBLRepulsion,
    conserve_charge,
)
from equiforce.models.longrange.free_atoms import FREE_ATOM_ALPHA_C6
from equiforce.models.longrange.switch import BOHR, HARTREE, KE

pytestmark = pytest.mark.usefixtures("_no_grad")


@pytest.fixture
def _no_grad():
    with torch.no_grad():
        yield


def dimer(d: float, z=(6, 8), lr_cutoff: float | None = None) -> AtomicGraph:
    pos = np.array([[0.0, 0.0, 0.0], [0.0, 0.0, d]])
    return AtomicGraph.from_arrays(
        pos, np.array(z), 5.0, lr_cutoff=lr_cutoff, dtype=torch.float64
    )


def test_zbl_matches_universal_screening():
    """At initialisation the term is the universal ZBL potential (a, c, 0.23, 0.8854 a0).

    Catches a wrong softplus inverse, normalisation of c, exponent or length scale.
    """
    zbl = ZBLRepulsion(cutoff=4.5).double()
    for d in (0.3, 0.7, 1.2):
        g = dimer(d, (6, 8))
        e = float(zbl(g, g.edge_vectors()).sum())
        x = d * (6**0.23 + 8**0.23) / (0.8854 * BOHR)
        c = np.array([0.1818, 0.5099, 0.2802, 0.02817])
        a = np.array([3.2, 0.9423, 0.4028, 0.2016])
        phi_screen = (c / c.sum() * np.exp(-a * x)).sum()
        u = d / 4.5
        cutoff = 1 - 6 * u**5 + 15 * u**4 - 10 * u**3
        t = d / 1.5  # smooth step exp(-1/(1-t)) / (exp(-1/(1-t)) + exp(-1/t))
        s = math.exp(-1 / (1 - t)) / (math.exp(-1 / (1 - t)) + math.exp(-1 / t))
        expected = KE * 48 / d * phi_screen * cutoff * s
        # parameters start as float32 softplus inverses: ~1e-8 relative
        assert e == pytest.approx(expected, rel=1e-6), d
    assert float(zbl(dimer(1.6), dimer(1.6).edge_vectors()).sum()) == 0.0


def test_coulomb_tail_and_cutoff():
    """Ion pair: k_e q q/d far beyond σ; energy and force vanish smoothly at r_lr."""
    q = torch.tensor([1.0, -1.0], dtype=torch.float64)
    far = Electrostatics(sigma=4.0, lr_cutoff=1000.0)
    for d in (15.0, 30.0):
        g = dimer(d, lr_cutoff=1000.0)
        e = float(far(g, g.lr_edge_vectors(), q).sum())
        shift = math.erf(1000.0 / 4.0) / 1000.0
        assert e == pytest.approx(-KE * (math.erf(d / 4.0) / d - shift), rel=1e-12)
        # the bare 1/d tail (erf(d/σ) = 1 to 1e-7 from d = 15 Å), minus the shift
        assert e == pytest.approx(-KE * (1.0 / d - 1.0 / 1000.0), rel=1e-6)
    near = Electrostatics(sigma=4.0, lr_cutoff=12.0)
    es = []
    for d in (12.0 - 1e-4, 12.0 - 2e-4, 12.0 + 1e-4):
        g = dimer(d, lr_cutoff=13.0)
        es.append(float(near(g, g.lr_edge_vectors(), q).sum()))
    assert abs(es[0]) < 1e-9 and abs(es[0] - es[1]) < 1e-9 and es[2] == 0.0


def test_charges_sum_to_total_charge():
    raw = torch.tensor([0.3, -0.1, 0.7, 0.2, 0.05], dtype=torch.float64)
    gi = torch.tensor([0, 0, 1, 1, 1])
    q = conserve_charge(raw, gi, torch.tensor([2, 3]), torch.tensor([-1.0, 2.0]))
    sums = torch.zeros(2, dtype=torch.float64).index_add_(0, gi, q)
    assert sums.tolist() == pytest.approx([-1.0, 2.0], abs=1e-15)
    # differences within a structure are kept
    assert float(q[1] - q[0]) == pytest.approx(float(raw[1] - raw[0]))


def test_dispersion_c6_tail_is_the_mixing_rule():
    """Free C and O (h = 1) at long range: −E·d⁶ → the TS combination rule's C6."""
    disp = Dispersion(beta=1.2, lr_cutoff=200.0, damping=2.0).double()
    (a_c, c6_c), (a_o, c6_o) = FREE_ATOM_ALPHA_C6[5], FREE_ATOM_ALPHA_C6[7]
    c6_mix = 2 * c6_c * c6_o / (a_o / a_c * c6_c + a_c / a_o * c6_o)
    h = torch.ones(2, dtype=torch.float64)
    ratios = []
    for d in (40.0, 80.0):  # Å
        g = dimer(d, lr_cutoff=200.0)
        e = float(disp(g, g.lr_edge_vectors(), h).sum()) / HARTREE
        ratios.append(-e * (d / BOHR) ** 6 / c6_mix)
    assert ratios[1] == pytest.approx(1.0, abs=2e-3)  # C8, C10 fade as 1/d²
    assert abs(ratios[0] - 1) > abs(ratios[1] - 1)
    # scaling h scales C6 by h² (α by h): E(h=1.1)/E(h=1) → 1.21 at long range
    g = dimer(80.0, lr_cutoff=200.0)
    e1 = float(disp(g, g.lr_edge_vectors(), h).sum())
    e2 = float(disp(g, g.lr_edge_vectors(), 1.1 * h).sum())
    assert e2 / e1 == pytest.approx(1.21, rel=2e-3)
