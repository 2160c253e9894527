"""A committee's members in one vectorised call: stacked weights under ``torch.func.vmap``.

Members trained with ``equiforce train --committee K`` share one architecture and
differ in their weights only. Their parameters and buffers are stacked along a
first axis of size K (``torch.func.stack_module_state``), and a copy of one
member evaluates all K energies in one ``torch.func.vmap`` call, the batched
weights put in its modules' parameter slots (``functional_call`` walked the
module tree at each call: 5 ms of a 20 ms ethanol call). Each kernel runs once
on K-fold tensors instead of K times, which saves what a small structure's eager
call is made of (kernel launches and autograd nodes). On larger structures the
K-fold tensors fall out of the CPU cache and the members one after another are
faster: :class:`~equiforce.uncertainty.committee.Committee` chooses by size.

Forces: the positions enter as K copies, one leaf (K, n_atoms, 3); member k's
energy depends on copy k alone, so one backward pass of Σ_k E_k gives each
member's −F_k in its own slice (likewise K copies of the zero strain for the
stress). The forces-only caches of a member (So3krates' radial filter tables and
node projections, :mod:`equiforce.models.so3krates.fast`) are the member's own,
stacked beside its weights; the tables are evaluated by a plain polynomial (the
members' eager table kernel is an autograd function without a batching rule).

Results equal the one-member-at-a-time path to round-off. What cannot run here
raises :class:`CannotBatchError` (checked once, when stacking), and the
committee then evaluates its members one after another.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from equiforce import keys
from equiforce.accel.weights import weight_state_key
from equiforce.data.graph import AtomicGraph
from equiforce.energy import deformed, stress_from_virial
from equiforce.models.base import PotentialModel
from equiforce.models.so3krates import So3krates
from equiforce.models.so3krates.fast import NodeProjections
from equiforce.nn.scatter import batched_rows, scatter_sum, vmap_row_ops


class CannotBatchError(Exception):
    """The members cannot run as one vectorised call (the reason is the message)."""


@dataclass
class _StackedTable:
    """K members' filter tables of one layer, evaluated without autograd functions.

    ``coef`` (K, n, 4, C) inside the vmapped call is one member's (n, 4, C); the
    same cubic Hermite polynomial as
    :class:`~equiforce.accel.spline.CubicHermiteTable`.
    """

    coef: torch.Tensor
    lo: float
    hi: float
    h: float
    n: int

    def __call__(self, s: torch.Tensor) -> torch.Tensor:
        """(m,) table coordinates -> (m, C) radial filter parts."""
        x = (s.clamp(self.lo, self.hi) - self.lo) * (1.0 / self.h)  # (m,)
        k = x.detach().floor().clamp(0, self.n - 1)
        t = (x - k).to(self.coef.dtype)[:, None]  # (m, 1)
        c0, c1, c2, c3 = batched_rows(self.coef, k.long()).unbind(1)  # (m, C) each
        return torch.addcmul(c1, torch.addcmul(c2, c3, t), t).mul(t).add(c0)


def _signature(model: PotentialModel) -> tuple:
    """What must be equal for members to share one module structure."""
    params = tuple((n, tuple(p.shape), p.dtype) for n, p in model.named_parameters())
    buffers = tuple((n, tuple(b.shape), b.dtype) for n, b in model.named_buffers())
    return type(model), model.config, params, buffers


def check_shared_architecture(models: list[PotentialModel]) -> None:
    """Raise :class:`CannotBatchError` unless every member has the first's structure."""
    first = _signature(models[0])
    for k, m in enumerate(models[1:], start=1):
        if _signature(m) != first:
            raise CannotBatchError(
                f"member {k} ({type(m).__name__}) differs from member 0 "
                f"({type(models[0]).__name__}) in class, config or weight shapes"
            )
    if not isinstance(models[0], So3krates):  # the families checked under vmap
        raise CannotBatchError(
            f"{type(models[0]).__name__} members (batched: So3krates and SO3LR "
            "only; the other families are not checked under vmap)"
        )
    if models[0].global_attention is not None:
        raise CannotBatchError("members with global attention")


class _Terms(nn.Module):
    """One member's summed differentiable energy terms (n_atoms,): the vmapped call."""

    def __init__(self, model: PotentialModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, graph: AtomicGraph) -> torch.Tensor:
        parts = list(self.model.energy_terms(graph, False).values())
        total = parts[0]
        for p in parts[1:]:
            total = total + p.to(total.dtype)
        return total


