"""Deployable energy+forces functions: TorchScript modules and AOTInductor packages.

The exported function is the compiled backend's function
(:func:`equiforce.energy.atomic_outputs` with ``method="func"``, weights as
constants, traced by :func:`equiforce.accel.aoti.trace` with symbolic atom and
edge counts) over a caller-supplied neighbour list, so that an engine that cannot
import equiforce (OpenMM, LAMMPS, C++) loads it with torch alone::

    energy, forces, atomic_energies, virial = f(
        positions,       # (n_atoms, 3) model dtype, Å
        atomic_numbers,  # (n_atoms,) int64
        edge_index,      # (2, n_edges) int64: row 0 centre i, row 1 neighbour j
        shift_vectors,   # (n_edges, 3) model dtype, Å: r_ij = r_j - r_i + shift
    )
    # energy () float64 eV, forces (n_atoms, 3) model dtype eV/Å,
    # atomic_energies (n_atoms,) float64 eV, virial (3, 3) model dtype dE/dε eV

Every pair closer than the model's cutoff must appear in both directions, no
self-pairs (``docs/conventions.md``); the shift vectors are Cartesian (S·cell),
so the function needs no cell: inside, the one structure gets the unit matrix as
its cell and the shift vectors as image multiples, which the energy path strains
like a cell, so the virial is exact for periodic systems too.

Two containers:

* ``torchscript``: the traced ATen graph (forward and its gradient) with each
  operator overload replaced by its packet, which ``torch.jit.script`` compiles
  for every family, wrapped in a scripted module that checks the inputs (dtype,
  shapes, elements) with messages naming the problem. Metadata in the
  ``_extra_files`` entry ``equiforce.json``.
* ``aoti``: the same graph exported with dynamic sizes and compiled by
  AOTInductor into a ``.pt2`` package (:func:`equiforce.accel.aoti.build`);
  metadata in the package's ``aot_inductor.metadata`` (key ``equiforce.json``,
  stored in the archive's ``*wrapper_metadata.json``). The element check is
  inside the graph; dtypes and shapes are checked only when the environment has
  ``AOTI_RUNTIME_CHECK_INPUTS=1`` (AOTInductor's own checks).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from equiforce import keys
from equiforce.accel import aoti
from equiforce.data.graph import AtomicGraph
from equiforce.energy import VIRIAL, atomic_outputs

if TYPE_CHECKING:
    from equiforce.models.base import PotentialModel

#: Name of the metadata entry (TorchScript extra file; AOTI metadata key + ".json").
METADATA_NAME = "equiforce.json"

#: Metadata ``format`` value of every export; bumped when the interface changes.
EXPORT_FORMAT = "equiforce-export-1"

#: Rows of the element table (atomic numbers 0..118).
_N_Z = 119

INPUTS = (
    ("positions", "(n_atoms, 3)", "model dtype", "Å"),
    ("atomic_numbers", "(n_atoms,)", "int64", ""),
    ("edge_index", "(2, n_edges)", "int64", "row 0 centre i, row 1 neighbour j"),
    ("shift_vectors", "(n_edges, 3)", "model dtype", "Å, r_ij = r_j - r_i + shift"),
)
OUTPUTS = (
    ("energy", "()", "float64", "eV"),
    ("forces", "(n_atoms, 3)", "model dtype", "eV/Å, -dE/dr"),
    ("atomic_energies", "(n_atoms,)", "float64", "eV, E0 included"),
    ("virial", "(3, 3)", "model dtype", "eV, dE/dε (stress = virial / volume)"),
)


def interface() -> dict[str, list[dict[str, str]]]:
    """The input/output specification stored in every export's metadata."""
    cols = ("name", "shape", "dtype", "meaning")
    return {
        "inputs": [dict(zip(cols, row, strict=True)) for row in INPUTS],
        "outputs": [dict(zip(cols, row, strict=True)) for row in OUTPUTS],
    }


def element_table(elements: Sequence[int], device: torch.device) -> torch.Tensor:
    """(119,) bool: which atomic numbers the export accepts."""
    table = torch.zeros(_N_Z, dtype=torch.bool, device=device)
    table[torch.as_tensor(list(elements), dtype=torch.long, device=device)] = True
    return table


