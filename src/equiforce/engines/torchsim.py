"""torch-sim adapter: an equiforce model as a ``torch_sim`` ``ModelInterface``.

:class:`TorchSimModel` turns a torch-sim ``SimState`` (or state dict) into
:meth:`equiforce.potential.Potential.compute` arguments and the outputs back into
torch-sim's contract (``torch_sim.models.interface``):

- ``energy`` (n_systems,) eV, ``forces`` (n_atoms, 3) eV/Å, ``stress``
  (n_systems, 3, 3) eV/Å³, all detached, on the model's device, in its dtype;
- stress is σ = (1/V) ∂E/∂ε, the sign of ASE's ``get_stress`` and of torch-sim
  (``torch_sim.quantities.get_pressure``: P = (2K/V − tr σ)/3), so no sign flip;
  it is zero for open (``pbc=False``) systems;
- torch-sim stores the cell as **columns** (``state.cell``); equiforce takes rows
  (``state.row_vector_cell``);
- torch-sim's ``pbc`` is one flag for the whole batch in 0.3 (a (3,) tensor in
  later versions); a flag, (3,) or (n_systems, 3) flags are accepted.

Several systems run as one batched call (``state.system_idx``). The neighbour
list, its skin and the compiled backend belong to the wrapped
:class:`~equiforce.potential.Potential`. ``torch_sim`` is imported only here.
"""

from __future__ import annotations

from pathlib import Path

import torch
from ase.data import chemical_symbols
from torch_sim.models.interface import ModelInterface
from torch_sim.state import SimState

from equiforce import keys
from equiforce.models.base import NUM_ELEMENTS, PotentialModel
from equiforce.models.checkpoint import CheckpointError, load_checkpoint
from equiforce.models.registry import model_from_payload
from equiforce.potential import Potential


class TorchSimModel(ModelInterface):
    """An equiforce potential that torch-sim integrators and optimizers can call.

    Args:
        model: a :class:`~equiforce.models.base.PotentialModel`, a model file
            (checkpoint; its training elements, if recorded, become ``elements``)
            or a :class:`~equiforce.potential.Potential` (then ``device``,
            ``dtype``, ``skin``, ``compile`` and ``compile_after`` are ignored).
        device: torch device (default: the model's).
        dtype: compute dtype (default: the model's parameter dtype); outputs are
            returned in it, as torch-sim expects.
        compute_forces: return ``forces``.
        compute_stress: return ``stress``.
        skin: neighbour-list skin, Å.
        compile: compiled backend policy of :class:`Potential` (None: after
            ``compile_after`` calls).
        compile_after: eager calls before compiling when ``compile`` is None.
        elements: atomic numbers the model may be called with (default: those a
            checkpoint records, else every element of the model's tables, 1-118).

    Raises:
        CheckpointError: ``model`` is a path to a missing or non-equiforce file.
        TypeError: ``model`` is none of the accepted kinds.
    """

    def __init__(
        self,
        model: PotentialModel | Potential | str | Path,
        *,
        device: str | torch.device | None = None,
        dtype: torch.dtype | None = None,
        compute_forces: bool = True,
        compute_stress: bool = True,
        skin: float = 0.5,
        compile: bool | None = None,
        compile_after: int = 20,
        elements: list[int] | None = None,
    ) -> None:
        super().__init__()
        if isinstance(model, (str, Path)):
            model, recorded = _load(model, device, dtype)
            elements = elements if elements is not None else recorded
        if not isinstance(model, (PotentialModel, Potential)):
            raise TypeError(
                "model must be an equiforce PotentialModel, Potential or model file, "
                f"not {type(model).__name__}"
            )
        self.potential = Potential.wrap(
            model,
            device=device,
            dtype=dtype,
            skin=skin,
            compile=compile,
            compile_after=compile_after,
        )
        self._device = self.potential.device
        self._dtype = self.potential.dtype
        self._compute_forces = bool(compute_forces)
        self._compute_stress = bool(compute_stress)
        self._memory_scales_with = "n_atoms_x_density"  # radial cutoff
        allowed = torch.zeros(NUM_ELEMENTS, dtype=torch.bool)
        allowed[list(elements) if elements is not None else slice(1, None)] = True
        self._allowed = allowed  # (119,) bool, CPU, indexed by Z
        self._checked: torch.Tensor | None = None  # last atomic numbers checked

    # torch-sim's validator and runners switch these on; the interface's own
    # setters raise NotImplementedError
    @ModelInterface.compute_stress.setter
    def compute_stress(self, value: bool) -> None:
        """Whether ``forward`` returns ``stress``."""
        self._compute_stress = bool(value)

    @ModelInterface.compute_forces.setter
    def compute_forces(self, value: bool) -> None:
        """Whether ``forward`` returns ``forces``."""
        self._compute_forces = bool(value)

    @property
    def model(self) -> PotentialModel:
        """The wrapped equiforce model."""
        return self.potential.model

    def forward(self, state: SimState | dict, **_) -> dict[str, torch.Tensor]:
        """Energy, forces and stress of every system of ``state``.

        Args:
            state: a ``SimState`` or a dict with ``positions`` (n_atoms, 3) Å,
                ``cell`` (n_systems, 3, 3) Å as columns, ``pbc``,
                ``atomic_numbers`` (n_atoms,) and ``system_idx`` (n_atoms,)
                (optional for one system).

        Returns:
            ``energy`` (n_systems,) eV; ``forces`` (n_atoms, 3) eV/Å and
            ``stress`` (n_systems, 3, 3) eV/Å³ as the flags ask.

        Raises:
            ValueError: an atomic number the model does not know.
        """
        positions, numbers, cell, pbc, system_idx = _unpack(state)
        self._check_elements(numbers)
        n_systems = cell.shape[0]
        flags = pbc.to(self._device).expand(n_systems, 3)  # (n_systems, 3)
        rows = cell.mT  # (n_systems, 3, 3): lattice vectors as rows
        pot = self.potential
        if self._compute_forces or self._compute_stress:
            want_stress = self._compute_stress
            out = pot.compute(positions, numbers, rows, flags, system_idx, want_stress)
        else:  # energy only: no derivative at all
            graph = pot.graph_for(positions, numbers, rows, flags, system_idx)
            out = pot.model(graph, compute_forces=False)
        result = {"energy": out[keys.ENERGY].detach().to(self._dtype)}
        if self._compute_forces:
            result["forces"] = out[keys.FORCES].detach().to(self._dtype)
        if self._compute_stress:
            result["stress"] = out[keys.STRESS].detach().to(self._dtype)
        return result

    def _check_elements(self, numbers: torch.Tensor) -> None:
        """Raise on an atomic number outside ``elements`` (checked once per array)."""
        if _same(numbers, self._checked):
            return
        z = numbers.detach().cpu().long()
        known = (z >= 0) & (z < NUM_ELEMENTS)
        known[known.clone()] = self._allowed[z[known]]
        if not bool(known.all()):
            i = int((~known).nonzero()[0])
            zi = int(z[i])
            name = chemical_symbols[zi] if 0 <= zi < len(chemical_symbols) else "?"
            allowed = self._allowed.nonzero().flatten().tolist()
            span = (
                f"Z={allowed[0]}..{allowed[-1]}"
                if len(allowed) == allowed[-1] - allowed[0] + 1
                else ", ".join(chemical_symbols[a] for a in allowed)
            )
            raise ValueError(
                f"atom {i}: element Z={zi} ({name}) is unknown to this equiforce "
                f"model (it knows {span})"
            )
        self._checked = numbers.detach().clone()  # a copy: callers edit in place


