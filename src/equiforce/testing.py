"""Reusable physics checks and the model contract suite shipped with equiforce.

Use in a test module::

    from equiforce.testing import ModelContractTests

    class TestMyModel(ModelContractTests):
        model_name = "so3krates"
        overrides = {"num_features": 16, "num_layers": 1, "degrees": (1, 2)}

Every architecture in the registry passes the same suite (float32 and float64):
O(3) + translation invariance of E and equivariance of F and σ, permutation,
forces = central finite differences, stress = finite-strain derivative, batched
= one by one, additivity of far-apart molecules, continuity across the cutoff,
isolated atoms return E0, pairs beyond the cutoff change nothing (neighbour
skin), and checkpoint round trips.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Any, ClassVar

import numpy as np
import pytest
import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.models.base import PotentialModel


def tiny_so3krates(e0: torch.Tensor | None = None) -> PotentialModel:
    """An untrained one-layer float64 So3krates with a random (non-zero) readout.

    The model the engine and MD tests share: every output is non-trivial, so a
    wrong unit, sign or cell convention in an adapter changes the numbers.
    """
    from equiforce.models.registry import build_model

    return build_model(
        "so3krates",
        num_features=16,
        num_layers=1,
        degrees=(1, 2),
        zero_init_readout=False,
        dtype=torch.float64,
        e0=e0,
    )


#: A So3krates small enough for unit tests (read-only; copy with ``{**TINY_SO3KRATES}``).
TINY_SO3KRATES = MappingProxyType(
    {
        "num_features": 16,
        "num_layers": 2,
        "degrees": (1, 2),
        "num_radial": 8,
        "readout_hidden": 16,
        "zero_init_readout": False,
    }
)

#: Relative tolerances by dtype for symmetry/consistency checks.
TOLERANCES = {torch.float32: 2e-5, torch.float64: 1e-10}


def random_orthogonal(rng: np.random.Generator, reflect: bool) -> np.ndarray:
    """A random 3x3 rotation (det +1) or roto-reflection (det −1)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    if np.linalg.det(q) < 0:
        q[:, 0] *= -1
    if reflect:
        q = q @ np.diag([1.0, 1.0, -1.0])
    return q