def energy_function(
    model: PotentialModel, elements: Sequence[int]
) -> Callable[..., tuple[torch.Tensor, ...]]:
    """``(positions, atomic_numbers, edge_index, shift_vectors) -> outputs``.

    The outputs are in the order of :data:`OUTPUTS`. Atomic numbers outside
    ``elements`` fail an assertion inside the graph.
    """
    allowed = element_table(elements, model.e0.device)

    def exported(
        positions: torch.Tensor,  # (n_atoms, 3)
        atomic_numbers: torch.Tensor,  # (n_atoms,)
        edge_index: torch.Tensor,  # (2, n_edges)
        shift_vectors: torch.Tensor,  # (n_edges, 3)
    ) -> tuple[torch.Tensor, ...]:
        z = atomic_numbers
        known = allowed[z.clamp(0, _N_Z - 1)] & (z >= 0) & (z < _N_Z)
        torch._assert_async(
            known.all(), "atomic number outside the export's element list"
        )
        device, dtype = positions.device, positions.dtype
        graph = AtomicGraph(
            positions=positions,
            atomic_numbers=z,
            graph_index=torch.zeros_like(z),
            edge_index=edge_index,
            edge_shifts=shift_vectors,  # Cartesian: the cell is the unit matrix
            cell=torch.eye(3, dtype=dtype, device=device)[None],
            pbc=torch.zeros(1, 3, dtype=torch.bool, device=device),
            n_atoms=torch.full((1,), positions.shape[0], device=device),
        )
        out = atomic_outputs(
            model.energy_terms, model.e0, graph, stress=True, method="func"
        )
        e_atom = out[keys.ATOMIC_ENERGIES]  # (n_atoms,) float64
        return e_atom.sum(), out[keys.FORCES], e_atom, out[VIRIAL][0]

    return exported


def example_inputs(
    cutoff: float, elements: Sequence[int], dtype: torch.dtype, device: torch.device
) -> tuple[torch.Tensor, ...]:
    """Tracing inputs: 7 atoms on a sphere of radius ``min(1, cutoff/3)`` Å.

    Every pair is an edge (42), so no size is 0, 1, 2 or 3, and the atom and edge
    counts differ: the symbolic tracer gives each its own symbol.
    """
    n = 7
    rng = np.random.default_rng(0)
    dirs = rng.normal(size=(n, 3))
    pos = dirs / np.linalg.norm(dirs, axis=1, keepdims=True) * min(1.0, cutoff / 3)
    i, j = np.nonzero(~np.eye(n, dtype=bool))
    z = [elements[k % len(elements)] for k in range(n)]
    return (
        torch.as_tensor(pos, dtype=dtype, device=device),
        torch.as_tensor(z, dtype=torch.long, device=device),
        torch.as_tensor(np.stack([i, j]), dtype=torch.long, device=device),
        torch.zeros(len(i), 3, dtype=dtype, device=device),
    )


def trace_model(
    model: PotentialModel, elements: Sequence[int]
) -> tuple[torch.fx.GraphModule, tuple[torch.Tensor, ...]]:
    """The ATen graph of :func:`energy_function` and its tracing inputs."""
    param = next(iter(model.parameters()))
    example = example_inputs(model.cutoff, elements, param.dtype, param.device)
    model.eval()
    with torch.no_grad(), model.inference_tables():
        gm = aoti.trace(energy_function(model, elements), example)
    for name, value in aoti._constants(gm).items():  # no autograd at run time
        owner, _, attr = name.rpartition(".")
        module = gm.get_submodule(owner) if owner else gm
        delattr(module, attr)  # a Parameter would keep an autograd graph
        module.register_buffer(attr, value.detach())
    return gm, example


