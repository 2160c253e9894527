"""``MDState``: the explicit state of one or more independent MD replicas.

Units: positions Å, momenta amu·Å/fs, masses amu, time fs, energies eV. Kinetic
energy K = Σ p²/(2m) is converted from amu·Å²/fs² to eV with
:data:`equiforce.units.AMU_A2_PER_FS2_TO_EV`.

Several independent systems (replicas or different molecules) live in one state,
concatenated along the atom axis; ``system_idx`` says which system each atom
belongs to, exactly like ``AtomicGraph.graph_index``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from equiforce.nn.scatter import scatter_sum
from equiforce.units import AMU_A2_PER_FS2_TO_EV, KB_EV

#: A force provider: state -> (energy (n_systems,) eV, forces (n_atoms, 3) eV/Å).
#: Providers that can also return the stress (needed by the NPT integrator)
#: accept a keyword ``stress``: ``force_fn(state, stress=True)`` returns
#: (energy, forces, stress (n_systems, 3, 3) eV/Å³, σ = (1/V) ∂E/∂ε, ASE's sign);
#: with ``stress=False`` (and when called without it) they return the pair.
#: Providers without the keyword keep working with every other integrator.
ForceFn = Callable[["MDState"], tuple[torch.Tensor, torch.Tensor]]


def returns_stress(force_fn: ForceFn) -> bool:
    """Whether ``force_fn`` accepts ``stress=True`` (see :data:`ForceFn`)."""
    import inspect

    try:
        params = inspect.signature(force_fn).parameters
    except (TypeError, ValueError):
        return False
    return "stress" in params


#: Force eV/Å divided by mass amu -> acceleration Å/fs².
EV_PER_AMU_A2_FS2: float = 1.0 / AMU_A2_PER_FS2_TO_EV


@dataclass
class MDState:
    """Positions, momenta and everything an integrator step needs.

    Attributes:
        positions: (n_atoms, 3) Å, unwrapped (periodic images are the neighbour
            list's job).
        momenta: (n_atoms, 3) amu·Å/fs.
        masses: (n_atoms,) amu.
        atomic_numbers: (n_atoms,) int64.
        cell: (n_systems, 3, 3) Å, rows; zeros for open systems.
        pbc: (n_systems, 3) bool.
        system_idx: (n_atoms,) int64, sorted.
        dof: (n_systems,) float, kinetic degrees of freedom (for temperatures).
        energy: (n_systems,) eV, potential energy at ``positions``.
        forces: (n_atoms, 3) eV/Å at ``positions``.
        stress: (n_systems, 3, 3) eV/Å³ at ``positions`` (potential part only;
            computed by integrators that need it, else None).
        step: number of integrator steps taken.
        extra: integrator variables (thermostat chains, accumulated heat), each a
            tensor; saved in checkpoints.
    """

    positions: torch.Tensor
    momenta: torch.Tensor
    masses: torch.Tensor
    atomic_numbers: torch.Tensor
    cell: torch.Tensor
    pbc: torch.Tensor
    system_idx: torch.Tensor
    dof: torch.Tensor
    energy: torch.Tensor | None = None
    forces: torch.Tensor | None = None
    stress: torch.Tensor | None = None
    step: int = 0
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    # -------------------------------------------------------------- sizes
    @property
    def n_atoms(self) -> int:
        """Total number of atoms over all systems."""
        return int(self.positions.shape[0])

    @property
    def n_systems(self) -> int:
        """Number of independent systems."""
        return int(self.cell.shape[0])

    @property
    def dtype(self) -> torch.dtype:
        """Integration dtype."""
        return self.positions.dtype

    @property
    def device(self) -> torch.device:
        """Device of the state tensors."""
        return self.positions.device

    # ------------------------------------------------------------ derived
    @property
    def velocities(self) -> torch.Tensor:
        """(n_atoms, 3) Å/fs."""
        return self.momenta / self.masses[:, None]

    def kinetic_energy(self) -> torch.Tensor:
        """(n_systems,) kinetic energy in eV."""
        per_atom = (self.momenta**2).sum(-1) / (2.0 * self.masses)  # (n_atoms,)
        k = scatter_sum(per_atom, self.system_idx, self.n_systems)
        return k * AMU_A2_PER_FS2_TO_EV

    def temperature(self) -> torch.Tensor:
        """(n_systems,) instantaneous temperature in K, 2K/(dof·k_B)."""
        return 2.0 * self.kinetic_energy() / (self.dof * KB_EV)

    def n_atoms_per_system(self) -> torch.Tensor:
        """(n_systems,) int64 atom counts."""
        return torch.bincount(self.system_idx, minlength=self.n_systems)

    def clone(self) -> MDState:
        """A deep copy (tensors cloned)."""

        def c(t):
            return None if t is None else t.clone()

        return MDState(
            positions=c(self.positions),
            momenta=c(self.momenta),
            masses=c(self.masses),
            atomic_numbers=c(self.atomic_numbers),
            cell=c(self.cell),
            pbc=c(self.pbc),
            system_idx=c(self.system_idx),
            dof=c(self.dof),
            energy=c(self.energy),
            forces=c(self.forces),
            stress=c(self.stress),
            step=self.step,
            extra={k: v.clone() for k, v in self.extra.items()},
        )

    def state_dict(self) -> dict:
        """Plain dict of tensors and ints (for ``torch.save(weights_only=True)``)."""
        d = {
            k: getattr(self, k)
            for k in ("positions", "momenta", "masses", "atomic_numbers", "cell", "pbc")
        }
        d.update(system_idx=self.system_idx, dof=self.dof, step=self.step)
        d.update(energy=self.energy, forces=self.forces, extra=dict(self.extra))
        if self.stress is not None:  # older checkpoints have no entry
            d["stress"] = self.stress
        return {
            k: (v.detach().cpu() if torch.is_tensor(v) else v) for k, v in d.items()
        }

    @classmethod
    def from_state_dict(cls, d: dict, device: str | torch.device = "cpu") -> MDState:
        """Inverse of :meth:`state_dict`."""

        def mv(v):
            return v.to(device) if torch.is_tensor(v) else v

        kw = {k: mv(v) for k, v in d.items() if k != "extra"}
        kw["extra"] = {k: mv(v) for k, v in d.get("extra", {}).items()}
        return cls(**kw)


def state_from_atoms(
    atoms_list: Sequence,
    dtype: torch.dtype = torch.float64,
    device: str | torch.device = "cpu",
    masses: Sequence[np.ndarray] | None = None,
) -> MDState:
    """Build a state (zero momenta unless the atoms carry some) from ``ase.Atoms``.

    Args:
        atoms_list: one ``ase.Atoms`` per system.
        dtype: integration dtype (float64 recommended).
        device: torch device.
        masses: optional per-system mass arrays (amu) overriding ASE's.
    """
    if not len(atoms_list):
        raise ValueError("state_from_atoms needs at least one structure")
    pos, mom, mass, z, cell, pbc, idx = [], [], [], [], [], [], []
    for s, atoms in enumerate(atoms_list):
        m = atoms.get_masses() if masses is None else np.asarray(masses[s], float)
        pos.append(atoms.get_positions())
        # ASE momenta are amu·Å/ASE-time; convert velocities to Å/fs.
        vel = atoms.get_velocities() * _ase_velocity_to_a_per_fs()
        mom.append(vel * m[:, None])
        mass.append(m)
        z.append(atoms.get_atomic_numbers())
        cell.append(np.asarray(atoms.get_cell()))
        pbc.append(atoms.get_pbc())
        idx.append(np.full(len(atoms), s))

    def t(x, dt=dtype):
        return torch.as_tensor(np.concatenate(x), dtype=dt, device=device)

    n = torch.as_tensor([len(a) for a in atoms_list], dtype=dtype, device=device)
    return MDState(
        positions=t(pos),
        momenta=t(mom),
        masses=t(mass),
        atomic_numbers=t(z, torch.long),
        cell=torch.as_tensor(np.stack(cell), dtype=dtype, device=device),
        pbc=torch.as_tensor(np.stack(pbc), dtype=torch.bool, device=device),
        system_idx=t(idx, torch.long),
        dof=3.0 * n,
    )


def _ase_velocity_to_a_per_fs() -> float:
    from ase import units

    return units.fs  # v[Å/ASE-time] · (ASE-time per fs) = Å/fs


def state_to_atoms(state: MDState) -> list:
    """One ``ase.Atoms`` per system with positions and velocities (ASE units)."""
    from ase import Atoms, units

    out = []
    vel = (state.velocities / units.fs).detach().cpu().double().numpy()
    pos = state.positions.detach().cpu().double().numpy()
    idx = state.system_idx.cpu().numpy()
    for s in range(state.n_systems):
        sel = idx == s
        atoms = Atoms(
            numbers=state.atomic_numbers[torch.as_tensor(sel)].cpu().numpy(),
            positions=pos[sel],
            cell=state.cell[s].detach().cpu().double().numpy(),
            pbc=state.pbc[s].cpu().numpy(),
            masses=state.masses[torch.as_tensor(sel)].detach().cpu().double().numpy(),
        )
        atoms.set_velocities(vel[sel])
        out.append(atoms)
    return out


# ----------------------------------------------------------------- velocities
def remove_com_momentum(state: MDState) -> None:
    """Subtract each system's centre-of-mass velocity (in place)."""
    p_tot = scatter_sum(state.momenta, state.system_idx, state.n_systems)  # (S, 3)
    m_tot = scatter_sum(state.masses, state.system_idx, state.n_systems)  # (S,)
    v_com = p_tot / m_tot[:, None]
    state.momenta -= state.masses[:, None] * v_com[state.system_idx]


def remove_angular_momentum(state: MDState) -> None:
    """Remove each system's rigid rotation about its centre of mass (in place).

    Solves I ω = L per system and subtracts m (ω × r) from the momenta. Systems
    with a singular inertia tensor (linear molecules) use the pseudo-inverse.
    """
    idx, s = state.system_idx, state.n_systems
    m = state.masses[:, None]
    m_tot = scatter_sum(state.masses, idx, s)
    com = scatter_sum(m * state.positions, idx, s) / m_tot[:, None]  # (S, 3)
    r = state.positions - com[idx]  # (n_atoms, 3)
    ang = scatter_sum(torch.linalg.cross(r, state.momenta), idx, s)  # (S, 3)
    r2 = (r**2).sum(-1)
    eye = torch.eye(3, dtype=r.dtype, device=r.device)
    per_atom = m[:, :, None] * (r2[:, None, None] * eye - r[:, :, None] * r[:, None, :])
    inertia = scatter_sum(per_atom.reshape(-1, 9), idx, s).reshape(s, 3, 3)
    omega = (torch.linalg.pinv(inertia) @ ang[:, :, None])[..., 0]  # (S, 3)
    state.momenta -= m * torch.linalg.cross(omega[idx], r)


def maxwell_boltzmann(
    state: MDState,
    temperature: float,
    generator: torch.Generator | None = None,
    remove_com: bool = True,
    remove_rotation: bool | None = None,
    rescale: bool = True,
) -> MDState:
    """Draw momenta from the Maxwell–Boltzmann distribution at ``temperature`` K.

    Sets ``state.dof`` = 3N − 3 (COM removed) − 3 (rotation removed); rotation is
    removed by default for open (non-periodic) systems with more than two atoms.

    Args:
        state: modified in place and returned.
        temperature: K.
        generator: torch RNG (for reproducible draws).
        remove_com: zero the total momentum of each system.
        remove_rotation: zero the angular momentum (default: open systems).
        rescale: rescale so that each system's instantaneous T equals ``temperature``
            exactly (after the removals).
    """
    kt = KB_EV * temperature / AMU_A2_PER_FS2_TO_EV  # amu·Å²/fs²
    # drawn on the generator's device (a CPU generator for a CUDA state too: the
    # same seed gives the same velocities on either device)
    noise = torch.randn(
        state.positions.shape,
        generator=generator,
        dtype=state.dtype,
        device=generator.device if generator is not None else state.device,
    ).to(state.device)
    state.momenta = noise * torch.sqrt(state.masses * kt)[:, None]
    n = state.n_atoms_per_system().to(state.dtype)
    dof = 3.0 * n
    if remove_com:
        remove_com_momentum(state)
        dof = dof - 3.0
    if remove_rotation is None:
        remove_rotation = not bool(state.pbc.any()) and bool((n > 2).all())
    if remove_rotation:
        remove_angular_momentum(state)
        dof = dof - 3.0
    state.dof = dof.clamp(min=1.0)
    if rescale and temperature > 0:
        scale = torch.sqrt(temperature / state.temperature().clamp(min=1e-30))
        state.momenta *= scale[state.system_idx, None]
    return state


def replicate(state: MDState, n: int) -> MDState:
    """``n`` copies of a (single- or multi-system) state batched into one."""
    reps = [state] * n
    s = state.n_systems
    cat = torch.cat
    idx = cat([r.system_idx + k * s for k, r in enumerate(reps)])
    return MDState(
        positions=cat([r.positions for r in reps]).clone(),
        momenta=cat([r.momenta for r in reps]).clone(),
        masses=cat([r.masses for r in reps]),
        atomic_numbers=cat([r.atomic_numbers for r in reps]),
        cell=cat([r.cell for r in reps]),
        pbc=cat([r.pbc for r in reps]),
        system_idx=idx,
        dof=cat([r.dof for r in reps]),
    )
