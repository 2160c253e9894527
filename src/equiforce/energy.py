"""The one path from a structure to energy, forces, stress and per-atom energies.

A potential's energy is a sum of named terms. The differentiable terms (the learned
local model's atomic energies, and later physical long-range terms and global
blocks) come from one callable, ``terms(graph, differentiable) -> {name: (n_atoms,)}``
(:meth:`equiforce.models.base.PotentialModel.energy_terms`); the per-element
reference energies E0 are a constant term added here. Forces F = −∂E/∂r and the
virial ∂E/∂ε (for the stress σ = (1/V) ∂E/∂ε, with a symmetric strain ε acting on
positions and cell, as in nequip's ``ForceStressOutput`` and MACE's
``get_symmetric_displacement``) come from one derivative of the summed energy.

Every backend calls this module:

- eager inference and training on the autograd engine (``method="autograd"``,
  :meth:`PotentialModel.forward`);
- the compiled inference backends, torch.compile and AOTInductor
  (``method="func"`` inside the traced function, :mod:`equiforce.accel.compiled`);
- the compiled training step, which differentiates the loss once more with respect
  to the weights (``method="func"``, :mod:`equiforce.train.compiled_step`).

The work is split in two so that a compiled function can stop after
:func:`atomic_outputs` (per-atom energies, forces and virial) and leave the
per-structure sums to :func:`finish` outside the graph (Inductor's float64 scatter
into one row failed to generate code at 2 threads).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Literal

import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.nn.scatter import scatter_sum

#: ``terms(graph, differentiable)``: per-atom energies (n_atoms,) of every
#: differentiable term, by name. ``graph`` carries the (possibly strained)
#: positions and cell to differentiate; ``differentiable`` says whether the
#: outputs must keep an autograd graph (training on forces), so a term may use
#: once-differentiable code when it is False.
TermsFn = Callable[[AtomicGraph, bool], dict[str, torch.Tensor]]

#: Name of the learned local model's term and of the reference-energy term.
LOCAL: str = "local"
E0: str = "e0"

#: Key of the virial ∂E/∂ε (n_graphs, 3, 3) eV between the two halves.
VIRIAL: str = "virial"

Method = Literal["autograd", "func"]

#: present in :func:`atomic_outputs` exactly when there are per-term outputs
_LOCAL_KEY = keys.term_atomic_energies(LOCAL)


def deformed(
    graph: AtomicGraph, positions: torch.Tensor, strain: torch.Tensor | None
) -> AtomicGraph:
    """``graph`` with ``positions`` under the symmetric part of ``strain`` (None: none).

    Args:
        graph: the structures (topology, cell, species).
        positions: (n_atoms, 3) positions to differentiate, Å.
        strain: (n_graphs, 3, 3) zero strain to differentiate, or None.
    """
    if strain is None:
        return replace(graph, positions=positions)
    sym = 0.5 * (strain + strain.transpose(1, 2))  # (n_graphs, 3, 3)
    positions = positions + torch.einsum(
        "ni,nij->nj", positions, sym[graph.graph_index]
    )
    return replace(
        graph, positions=positions, cell=graph.cell + torch.bmm(graph.cell, sym)
    )


def atomic_outputs(
    terms: TermsFn,
    e0: torch.Tensor,
    graph: AtomicGraph,
    *,
    forces: bool = True,
    stress: bool = False,
    differentiable: bool = False,
    method: Method = "autograd",
) -> dict[str, torch.Tensor]:
    """Per-atom energies, forces and virial of every structure in ``graph``.

    Args:
        terms: the differentiable energy terms (see :data:`TermsFn`).
        e0: (119,) float64 reference energies by atomic number, eV.
        graph: batch of structures.
        forces: return ``forces`` (n_atoms, 3) eV/Å.
        stress: return ``"virial"`` (n_graphs, 3, 3) ∂E/∂ε in eV.
        differentiable: keep the autograd graph of the outputs (needed to train on
            forces); with ``method="func"`` the caller's transforms see through
            anyway, so it only reaches ``terms``.
        method: ``"autograd"`` (eager, the autograd engine) or ``"func"``
            (``torch.func.grad_and_value``, traceable by torch.compile/AOTInductor
            and nestable in a weight gradient).

    Returns:
        ``atomic_energies`` (n_atoms,) float64 with E0; when there is more than
        one differentiable term, ``atomic_energies:<name>`` (n_atoms,) for each
        of them and for E0; the requested derivatives; and ``node_features``
        (n_atoms, F), detached, when ``terms`` reports them under that key
        (it is not an energy term and is not summed).
    """
    need_grad = forces or stress
    strain0 = torch.zeros_like(graph.cell) if stress else None  # (n_graphs, 3, 3)
    if method == "func" and need_grad:

        def total(pos: torch.Tensor, strain: torch.Tensor | None):
            parts = terms(deformed(graph, pos, strain), differentiable)
            # (aux may hold tensors only: the features travel in a dict)
            aux = {k: parts.pop(k) for k in [keys.NODE_FEATURES] if k in parts}
            e_net = _sum_terms(parts)  # (n_atoms,)
            return e_net.sum(), (e_net, parts, aux)

        argnums = (0, 1) if stress else 0
        grads, (_, (e_net, parts, aux)) = torch.func.grad_and_value(
            total, argnums=argnums, has_aux=True
        )(graph.positions, strain0)
        features = aux.get(keys.NODE_FEATURES)
        grad_pos, virial = grads if stress else (grads, None)
    elif method in ("func", "autograd"):
        pos = graph.positions.detach().requires_grad_(need_grad)
        strain = strain0.requires_grad_(True) if stress else None
        with torch.enable_grad() if need_grad else torch.no_grad():
            parts = terms(deformed(graph, pos, strain), differentiable)
            features = parts.pop(keys.NODE_FEATURES, None)
            e_net = _sum_terms(parts)
        grad_pos = virial = None
        if need_grad:
            inputs = [pos] if strain is None else [pos, strain]
            grads = torch.autograd.grad(
                [e_net.sum()], inputs, create_graph=differentiable, allow_unused=True
            )
            grad_pos = grads[0] if grads[0] is not None else torch.zeros_like(pos)
            if stress:
                virial = grads[1] if grads[1] is not None else torch.zeros_like(strain)
    else:
        raise ValueError(f"method must be 'autograd' or 'func', got {method!r}")
    out = {keys.ATOMIC_ENERGIES: e_net.to(torch.float64) + e0[graph.atomic_numbers]}
    if len(parts) > 1:  # each term's share (one term: the total says it all)
        for name, e in parts.items():
            out[keys.term_atomic_energies(name)] = e
        out[keys.term_atomic_energies(E0)] = e0[graph.atomic_numbers]
    if forces:
        out[keys.FORCES] = -grad_pos
    if stress:
        out[VIRIAL] = virial
    if features is not None:
        out[keys.NODE_FEATURES] = features.detach()
    if method == "autograd" and not differentiable:
        out = {k: v.detach() for k, v in out.items()}
    return out


def _sum_terms(parts: dict[str, torch.Tensor]) -> torch.Tensor:
    """Sum of the per-atom term energies (one term: itself, no extra op)."""
    values = list(parts.values())
    total = values[0]
    for v in values[1:]:
        total = total + v.to(total.dtype)
    return total


def finish(
    graph: AtomicGraph, atomic: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Per-structure energies and stress from :func:`atomic_outputs`.

    Args:
        graph: the batch the outputs belong to (structure index, cells).
        atomic: :func:`atomic_outputs` of ``graph``.

    Returns:
        ``energy`` (n_graphs,) float64, ``atomic_energies``, ``forces`` and
        ``stress`` (n_graphs, 3, 3) eV/Å³ (zero for open structures) as requested,
        and per term ``energy:<name>`` (n_graphs,) beside ``atomic_energies:<name>``
        when the model has more than one term.
    """
    out = dict(atomic)
    n_graphs = graph.n_graphs
    out[keys.ENERGY] = scatter_sum(
        atomic[keys.ATOMIC_ENERGIES], graph.graph_index, n_graphs
    )
    if _LOCAL_KEY in atomic:  # per-term outputs (more than one term)
        names = {key: keys.term_name(key) for key in atomic}
        terms = [key for key, name in names.items() if name is not None]
        per_atom = torch.stack([atomic[k].to(torch.float64) for k in terms], dim=1)
        sums = scatter_sum(per_atom, graph.graph_index, n_graphs)  # (n_graphs, T)
        for k, key in enumerate(terms):  # one scatter for all terms
            out[keys.term_energy(names[key])] = sums[:, k]
    virial = out.pop(VIRIAL, None)
    if virial is not None:
        out[keys.STRESS] = stress_from_virial(virial, graph.cell)
    return out


def stress_from_virial(virial: torch.Tensor, cell: torch.Tensor) -> torch.Tensor:
    """σ = (1/V) ∂E/∂ε (n_graphs, 3, 3) eV/Å³; zero where the cell has no volume."""
    volume = torch.linalg.det(cell).abs()  # (n_graphs,)
    safe_v = torch.where(volume > 0, volume, torch.ones_like(volume))
    stress = virial / safe_v[:, None, None]
    periodic = (volume > 0)[:, None, None]
    return torch.where(periodic, stress, torch.zeros_like(stress))


def evaluate(
    terms: TermsFn,
    e0: torch.Tensor,
    graph: AtomicGraph,
    *,
    forces: bool = True,
    stress: bool = False,
    differentiable: bool = False,
    method: Method = "autograd",
) -> dict[str, torch.Tensor]:
    """Energy (float64), per-atom energies and the requested derivatives.

    :func:`atomic_outputs` followed by :func:`finish`; see those for the
    arguments and outputs.
    """
    atomic = atomic_outputs(
        terms,
        e0,
        graph,
        forces=forces,
        stress=stress,
        differentiable=differentiable,
        method=method,
    )
    return finish(graph, atomic)
