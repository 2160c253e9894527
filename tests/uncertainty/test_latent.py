"""The latent uncertainty: mixture maths, symmetry, distance from the data, file, MD, CLI."""

import json
import math
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from _ensemble_helpers import CUTOFF, batch_of, distorted, fit, labelled_frames, tiny

from equiforce import keys
from equiforce.accel import aoti
from equiforce.accel.compiled import CompiledPotential
from equiforce.accel.signature import arguments as _arguments
from equiforce.calculator import EquiforceCalculator
from equiforce.cli import main
from equiforce.config import DataSource
from equiforce.data.graph import AtomicGraph
from equiforce.md.config import MDConfig
from equiforce.md.runner import run_md, thermo_table
from equiforce.models.registry import load_model
from equiforce.potential import Potential
from equiforce.testing import random_orthogonal
from equiforce.train.evaluate import evaluate
from equiforce.uncertainty import (
    EnsembleError,
    LatentUncertainty,
    fit_latent,
    load_ensemble,
    load_latent,
    save_latent,
)
from equiforce.uncertainty.density import ErrorScale, fit_error_scale, fit_mixture
from equiforce.uncertainty.latent import model_features, weights_digest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "train"))
from _train_helpers import ETHANOL, make_tiny_config  # noqa: E402


@pytest.fixture(scope="module")
def latent(train_frames):
    """A fitted tiny model with a mixture over 24 training-like frames.

    On 6 of the 16 feature axes, so that the projection is not the identity and
    a wrongly folded or transposed one fails the comparisons below.
    """
    train = [batch_of(labelled_frames(12, 0.05, seed=s)) for s in (3, 4)]
    valid = [batch_of(labelled_frames(8, 0.05, seed=5))]
    model = fit(tiny(0), train_frames)
    fitted = fit_latent(model, train, valid, n_components=2, n_dims=6)[0]
    assert fitted.density.projection.shape == (16, 6)
    return fitted


def _outputs(model, atoms) -> dict:
    return Potential(model, compile=False, skin=0.0).compute(
        atoms.positions, atoms.numbers
    )


# ------------------------------------------------------------------ mixture
def test_one_component_is_the_gaussian_of_the_standardised_features():
    # fails if the EM step, the Cholesky factor of the precision or the folded
    # standardisation are wrong: with C = 1 the fit is the sample Gaussian
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(400, 5, generator=gen, dtype=torch.float64)
    x = x @ torch.randn(5, 5, generator=gen, dtype=torch.float64) + 3.0
    density = fit_mixture(x, n_components=1)
    z = (x - x.mean(0)) / x.std(0)
    cov = torch.cov(z.T, correction=0) + 1e-3 * torch.eye(5, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(z.mean(0), cov)
    probe = x[:7] + 0.5
    z_probe = (probe - x.mean(0)) / x.std(0)
    torch.testing.assert_close(density.nll(probe), -ref.log_prob(z_probe))


def test_projected_mixture_is_the_gaussian_of_the_leading_principal_components():
    # fails if the projection is not onto the leading axes of the standardised
    # features, or is folded into the cached affine map wrongly (order, scale)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(500, 6, generator=gen, dtype=torch.float64)
    x = x * torch.tensor([5.0, 3.0, 1.0, 0.3, 0.2, 0.1], dtype=torch.float64)
    x = x @ torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))[0]
    density = fit_mixture(x, n_components=1, n_dims=2)
    assert density.projection.shape == (6, 2) and density.n_dims == 2
    z = (x - x.mean(0)) / x.std(0)
    evals, evecs = torch.linalg.eigh(torch.cov(z.T, correction=0))
    lead = evecs[:, -2:].flip(1)  # (6, 2), largest first
    overlap = (density.projection.T @ lead).abs()
    torch.testing.assert_close(
        overlap, torch.eye(2, dtype=torch.float64), atol=1e-8, rtol=0
    )
    p = z @ density.projection  # (n, 2)
    cov = torch.cov(p.T, correction=0) + 1e-3 * torch.eye(2, dtype=torch.float64)
    ref = torch.distributions.MultivariateNormal(p.mean(0), cov)
    probe = x[:7] + 0.5
    z_probe = ((probe - x.mean(0)) / x.std(0)) @ density.projection
    torch.testing.assert_close(density.nll(probe), -ref.log_prob(z_probe))
    # the distance is normalised by the mixture's dimension: ≈ 1 on the data
    assert 0.7 < float(density.distance(x).median()) < 1.3
    with pytest.raises(ValueError, match="n_dims"):
        fit_mixture(x, n_components=1, n_dims=7)


