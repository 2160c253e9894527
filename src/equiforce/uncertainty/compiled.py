"""A committee on its members' compiled backends (MD, the calculator, evaluation).

An eager committee call costs K eager member calls (one vectorised call on small
graphs, :mod:`equiforce.uncertainty.batched`); a compiled So3krates call is 9-13x
cheaper than an eager one (docs/uncertainty.md, "Limits"). Once
:class:`~equiforce.potential.Potential` switches to its compiled backend, a
:class:`~equiforce.uncertainty.committee.Committee` gives
:class:`CompiledCommittee`: every member through its own compiled energy+forces
(:meth:`CompiledPotential.for_device <equiforce.accel.compiled.CompiledPotential.for_device>`:
on a CPU one AOTInductor library per member, built once and kept on disk), and
the mean and spread taken outside with the eager committee's
:func:`~equiforce.uncertainty.ensemble.summarize`, so both return the same keys and
numbers to round-off. A member its model marks not compilable runs eagerly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import torch

from equiforce.accel.compiled import CompiledPotential
from equiforce.data.graph import AtomicGraph
from equiforce.uncertainty.ensemble import stack_members, summarize

if TYPE_CHECKING:
    from equiforce.models.base import PotentialModel
    from equiforce.uncertainty.committee import Committee

#: ``(graph, stress) -> outputs`` of one member
MemberCall = Callable[..., dict[str, torch.Tensor]]


def _eager(model: PotentialModel) -> MemberCall:
    def call(graph: AtomicGraph, stress: bool = False) -> dict[str, torch.Tensor]:
        return model(graph, compute_forces=True, compute_stress=stress)

    return call


class CompiledCommittee:
    """Callable ``graph -> mean outputs and spread`` of a committee, members compiled.

    Args:
        committee: the committee (its members are compiled, not copied).
        backend: what compiles one member (None:
            :meth:`CompiledPotential.for_device`); tests pass the eager functional
            path (``CompiledPotential(m, compile=False)``).

    Attributes:
        members: one callable per member (a :class:`CompiledPotential`, or the
            member's own eager call where it is not compilable).
    """

    def __init__(
        self,
        committee: Committee,
        backend: Callable[[PotentialModel], MemberCall] | None = None,
    ) -> None:
        self._backend = backend or CompiledPotential.for_device
        self.committee = committee
        self.members: list[MemberCall] = []
        self._built_for: tuple[int, ...] = ()
        self._build()

    def _build(self) -> None:
        """One callable per member of the committee as it is now."""
        self.members = [
            self._backend(m) if getattr(m, "compilable", True) else _eager(m)
            for m in self.committee.members
        ]
        self._built_for = tuple(map(id, self.committee.members))

    @property
    def compiled(self) -> bool:
        """Whether any member runs compiled."""
        return any(getattr(m, "compiled", False) for m in self.members)

    @property
    def backend(self) -> str:
        """The members' backends, e.g. ``aoti`` or ``aoti,eager`` (distinct, in order)."""
        names = [getattr(m, "backend", "eager") for m in self.members]
        return ",".join(dict.fromkeys(names))

    @property
    def compile_seconds(self) -> float | None:
        """Sum of the members' first-call times (None before every member's first)."""
        times = [getattr(m, "compile_seconds", 0.0) for m in self.members]
        return None if any(t is None for t in times) else float(sum(times))

    def __call__(
        self, graph: AtomicGraph, stress: bool = False
    ) -> dict[str, torch.Tensor]:
        """The committee's outputs (:meth:`EnsembleModel.forward` keys) for ``graph``.

        Args:
            graph: the structures.
            stress: also return ``stress`` (the members' mean) eV/Å³.
        """
        if tuple(map(id, self.committee.members)) != self._built_for:
            self._build()  # members replaced or added since (weights are followed)
        outs = [member(graph, stress=stress) for member in self.members]
        return summarize(stack_members(outs), graph)
