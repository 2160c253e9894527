"""The base of every ensemble potential: K members' outputs, their mean and spread.

An :class:`EnsembleModel` is a :class:`~equiforce.models.base.PotentialModel`
whose :meth:`~EnsembleModel.member_outputs` give each member's energies and
forces; its ``forward`` returns their mean (what MD integrates and what errors
are measured on) and their spread, so every front end that takes a model
(:class:`~equiforce.potential.Potential`, the ASE calculator, the MD engine,
``equiforce eval``) takes an ensemble unchanged. The spread of K values x_k is
the population standard deviation

    std(x) = sqrt((1/K) Σ_k |x_k − x̄|²),

for forces over the 3-vector of each atom (one number per atom, eV/Å), and its
maximum over the atoms of each structure. Two ensembles exist: a committee of
independently trained models (:class:`~equiforce.uncertainty.committee.Committee`)
and the readout heads of one model
(:class:`~equiforce.uncertainty.heads.HeadEnsemble`).
"""

from __future__ import annotations

import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.errors import EquiforceError
from equiforce.models.base import PotentialModel

#: outputs stacked over members (per-term outputs are left out)
STACKED = (keys.ENERGY, keys.ATOMIC_ENERGIES, keys.FORCES, keys.STRESS)


def stack_members(outs: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The :data:`STACKED` outputs of K member calls, each stacked (K, ...)."""
    return {
        key: torch.stack([o[key] for o in outs]) for key in STACKED if key in outs[0]
    }


class EnsembleError(EquiforceError):
    """An ensemble cannot be built from what was given."""


class WrapsModel:
    """What a wrapper around one model (``self.model``) delegates to it.

    Mixed in before a :class:`PotentialModel` subclass (the readout heads'
    ensemble, the latent uncertainty): the wrapper takes the model's cutoffs,
    graph inputs, elements, input checks and caches.
    """

    model: PotentialModel

    def _wrap(self, model: PotentialModel) -> None:
        """Initialise the module around ``model`` (instead of ``__init__``)."""
        PotentialModel.__init__(self, cutoff=model.cutoff, e0=model.e0.detach().cpu())
        self.model = model
        self.lr_cutoff = getattr(model, "lr_cutoff", None)
        self.graph_inputs = tuple(getattr(model, "graph_inputs", ()))

    def known_elements(self) -> frozenset[int] | None:
        """The wrapped model's elements."""
        return self.model.known_elements()

    def check_graph(self, graph: AtomicGraph) -> None:
        """The wrapped model's check."""
        self.model.check_graph(graph)

    def clear_inference_caches(self) -> None:
        """The wrapped model's caches, and this model's generation."""
        self.model.clear_inference_caches()
        super().clear_inference_caches()


class EnsembleModel(PotentialModel):
    """A potential that is the mean of K members and reports their spread.

    Subclasses implement :meth:`member_outputs`. Compiled backends evaluate a
    model's summed energy only, so an ensemble is not compiled as one model
    (``compilable = False``); one whose members can be compiled one by one offers
    ``compiled_backend()`` (the committee), which
    :class:`~equiforce.potential.Potential` uses instead.
    """

    compilable = False
    model_name = "ensemble"

    @property
    def n_members(self) -> int:
        """Number of members K."""
        raise NotImplementedError

    def member_outputs(
        self, graph: AtomicGraph, forces: bool, stress: bool
    ) -> dict[str, torch.Tensor]:
        """Every member's outputs, stacked along a first axis of size K.

        Returns:
            ``energy`` (K, n_graphs) float64 eV, ``atomic_energies`` (K, n_atoms)
            float64, and as requested ``forces`` (K, n_atoms, 3) eV/Å and
            ``stress`` (K, n_graphs, 3, 3) eV/Å³.
        """
        raise NotImplementedError

    def forward(
        self,
        graph: AtomicGraph,
        compute_forces: bool = True,
        compute_stress: bool = False,
        create_graph: bool | None = None,
    ) -> dict[str, torch.Tensor]:
        """Mean outputs of the members plus ``energy_std``, ``forces_std``, ...

        ``create_graph`` must be False: an ensemble is for inference (train
        its members, or the multi-head model itself).
        """
        if create_graph:
            raise EnsembleError("an ensemble is for inference: train its members")
        members = self.member_outputs(graph, compute_forces, compute_stress)
        return summarize(members, graph)

    def save(self, path, statistics=None, train_config=None) -> None:  # noqa: D102
        raise EnsembleError(
            "an ensemble is not saved as one file: save its members (a committee "
            "is the list of its model files, a multi-head model is one model file)"
        )


def summarize(
    members: dict[str, torch.Tensor], graph: AtomicGraph
) -> dict[str, torch.Tensor]:
    """Mean and spread of stacked member outputs (see :meth:`member_outputs`).

    Returns:
        the mean of every stacked output under its own key; ``energy_std``
        (n_graphs,) eV; with forces ``forces_std`` (n_atoms,) eV/Å and
        ``forces_std_max`` (n_graphs,) eV/Å; and the members themselves as
        ``energy_members`` (K, n_graphs) and ``forces_members`` (K, n_atoms, 3).
    """
    out = {key: value.mean(0) for key, value in members.items()}
    energy = members[keys.ENERGY]  # (K, n_graphs)
    out[keys.ENERGY_STD] = (energy - out[keys.ENERGY]).square().mean(0).sqrt()
    out[keys.ENERGY_MEMBERS] = energy
    if keys.FORCES in members:
        forces = members[keys.FORCES]  # (K, n_atoms, 3)
        dev2 = (forces - out[keys.FORCES]).square().sum(-1)  # (K, n_atoms)
        per_atom = dev2.mean(0).sqrt()  # (n_atoms,)
        out[keys.FORCES_STD] = per_atom
        out[keys.FORCES_STD_MAX] = per_atom.new_zeros(graph.n_graphs).scatter_reduce(
            0, graph.graph_index, per_atom, "amax", include_self=True
        )
        out[keys.FORCES_MEMBERS] = forces
    return out