def test_cached_maps_follow_replaced_buffers():
    # fails if the cached affine map keeps a buffer that was replaced rather
    # than edited in place (a new tensor starts again at version 0)
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(200, 4, generator=gen, dtype=torch.float64)
    density = fit_mixture(x, n_components=1)
    before = density.distance(x[:3])
    density.nll0 = density.nll0 + 2.0  # a new tensor, version 0
    after = density.distance(x[:3])
    torch.testing.assert_close(after - before, torch.full_like(before, -1.0))


def test_two_clusters_are_found_and_their_gap_scores_high():
    # fails if EM or the k-means start merges two separated clouds: the point
    # between them would then look typical
    gen = torch.Generator().manual_seed(1)
    a = torch.randn(300, 3, generator=gen, dtype=torch.float64)
    x = torch.cat([a - 6.0, a[:200] + 6.0])
    density = fit_mixture(x, n_components=2)
    u = density.distance(torch.tensor([[-6.0] * 3, [6.0] * 3, [0.0] * 3]).double())
    assert u[0] < 2 and u[1] < 2 and u[2] > 10 * max(u[0], u[1])
    assert density.distance(x).median() == pytest.approx(1.0, abs=1e-6)


def test_error_scale_recovers_a_power_law():
    # fails if the slope or the RMS prefactor of the map are computed wrongly
    u = torch.linspace(0.5, 20.0, 50, dtype=torch.float64)
    scale = fit_error_scale(u, 0.2 * u.sqrt())
    assert float(scale.exponent) == pytest.approx(0.5)
    assert float(scale.prefactor) == pytest.approx(0.2)
    flat = fit_error_scale(u, torch.full_like(u, 0.1))  # no trend: stays increasing
    assert float(flat.exponent) == pytest.approx(0.25)
    assert bool((flat(u).diff() > 0).all())