def random_molecule(
    rng: np.random.Generator,
    n_atoms: int = 8,
    species: tuple[int, ...] = (1, 6, 8),
    min_dist: float = 0.95,
    box: float = 3.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Random compact structure: (positions (n,3) Å, atomic numbers (n,))."""
    pos: list[np.ndarray] = []
    while len(pos) < n_atoms:
        p = rng.uniform(0.0, box, size=3)
        if all(np.linalg.norm(p - q) > min_dist for q in pos):
            pos.append(p)
    return np.array(pos), rng.choice(species, size=n_atoms)


def random_crystal(
    rng: np.random.Generator, n_atoms: int = 4
) -> tuple[np.ndarray, ...]:
    """A small triclinic periodic cell (smaller than twice the cutoff)."""
    cell = np.diag([3.2, 3.4, 3.0]) + rng.uniform(-0.4, 0.4, size=(3, 3))
    frac, _ = random_molecule(rng, n_atoms, min_dist=0.35, box=1.0)
    pos = frac @ cell
    return pos, rng.choice((6, 8), size=n_atoms), cell


def energy_forces(model: PotentialModel, graph: AtomicGraph, stress: bool = False):
    """(energy (G,), forces (N,3)[, stress (G,3,3)]) as float64 numpy arrays."""
    out = model(graph, compute_forces=True, compute_stress=stress)
    res = [
        out[keys.ENERGY].detach().double().numpy(),
        out[keys.FORCES].detach().double().numpy(),
    ]
    if stress:
        res.append(out[keys.STRESS].detach().double().numpy())
    return tuple(res)


def assert_close(
    actual, expected, rtol: float, what: str, atol_scale: float | None = None
) -> None:
    """Compare arrays with a tolerance relative to the magnitude of ``expected``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    scale = atol_scale if atol_scale is not None else max(np.abs(expected).max(), 1.0)
    err = np.abs(actual - expected).max() if actual.size else 0.0
    assert err <= rtol * scale, (
        f"{what}: max error {err:.3e} > {rtol:.1e} x {scale:.3e}"
    )


class ModelContractTests:
    """Contract every :class:`PotentialModel` satisfies (subclass as ``Test...``)."""

    model_name: ClassVar[str] = ""
    preset: ClassVar[str | None] = None
    overrides: ClassVar[dict[str, Any]] = {}

    # ---------------------------------------------------------------- helpers
    def make_model(self, dtype: torch.dtype, seed: int = 0, **extra) -> PotentialModel:
        """A model with random (non-zero) energies and some E0 values."""
        from equiforce.models.registry import build_model

        e0 = {1: -13.6, 6: -1025.3, 8: -2035.6}
        params = {**self.overrides, **extra}
        model = build_model(
            self.model_name, self.preset, dtype=dtype, seed=seed, e0=e0, **params
        )
        return model.eval()

    def graph(
        self, pos, z, model, dtype, cell=None, pbc=None, extra_cutoff: float = 0.0
    ):
        return AtomicGraph.from_arrays(
            pos, z, model.cutoff + extra_cutoff, cell=cell, pbc=pbc, dtype=dtype
        )

    def molecule_and_crystal(
        self, rng, model, dtype, n_molecule: int, n_crystal: int, box: float = 4.0
    ) -> AtomicGraph:
        """A batch of a random molecule and a random periodic crystal."""
        pos, z = random_molecule(rng, n_atoms=n_molecule, box=box)
        cpos, cz, cell = random_crystal(rng, n_atoms=n_crystal)
        return AtomicGraph.collate(
            [
                self.graph(pos, z, model, dtype),
                self.graph(cpos, cz, model, dtype, cell, np.ones(3, bool)),
            ]
        )

    @pytest.fixture(params=[torch.float32, torch.float64], ids=["float32", "float64"])
    def dtype(self, request) -> torch.dtype:
        return request.param

    # ------------------------------------------------------------------ tests
    def test_energy_is_not_trivial(self, dtype):
        model = self.make_model(dtype)
        pos, z = random_molecule(np.random.default_rng(0))
        e, f = energy_forces(model, self.graph(pos, z, model, dtype))
        assert np.abs(f).max() > 1e-4, "forces vanish: the suite would test nothing"
        assert np.isfinite(e).all() and np.isfinite(f).all()

    @pytest.mark.parametrize("reflect", [False, True], ids=["rotation", "reflection"])
    def test_o3_and_translation(self, dtype, reflect):
        rng = np.random.default_rng(1)
        model = self.make_model(dtype)
        pos, z = random_molecule(rng)
        rot = random_orthogonal(rng, reflect)
        e1, f1 = energy_forces(model, self.graph(pos, z, model, dtype))
        moved = pos @ rot.T + rng.normal(size=3) * 5.0
        e2, f2 = energy_forces(model, self.graph(moved, z, model, dtype))
        tol = TOLERANCES[dtype]
        assert_close(e2, e1, tol, "energy under O(3)+translation")
        assert_close(f2, f1 @ rot.T, tol * 10, "forces under O(3)+translation")

    def test_periodic_o3_stress(self, dtype):
        rng = np.random.default_rng(2)
        model = self.make_model(dtype)
        pos, z, cell = random_crystal(rng)
        rot = random_orthogonal(rng, reflect=True)
        pbc = np.ones(3, bool)
        e1, f1, s1 = energy_forces(
            model, self.graph(pos, z, model, dtype, cell, pbc), True
        )
        e2, f2, s2 = energy_forces(
            model, self.graph(pos @ rot.T, z, model, dtype, cell @ rot.T, pbc), True
        )
        tol = TOLERANCES[dtype] * 10
        assert_close(e2, e1, tol, "periodic energy under O(3)")
        assert_close(f2, f1 @ rot.T, tol, "periodic forces under O(3)")
        assert_close(s2[0], rot @ s1[0] @ rot.T, tol, "stress under O(3)")
        assert np.abs(s1).max() > 0, "stress vanishes"

    def test_permutation(self, dtype):
        rng = np.random.default_rng(3)
        model = self.make_model(dtype)
        pos, z = random_molecule(rng)
        perm = rng.permutation(len(z))
        e1, f1 = energy_forces(model, self.graph(pos, z, model, dtype))
        e2, f2 = energy_forces(model, self.graph(pos[perm], z[perm], model, dtype))
        tol = TOLERANCES[dtype]
        assert_close(e2, e1, tol, "energy under permutation")
        assert_close(f2, f1[perm], tol * 10, "forces under permutation")

    def test_spatial_atom_order_changes_nothing(self, dtype):
        """Large calls run in Morton order (memory locality); outputs must not move."""
        model = self.make_model(dtype)
        batch = self.molecule_and_crystal(np.random.default_rng(9), model, dtype, 12, 6)
        model.spatial_order_min_atoms = None
        ref = model(batch, compute_stress=True)
        model.spatial_order_min_atoms = 0  # reorder every call
        order = model.atom_order(batch)
        assert order is not None and not torch.equal(order[0], torch.arange(18)), (
            "the test structures are already in Morton order: nothing is tested"
        )
        out = model(batch, compute_stress=True)
        tol = TOLERANCES[dtype] * 10
        for key in (keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.STRESS):
            assert_close(out[key], ref[key], tol, f"{key} in Morton atom order")

    def test_padding_to_buckets_changes_nothing(self, dtype):
        """Static-shape (CUDA-graph) calls pad with a ghost structure; real outputs stay."""
        from equiforce.accel.padding import pad_to_buckets

        model = self.make_model(dtype)
        batch = self.molecule_and_crystal(
            np.random.default_rng(10), model, dtype, 7, 5, box=3.0
        )
        ref = model(batch, compute_stress=True)
        # a minimum above the real count: padded edges whatever the family's cutoff
        padded = pad_to_buckets(batch, model.cutoff, min_edges=batch.n_edges + 10)
        assert padded.n_edges > batch.n_edges and padded.num_nodes > batch.num_nodes
        out = model(padded, compute_stress=True)
        n, tol = batch.num_nodes, TOLERANCES[dtype] * 10
        assert_close(out[keys.ENERGY][:2], ref[keys.ENERGY], tol, "padded energy")
        assert_close(out[keys.FORCES][:n], ref[keys.FORCES], tol, "padded forces")
        assert_close(out[keys.STRESS][:2], ref[keys.STRESS], tol, "padded stress")
        assert_close(
            out[keys.ATOMIC_ENERGIES][:n], ref[keys.ATOMIC_ENERGIES], tol, "padded E_i"
        )

    @pytest.mark.parametrize(
        ("compile", "dtype"),
        [
            pytest.param(False, torch.float32, id="func-float32"),
            pytest.param(False, torch.float64, id="func-float64"),
            pytest.param(True, torch.float64, id="compiled-float64"),
            # one Inductor build per family in the default suite (~10 s each)
            pytest.param(
                True, torch.float32, id="compiled-float32", marks=pytest.mark.slow
            ),
        ],
    )
    def test_compiled_backend_equals_eager(self, compile, dtype):
        """torch.func (eager, or compiled by Inductor) equals autograd.

        Every backend takes the one energy path: energies, per-atom energies,
        forces and stress agree, with and without a stress request.
        """
        from equiforce.accel.compiled import CompiledPotential

        model = self.make_model(dtype)
        batch = self.molecule_and_crystal(
            np.random.default_rng(11), model, dtype, 7, 5, box=3.0
        )
        ref = model(batch, compute_stress=True)
        fast = CompiledPotential(
            model, compile=compile, backend="inductor", cpp_wrapper=False
        )
        tol = TOLERANCES[dtype] * 10
        for stress in (False, True):
            out = fast(batch, stress=stress)
            # the eager outputs (per-term ones too, for models with several terms)
            assert set(out) == set(ref) - (set() if stress else {keys.STRESS})
            for key in out:
                assert_close(out[key], ref[key], tol, f"{key}, stress={stress}")
        if compile:
            assert fast.backend == "inductor" and fast.compiled, "fell back to eager"

    def test_forces_match_finite_differences(self):
        dtype = torch.float64
        rng = np.random.default_rng(4)
        model = self.make_model(dtype)
        pos, z = random_molecule(rng, n_atoms=5)
        _, f = energy_forces(model, self.graph(pos, z, model, dtype))
        h = 1e-5
        fd = np.zeros_like(pos)
        for a in range(len(z)):
            for k in range(3):
                p, m = pos.copy(), pos.copy()
                p[a, k] += h
                m[a, k] -= h
                ep = energy_forces(model, self.graph(p, z, model, dtype))[0][0]
                em = energy_forces(model, self.graph(m, z, model, dtype))[0][0]
                fd[a, k] = -(ep - em) / (2 * h)
        assert_close(f, fd, 1e-6, "forces vs central differences")

    def test_stress_matches_finite_strain(self):
        dtype = torch.float64
        rng = np.random.default_rng(5)
        model = self.make_model(dtype)
        pos, z, cell = random_crystal(rng)
        pbc = np.ones(3, bool)
        _, _, s = energy_forces(
            model, self.graph(pos, z, model, dtype, cell, pbc), True
        )
        vol = abs(np.linalg.det(cell))
        h = 1e-5
        fd = np.zeros((3, 3))
        for a in range(3):
            for b in range(3):
                eps = np.zeros((3, 3))
                eps[a, b] = eps[b, a] = h / 2 if a != b else h
                es = []
                for sign in (1, -1):
                    d = np.eye(3) + sign * eps
                    g = self.graph(pos @ d, z, model, dtype, cell @ d, pbc)
                    es.append(energy_forces(model, g)[0][0])
                fd[a, b] = (es[0] - es[1]) / (2 * h) / vol
        assert_close(s[0], fd, 1e-6, "stress vs finite strain")

    def test_batched_equals_single(self, dtype):
        rng = np.random.default_rng(6)
        model = self.make_model(dtype)
        mols = [random_molecule(rng, n_atoms=n) for n in (3, 7, 5)]
        pos_c, z_c, cell = random_crystal(rng)
        graphs = [self.graph(p, z, model, dtype) for p, z in mols]
        graphs.append(self.graph(pos_c, z_c, model, dtype, cell, np.ones(3, bool)))
        single = [energy_forces(model, g) for g in graphs]
        e, f = energy_forces(model, AtomicGraph.collate(graphs))
        tol = TOLERANCES[dtype]
        assert_close(e, np.concatenate([s[0] for s in single]), tol, "batched energies")
        assert_close(
            f, np.concatenate([s[1] for s in single]), tol * 10, "batched forces"
        )

    def test_far_apart_molecules_are_additive(self, dtype):
        rng = np.random.default_rng(7)
        model = self.make_model(dtype)
        (pa, za), (pb, zb) = random_molecule(rng), random_molecule(rng)
        ea, fa = energy_forces(model, self.graph(pa, za, model, dtype))
        eb, fb = energy_forces(model, self.graph(pb, zb, model, dtype))
        both = np.concatenate([pa, pb + np.array([50.0, 0.0, 0.0])])
        e, f = energy_forces(
            model, self.graph(both, np.concatenate([za, zb]), model, dtype)
        )
        tol = TOLERANCES[dtype]
        assert_close(e, ea + eb, tol, "energy of separated molecules")
        assert_close(
            f, np.concatenate([fa, fb]), tol * 10, "forces of separated molecules"
        )

    def test_continuous_across_cutoff(self):
        dtype = torch.float64
        model = self.make_model(dtype)
        rc = model.cutoff
        z = np.array([6, 8, 1])
        es, fs = [], []
        for d in (rc - 1e-6, rc + 1e-6):
            # atom 2 near atom 0; atom 1 crosses atom 0's cutoff sphere
            pos = np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0], [0.0, 1.1, 0.0]])
            e, f = energy_forces(model, self.graph(pos, z, model, dtype))
            es.append(e[0])
            fs.append(f)
        assert abs(es[0] - es[1]) < 1e-6, f"energy jumps at the cutoff: {es}"
        assert np.abs(fs[0] - fs[1]).max() < 1e-4, "forces jump at the cutoff"

    def test_pairs_beyond_cutoff_change_nothing(self, dtype):
        rng = np.random.default_rng(8)
        model = self.make_model(dtype)
        pos, z = random_molecule(rng, n_atoms=10, box=6.0)
        e1, f1 = energy_forces(model, self.graph(pos, z, model, dtype))
        g2 = self.graph(pos, z, model, dtype, extra_cutoff=2.0)
        e2, f2 = energy_forces(model, g2)
        assert g2.n_edges > self.graph(pos, z, model, dtype).n_edges
        tol = TOLERANCES[dtype]
        assert_close(e2, e1, tol, "energy with a neighbour skin")
        assert_close(f2, f1, tol * 10, "forces with a neighbour skin")

    def test_isolated_atom_returns_e0(self, dtype):
        model = (
            self.make_model(dtype, zero_init_readout=True)
            if self._has_zero_init()
            else None
        )
        if model is None:
            pytest.skip("model has no zero-initialised readout option")
        for zz, e0 in ((1, -13.6), (8, -2035.6)):
            g = self.graph(np.zeros((1, 3)), np.array([zz]), model, dtype)
            e, f = energy_forces(model, g)
            assert abs(e[0] - e0) < 1e-9 and np.abs(f).max() == 0.0

    def test_checkpoint_round_trip(self, dtype, tmp_path):
        from equiforce.models.registry import load_model

        model = self.make_model(dtype)
        pos, z = random_molecule(np.random.default_rng(9))
        path = tmp_path / "model.pt"
        model.save(path)
        payload = torch.load(path, weights_only=True)
        assert payload["model_name"] == self.model_name
        loaded = load_model(path)
        assert next(iter(loaded.parameters())).dtype == dtype
        e1, f1 = energy_forces(model, self.graph(pos, z, model, dtype))
        e2, f2 = energy_forces(loaded, self.graph(pos, z, loaded, dtype))
        np.testing.assert_array_equal(e1, e2)
        np.testing.assert_array_equal(f1, f2)

    def _has_zero_init(self) -> bool:
        from equiforce.models.registry import MODELS

        return "zero_init_readout" in MODELS[self.model_name][0].model_fields


def record_threads(obj: Any, seen: list[int]) -> None:
    """Wrap ``obj._fn`` so that each call appends ``torch.get_num_threads()`` to ``seen``."""
    inner = obj._fn

    def spy(*args):
        seen.append(torch.get_num_threads())
        return inner(*args)

    obj._fn = spy