def _same(new: torch.Tensor, old: torch.Tensor | None) -> bool:
    """Whether ``new`` equals the stored copy ``old`` (False without one)."""
    return (
        old is not None
        and new.shape == old.shape
        and torch.equal(new.to(old.device), old)
    )


def _unpack(
    state: SimState | dict,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(positions, numbers, column cell (n_systems, 3, 3), pbc (1|n_systems, 3), idx)."""
    if isinstance(state, SimState):
        positions, cell = state.positions, state.cell
        numbers, system_idx, pbc = state.atomic_numbers, state.system_idx, state.pbc
    else:
        positions, cell = state["positions"], state["cell"]
        numbers, pbc = state["atomic_numbers"], state.get("pbc", False)
        system_idx = state.get("system_idx")
        if system_idx is None:
            system_idx = torch.zeros(
                len(positions), dtype=torch.long, device=positions.device
            )
    cell = torch.as_tensor(cell).reshape(-1, 3, 3)
    pbc = torch.as_tensor(pbc, dtype=torch.bool)
    pbc = pbc.reshape(-1, 3) if pbc.numel() > 1 else pbc.reshape(1, 1).expand(1, 3)
    return positions, numbers, cell, pbc, system_idx


def _load(
    path: str | Path, device: str | torch.device | None, dtype: torch.dtype | None
) -> tuple[PotentialModel, list[int] | None]:
    """The model of a checkpoint and the elements its training data had (or None)."""
    payload = load_checkpoint(path)  # names the file on a missing/foreign one
    try:
        model = model_from_payload(payload, device=device or "cpu", dtype=dtype)
    except CheckpointError as err:
        raise CheckpointError(f"{path}: {err}") from None
    e0 = (payload.get("statistics") or {}).get("e0")
    return model, (sorted(int(z) for z in e0) if e0 else None)
