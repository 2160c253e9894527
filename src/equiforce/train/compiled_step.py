"""A compiled training step: loss and weight gradients in one Inductor graph.

Training on forces needs the gradient (with respect to the weights) of a loss that
contains a gradient (forces = −∂E/∂positions). ``torch.compile`` cannot compile a
``backward(create_graph=True)`` followed by a second backward, so here both
derivatives are ``torch.func`` transforms of a pure function of the weights,
``grad_and_value(loss)(weights)`` where ``loss`` itself calls the one energy
path (:func:`equiforce.energy.evaluate` with ``method="func"``, i.e.
``grad_and_value(energy)(positions)``), and the whole thing is compiled once with
dynamic atom and edge counts (and Inductor's own gathers at every size, see
:func:`equiforce.nn.scatter.inductor_row_ops`). Eager ``torch.func`` runs the same function (the
reference in the tests, and ``compile=False``); when compilation fails, the step
falls back to the trainer's autograd step, which is faster than eager ``torch.func``.

Stress training is not compiled (the trainer keeps the autograd path for it).
Batches the model's ``compiled_accepts`` refuses (SO3LR: 3D-periodic cells under
Ewald/PME electrostatics, whose traced form would be the direct kernel) take the
eager autograd step instead, as in compiled inference (``accel/compiled.py``).
"""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable

import torch
from torch import nn

from equiforce.accel.runtime import INDUCTOR_CPU_OPTIONS, one_thread_below
from equiforce.accel.signature import dynamo_frame_count
from equiforce.data.graph import AtomicGraph
from equiforce.energy import evaluate
from equiforce.models.base import PotentialModel
from equiforce.nn.scatter import inductor_row_ops
from equiforce.train.loss import WeightedLoss

#: Batches below this many edges take the compiled step on one thread. Its
#: Inductor loops are single-threaded at every size (``runtime.INDUCTOR_CPU_OPTIONS``:
#: session 5 measured 1 / 2 threads for them at ethanol batch 5 (360 edges) 9.2 /
#: 11.6 ms, aspirin batch 5 (~1,500 edges) 24.2 / 27.8, batch 20 (~5,800) 90.8 /
#: 93.6); above this the ATen matrix products get the caller's threads
#: (``benchmarks/train_speed.py --threads 2``, 2026-11-25, ms per step, all on one
#: thread / products on two: ethanol batch 5 7.07 / 8.87, aspirin batch 5 20.8 /
#: 19.2).
ONE_THREAD_MAX_EDGES = 1024


class _EnergyTerms(nn.Module):
    """``forward`` = the wrapped model's :meth:`~PotentialModel.energy_terms`."""

    def __init__(self, model: PotentialModel) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, graph: AtomicGraph, differentiable: bool
    ) -> dict[str, torch.Tensor]:
        return self.model.energy_terms(graph, differentiable)


