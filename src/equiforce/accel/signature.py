"""What the compiled energy function takes and returns.

The tensor arguments of a traced call (:func:`arguments`), the optional graph
fields a model may read (:data:`GRAPH_INPUT_DIMS`), the per-term output keys, the
feature-reporting variant of ``model.energy_terms`` and the choice of backend:
the parts of :class:`~equiforce.accel.compiled.CompiledPotential` that do not
depend on its state.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING

import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.energy import E0, LOCAL

if TYPE_CHECKING:
    from equiforce.models.base import PotentialModel

#: Compile backends of :class:`CompiledPotential` (``EQUIFORCE_COMPILE_BACKEND``).
BACKENDS = ("aoti", "inductor")

#: Optional graph fields a model may read beyond the eight short-range tensors,
#: with the dimension of each whose size varies between calls (long-range pairs;
#: structures). A model lists the ones it reads in ``model.compiled_inputs``.
GRAPH_INPUT_DIMS: dict[str, int] = {
    "lr_edge_index": 1,
    "lr_edge_shifts": 0,
    "charge": 0,
    "spin": 0,
}


def with_features(model: PotentialModel):
    """``model.energy_terms`` that also report the final features (NODE_FEATURES).

    The features are what ``model.node_features`` returned inside the call (the
    model's own energy path runs unchanged; the method is shadowed on the
    instance for the call only, see :func:`~equiforce.uncertainty.latent.captured_features`).
    """
    from equiforce.uncertainty.latent import captured_features

    def terms(graph: AtomicGraph, differentiable: bool) -> dict[str, torch.Tensor]:
        with captured_features(model) as store:
            parts = model.energy_terms(graph, differentiable)
        return {**parts, keys.NODE_FEATURES: store["features"]}

    return terms


def compiled_inputs(model: PotentialModel) -> tuple[str, ...]:
    """The optional graph fields ``model`` reads (:data:`GRAPH_INPUT_DIMS` names)."""
    names = tuple(getattr(model, "compiled_inputs", ()))
    unknown = set(names) - set(GRAPH_INPUT_DIMS)
    if unknown:
        raise ValueError(f"compiled_inputs: unknown graph fields {sorted(unknown)}")
    return names


def term_keys(model: PotentialModel) -> tuple[str, ...]:
    """``atomic_energies:<term>`` keys of a model with several terms, else none.

    In the order of :meth:`PotentialModel.energy_terms` (the local model, then
    ``model.terms``) and E0 last, as :func:`equiforce.energy.atomic_outputs`
    returns them.
    """
    if not len(model.terms):
        return ()
    return tuple(keys.term_atomic_energies(n) for n in (LOCAL, *model.terms, E0))


def arguments(
    graph: AtomicGraph, extras: tuple[str, ...] = ()
) -> tuple[torch.Tensor, ...]:
    """The tensor arguments of :meth:`CompiledPotential._energy_and_forces`.

    ``extras``: optional fields (:data:`GRAPH_INPUT_DIMS`); a missing charge or
    spin is passed as zeros (what the eager model assumes for None).
    """
    out = [
        graph.positions,
        graph.atomic_numbers,
        graph.graph_index,
        graph.edge_index,
        graph.edge_shifts,
        graph.cell,
        graph.pbc,
        graph.n_atoms,
    ]
    for name in extras:
        value = getattr(graph, name)
        if value is None and name in ("charge", "spin"):
            value = graph.positions.new_zeros(graph.n_graphs)
        elif value is None:
            raise ValueError(
                f"the model reads graph.{name}, which this graph lacks (build it "
                "with the model's lr_cutoff; Potential does so)"
            )
        out.append(value)
    return tuple(out)


def wants_aoti(
    backend: str | None, on_cpu: bool, dynamic: bool, mode: str | None, pad: bool
) -> bool:
    """Whether a new wrapper uses the AOTInductor backend.

    An explicit ``backend="aoti"`` that the setting cannot serve is an error; the
    environment's choice only applies where it can.
    """
    possible = on_cpu and dynamic and mode is None and not pad
    explicit = backend is not None
    if backend is None:
        backend = os.environ.get("EQUIFORCE_COMPILE_BACKEND") or "aoti"
    if backend not in BACKENDS:
        source = "backend" if explicit else "EQUIFORCE_COMPILE_BACKEND"
        raise ValueError(f"{source} must be one of {BACKENDS}, got {backend!r}")
    if explicit and backend == "aoti" and not possible:
        raise ValueError(
            "the aoti backend needs a CPU model, dynamic shapes, no mode and no padding"
        )
    return backend == "aoti" and possible


def dynamo_frame_count() -> int:
    """Graphs Dynamo has compiled in this process so far."""
    from torch._dynamo.utils import counters

    return int(counters["stats"]["unique_graphs"])