class _Checked(torch.nn.Module):
    """Input checks with clear messages in front of the scripted graph."""

    def __init__(
        self, core: torch.nn.Module, dtype: torch.dtype, elements: Sequence[int]
    ) -> None:
        super().__init__()
        self.core = core
        self.register_buffer("allowed", element_table(elements, torch.device("cpu")))
        self.register_buffer("reference", torch.zeros(0, dtype=dtype))
        self.element_list = ",".join(str(z) for z in elements)
        self.dtype_name = str(dtype).removeprefix("torch.")

    def forward(
        self,
        positions: torch.Tensor,
        atomic_numbers: torch.Tensor,
        edge_index: torch.Tensor,
        shift_vectors: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        want = self.reference.dtype
        if positions.dtype != want or shift_vectors.dtype != want:
            raise RuntimeError(
                "positions and shift_vectors must be torch."
                + self.dtype_name
                + ", the exported model's dtype (convert them with .to())"
            )
        if atomic_numbers.dtype != torch.long or edge_index.dtype != torch.long:
            raise RuntimeError("atomic_numbers and edge_index must be int64")
        n = positions.shape[0]
        if positions.dim() != 2 or positions.shape[1] != 3:
            raise RuntimeError("positions must be (n_atoms, 3)")
        if atomic_numbers.shape != [n]:
            raise RuntimeError("atomic_numbers must be (n_atoms,)")
        if edge_index.dim() != 2 or edge_index.shape[0] != 2:
            raise RuntimeError("edge_index must be (2, n_edges)")
        if shift_vectors.shape != [edge_index.shape[1], 3]:
            raise RuntimeError("shift_vectors must be (n_edges, 3)")
        if edge_index.numel() > 0 and (
            bool(edge_index.min() < 0) or bool(edge_index.max() >= n)
        ):
            raise RuntimeError("edge_index holds an atom index outside 0..n_atoms-1")
        z = atomic_numbers.cpu()
        bad = (z < 0) | (z >= self.allowed.shape[0])
        bad = bad | ~self.allowed[z.clamp(0, self.allowed.shape[0] - 1)]
        if bool(bad.any()):
            raise RuntimeError(
                "atomic number "
                + str(int(z[bad][0]))
                + " is not in the exported model's elements ("
                + self.element_list
                + ")"
            )
        return self.core(positions, atomic_numbers, edge_index, shift_vectors)


def _packets(gm: torch.fx.GraphModule) -> torch.fx.GraphModule:
    """``gm`` calling operator packets (``aten.mm``) instead of overloads.

    TorchScript resolves a packet by its schemas but cannot compile an overload
    attribute (``aten.mm.default``); ``aten.sym_size.int`` becomes ``aten.size``.
    """
    for node in gm.graph.nodes:
        node.type = None  # annotations such as tuple[Tensor, ...] are not TorchScript
        target = node.target
        if node.op == "call_function" and isinstance(target, torch._ops.OpOverload):
            if target is torch.ops.aten.sym_size.int:
                target = torch.ops.aten.size.int
            node.target = target.overloadpacket
    gm.recompile()
    return gm


def to_torchscript(
    gm: torch.fx.GraphModule, dtype: torch.dtype, elements: Sequence[int]
) -> torch.jit.ScriptModule:
    """The scripted, input-checking module of a graph from :func:`trace_model`."""
    return torch.jit.script(_Checked(torch.jit.script(_packets(gm)), dtype, elements))


def save_torchscript(
    module: torch.jit.ScriptModule, metadata: dict, path: Path
) -> None:
    """Write ``module`` with ``metadata`` as the extra file :data:`METADATA_NAME`."""
    from equiforce.atomic import atomic_path

    with atomic_path(path) as tmp:
        torch.jit.save(
            module, str(tmp), _extra_files={METADATA_NAME: json.dumps(metadata)}
        )


def build_aoti(
    gm: torch.fx.GraphModule,
    example: Sequence[torch.Tensor],
    metadata: dict,
    path: Path,
) -> float:
    """Compile ``gm`` into the AOTInductor package ``path``; returns seconds taken.

    The atom count (positions and atomic numbers, dimension 0) and the edge count
    (edge_index dimension 1, shift vectors dimension 0) are dynamic.
    """
    start = time.perf_counter()
    extra = {
        "aot_inductor.metadata": {METADATA_NAME: json.dumps(metadata)},
        # sizes 0 and 1 (one atom, no edges) pass AOTI_RUNTIME_CHECK_INPUTS=1
        "aot_inductor.check_lowerbound": False,
    }
    aoti.build(gm, example, dims=(0, 0, 1, 0), path=path, extra_options=extra)
    return time.perf_counter() - start
