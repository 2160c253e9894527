"""Integrators as ``init``/``step`` pairs over an explicit :class:`MDState`.

Every integrator takes a force provider ``force_fn(state) -> (energy (n_systems,),
forces (n_atoms, 3))`` at each call, so the same code runs with analytic test
potentials and with any :class:`~equiforce.models.base.PotentialModel` (through
:class:`equiforce.md.forcefield.ModelForceField`). Steps update the state in place
(no re-allocation in the hot loop) and return it.

- :class:`VelocityVerlet`: NVE.
- :class:`Langevin`: NVT, BAOAB splitting (Leimkuhler & Matthews 2013), friction γ.
- :class:`CSVR`: NVT, Bussi–Donadio–Parrinello stochastic velocity rescaling
  (J. Chem. Phys. 126, 014101, 2007), applied for dt/2 before and after a
  velocity-Verlet step.
- :class:`NoseHooverChain`: NVT, Martyna–Klein–Tuckerman chain of length M
  (Trotter splitting NHC(dt/2) · VV(dt) · NHC(dt/2)), Q₁ = N_f k_B T τ²,
  Q_j = k_B T τ².

Each thermostat accumulates the energy it exchanged (``state.extra["heat"]``,
(n_systems,) eV), so ``conserved_energy`` is constant up to integration error.
Temperatures may be one float or one value per system.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from equiforce.md.state import EV_PER_AMU_A2_FS2, ForceFn, MDState
from equiforce.units import AMU_A2_PER_FS2_TO_EV, KB_EV

Temperature = float | Sequence[float] | torch.Tensor


def _per_system(value: Temperature, state: MDState) -> torch.Tensor:
    t = torch.as_tensor(value, dtype=state.dtype, device=state.device)
    return t.expand(state.n_systems).clone() if t.ndim == 0 else t.reshape(-1)


def compute_forces(state: MDState, force_fn: ForceFn, stress: bool = False) -> MDState:
    """Evaluate ``force_fn`` and store energy, forces (and stress) on the state.

    Args:
        state: updated in place.
        force_fn: the force provider.
        stress: also ask for the stress (``force_fn(state, stress=True)``).
    """
    if stress:
        energy, forces, sigma = force_fn(state, stress=True)
        state.stress = sigma.to(state.dtype)
    else:
        energy, forces = force_fn(state)
    state.energy = energy.to(state.dtype)
    state.forces = forces.to(state.dtype)
    return state


def _kick(state: MDState, dt: float) -> None:
    """P ← p + dt·F (F in eV/Å converted to amu·Å/fs²)."""
    state.momenta.add_(state.forces, alpha=dt * EV_PER_AMU_A2_FS2)


def _drift(state: MDState, dt: float) -> None:
    """R ← r + dt·p/m."""
    state.positions.addcdiv_(state.momenta, state.masses[:, None], value=dt)


def conserved_energy(state: MDState) -> torch.Tensor:
    """(n_systems,) E_pot + E_kin + thermostat energy, eV (constant if exact)."""
    total = state.energy + state.kinetic_energy()
    if "heat" in state.extra:
        total = total + state.extra["heat"]
    return total


@dataclass
class VelocityVerlet:
    """NVE velocity Verlet.

    Args:
        dt: timestep, fs.
    """

    dt: float

    def init(self, state: MDState, force_fn: ForceFn) -> MDState:
        """Compute initial forces if missing."""
        if state.forces is None:
            compute_forces(state, force_fn)
        return state

    def step(self, state: MDState, force_fn: ForceFn) -> MDState:
        """One step: half kick, drift, forces, half kick."""
        _kick(state, 0.5 * self.dt)
        _drift(state, self.dt)
        compute_forces(state, force_fn)
        _kick(state, 0.5 * self.dt)
        state.step += 1
        return state

    def rng_state(self) -> torch.Tensor | None:
        """Deterministic: no random state."""
        return None

    def set_rng_state(self, rng: torch.Tensor | None) -> None:
        """Deterministic: nothing to restore."""


@dataclass
class _Stochastic:
    """Common parts of the stochastic thermostats: a seeded torch generator."""

    dt: float
    temperature: Temperature
    seed: int = 0
    generator: torch.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.generator = torch.Generator()
        self.generator.manual_seed(int(self.seed))

    def rng_state(self) -> torch.Tensor:
        """State of the noise generator (for checkpoints)."""
        return self.generator.get_state()

    def set_rng_state(self, rng: torch.Tensor) -> None:
        """Restore the noise generator."""
        self.generator.set_state(rng)

    def _randn(self, shape, state: MDState) -> torch.Tensor:
        return torch.randn(shape, generator=self.generator, dtype=state.dtype).to(
            state.device
        )

    def _kt(self, state: MDState) -> torch.Tensor:
        """(n_systems,) k_B T in eV."""
        return KB_EV * _per_system(self.temperature, state)

    def _langevin_o(self, state: MDState, dt: float, friction: float) -> None:
        """Exact Ornstein-Uhlenbeck step of the momenta ("O" of BAOAB), heat booked."""
        k_before = state.kinetic_energy()
        c1 = math.exp(-friction * dt)
        kt = self._kt(state) / AMU_A2_PER_FS2_TO_EV  # (S,) amu·Å²/fs²
        sigma = torch.sqrt((1.0 - c1 * c1) * state.masses * kt[state.system_idx])
        noise = self._randn(state.momenta.shape, state)
        state.momenta.mul_(c1).addcmul_(noise, sigma[:, None])
        state.extra["heat"] += k_before - state.kinetic_energy()

    def _init_heat(self, state: MDState) -> None:
        state.extra.setdefault("heat", state.energy.new_zeros(state.n_systems))


@dataclass
class Langevin(_Stochastic):
    """Langevin dynamics with the BAOAB splitting.

    Args:
        dt: timestep, fs.
        temperature: K (float or per system).
        friction: γ in 1/fs (0.01 fs⁻¹ = 10 ps⁻¹).
        seed: noise seed.
    """

    friction: float = 0.01

    def init(self, state: MDState, force_fn: ForceFn) -> MDState:
        """Forces; all 3N degrees of freedom are thermalised."""
        if state.forces is None:
            compute_forces(state, force_fn)
        state.dof = 3.0 * state.n_atoms_per_system().to(state.dtype)
        self._init_heat(state)
        return state

    def step(self, state: MDState, force_fn: ForceFn) -> MDState:
        """B A O A B."""
        dt = self.dt
        _kick(state, 0.5 * dt)
        _drift(state, 0.5 * dt)
        self._langevin_o(state, dt, self.friction)
        _drift(state, 0.5 * dt)
        compute_forces(state, force_fn)
        _kick(state, 0.5 * dt)
        state.step += 1
        return state


@dataclass
class CSVR(_Stochastic):
    """Bussi–Donadio–Parrinello canonical sampling through velocity rescaling.

    Args:
        dt: timestep, fs.
        temperature: K (float or per system).
        taut: thermostat time constant τ, fs.
        seed: noise seed.
    """

    taut: float = 100.0
    _mask: torch.Tensor | None = field(default=None, init=False, repr=False)

    def init(self, state: MDState, force_fn: ForceFn) -> MDState:
        """Forces and the mask that draws N_f − 1 Gaussians per system."""
        if state.forces is None:
            compute_forces(state, force_fn)
        self._init_heat(state)
        self._mask = None
        return state

    def _noise_mask(self, state: MDState) -> torch.Tensor:
        """(n_atoms*3,) bool: per system, the last N_f − 1 components are True."""
        comp_sys = state.system_idx.repeat_interleave(3)  # (3 n_atoms,)
        n3 = torch.bincount(comp_sys, minlength=state.n_systems)
        start = torch.cumsum(n3, 0) - n3
        rank = torch.arange(comp_sys.numel(), device=state.device) - start[comp_sys]
        skip = n3 - (state.dof.round().long() - 1)  # components left out
        return rank >= skip[comp_sys]

    def _rescale(self, state: MDState, dt: float) -> None:
        if self._mask is None:
            self._mask = self._noise_mask(state)
        c = math.exp(-dt / self.taut)
        nf = state.dof
        kk = state.kinetic_energy().clamp(min=1e-300)  # (S,)
        sigma = 0.5 * nf * self._kt(state)  # target mean K
        r1 = self._randn((state.n_systems,), state)
        r = self._randn((state.n_atoms * 3,), state) * self._mask
        comp_sys = state.system_idx.repeat_interleave(3)
        chi2 = torch.zeros_like(kk).index_add_(0, comp_sys, r * r)
        k_new = (
            kk
            + (1.0 - c) * (sigma * (chi2 + r1 * r1) / nf - kk)
            + 2.0 * r1 * torch.sqrt(kk * sigma / nf * (1.0 - c) * c)
        )
        alpha = torch.sqrt(k_new / kk)
        state.momenta.mul_(alpha[state.system_idx, None])
        state.extra["heat"] += kk - k_new

    def step(self, state: MDState, force_fn: ForceFn) -> MDState:
        """Rescale(dt/2) · velocity Verlet · rescale(dt/2)."""
        self._rescale(state, 0.5 * self.dt)
        _kick(state, 0.5 * self.dt)
        _drift(state, self.dt)
        compute_forces(state, force_fn)
        _kick(state, 0.5 * self.dt)
        self._rescale(state, 0.5 * self.dt)
        state.step += 1
        return state


@dataclass
class NoseHooverChain:
    """Nosé–Hoover chain thermostat (deterministic).

    Args:
        dt: timestep, fs.
        temperature: K (float or per system).
        tdamp: thermostat time constant τ, fs (common choice: 100·dt).
        chain_length: M (1 gives a single Nosé–Hoover thermostat).
    """

    dt: float
    temperature: Temperature
    tdamp: float = 50.0
    chain_length: int = 3

    def init(self, state: MDState, force_fn: ForceFn) -> MDState:
        """Forces and chain variables (positions η, velocities v_η, masses Q)."""
        if state.forces is None:
            compute_forces(state, force_fn)
        shape = (state.n_systems, self.chain_length)
        for key in ("nhc_eta", "nhc_v"):
            state.extra.setdefault(key, torch.zeros(shape, dtype=state.dtype))
        kt = KB_EV * _per_system(self.temperature, state)
        q = (kt * self.tdamp**2)[:, None].repeat(1, self.chain_length)
        q[:, 0] *= state.dof
        state.extra["nhc_q"] = q
        state.extra["heat"] = self._chain_energy(state)
        return state

    def _chain_energy(self, state: MDState) -> torch.Tensor:
        eta, v, q = (state.extra[k] for k in ("nhc_eta", "nhc_v", "nhc_q"))
        kt = KB_EV * _per_system(self.temperature, state)
        pot = state.dof * kt * eta[:, 0] + kt * eta[:, 1:].sum(-1)
        return 0.5 * (q * v * v).sum(-1) + pot

    def _half_step(self, state: MDState) -> None:
        d = 0.5 * self.dt
        v, q, eta = state.extra["nhc_v"], state.extra["nhc_q"], state.extra["nhc_eta"]
        kt = KB_EV * _per_system(self.temperature, state)
        k2 = 2.0 * state.kinetic_energy()
        m = self.chain_length

        def force(j: int) -> torch.Tensor:
            if j == 0:
                return (k2 - state.dof * kt) / q[:, 0]
            return (q[:, j - 1] * v[:, j - 1] ** 2 - kt) / q[:, j]

        def update(j: int) -> None:
            if j < m - 1:
                v[:, j] *= torch.exp(-0.25 * d * v[:, j + 1])
            v[:, j] += 0.5 * d * force(j)
            if j < m - 1:
                v[:, j] *= torch.exp(-0.25 * d * v[:, j + 1])

        for j in reversed(range(m)):
            update(j)
        scale = torch.exp(-d * v[:, 0])  # (S,)
        state.momenta.mul_(scale[state.system_idx, None])
        k2 = k2 * scale * scale
        eta += d * v
        for j in range(m):
            update(j)

    def step(self, state: MDState, force_fn: ForceFn) -> MDState:
        """NHC(dt/2) · velocity Verlet · NHC(dt/2)."""
        self._half_step(state)
        _kick(state, 0.5 * self.dt)
        _drift(state, self.dt)
        compute_forces(state, force_fn)
        _kick(state, 0.5 * self.dt)
        self._half_step(state)
        state.extra["heat"] = self._chain_energy(state)
        state.step += 1
        return state

    def rng_state(self) -> torch.Tensor | None:
        """Deterministic: no random state."""
        return None

    def set_rng_state(self, rng: torch.Tensor | None) -> None:
        """Deterministic: nothing to restore."""


Integrator = VelocityVerlet | Langevin | CSVR | NoseHooverChain


def make_integrator(
    ensemble: str,
    dt: float,
    temperature: Temperature = 300.0,
    *,
    friction: float = 0.01,
    taut: float = 100.0,
    tdamp: float | None = None,
    chain_length: int = 3,
    seed: int = 0,
) -> Integrator:
    """Integrator for ``ensemble`` in {"nve", "langevin", "csvr", "nhc"}.

    Args:
        ensemble: ensemble name.
        dt: timestep, fs.
        temperature: target temperature, K (ignored for NVE).
        friction: Langevin γ, 1/fs.
        taut: CSVR time constant, fs.
        tdamp: NHC time constant, fs (default 100·dt).
        chain_length: NHC chain length.
        seed: noise seed of the stochastic thermostats.
    """
    if ensemble == "nve":
        return VelocityVerlet(dt)
    if ensemble == "langevin":
        return Langevin(dt, temperature, seed=seed, friction=friction)
    if ensemble == "csvr":
        return CSVR(dt, temperature, seed=seed, taut=taut)
    if ensemble == "nhc":
        tau = 100.0 * dt if tdamp is None else tdamp
        return NoseHooverChain(dt, temperature, tdamp=tau, chain_length=chain_length)
    raise ValueError(
        f"unknown ensemble {ensemble!r}; choose nve, langevin, csvr or nhc"
    )