# ------------------------------------------------------------------ the model
def test_score_is_invariant_under_rotation_translation_permutation(latent):
    # fails if the scored features are not the invariant ones, or are taken in
    # another atom order than the outputs (the Morton reordering of large calls)
    atoms = labelled_frames(1, 0.05, seed=21)[0]
    ref = _outputs(latent, atoms)
    rng = np.random.default_rng(0)
    moved = atoms.copy()
    moved.positions = atoms.positions @ random_orthogonal(rng, True).T + [1.0, -2, 3]
    perm = rng.permutation(len(atoms))
    shuffled = atoms[perm]
    out_m, out_p = _outputs(latent, moved), _outputs(latent, shuffled)
    for key in (keys.LATENT_DISTANCE, keys.FORCES_STD):
        torch.testing.assert_close(out_m[key], ref[key], rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(out_p[key], ref[key][perm], rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(out_p[keys.FORCES_STD_MAX], ref[keys.FORCES_STD_MAX])
    latent.model.spatial_order_min_atoms = 0  # every call in Morton order
    try:
        reordered = _outputs(latent, shuffled)
    finally:
        latent.model.spatial_order_min_atoms = None
    torch.testing.assert_close(reordered[keys.FORCES_STD], out_p[keys.FORCES_STD])


def test_outputs_are_the_models_plus_the_score(latent):
    # fails if wrapping changes the energy path (capturing the features must not)
    atoms = labelled_frames(1, 0.05, seed=22)[0]
    out, plain = _outputs(latent, atoms), _outputs(latent.model, atoms)
    torch.testing.assert_close(out[keys.ENERGY], plain[keys.ENERGY])
    torch.testing.assert_close(out[keys.FORCES], plain[keys.FORCES])
    assert keys.ENERGY_STD not in out  # nothing calibrated to say about energies
    assert out[keys.FORCES_STD].shape == (len(atoms),)


def _graph_of(frames) -> AtomicGraph:
    return AtomicGraph.collate(
        [
            AtomicGraph.from_arrays(a.positions, a.numbers, CUTOFF, dtype=torch.float64)
            for a in frames
        ]
    )


def test_compiled_backend_scores_the_features_it_returns(latent):
    # fails if the compiled function's features are not the readout's input of
    # the same call (another layer, another atom order after the Morton
    # reordering, a batch's structures mixed), or if its fallback path drops them
    frames = [
        *labelled_frames(2, 0.05, seed=31),
        distorted(labelled_frames(1, 0, 32)[0]),
    ]
    graph = _graph_of(frames)
    ref = latent(graph)
    fast = CompiledPotential(latent, compile=False)  # the traced function, eager
    assert fast.scorer is latent and fast.model is latent.model
    for spatial_order, fallback in ((None, False), (0, False), (None, True), (0, True)):
        latent.model.spatial_order_min_atoms = spatial_order
        fast._autograd_fallback = fallback
        try:
            out = fast(graph)
        finally:
            latent.model.spatial_order_min_atoms = None
        assert keys.NODE_FEATURES not in out
        for key in (keys.ENERGY, keys.FORCES, keys.LATENT_DISTANCE, keys.FORCES_STD):
            torch.testing.assert_close(out[key], ref[key], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(out[keys.FORCES_STD_MAX], ref[keys.FORCES_STD_MAX])
    # the distorted structure is the one flagged: the comparison is not vacuous
    worst = ref[keys.FORCES_STD_MAX]
    assert float(worst[2]) > 1.5 * float(worst[:2].max())


def test_compiled_library_follows_a_refitted_scorer(latent):
    # fails if the AOTInductor library's state is the tensor list of its first
    # call: a new error map or mixture (replaced, not edited in place) would be
    # served from the old library, whose constants are the old ones
    fast = CompiledPotential(latent, backend="aoti", features=True)
    fn = fast._aoti_function(False)
    key = fn._state_key()
    assert fn._state_key() == key  # nothing changed: the library is kept
    old_scale, old_nll0 = latent.error_scale, latent.density.nll0
    try:
        latent.error_scale = ErrorScale(2 * float(old_scale.prefactor), 0.5)
        assert fn._state_key() != key
        key = fn._state_key()
        latent.density.nll0 = old_nll0.clone()  # a replaced buffer
        assert fn._state_key() != key
    finally:
        latent.error_scale, latent.density.nll0 = old_scale, old_nll0


def test_torch_compile_traces_the_scorer_without_falling_back(latent):
    # fails if Dynamo cannot trace the scorer (a cache key of storage addresses,
    # a cache written inside the trace) and the call silently runs eager: the
    # GPU backend and the CPU fallback compile with torch.compile
    graph = _graph_of(
        [*labelled_frames(2, 0.05, seed=36), distorted(labelled_frames(1, 0, 37)[0])]
    )
    from torch._dynamo.utils import counters

    ref = latent(graph)
    fast = CompiledPotential(latent, backend="inductor")
    breaks = sum(counters["graph_break"].values())
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # the eager fallback warns
        out = fast(graph)
        again = fast(graph)
    # one graph, no break (a break splits the call into 7 graphs run one by one)
    assert sum(counters["graph_break"].values()) == breaks
    assert fast.backend == "inductor" and fast.n_compiles == 1
    for key in (keys.ENERGY, keys.FORCES, keys.FORCES_STD):
        torch.testing.assert_close(out[key], ref[key], rtol=1e-9, atol=1e-10)
        torch.testing.assert_close(again[key], ref[key], rtol=1e-9, atol=1e-10)
    # the eager cache is not left holding values from inside the trace
    assert latent(graph)[keys.FORCES_STD].equal(ref[keys.FORCES_STD])


def test_exported_library_graph_scores_as_eager(latent):
    """The graph the AOTInductor backend compiles (traced from two structures,
    exported with dynamic sizes) returns energies, forces and the per-atom
    distance and predicted error of the eager latent model for one and three
    structures, so ``Potential(latent)`` runs compiled in MD instead of falling
    back to eager (6-13x a compiled call). A plain model compiled with
    ``features=True`` returns the features themselves."""
    one = _graph_of(labelled_frames(1, 0.05, seed=33))
    three = _graph_of(
        [*labelled_frames(2, 0.1, seed=34), distorted(labelled_frames(1, 0, 35)[0])]
    )
    for wrapped in (latent, latent.model):
        fast = CompiledPotential(wrapped, backend="aoti", features=True)
        fn = fast._aoti_function(one.edges_paired)
        example = _arguments(AtomicGraph.collate([one, one]))
        with torch.no_grad(), fn.trace_context():
            gm = aoti.trace(fn.fn, example)
        program = aoti.export(gm, example, fn.dims).module()
        for graph in (one, three):
            with torch.no_grad():
                e_atom, forces, *scores = program(*_arguments(graph))
            ref_features, ref = model_features(latent.model, graph)
            torch.testing.assert_close(forces, ref[keys.FORCES], rtol=1e-10, atol=1e-12)
            if wrapped is latent:
                u, sigma = latent.atom_scores(ref_features)
                assert float(u.max()) > 2 * float(u.min())  # not a constant
                torch.testing.assert_close(scores[0], u, rtol=1e-10, atol=1e-12)
                torch.testing.assert_close(scores[1], sigma, rtol=1e-10, atol=1e-12)
            else:
                assert scores[0].shape == (graph.num_nodes, 16)
                torch.testing.assert_close(
                    scores[0], ref_features, rtol=1e-10, atol=1e-12
                )


def test_training_like_frames_score_lower_than_a_distorted_one(latent):
    # fails if the distance does not grow away from the training features
    near = [labelled_frames(1, 0.05, seed=s)[0] for s in (31, 32, 33)]
    far = distorted(near[0], 0.6)
    s_near = [float(_outputs(latent, a)[keys.FORCES_STD_MAX][0]) for a in near]
    out_far = _outputs(latent, far)
    assert float(out_far[keys.FORCES_STD_MAX][0]) > 3 * max(s_near)
    u_near = _outputs(latent, near[0])[keys.LATENT_DISTANCE]
    assert float(u_near.max()) < 5  # ≈ 1 on training-like atoms
    assert float(out_far[keys.LATENT_DISTANCE].max()) > 10 * float(u_near.max())


def test_file_round_trips_with_weights_only_and_refuses_other_weights(latent, tmp_path):
    # fails if the file holds pickled objects, loses a tensor, or pairs the
    # mixture with weights it was not fitted to
    path = tmp_path / "latent.pt"
    save_latent(latent, path)
    payload = torch.load(path, weights_only=True)
    assert payload["config"]["n_features"] == latent.density.n_features
    again = load_latent(path, latent.model)
    atoms = distorted(labelled_frames(1, 0.05, seed=23)[0], 0.8)
    torch.testing.assert_close(
        _outputs(again, atoms)[keys.FORCES_STD],
        _outputs(latent, atoms)[keys.FORCES_STD],
    )
    with pytest.raises(EnsembleError, match="other model weights"):
        load_latent(path, tiny(1))
    # a version-1 file (no projection: the mixture over every feature axis)
    full = fit_latent(
        latent.model,
        [batch_of(labelled_frames(12, 0.05, seed=3))],
        [batch_of(labelled_frames(8, 0.05, seed=5))],
        n_components=2,
        n_dims=None,
    )[0]
    save_latent(full, tmp_path / "full.pt")
    payload = torch.load(tmp_path / "full.pt", weights_only=True)
    old = {**payload, "version": 1}
    old["config"] = {k: v for k, v in payload["config"].items() if k != "n_dims"}
    old["density"] = {k: v for k, v in payload["density"].items() if k != "projection"}
    torch.save(old, tmp_path / "v1.pt")
    torch.testing.assert_close(
        _outputs(load_latent(tmp_path / "v1.pt", latent.model), atoms)[keys.FORCES_STD],
        _outputs(full, atoms)[keys.FORCES_STD],
    )
    (tmp_path / "foreign.pt").write_bytes(b"not a torch file")
    with pytest.raises(EnsembleError, match="not a readable latent"):
        load_latent(tmp_path / "foreign.pt", latent.model)


def test_calculator_passes_the_score_on(latent):
    atoms = labelled_frames(1, 0.05, seed=24)[0]
    atoms.calc = EquiforceCalculator(latent, compile=False)
    atoms.get_forces()
    assert atoms.calc.results["forces_std"].shape == (len(atoms),)
    assert atoms.calc.results["forces_std_max"] == pytest.approx(
        atoms.calc.results["forces_std"].max()
    )


def test_md_stops_far_from_the_data_with_the_latent_score(latent, tmp_path):
    # fails if the MD monitor needs an energy std or ignores the latent score
    near = labelled_frames(1, 0.05, seed=11)[0]
    far = distorted(near, 0.6)
    s = [float(_outputs(latent, a)[keys.FORCES_STD_MAX][0]) for a in (near, far)]
    limit = math.sqrt(s[0] * s[1])
    config = MDConfig(
        ensemble="nve", temperature=0.0, timestep=0.1, steps=10, output_interval=5,
        compile=False, uncertainty={"max_force_std": limit},
    )  # fmt: skip
    ok = run_md(latent, [near], config, tmp_path / "near", progress=False)
    assert ok.stop_reason is None and ok.steps_done == 10
    rows = thermo_table(tmp_path / "near" / "uncertainty.csv")  # no energy std: NaN
    assert np.isnan(rows["energy_std_eV"]).all()
    assert (rows["max_force_std_eV_A"] > 0).all()
    res = run_md(latent, [far], config, tmp_path / "far", progress=False)
    assert res.steps_done == 0 and "max_force_std" in res.stop_reason


def test_a_model_without_features_is_refused():
    from equiforce.models.registry import build_model

    schnet = build_model("schnet", cutoff=CUTOFF)
    with pytest.raises(EnsembleError, match="node_features"):
        LatentUncertainty(schnet, None, None)
    with pytest.raises(ValueError, match="node_features"):
        CompiledPotential(schnet, compile=False, features=True)


# ------------------------------------------------------------------ command
def test_fit_command_writes_a_file_that_load_ensemble_uses(tmp_path):
    # fails if the command does not find the run's data and split, or if the
    # loaders do not pick latent.pt up for the run (and only for its best.pt)
    raw = make_tiny_config(max_steps=6, valid_interval=3)
    cfg = tmp_path / "c.yaml"
    cfg.write_text(yaml.safe_dump(raw))
    run = tmp_path / "run"
    assert main(["train", str(cfg), "--run-dir", str(run), "--quiet"]) == 0
    fit = ["uncertainty", "fit", str(run), "--components", "2", "--quiet"]
    assert main([*fit, "--dims", "-1"]) == 2
    assert main([*fit, "--dims", "4"]) == 0
    assert json.loads((run / "latent.json").read_text())["n_dims"] == 4
    assert load_ensemble(run).density.projection.shape[1] == 4
    assert main(fit) == 0  # default 32 axes, capped at the tiny model's 16
    assert json.loads((run / "latent.json").read_text())["n_dims"] == 16
    assert (run / "latent.pt").is_file() and (run / "latent.json").is_file()
    assert isinstance(load_ensemble(run), LatentUncertainty)
    assert isinstance(load_ensemble(run / "latent.pt"), LatentUncertainty)
    assert not isinstance(
        load_ensemble(run / "best.pt", latent=False), LatentUncertainty
    )
    assert not isinstance(load_ensemble(run / "last.pt"), LatentUncertainty)
    assert main(["uncertainty", "fit", str(tmp_path)]) == 2  # not a run directory
    # eval's calibration takes it: a force ranking, no energy std to rank
    data = DataSource(path=str(ETHANOL), energy_unit="kcal/mol", index="0:10")
    evaluate(run, data, tmp_path / "eval", progress=False)
    scores = json.loads((tmp_path / "eval" / "uncertainty.json").read_text())
    assert math.isfinite(scores["spearman_max_force"])
    assert scores["spearman_energy"] is None
    # fitted to last.pt, latent.pt names last.pt (it used to load best.pt without
    # any uncertainty, silently)
    assert main([*fit, "--model-file", "last.pt"]) == 0
    named = load_ensemble(run / "latent.pt")
    assert isinstance(named, LatentUncertainty)
    assert weights_digest(named.model) == weights_digest(load_model(run / "last.pt"))
    # a stale latent.pt (the model changed since the fit) does not block loading
    # the run for plain use; named explicitly it is an error
    assert main(fit) == 0
    stale = load_model(run / "last.pt")
    with torch.no_grad():
        next(stale.parameters()).add_(0.01)
    stale.save(run / "best.pt")
    with pytest.warns(UserWarning, match="other model weights"):
        assert not isinstance(load_ensemble(run), LatentUncertainty)
    with pytest.raises(EnsembleError, match="other model weights"):
        load_ensemble(run / "latent.pt")


def test_graph_batches_score_each_structure(latent):
    # per-structure maxima of a batch equal those of single calls
    frames = [
        labelled_frames(1, 0.05, seed=41)[0],
        distorted(labelled_frames(1, 0.05, seed=42)[0], 0.7),
    ]
    graphs = [
        AtomicGraph.from_arrays(a.positions, a.numbers, CUTOFF, dtype=torch.float64)
        for a in frames
    ]
    batch = latent(AtomicGraph.collate(graphs))
    singles = [latent(g)[keys.FORCES_STD_MAX][0] for g in graphs]
    torch.testing.assert_close(batch[keys.FORCES_STD_MAX], torch.stack(singles))
