"""The uncertainty of one model from its own features (a latent-space distance).

An ensemble's spread costs K models (a committee) or K backward passes (the
forces of readout heads). :class:`LatentUncertainty` costs one model and a small
product: it keeps the final invariant features f_i (n_atoms, F) that the model
computes anyway (the input of its readout), scores each atom by its distance u_i
from the training atoms' features under a Gaussian mixture
(:class:`~equiforce.uncertainty.density.FeatureDensity`), and maps u_i to a
predicted force error σ_i in eV/Å
(:class:`~equiforce.uncertainty.density.ErrorScale`, calibrated on validation
atoms). Its outputs use the ensembles' keys, so the calculator, ``Potential``,
``equiforce eval`` and the MD threshold take it unchanged:

- ``forces_std`` (n_atoms,) eV/Å: σ_i, the predicted RMS force error of atom i
  (for an ensemble: the members' spread); ``forces_std_max`` (n_graphs,) its
  largest value per structure;
- ``latent_distance`` (n_atoms,): u_i itself (≈ 1 on training atoms);
- no ``energy_std`` (a distance of atoms says nothing calibrated about a sum).

Fitted after training by ``equiforce uncertainty fit RUN_DIR``
(:func:`fit_latent`), stored as ``latent.pt`` beside the model file: a dict of
config and tensors, read with ``torch.load(weights_only=True)``; it records a
digest of the model's weights and is refused for any other model.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import torch

from equiforce import keys
from equiforce.atomic import atomic_torch_save
from equiforce.data.graph import AtomicGraph
from equiforce.models.base import PotentialModel
from equiforce.uncertainty.density import (
    ErrorScale,
    FeatureDensity,
    fit_error_scale,
    fit_mixture,
)
from equiforce.uncertainty.ensemble import EnsembleError, WrapsModel

#: the file ``equiforce uncertainty fit`` writes beside the model file
LATENT_FILE = "latent.pt"
#: training atoms the mixture is fitted on at most (a random subsample beyond)
MAX_FIT_ATOMS = 200_000
#: principal feature axes the mixture is fitted on by default (capped at the
#: width): the same ranking as all 128 of So3krates ``default`` on the xTB
#: extrapolation frames at a third of the in-call cost (docs/uncertainty.md)
DEFAULT_DIMS = 32
FORMAT = "equiforce-latent-uncertainty"
VERSION = 2  # 2: n_dims and the projection


class LatentUncertainty(WrapsModel, PotentialModel):
    """One model plus a density of its training features: outputs + ``forces_std``.

    Args:
        model: a model with ``node_features`` (So3krates, SO3LR).
        density: the mixture fitted to its training features.
        error_scale: the map from distance to eV/Å.

    Raises:
        EnsembleError: the model exposes no per-atom features.
    """

    #: compiled backends compile ``model`` with :meth:`atom_scores` of its
    #: features inside (``CompiledPotential``)
    scores_features = True
    model_name = "latent"

    def __init__(
        self, model: PotentialModel, density: FeatureDensity, error_scale: ErrorScale
    ) -> None:
        _require_features(model)
        self._wrap(model)
        self.density = density
        self.error_scale = error_scale

    def forward(
        self,
        graph: AtomicGraph,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """The model's outputs plus ``forces_std``, ``forces_std_max``, ``latent_distance``."""
        if create_graph:
            raise EnsembleError(
                "a latent uncertainty is for inference: train the model"
            )
        features, out = model_features(
            self.model, graph, compute_forces, compute_stress
        )
        return out | self.score(features, graph)

    @torch.no_grad()
    def score(
        self, features: torch.Tensor, graph: AtomicGraph
    ) -> dict[str, torch.Tensor]:
        """``latent_distance``, ``forces_std`` and ``forces_std_max`` of features.

        Args:
            features: (n_atoms, F) the model's final features of ``graph``.
            graph: the structures (their atoms' structure index).
        """
        return self.scored_outputs(*self.atom_scores(features), graph)

    def atom_scores(self, features: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Distance u and predicted force error σ (eV/Å) per atom, (n_atoms,) each.

        Traceable: the compiled backends run it inside their function.
        """
        u = self.density.distance(features)
        return u, self.error_scale(u)

    def prepare_scoring(self, dtype: torch.dtype, device: torch.device) -> None:
        """Cache the mixture's maps for features of ``dtype`` (before tracing)."""
        self.density.prepare(dtype, device)
        self.error_scale.prepare()

    @staticmethod
    def scored_outputs(
        u: torch.Tensor, sigma: torch.Tensor, graph: AtomicGraph
    ) -> dict[str, torch.Tensor]:
        """The output keys of :meth:`atom_scores`' u and σ, with σ's maximum per structure."""
        sigma = sigma.double()
        worst = sigma.new_zeros(graph.n_graphs).scatter_reduce(
            0, graph.graph_index, sigma, "amax", include_self=True
        )
        return {
            keys.LATENT_DISTANCE: u.to(torch.float64),
            keys.FORCES_STD: sigma,
            keys.FORCES_STD_MAX: worst,
        }

    def save(self, path, statistics=None, train_config=None) -> None:  # noqa: D102
        raise EnsembleError(
            "a latent uncertainty is saved as its own file (save_latent), beside "
            "the model file"
        )


def _require_features(model: PotentialModel) -> None:
    if not callable(getattr(model, "node_features", None)):
        raise EnsembleError(
            f"{type(model).__name__} exposes no per-atom features (node_features): "
            "the latent uncertainty needs So3krates or SO3LR"
        )


@contextlib.contextmanager
def captured_features(model: PotentialModel) -> Iterator[dict]:
    """Keep the output of ``model.node_features`` of the calls inside, detached.

    The model's own energy path runs unchanged; its ``node_features`` method is
    shadowed on this instance for the duration only.
    """
    store: dict[str, torch.Tensor] = {}
    original = model.node_features

    def node_features(*args, **kwargs):
        features = original(*args, **kwargs)
        store["features"] = features.detach()
        return features

    model.__dict__["node_features"] = node_features
    try:
        yield store
    finally:
        model.__dict__.pop("node_features", None)


def model_features(
    model: PotentialModel,
    graph: AtomicGraph,
    forces: bool = True,
    stress: bool = False,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """One eager call of ``model``: final features (n_atoms, F) and its outputs.

    The features are in the atom order of ``graph`` (a model that runs large
    structures in Morton order is put back in order here).
    """
    _require_features(model)
    with captured_features(model) as store:
        out = model(
            graph, compute_forces=forces, compute_stress=stress, create_graph=False
        )
    features = store["features"]
    order = model.atom_order(graph)  # the permutation forward ran in, if any
    if order is not None:
        features = features.index_select(0, order[1])
    return features, out


# ------------------------------------------------------------------ fitting
def fit_latent(
    model: PotentialModel,
    train_batches: Iterable[AtomicGraph],
    valid_batches: Iterable[AtomicGraph],
    n_components: int = 8,
    seed: int = 0,
    max_atoms: int = MAX_FIT_ATOMS,
    n_dims: int | None = DEFAULT_DIMS,
) -> tuple[LatentUncertainty, dict]:
    """Fit the mixture on training features and the error map on validation atoms.

    Args:
        model: the trained model (eval mode).
        train_batches: batches of the training structures (labels not needed).
        valid_batches: batches with force labels (``targets['forces']``).
        n_components: Gaussian components C.
        seed: initialisation of the mixture and of the subsample.
        max_atoms: training atoms the mixture is fitted on at most (a seeded
            random subsample beyond it): the EM steps hold (atoms, C, F)
            float64 arrays, 8 GB at 10⁶ atoms, C = 8, F = 128.
        n_dims: fit the mixture on this many leading principal components of
            the features, at most their width (None: all of them; fewer make
            each call cheaper).

    Returns:
        the wrapped model and a summary (atoms used, exponent, prefactor,
        distances on both sets).
    """
    model = model.eval()
    train = torch.cat([_features(model, b) for b in train_batches])
    n_all = int(train.shape[0])
    if n_all > max_atoms:
        pick = torch.randperm(n_all, generator=torch.Generator().manual_seed(seed))
        train = train[pick[:max_atoms]]
    if n_dims is not None:
        n_dims = min(int(n_dims), int(train.shape[1]))
    density = fit_mixture(train, n_components, seed=seed, n_dims=n_dims)
    u_valid, err_valid = [], []
    for batch in valid_batches:
        if keys.FORCES not in batch.targets:
            raise EnsembleError("the validation structures need force labels")
        with torch.enable_grad():
            feats, out = model_features(model, batch)
        u_valid.append(density.distance(feats.to(torch.float64)))
        diff = out[keys.FORCES].detach() - batch.targets[keys.FORCES]
        err_valid.append(diff.norm(dim=-1).to(torch.float64))
    u, err = torch.cat(u_valid), torch.cat(err_valid)
    scale = fit_error_scale(u, err)
    u_train = density.distance(train.to(torch.float64))
    summary = {
        "n_train_atoms": int(train.shape[0]),
        "n_train_atoms_available": n_all,
        "n_valid_atoms": int(u.numel()),
        "n_components": density.n_components,
        "n_features": density.n_features,
        "n_dims": density.n_dims,
        "exponent": float(scale.exponent),
        "prefactor_eV_A": float(scale.prefactor),
        "distance_train_median": float(u_train.median()),
        "distance_valid_median": float(u.median()),
        "valid_force_rmse_eV_A": float(err[torch.isfinite(err)].square().mean().sqrt()),
    }
    return LatentUncertainty(model, density, scale), summary


def _features(model: PotentialModel, batch: AtomicGraph) -> torch.Tensor:
    with torch.no_grad():
        features, _ = model_features(model, batch, forces=False)
    return features.to(torch.float64)


# ------------------------------------------------------------------ files
def weights_digest(model: PotentialModel) -> str:
    """SHA-256 of the model's parameters and buffers (as float32), by name."""
    h = hashlib.sha256()
    for name, t in sorted(model.state_dict().items()):
        t = t.detach().cpu()
        if t.is_floating_point():
            t = t.to(torch.float32)
        h.update(name.encode())
        h.update(t.contiguous().numpy().tobytes())
    return h.hexdigest()


def save_latent(
    latent: LatentUncertainty, path: str | Path, model_file: str = "best.pt"
) -> None:
    """Write the mixture and error map (config + tensors, no pickled objects)."""
    d = latent.density
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "config": {
            "n_components": d.n_components,
            "n_features": d.n_features,
            "n_dims": d.n_dims,
            "model_file": model_file,
            "model_digest": weights_digest(latent.model),
        },
        "density": {k: v.detach().cpu() for k, v in d.state_dict().items()},
        "error_scale": {
            k: v.detach().cpu() for k, v in latent.error_scale.state_dict().items()
        },
    }
    atomic_torch_save(payload, path)


def read_latent(path: str | Path) -> dict:
    """The payload of a latent file, checked.

    Raises:
        EnsembleError: missing, unreadable or foreign file.
    """
    path = Path(path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise EnsembleError(f"{path}: latent uncertainty file does not exist") from None
    except Exception as err:  # noqa: BLE001 - torch raises many kinds here
        raise EnsembleError(
            f"{path}: not a readable latent uncertainty file ({type(err).__name__}); "
            "run `equiforce uncertainty fit` again or remove it"
        ) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise EnsembleError(
            f"{path}: not an equiforce latent uncertainty file (written by "
            "`equiforce uncertainty fit RUN_DIR`)"
        )
    if payload.get("version", 0) > VERSION:
        raise EnsembleError(
            f"{path}: latent file version {payload['version']} is newer than this "
            f"equiforce reads ({VERSION})"
        )
    return payload


def load_latent(path: str | Path, model: PotentialModel) -> LatentUncertainty:
    """``model`` with the latent uncertainty of file ``path``.

    Raises:
        EnsembleError: the file was fitted to other weights (the model was
            retrained or resumed since: fit again).
    """
    payload = read_latent(path)
    cfg = payload["config"]
    if cfg["model_digest"] != weights_digest(model):
        raise EnsembleError(
            f"{path}: fitted to other model weights than those loaded (the model "
            "changed since); run `equiforce uncertainty fit` again"
        )
    density = FeatureDensity(cfg["n_components"], cfg["n_features"], cfg.get("n_dims"))
    state = dict(payload["density"])  # version 1 files: no projection (all axes)
    state.setdefault("projection", torch.eye(cfg["n_features"], dtype=torch.float64))
    density.load_state_dict(state)
    scale = ErrorScale()
    scale.load_state_dict(payload["error_scale"])
    device = model.e0.device
    return LatentUncertainty(model, density.to(device), scale.to(device))
