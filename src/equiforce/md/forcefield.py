"""Force providers: models with a skinned neighbour list, and analytic potentials.

Analytic potentials (harmonic, Lennard-Jones) serve the physics tests.

:class:`ModelForceField` builds one :class:`AtomicGraph` for all systems of a state
(``AtomicGraph.collate``) with the cutoff ``model.cutoff + skin`` and reuses its
edges until some atom has moved more than ``skin/2`` since the last build (then no
pair can have entered the cutoff sphere unseen). Pairs in the skin shell contribute
exactly zero because every model's cutoff function vanishes beyond ``model.cutoff``,
so reuse changes the cost, not the forces.
"""

from __future__ import annotations

import numpy as np
import torch

from equiforce import keys
from equiforce.data.graph import AtomicGraph
from equiforce.md.state import MDState
from equiforce.models.base import PotentialModel
from equiforce.models.compiled import LazyCompile
from equiforce.nn.scatter import scatter_sum


class ModelForceField:
    """``force_fn`` for a potential model; works for batches of systems.

    Args:
        model: any :class:`PotentialModel` (put in eval mode).
        skin: neighbour-list skin, Å (0 rebuilds at every call).
        dtype: model compute dtype (default: the model's parameter dtype).
        compile: use the compiled energy+forces path
            (:class:`equiforce.models.compiled.CompiledPotential`); ``None`` compiles
            once ``compile_after`` eager calls have run (short runs stay eager).
        compile_after: eager calls before compiling when ``compile`` is None.

    Attributes:
        n_builds: number of neighbour-list builds so far.
        n_calls: number of force evaluations so far.
    """

    def __init__(
        self,
        model: PotentialModel,
        skin: float = 0.5,
        dtype: torch.dtype | None = None,
        compile: bool | None = None,
        compile_after: int = 20,
    ) -> None:
        self.model = model.eval()
        self.dtype = dtype or next(iter(model.parameters())).dtype
        self.model.to(self.dtype)
        self.skin = float(skin)
        self.graph: AtomicGraph | None = None
        self._ref_positions: torch.Tensor | None = None
        self.n_builds = 0
        self.n_calls = 0
        self._compiled = LazyCompile(self.model, compile, compile_after)

    def _needs_rebuild(self, positions: torch.Tensor) -> bool:
        if self.graph is None or self._ref_positions.shape != positions.shape:
            return True
        if self.skin <= 0:
            return True
        moved2 = ((positions - self._ref_positions) ** 2).sum(-1).max()
        return bool(moved2 > (0.5 * self.skin) ** 2)  # one host sync per step

    def build(self, state: MDState) -> AtomicGraph:
        """Build the neighbour graph of all systems at the current positions."""
        pos = state.positions.detach().cpu().double().numpy()
        if not np.isfinite(pos).all():
            raise FloatingPointError("non-finite positions")
        cell = state.cell.detach().cpu().double().numpy()
        pbc = state.pbc.cpu().numpy()
        idx = state.system_idx.cpu().numpy()
        z = state.atomic_numbers.cpu().numpy()
        graphs = []
        for s in range(state.n_systems):
            sel = idx == s
            graphs.append(
                AtomicGraph.from_arrays(
                    pos[sel],
                    z[sel],
                    self.model.cutoff + self.skin,
                    cell=cell[s],
                    pbc=pbc[s],
                    dtype=self.dtype,
                )
            )
        graph = AtomicGraph.collate(graphs).to(state.device)
        self.graph = graph
        self._ref_positions = state.positions.detach().clone()
        self.n_builds += 1
        return graph

    def __call__(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        """Energy (n_systems,) eV and forces (n_atoms, 3) eV/Å at the state."""
        if self._needs_rebuild(state.positions):
            self.build(state)
        graph = self.graph
        graph.positions = state.positions.to(self.dtype)  # reuse the topology
        self.n_calls += 1
        compiled = self._compiled(self.n_calls)
        if compiled is not None:
            out = compiled(graph)
        else:
            out = self.model(graph, compute_forces=True)
        return out[keys.ENERGY], out[keys.FORCES]


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