class StackedMembers:
    """K members of one architecture, evaluated as one vectorised call.

    Args:
        models: the members (the committee keeps them; their weights are
            restacked when one changes).

    Raises:
        CannotBatchError: the members differ in structure, are not So3krates
            or SO3LR, or have global attention (not checked under vmap).
    """

    def __init__(self, models: list[PotentialModel]) -> None:
        check_shared_architecture(models)
        self.models = models
        # a copy of one member: the module structure the stacked weights are
        # called through; its buffers equal in every member stay unbatched
        self.terms = _Terms(copy.deepcopy(models[0]))
        self._key: tuple | None = None
        self._state: dict | None = None
        self._slot_cache: tuple[list[str], list[tuple[dict, str]]] | None = None
        #: every member tensor, listed once (the same objects stay in place
        #: under load_state_dict, optimizers and .to())
        self._tensors = [t for m in models for t in (*m.parameters(), *m.buffers())]

    # ------------------------------------------------------------- stacking
    def _caches(self) -> tuple[list | None, list | None]:
        """Each member's filter tables and node projections (None: not used)."""
        first = self.models[0]
        if not hasattr(first, "node_projections"):
            return None, None
        tables = None
        if first._tables_wanted():
            tables = [m.filter_tables() for m in self.models]
        return tables, [m.node_projections() for m in self.models]

    def state(self) -> dict:
        """Stacked weights, differing buffers, tables, projections and E0.

        Restacked when a member's weight is written in place or moved, or one of
        its caches was rebuilt (keys as the members' own caches).
        """
        tables, projs = self._caches()
        cache_ids = tuple(id(t) for ts in tables or () for t in ts)
        cache_ids += tuple(id(p) for p in projs or ())
        key = (weight_state_key(self._tensors), cache_ids)
        if key == self._key:
            return self._state
        with torch.no_grad():
            params, buffers = torch.func.stack_module_state(self.models)
            params = {f"model.{k}": v.detach() for k, v in params.items()}
            e0 = buffers.pop("e0")  # (K, 119) float64, added outside
            differ = {  # buffers equal in every member stay the copy's own
                f"model.{k}": v for k, v in buffers.items() if not (v == v[:1]).all()
            }
            state = {"weights": {**params, **differ}, "e0": e0}
            if tables is not None:
                state["tables"] = [
                    (torch.stack([ts[t].coef for ts in tables]), tables[0][t])
                    for t in range(len(tables[0]))
                ]
            if projs is not None:
                state["mats"] = [
                    torch.stack([p.projections[t] for p in projs])
                    for t in range(len(projs[0].projections))
                ]
                if projs[0].first_layer is not None:
                    state["first"] = torch.stack([p.first_layer for p in projs])
        self._key, self._state = key, state
        return state

    # ------------------------------------------------------------ evaluation
    def _slots(self, names: list[str]) -> list[tuple[dict, str]]:
        """(``_parameters`` or ``_buffers`` dict, key) of each stacked tensor's place."""
        if self._slot_cache is None or self._slot_cache[0] != names:
            slots = []
            for name in names:
                owner, _, attr = name.rpartition(".")
                module = self.terms.get_submodule(owner)
                table = (
                    module._parameters
                    if attr in module._parameters
                    else module._buffers
                )
                slots.append((table, attr))
            self._slot_cache = (names, slots)
        return self._slot_cache[1]

    def member_outputs(
        self, graph: AtomicGraph, forces: bool, stress: bool
    ) -> dict[str, torch.Tensor]:
        """As :meth:`~equiforce.uncertainty.ensemble.EnsembleModel.member_outputs`.

        Returns:
            ``energy`` (K, n_graphs) and ``atomic_energies`` (K, n_atoms) float64,
            and as requested ``forces`` (K, n_atoms, 3) and ``stress``
            (K, n_graphs, 3, 3).
        """
        state = self.state()
        k = len(self.models)
        need_grad = forces or stress
        # K copies of the positions (and zero strains): member k's energy
        # depends on copy k only, so one backward pass separates the forces
        pos = graph.positions.detach().expand(k, *graph.positions.shape).clone()
        pos.requires_grad_(need_grad)  # (K, n_atoms, 3)
        strain = None
        if stress:  # (K, n_graphs, 3, 3)
            strain = graph.cell.new_zeros((k, *graph.cell.shape)).requires_grad_(True)
        model = self.terms.model
        names = list(state["weights"])
        slots = self._slots(names)
        saved = [table[attr] for table, attr in slots]
        tables = state.get("tables")
        coefs = [c for c, _ in tables] if tables else []
        mats, first = state.get("mats", []), state.get("first")

        def member(weights, coefs, mats, first, pos, strain) -> torch.Tensor:
            for (table, attr), w in zip(slots, weights, strict=True):
                table[attr] = w  # this member's weights in the shared modules
            if tables is not None:
                model._active_tables = [
                    _StackedTable(c, tab.lo, tab.hi, tab.h, tab.n)
                    for c, (_, tab) in zip(coefs, tables, strict=True)
                ]
            if "mats" in state:
                model._active_projections = NodeProjections(list(mats), first)
            return self.terms(deformed(graph, pos, strain))  # (n_atoms,)

        dims = (0, 0, 0, None if first is None else 0, 0, None if strain is None else 0)
        weights = [state["weights"][n] for n in names]
        try:
            with vmap_row_ops(), torch.enable_grad() if need_grad else torch.no_grad():
                e_net = torch.func.vmap(member, in_dims=dims)(
                    weights, coefs, mats, first, pos, strain
                )  # (K, n_atoms)
        finally:
            for (table, attr), w in zip(slots, saved, strict=True):
                table[attr] = w
            model._active_tables = model._active_projections = None
        atomic = e_net.detach().to(torch.float64) + state["e0"][:, graph.atomic_numbers]
        out = {
            keys.ATOMIC_ENERGIES: atomic,  # (K, n_atoms)
            keys.ENERGY: scatter_sum(atomic.T, graph.graph_index, graph.n_graphs).T,
        }
        if not need_grad:
            return out
        inputs = [pos] if strain is None else [pos, strain]
        grads = torch.autograd.grad(e_net.sum(), inputs, allow_unused=True)
        grads = [
            torch.zeros_like(x) if g is None else g
            for g, x in zip(grads, inputs, strict=True)
        ]
        if forces:
            out[keys.FORCES] = -grads[0]  # (K, n_atoms, 3)
        if stress:
            out[keys.STRESS] = torch.stack(
                [stress_from_virial(v, graph.cell) for v in grads[1]]
            )
        return out
