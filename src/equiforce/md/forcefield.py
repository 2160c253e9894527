"""Force providers: models with a skinned neighbour list, and analytic potentials.

Analytic potentials (harmonic, Lennard-Jones) serve the physics tests.

:class:`ModelForceField` adapts :class:`equiforce.potential.Potential` (one
neighbour graph for all systems of a state, reused with a skin; the compiled
backend) to the engine's ``force_fn(state) -> (energy, forces)``.
"""

from __future__ import annotations

import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.md.state import MDState
from equiforce.models.base import PotentialModel
from equiforce.nn.scatter import scatter_sum
from equiforce.potential import Potential


class ModelForceField:
    """``force_fn`` for a potential model; works for batches of systems.

    A thin adapter over :class:`equiforce.potential.Potential`, which owns the
    neighbour list (one graph for all systems of a state, reused with a skin),
    the dtype and the compiled backend.

    Args:
        model: any :class:`PotentialModel` (put in eval mode), or a
            :class:`Potential` (then the other arguments are ignored).
        skin: neighbour-list skin, Å (0 rebuilds at every call).
        dtype: model compute dtype (default: the model's parameter dtype).
        compile: use the compiled energy+forces path
            (:class:`equiforce.accel.compiled.CompiledPotential`); ``None`` compiles
            once ``compile_after`` eager calls have run (short runs stay eager).
        compile_after: eager calls before compiling when ``compile`` is None.

    Attributes:
        potential: the :class:`Potential` doing the work.
        charge: (n_systems,) total charge of each system, e, for models that
            read it (SO3LR); None: neutral. ``spin``: the same for the spin S.
            :meth:`set_totals` fills both from the systems' ``atoms.info``.
    """

    charge: torch.Tensor | None = None
    spin: torch.Tensor | None = None

    def __init__(
        self,
        model: PotentialModel | Potential,
        skin: float = 0.5,
        dtype: torch.dtype | None = None,
        compile: bool | None = None,
        compile_after: int = 20,
    ) -> None:
        # device=None: the model's own device
        self.potential = Potential.wrap(
            model, dtype=dtype, skin=skin, compile=compile, compile_after=compile_after
        )
        #: all outputs of the last call (an ensemble's ``forces_std``, ...)
        self.last_outputs: dict[str, torch.Tensor] | None = None

    def set_totals(self, systems: list) -> None:
        """Take each system's ``atoms.info['charge']``/``['spin']`` (missing: 0).

        Args:
            systems: the ``ase.Atoms`` of the state, in system order.
        """
        for name in (keys.CHARGE, keys.SPIN):
            values = [a.info.get(name) for a in systems]
            given = any(v is not None for v in values)
            totals = [0.0 if v is None else float(v) for v in values]
            setattr(self, name, torch.tensor(totals) if given else None)

    @property
    def model(self) -> PotentialModel:
        """The model the potential evaluates."""
        return self.potential.model

    @property
    def graph(self) -> AtomicGraph | None:
        """The neighbour graph of the last call."""
        return self.potential.graph

    @property
    def n_builds(self) -> int:
        """Neighbour-list builds so far."""
        return self.potential.n_builds

    @property
    def n_calls(self) -> int:
        """Force evaluations so far."""
        return self.potential.n_calls

    def __call__(
        self, state: MDState, stress: bool = False
    ) -> tuple[torch.Tensor, ...]:
        """Energy (n_systems,) eV and forces (n_atoms, 3) eV/Å at the state.

        With ``stress=True`` also the stress (n_systems, 3, 3) eV/Å³.
        """
        out = self.potential.compute(
            state.positions,
            state.atomic_numbers,
            state.cell,
            state.pbc,
            state.system_idx if state.n_systems > 1 else None,
            stress=stress,
            charge=self.charge,
            spin=self.spin,
        )
        self.last_outputs = out
        if stress:
            return out[keys.ENERGY], out[keys.FORCES], out[keys.STRESS]
        return out[keys.ENERGY], out[keys.FORCES]


