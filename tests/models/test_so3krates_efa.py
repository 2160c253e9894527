"""So3krates with Euclidean fast attention: the contract suite and the branch's wiring.

The contract suite runs with the EFA branch live (non-zero output projection), on
open structures within r_max; its periodic and far-apart tests are replaced by
the errors the EFA must raise there.
"""

import math

import numpy as np
import pytest
import torch

from equiforce.data.graph import AtomicGraph
from equiforce.nn.efa import GlobalAttentionInputError
from equiforce.testing import (
    TINY_SO3KRATES,
    ModelContractTests,
    energy_forces,
    random_crystal,
    random_molecule,
)

#: r_max covers the contract suite's structures, including the ghost structure
#: of the padding test (4 ghosts 2·cutoff apart: 30 Å); order 19 integrates
#: phases up to 3.14π, here 3π.
EFA = {
    "r_max": 40.0,
    "max_frequency": 3 * math.pi / 40.0,
    "lebedev_order": 19,
    "num_features_qk": 8,
    "num_features_v": 8,
    "zero_init": False,
}
EFA_TINY = {**TINY_SO3KRATES, "global_attention": EFA}


class TestSo3kratesEFA(ModelContractTests):
    model_name = "so3krates"
    overrides = EFA_TINY

    def molecule_and_crystal(
        self, rng, model, dtype, n_molecule: int, n_crystal: int, box: float = 4.0
    ) -> AtomicGraph:
        """Two open molecules (the EFA takes no periodic structure)."""
        a = random_molecule(rng, n_atoms=n_molecule, box=box)
        b = random_molecule(rng, n_atoms=n_crystal, box=box)
        return AtomicGraph.collate([self.graph(*m, model, dtype) for m in (a, b)])

    def test_periodic_o3_stress(self, dtype):
        """Replaced: a periodic structure is an error naming it (not a silent loss
        of invariance: image shifts change the RoPE phases)."""
        model = self.make_model(dtype)
        rng = np.random.default_rng(2)
        pos, z = random_molecule(rng)
        cpos, cz, cell = random_crystal(rng)
        batch = AtomicGraph.collate(
            [
                self.graph(pos, z, model, dtype),
                self.graph(cpos, cz, model, dtype, cell, np.ones(3, bool)),
            ]
        )
        with pytest.raises(GlobalAttentionInputError, match=r"\[1\] \(graph index\)"):
            model(batch)

    def test_stress_matches_finite_strain(self):
        pytest.skip("periodic structures are rejected (test_periodic_o3_stress)")

    def test_batched_equals_single(self, dtype):
        """Open structures only; 3 structures (one product) and 6 (slice by slice)."""
        rng = np.random.default_rng(6)
        model = self.make_model(dtype)
        for sizes in ((3, 7, 5), (3, 7, 5, 4, 6, 2)):
            mols = [random_molecule(rng, n_atoms=n) for n in sizes]
            graphs = [self.graph(p, z, model, dtype) for p, z in mols]
            single = [energy_forces(model, g) for g in graphs]
            e, f = energy_forces(model, AtomicGraph.collate(graphs))
            tol = 2e-5 if dtype == torch.float32 else 1e-10
            np.testing.assert_allclose(
                e, np.concatenate([s[0] for s in single]), rtol=tol, atol=tol * 1e3
            )
            f_single = np.concatenate([s[1] for s in single])
            # random EFA weights give forces of ~20-40 eV/Å: float32 agrees to its
            # rounding relative to their size (the summation order differs)
            scale = np.abs(f_single).max()
            np.testing.assert_allclose(f, f_single, atol=tol * 10 * max(scale, 1.0))

    def test_far_apart_molecules_are_additive(self, dtype):
        """Replaced: molecules 50 Å apart exceed r_max = 40 Å: an error naming the
        structure, never a silently wrong energy."""
        rng = np.random.default_rng(7)
        model = self.make_model(dtype)
        (pa, za), (pb, zb) = random_molecule(rng), random_molecule(rng)
        both = np.concatenate([pa, pb + np.array([50.0, 0.0, 0.0])])
        small = self.graph(pa, za, model, dtype)
        big = self.graph(both, np.concatenate([za, zb]), model, dtype)
        with pytest.raises(GlobalAttentionInputError, match=r"structure 1 \(graph"):
            model(AtomicGraph.collate([small, big]))

    def test_continuous_across_cutoff(self):
        """As the suite's, but for stiff random models: the live EFA branch's random
        weights give forces of ~40 eV/Å (~250 eV/Å with the tensor outputs), so
        the suite's absolute bounds over its 2e-6 Å step would fail for a smooth
        energy. Here the work −F·Δx is subtracted from the energy change, and the
        force change across r_c must shrink with the step (≈ linearly for smooth
        forces; a jump at the cutoff does not shrink). The local part is unchanged,
        so a jump there still fails."""
        dtype = torch.float64
        model = self.make_model(dtype)
        rc, z = model.cutoff, np.array([6, 8, 1])

        def across(half: float) -> tuple[float, float]:
            es, fs = [], []
            for d in (rc - half, rc + half):
                pos = np.array([[0.0, 0.0, 0.0], [d, 0.0, 0.0], [0.0, 1.1, 0.0]])
                e, f = energy_forces(model, self.graph(pos, z, model, dtype))
                es.append(e[0])
                fs.append(f)
            work = -0.5 * (fs[0][1, 0] + fs[1][1, 0]) * 2 * half
            return es[1] - es[0] - work, np.abs(fs[0] - fs[1]).max()

        de_wide, df_wide = across(1e-6)
        _, df_narrow = across(1e-7)
        assert abs(de_wide) < 1e-8, f"energy jumps at the cutoff: {de_wide}"
        assert df_narrow < 0.3 * df_wide + 1e-9, (
            f"forces jump at the cutoff: {df_wide:.2e} (±1e-6 Å), "
            f"{df_narrow:.2e} (±1e-7 Å)"
        )


