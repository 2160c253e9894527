"""The inference potential: what every front end (ASE, native MD, engines) wraps.

:class:`Potential` owns, for one model:

- the device and float dtype of the calls;
- the neighbour list, built by vesin with ``cutoff + skin`` and reused while no
  pair can have entered the cutoff sphere unseen (pairs in the skin shell
  contribute exactly zero because every model's cutoff function vanishes at
  ``model.cutoff``, so reuse changes the cost, not the results). With the cell
  unchanged that means no atom moved more than ``skin/2``. When the cell of a
  fully periodic structure changes (NPT, cell relaxation), the motion is split
  into the affine deformation M = h_old⁻¹ h_new (rows are lattice vectors) and
  each atom's non-affine displacement δ_i = r_i − r_i^old M; a pair now within
  the cutoff c had |r_old| ≤ (c + 2 max δ) / s_min(M) (s_min: smallest singular
  value of M), so the list stays valid while that is ≤ c + skin. Species,
  periodic flags and the cell of a structure that is not periodic in all three
  directions must be unchanged;
- the switch from eager calls to the compiled backend
  (:class:`~equiforce.accel.compiled.CompiledPotential`; a committee's members each
  through their own, :mod:`equiforce.uncertainty.compiled`), kept once made.

Both backends evaluate the one energy path (:mod:`equiforce.energy`). Adapters
(:class:`equiforce.calculator.EquiforceCalculator`,
:class:`equiforce.md.forcefield.ModelForceField`) only translate their engine's
state into :meth:`Potential.compute` arguments and its outputs back.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from ase.data import chemical_symbols

from equiforce.accel.compiled import CompiledPotential
from equiforce.data.graph import AtomicGraph
from equiforce.errors import EquiforceError
from equiforce.models.base import PotentialModel

if TYPE_CHECKING:
    from equiforce.uncertainty.compiled import CompiledCommittee

    Backend = CompiledPotential | CompiledCommittee

#: Array-likes accepted by :meth:`Potential.compute` (converted without copying
#: where device and dtype already fit).
ArrayLike = np.ndarray | torch.Tensor


#: what a front end shows before the compiled backend's first (slow) call
COMPILE_NOTICE = (
    "compiling the model for fast inference: the next call takes up to a minute or "
    "two on a CPU (AOTInductor); the library is cached for later runs of this model"
)


class Potential:
    """A model ready for inference: device, dtype, neighbour list, compiled backend.

    Args:
        model_or_path: a :class:`~equiforce.models.base.PotentialModel` or a model
            file (:func:`equiforce.load_model`).
        device: torch device of the calls (default: the model's).
        dtype: compute dtype (default: the model's parameter dtype).
        skin: neighbour-list skin, Å (0 rebuilds the list at every call).
        compile: ``True`` uses the compiled backend from the first call,
            ``False`` never, ``None`` (default) once ``compile_after`` calls have
            run: single points stay eager, MD loops get the fast path.
        compile_after: eager calls before compiling when ``compile`` is None.
        flush_denormals: flush subnormal floats to zero on this thread and its
            OpenMP workers (a process-wide CPU mode, see
            :mod:`equiforce.accel.denormals`); None (default): only when
            ``EQUIFORCE_FLUSH_DENORMALS=1``. The ``equiforce`` commands flush
            anyway; a host program's floating-point mode is left alone.

    Attributes:
        model: the model, in eval mode on ``device`` in ``dtype``.
        graph: the neighbour graph of the last call (None before the first).
        n_builds: neighbour-list builds so far.
        n_calls: evaluations so far.
        notify: called with a message before a long step (building the compiled
            backend); None: silent. Command-line front ends set it.
    """

    def __init__(
        self,
        model_or_path: PotentialModel | str | Path,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        skin: float = 0.5,
        compile: bool | None = None,
        compile_after: int = 20,
        flush_denormals: bool | None = None,
    ) -> None:
        from equiforce.accel import denormals
        from equiforce.accel.runtime import tune_allocator

        tune_allocator()
        if denormals.library_default() if flush_denormals is None else flush_denormals:
            denormals.flush_denormals(True)
        if isinstance(model_or_path, (str, Path)):
            from equiforce.models.registry import load_model

            model = load_model(model_or_path, device=device or "cpu", dtype=dtype)
        else:
            model = model_or_path
        first = next(iter(model.parameters()))
        self.dtype = dtype or first.dtype
        self.device = torch.device(device) if device is not None else first.device
        self.model = model.to(device=self.device, dtype=self.dtype).eval()
        self.skin = float(skin)
        self.compile, self.compile_after = compile, int(compile_after)
        self.graph: AtomicGraph | None = None
        self._reference: tuple[torch.Tensor, ...] | None = None
        #: the structure of each atom at the last build (None: one structure)
        self._partition: torch.Tensor | None = None
        self._compiled: Backend | None = None
        self.n_builds = 0
        self.n_calls = 0
        self.notify: Callable[[str], None] | None = None
        self._known = self.model.known_elements()

    @classmethod
    def wrap(
        cls, model_or_potential: Potential | PotentialModel | str | Path, **kwargs
    ) -> Potential:
        """``model_or_potential`` itself if it is a Potential, else a new one.

        Args:
            model_or_potential: a :class:`Potential`, a model or a model file.
            **kwargs: :class:`Potential` arguments, used only for a new one.
        """
        if isinstance(model_or_potential, Potential):
            return model_or_potential
        return cls(model_or_potential, **kwargs)

    # --------------------------------------------------------- the backend
    @property
    def compiled(self) -> Backend | None:
        """The compiled backend once the policy has switched to it, else None."""
        return self._compiled

    def _backend(self) -> Backend | None:
        if self._compiled is None:
            wanted = (
                self.compile
                if self.compile is not None
                else self.n_calls >= self.compile_after
            )
            # a model the compiled backends cannot serve sets ``compilable = False``
            # (graph fields beyond the short-range ones pass through when listed
            # in ``model.compiled_inputs``, as SO3LR's long-range pairs, charge,
            # spin); one that brings its own (a committee: its members compiled
            # one by one) has ``compiled_backend()``
            own = getattr(self.model, "compiled_backend", None)
            if wanted and getattr(self.model, "compilable", True):
                if self.notify is not None:
                    k = getattr(self.model, "n_members", 1)
                    each = f" (each of the {k} committee members)" if k > 1 else ""
                    self.notify(COMPILE_NOTICE + each)
                self._compiled = (
                    own()
                    if own is not None
                    else CompiledPotential.for_device(self.model)
                )
        return self._compiled

    def __call__(
        self, graph: AtomicGraph, stress: bool = False
    ) -> dict[str, torch.Tensor]:
        """Energy, per-atom energies, forces (and stress) of ``graph``'s structures.

        Args:
            graph: structures on this potential's device and dtype.
            stress: also return ``stress`` (n_graphs, 3, 3) eV/Å³.

        Returns:
            ``energy`` (n_graphs,) float64 eV, ``atomic_energies`` (n_atoms,)
            float64 eV, ``forces`` (n_atoms, 3) eV/Å[, ``stress``].
        """
        backend = self._backend()  # eager for the first ``compile_after`` calls
        self.n_calls += 1
        if backend is not None:
            return backend(graph, stress=stress)
        return self.model(graph, compute_forces=True, compute_stress=stress)

    # ------------------------------------------------------ neighbour list
    def compute(
        self,
        positions: ArrayLike,
        atomic_numbers: ArrayLike,
        cell: ArrayLike | None = None,
        pbc: ArrayLike | None = None,
        system_idx: ArrayLike | None = None,
        stress: bool = False,
        charge: ArrayLike | float | None = None,
        spin: ArrayLike | float | None = None,
    ) -> dict[str, torch.Tensor]:
        """Outputs of :meth:`__call__` for structures given as arrays.

        Args:
            positions: (n_atoms, 3) Å.
            atomic_numbers: (n_atoms,).
            cell: (n_systems, 3, 3) or (3, 3) lattice rows, Å (None: open).
            pbc: (n_systems, 3) or (3,) periodic flags (None: open).
            system_idx: (n_atoms,) structure of each atom, sorted (None: one).
            stress: also return ``stress``.
            charge: total charge per structure, (n_systems,) or a number, e
                (None: neutral); used by models with charge inputs (SO3LR).
            spin: total spin S per structure (None: 0); as ``charge``.
        """
        graph = self.graph_for(positions, atomic_numbers, cell, pbc, system_idx)
        graph.charge = self._per_system(charge, graph.n_graphs)
        graph.spin = self._per_system(spin, graph.n_graphs)
        return self(graph, stress)

    def _per_system(
        self, value: ArrayLike | float | None, n_systems: int
    ) -> torch.Tensor | None:
        """(n_systems,) tensor of a per-structure input (None stays None)."""
        if value is None:
            return None
        t = torch.as_tensor(value, device=self.device, dtype=self.dtype).reshape(-1)
        if t.numel() == 1:
            return t.expand(n_systems).clone()
        if t.numel() != n_systems:
            raise ValueError(
                f"expected {n_systems} values (one per structure), got {t.numel()}"
            )
        return t

    def graph_for(
        self,
        positions: ArrayLike,
        atomic_numbers: ArrayLike,
        cell: ArrayLike | None = None,
        pbc: ArrayLike | None = None,
        system_idx: ArrayLike | None = None,
    ) -> AtomicGraph:
        """The neighbour graph at ``positions``: the last one reused, or a new one.

        Arguments as in :meth:`compute`. The reused graph is updated in place
        (new positions, same edges).
        """
        pos = torch.as_tensor(positions, device=self.device, dtype=self.dtype)
        numbers = torch.as_tensor(atomic_numbers, device=self.device)
        n_systems = 1 if system_idx is None else None
        if cell is None:
            cell = torch.zeros((n_systems or _count(system_idx), 3, 3))
        if pbc is None:
            pbc = torch.zeros((n_systems or _count(system_idx), 3), dtype=torch.bool)
        cell = torch.as_tensor(cell, device=self.device, dtype=self.dtype).reshape(
            -1, 3, 3
        )
        pbc = torch.as_tensor(pbc, device=self.device, dtype=torch.bool).reshape(-1, 3)
        partition = None if system_idx is None else torch.as_tensor(system_idx)
        if self._needs_rebuild(pos, numbers, cell, pbc) or not _same_partition(
            partition, self._partition
        ):
            self._build(pos, numbers, cell, pbc, system_idx)
            self._partition = None if partition is None else partition.clone()
        else:  # the same topology: no re-validation
            self.graph.positions = pos
            self.graph.cell = cell
        return self.graph

    def _needs_rebuild(
        self,
        positions: torch.Tensor,
        numbers: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
    ) -> bool:
        if self.graph is None or self.skin <= 0 or self._reference is None:
            return True
        ref_pos, ref_numbers, ref_cell, ref_pbc = self._reference
        if positions.shape != ref_pos.shape or cell.shape != ref_cell.shape:
            return True
        for new, old in ((numbers, ref_numbers), (pbc, ref_pbc)):
            if not torch.equal(new, old):
                return True
        if torch.equal(cell, ref_cell):
            moved2 = (positions - ref_pos).square().sum(-1).max()
            # "not <=": a NaN displacement rebuilds, and the build names the atom
            return not bool(moved2 <= (0.5 * self.skin) ** 2)  # one host sync
        return not self._strained_list_valid(positions, cell)

    def _strained_list_valid(self, positions: torch.Tensor, cell: torch.Tensor) -> bool:
        """Whether the list built at the reference still holds under a new cell.

        See the module docstring: valid while (c + 2 max_i δ_i) ≤ s_min(M) (c + skin)
        for every structure, with M = h_old⁻¹ h_new and δ_i = r_i − r_i^old M.
        """
        ref_pos, _, ref_cell, ref_pbc = self._reference
        changed = (cell != ref_cell).flatten(1).any(1)  # (n_systems,)
        if bool((changed & ~ref_pbc.all(1)).any()):
            return False  # a cell change of an open or slab structure: rebuild
        eye = torch.eye(3, dtype=cell.dtype, device=cell.device)
        deform = eye.expand_as(cell).clone()  # (S, 3, 3) M = h_old⁻¹ h_new
        deform[changed] = torch.linalg.solve(ref_cell[changed], cell[changed])
        smin = torch.linalg.svdvals(deform)[:, -1]  # (S,)
        sys_idx = self.graph.graph_index
        affine = torch.bmm(ref_pos[:, None, :], deform[sys_idx])[:, 0]  # (N, 3)
        delta = (positions - affine).norm(dim=-1)  # (N,)
        worst = torch.zeros_like(smin).scatter_reduce(0, sys_idx, delta, "amax")
        cutoff = self.model.cutoff
        ok = cutoff + 2.0 * worst <= smin * (cutoff + self.skin)
        return bool(ok.all())  # a NaN anywhere fails the test and rebuilds

    def _check_elements(self, numbers: np.ndarray) -> None:
        """Refuse elements the model does not know (every front end goes here)."""
        if self._known is None:
            return
        unknown = sorted(set(numbers.tolist()) - self._known)
        if unknown:
            atom = int(np.flatnonzero(np.isin(numbers, unknown))[0])
            names = ", ".join(f"{chemical_symbols[z]} (Z={z})" for z in unknown)
            raise UnknownElementError(
                f"atomic_numbers: element {names} (first at atom {atom}) is not one "
                "the model was trained on (it knows "
                + ", ".join(chemical_symbols[z] for z in sorted(self._known))
                + ")"
            )

    def _build(
        self,
        positions: torch.Tensor,
        numbers: torch.Tensor,
        cell: torch.Tensor,
        pbc: torch.Tensor,
        system_idx: ArrayLike | None,
    ) -> None:
        self.graph = None  # the old pair lists go before the new ones are built
        pos = positions.detach().cpu().double().numpy()
        if not np.isfinite(pos).all():
            bad = int(np.flatnonzero(~np.isfinite(pos).all(-1))[0])
            raise FloatingPointError(f"non-finite position of atom {bad}")
        z = numbers.cpu().numpy()
        self._check_elements(z)
        cells = cell.detach().cpu().double().numpy()
        flags = pbc.cpu().numpy()
        cutoff = self.model.cutoff + self.skin
        lr_cutoff = getattr(self.model, "lr_cutoff", None)  # long-range pairs (SO3LR)
        if lr_cutoff is not None:
            lr_cutoff += self.skin
        if system_idx is None:
            parts = [slice(None)]
        else:
            idx = torch.as_tensor(system_idx).cpu().numpy()
            parts = [idx == s for s in range(len(cells))]
        graphs = [
            AtomicGraph.from_arrays(
                pos[sel],
                z[sel],
                cutoff,
                cell=cells[s],
                pbc=flags[s],
                dtype=self.dtype,
                lr_cutoff=lr_cutoff,
            )
            for s, sel in enumerate(parts)
        ]
        graph = AtomicGraph.collate(graphs)
        if graph.positions.device != self.device:
            graph = graph.to(self.device)
        self.graph = graph
        self.graph.positions = positions
        # copies: an array the caller changes in place (ASE's cell, numbers) must
        # not change the reference it is compared with (none with skin 0: every
        # call rebuilds)
        self._reference = (
            tuple(t.detach().clone() for t in (positions, numbers, cell, pbc))
            if self.skin > 0
            else None
        )
        self.n_builds += 1


class UnknownElementError(EquiforceError):
    """A structure holds an element the model was not trained on."""


def _same_partition(new: torch.Tensor | None, old: torch.Tensor | None) -> bool:
    """Whether the atoms belong to the same structures as at the last build.

    The same atoms at the same places split differently into structures (a batch
    re-partitioned by torch-sim's autobatcher) need a new graph.
    """
    if new is None or old is None:
        return new is None and old is None
    return new.shape == old.shape and torch.equal(new.to(old.device), old)


def _count(system_idx: ArrayLike) -> int:
    """Number of structures of a sorted structure index."""
    idx = torch.as_tensor(system_idx)
    return int(idx.max()) + 1 if idx.numel() else 0