def set_total_charge(
    atoms, model: PotentialModel, charge: float | None, spin: float | None
) -> None:
    """Set ``atoms.info['charge']``/``['spin']`` from command-line values.

    Args:
        atoms: the structure (its file's values are replaced by given ones).
        model: the model; a given value it does not read is an error.
        charge: total charge, e (None: keep the file's, else neutral).
        spin: total spin S ≥ 0 (None: keep the file's, else 0).

    Raises:
        ValueError: negative spin, or a model without that input (naming the flag).
    """
    inputs = getattr(model, "graph_inputs", ())
    for name, value in ((keys.CHARGE, charge), (keys.SPIN, spin)):
        if value is None:
            continue
        if name not in inputs:
            label = getattr(model, "model_name", "") or type(model).__name__
            raise ValueError(
                f"--{name}: model {label!r} does not take a total {name} (SO3LR does)"
            )
        if name == keys.SPIN and value < 0:
            raise ValueError(f"--spin: must be >= 0 (total spin S), got {value}")
        atoms.info[name] = float(value)


class HarmonicTether:
    """Independent 3-D harmonic oscillators: E = Σ_i ½ k (r_i − r0_i)².

    Args:
        k: spring constant, eV/Å².
        reference: (n_atoms, 3) rest positions, Å.
    """

    def __init__(self, k: float, reference: torch.Tensor) -> None:
        self.k = float(k)
        self.reference = reference.clone()

    def __call__(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy (n_systems,) and forces (n_atoms, 3)."""
        d = state.positions - self.reference  # (n_atoms, 3)
        e_atom = 0.5 * self.k * (d * d).sum(-1)
        return scatter_sum(e_atom, state.system_idx, state.n_systems), -self.k * d


class HarmonicBonds:
    """Harmonic springs between atom pairs: E = Σ_b ½ k_b (|r_ij| − r0_b)².

    Args:
        pairs: (n_bonds, 2) int64 atom indices (global, in the state's order).
        k: (n_bonds,) spring constants, eV/Å².
        r0: (n_bonds,) rest lengths, Å.
    """

    def __init__(self, pairs: torch.Tensor, k: torch.Tensor, r0: torch.Tensor) -> None:
        self.pairs, self.k, self.r0 = pairs, k, r0

    def __call__(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy (n_systems,) and forces (n_atoms, 3)."""
        i, j = self.pairs[:, 0], self.pairs[:, 1]
        vec = state.positions[j] - state.positions[i]  # (n_bonds, 3)
        dist = vec.norm(dim=-1)
        stretch = dist - self.r0
        e_bond = 0.5 * self.k * stretch**2
        f_j = -(self.k * stretch / dist)[:, None] * vec  # force on j
        forces = torch.zeros_like(state.positions)
        forces.index_add_(0, j, f_j).index_add_(0, i, -f_j)
        energy = scatter_sum(e_bond, state.system_idx[i], state.n_systems)
        return energy, forces


class LennardJones:
    """Lennard-Jones pair potential for open systems (all pairs within a system).

    E = Σ_{i<j} 4ε[(σ/r)¹² − (σ/r)⁶], no cutoff; written with torch autograd.

    Args:
        epsilon: well depth, eV.
        sigma: σ, Å.
    """

    def __init__(self, epsilon: float = 0.0104, sigma: float = 3.4) -> None:
        self.epsilon, self.sigma = float(epsilon), float(sigma)

    def __call__(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy (n_systems,) and forces (n_atoms, 3)."""
        pos = state.positions.detach().requires_grad_(True)
        same = state.system_idx[:, None] == state.system_idx[None, :]
        same.fill_diagonal_(False)
        i, j = torch.nonzero(torch.triu(same), as_tuple=True)
        with torch.enable_grad():
            r = (pos[j] - pos[i]).norm(dim=-1)
            sr6 = (self.sigma / r) ** 6
            e_pair = 4.0 * self.epsilon * (sr6 * sr6 - sr6)
            energy = scatter_sum(e_pair, state.system_idx[i], state.n_systems)
            (grad,) = torch.autograd.grad(energy.sum(), pos)
        return energy.detach(), -grad