class CompiledTrainStep:
    """Callable ``batch -> (loss parts, {name: gradient})`` for the trainable weights.

    Args:
        model: the potential being trained (its current weights are read at every
            call, so optimiser updates are seen).
        loss_fn: the training loss (must not need stress).
        compile: False runs the same ``torch.func`` function eagerly.
        log: where the one-time note goes when a batch is refused (see below);
            default: a ``RuntimeWarning``.

    Batches that ``model.compiled_accepts`` (if the model has it) refuses are
    trained by the eager step (``model(batch, create_graph=True)``, autograd),
    which gives the same loss and gradients as the trainer without
    ``training.compile``.

    Attributes:
        compile_seconds: wall time of the first (compiling) call.
        n_compiles: graphs Dynamo compiled since this step was made.
        n_eager: batches the model refused, trained eagerly.
    """

    def __init__(
        self,
        model: PotentialModel,
        loss_fn: WeightedLoss,
        compile: bool = True,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if loss_fn.needs_stress:
            raise ValueError("the compiled training step does not train on stress")
        self.model, self.loss_fn = model, loss_fn
        self._accepts = getattr(model, "compiled_accepts", None)
        self._log = log or (lambda msg: warnings.warn(msg, RuntimeWarning, 3))
        self.n_eager = 0
        self._wrapper = _EnergyTerms(model)
        self.compile_seconds: float | None = None
        self.compiled = compile
        self._autograd_fallback = False  # set when compiling failed
        self._fn = self._loss_and_grads
        if compile:
            on_cpu = all(p.device.type == "cpu" for p in model.parameters())
            options = dict(INDUCTOR_CPU_OPTIONS) if on_cpu else None
            self._fn = torch.compile(
                self._loss_and_grads, dynamic=True, options=options
            )
        self._frames_at_start = dynamo_frame_count()

    @property
    def n_compiles(self) -> int:
        """Number of Dynamo frame compilations since this step was made."""
        return dynamo_frame_count() - self._frames_at_start

    def _loss_and_grads(
        self,
        weights: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        batch: AtomicGraph,
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        e0 = self.model.e0

        def loss_of(weights: dict[str, torch.Tensor]):
            def terms(graph: AtomicGraph, differentiable: bool):
                return torch.func.functional_call(
                    self._wrapper, {**weights, **buffers}, (graph, differentiable)
                )

            out = evaluate(terms, e0, batch, differentiable=True, method="func")
            total, parts = self.loss_fn.terms(out, batch)
            return total, {k: v.detach() for k, v in parts.items()}

        grads, (_, parts) = torch.func.grad_and_value(loss_of, has_aux=True)(weights)
        return grads, parts

    def __call__(
        self, batch: AtomicGraph
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Loss parts (floats) and the gradient of the loss for every trainable weight."""
        self.model.check_graph(batch)  # the traced step cannot raise on data
        if self._accepts is not None and not self._accepts(batch):
            return self._eager(batch)
        if self._autograd_fallback:  # compiling failed before
            return self._autograd(batch)
        weights = {
            f"model.{n}": p.detach()
            for n, p in self.model.named_parameters()
            if p.requires_grad
        }
        buffers = {f"model.{n}": b for n, b in self.model.named_buffers()}
        start = time.perf_counter()
        small = one_thread_below(
            batch.n_edges, ONE_THREAD_MAX_EDGES, batch.positions.device
        )
        try:
            with inductor_row_ops(), small:
                grads, parts = self._fn(weights, buffers, batch)
        except Exception as err:  # noqa: BLE001 - any compiler failure -> eager
            if not self.compiled:
                raise
            warnings.warn(
                f"compiling the training step failed ({type(err).__name__}: {err}); "
                "training eagerly (autograd)",
                RuntimeWarning,
                stacklevel=2,
            )
            # the trainer's autograd step, not the eager torch.func function:
            # H200, aspirin batch 5, 30.5 vs 43.7 ms per step
            self.compiled, self._autograd_fallback = False, True
            self.compile_seconds = time.perf_counter() - start
            return self._autograd(batch)
        if self.compile_seconds is None:
            self.compile_seconds = time.perf_counter() - start
        grads = {k.removeprefix("model."): g for k, g in grads.items()}
        return {k: float(v) for k, v in parts.items()}, grads

    def _eager(
        self, batch: AtomicGraph
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """The trainer's eager step (autograd) for a batch the model refuses."""
        if self.n_eager == 0:
            self._log(
                f"training.compile: {type(self.model).__name__}.compiled_accepts "
                "refuses some batches (SO3LR: 3D-periodic cells under Ewald/PME "
                "electrostatics, which the traced step would evaluate with the "
                "direct kernel); those batches train eagerly (autograd), the "
                "others compiled"
            )
        self.n_eager += 1
        return self._autograd(batch)

    def _autograd(
        self, batch: AtomicGraph
    ) -> tuple[dict[str, float], dict[str, torch.Tensor]]:
        """Loss parts and weight gradients by autograd (the trainer's eager step)."""
        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        out = self.model(batch, compute_forces=True, create_graph=True)
        loss, parts = self.loss_fn(out, batch)
        grads = torch.autograd.grad(loss, [p for _, p in named], allow_unused=True)
        return parts, {
            n: g for (n, _), g in zip(named, grads, strict=True) if g is not None
        }


def assign_gradients(model: nn.Module, grads: dict[str, torch.Tensor]) -> None:
    """Set ``p.grad`` from a :class:`CompiledTrainStep` result (None where missing).

    ``torch.func`` returns some gradients with other strides than their
    parameters (transposed weight gradients), and the fused CPU Adam of torch 2.13
    reads a gradient as if it had its parameter's strides, which gives wrong
    updates; such gradients are copied into their parameter's layout.
    """
    for name, p in model.named_parameters():
        g = grads.get(name)
        if g is not None and g.stride() != p.stride():
            g = torch.empty_like(p).copy_(g)
        p.grad = g
