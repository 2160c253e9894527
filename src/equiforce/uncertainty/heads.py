"""The readout heads of one model as an ensemble (a shallow ensemble).

A model with ``readout_heads: K`` (:mod:`equiforce.models.heads`) returns the
mean of its heads through the ordinary energy path, at the cost of one model.
:class:`HeadEnsemble` wraps it to return each head as a member as well, and so
their spread:

- the energies of all heads come from one forward pass (the representation is
  shared; the heads are one batched product);
- the force of each head, F_k = −∂E_k/∂r, is a vector-Jacobian product of the
  shared representation with each head's own cotangent; the K products run as
  one batched backward pass (``torch.autograd.grad(..., is_grads_batched=True)``,
  a vmap over the backward), or, with ``forces_std=False``, only the mean's.
"""

from __future__ import annotations

import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.energy import deformed, stress_from_virial
from equiforce.models.base import PotentialModel
from equiforce.nn.scatter import scatter_sum
from equiforce.uncertainty.ensemble import EnsembleError, EnsembleModel, WrapsModel


class HeadEnsemble(WrapsModel, EnsembleModel):
    """A multi-head model's heads as the members of an ensemble.

    Args:
        model: a model with ``n_heads ≥ 2`` and ``head_atomic_energies``
            (So3krates with ``readout_heads``).
        forces_std: compute every head's forces (one batched backward pass for
            the K heads). False: one backward pass for the mean forces, the same
            cost as the plain model; the outputs then hold ``energy_std`` but no
            ``forces_std``.

    Raises:
        EnsembleError: the model has fewer than two readout heads.
    """

    model_name = "heads"

    def __init__(self, model: PotentialModel, forces_std: bool = True) -> None:
        n = getattr(model, "n_heads", 1)
        if n < 2 or not hasattr(model, "head_atomic_energies"):
            raise EnsembleError(
                f"{type(model).__name__} has {n} readout head(s): a head ensemble "
                "needs a model trained with readout_heads ≥ 2 (So3krates)"
            )
        self._wrap(model)
        self.forces_std = bool(forces_std)

    @property
    def n_members(self) -> int:
        """Number of heads K."""
        return self.model.n_heads

    def member_outputs(
        self, graph: AtomicGraph, forces: bool, stress: bool
    ) -> dict[str, torch.Tensor]:
        """Each head's outputs stacked (K, ...) from one forward pass."""
        model, k = self.model, self.n_members
        need_grad = forces or stress
        pos = graph.positions.detach().requires_grad_(need_grad)
        strain = torch.zeros_like(graph.cell).requires_grad_(True) if stress else None
        with model.inference_tables(), torch.enable_grad():
            g = deformed(graph, pos, strain)
            vectors = g.edge_vectors()  # (n_edges, 3)
            heads = model.head_atomic_energies(g, vectors, False)  # (n_atoms, K)
            for term in model.terms.values():  # extra terms: shared by every head
                heads = heads + term(g, vectors)[:, None].to(heads.dtype)
            totals = heads.sum(0)  # (K,)
        e0 = model.e0[graph.atomic_numbers]  # (n_atoms,) float64
        atomic = heads.detach().to(torch.float64).T + e0  # (K, n_atoms)
        out = {
            keys.ATOMIC_ENERGIES: atomic,
            keys.ENERGY: scatter_sum(atomic.T, graph.graph_index, graph.n_graphs).T,
        }
        if not need_grad:
            return out
        inputs = [pos] if strain is None else [pos, strain]
        if self.forces_std or stress:
            eye = torch.eye(k, dtype=totals.dtype, device=totals.device)
            grads = torch.autograd.grad(
                totals, inputs, grad_outputs=eye, is_grads_batched=True
            )
        else:  # the mean's forces only, broadcast to every member (zero spread)
            grads = torch.autograd.grad(totals.mean(), inputs)
            grads = [gr.expand(k, *gr.shape) for gr in grads]
        if forces:
            out[keys.FORCES] = -grads[0]  # (K, n_atoms, 3)
        if stress:
            cell = graph.cell
            out[keys.STRESS] = torch.stack(
                [stress_from_virial(v, cell) for v in grads[1]]
            )
        return out

    def forward(self, graph: AtomicGraph, *args, **kwargs) -> dict[str, torch.Tensor]:
        """As :meth:`EnsembleModel.forward`; without ``forces_std`` no force spread."""
        out = super().forward(graph, *args, **kwargs)
        if not self.forces_std:
            for key in (keys.FORCES_STD, keys.FORCES_STD_MAX, keys.FORCES_MEMBERS):
                out.pop(key, None)
        return out