class TestSo3kratesEFATensor(TestSo3kratesEFA):
    """The same suite with the tensor outputs (l = 1, 2) feeding the Euclidean
    variables (order 23: phase 3π at l = 2). Adds one compiled-float64 build."""

    overrides = {
        **TINY_SO3KRATES,
        "global_attention": {**EFA, "degrees": (0, 1, 2), "lebedev_order": 23},
    }


def test_local_model_is_blind_to_a_long_chain_twist_and_efa_is_not():
    """Training-free test (global-interactions.md §5.1): on H2C=(C=)14CH2 (cross-end
    H–H distance > 2·T·r_c = 20 Å) the local So3krates gives the same energy at
    every end-group twist (random weights), the same model with a live EFA
    branch does not. Fails if the branch is dead or not global."""
    import importlib.util
    from pathlib import Path

    from equiforce.models.registry import build_model

    path = Path(__file__).resolve().parents[2] / "examples/global/generate.py"
    spec = importlib.util.spec_from_file_location("generate_global", path)
    gen = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gen)
    efa = {**EFA, "r_max": 25.0, "max_frequency": math.pi / 25.0, "lebedev_order": 11}
    energies = {}
    for name, extra in (("local", {}), ("efa", {"global_attention": efa})):
        model = build_model(
            "so3krates", dtype=torch.float64, seed=1, **TINY_SO3KRATES, **extra
        )
        es = []
        for angle in (0.0, 30.0, 60.0, 90.0):
            pos, z = gen.cumulene(16, angle)
            g = AtomicGraph.from_arrays(pos, z, model.cutoff, dtype=torch.float64)
            es.append(model(g, compute_forces=False)["energy"].item())
        energies[name] = np.array(es)
    assert np.ptp(energies["local"]) < 1e-9, energies["local"]
    assert np.ptp(energies["efa"]) > 1e-4, energies["efa"]
