"""NPT by stochastic cell rescaling, with a CSVR or Langevin thermostat.

Stochastic cell rescaling (M. Bernetti and G. Bussi, J. Chem. Phys. 153, 114107
(2020); the anisotropic form: M. Del Tatto, P. Raiteri, M. Bernetti and G. Bussi,
Appl. Sci. 12, 1139 (2022)) is a first-order barostat: the logarithm of the
volume follows an overdamped Langevin equation whose noise makes it sample the
isothermal-isobaric ensemble, and positions and momenta are scaled with the cell.

Isotropic (ε = ln V, Itô form)::

    dε = (β_T/τ_p) (P_int − P_0) dt + sqrt(2 k_B T β_T / (V τ_p)) dW
    P_int = (2K/3 − V tr(σ)/3) / V

Anisotropic (ε_a = log of the scale of Cartesian axis a, a = x, y, z)::

    dε_a = (β_T/(3τ_p)) (P_aa − P_0) dt + sqrt(2 k_B T β_T / (3 V τ_p)) dW_a
    P_aa = (Σ_i p_ia²/m_i) / V − σ_aa

with K the kinetic energy, σ the potential stress (eV/Å³, ASE sign) and β_T an
estimate of the isothermal compressibility (it sets only the coupling: the
volume relaxes in about τ_p when β_T is right). Both sample
ρ ∝ V exp(−β(U + K + P_0 V)) in the ε variables (positions and momenta held in
cell-scaled form), i.e. the NPT ensemble. Each step (fs) is::

    O(dt/2) · B(dt/2) · [ε step; scale; drift] · forces+stress · B(dt/2) · O(dt/2)

O is the thermostat (CSVR rescaling or Langevin friction and noise), B a half
kick. The ε step draws dε with the Euler–Maruyama rule at the current state;
positions, cell rows and momenta are then scaled per axis by s_a (s = e^{dε/3}
isotropic, e^{dε_a} anisotropic), r ← s r + ½(s + 1/s) v dt, p ← p/s, as in the
time-reversible scheme of the reference implementation (Bussi's SimpleMD). The
anisotropic mode scales the three Cartesian axes independently: exact for
orthorhombic boxes, and for triclinic ones it samples the family of cells
reachable by axis scaling (angles follow; no shear of the box).

``state.extra["heat"]`` collects the energy given to the baths: the thermostat's
heat, P_0 ΔV and the barostat's exchange, written as
k_B T [ln q(ε→ε') − ln q(ε'→ε) − ln(V'/V)] (q: the Gaussian transition density of
the ε step), so that ``conserved_energy`` = U + K + heat stays constant up to
integration error (an effective energy as in the reference).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch

from equiforce.md.config import MDConfig
from equiforce.md.integrators import (
    CSVR,
    _kick,
    _Stochastic,
    compute_forces,
)
from equiforce.md.state import ForceFn, MDState, returns_stress
from equiforce.nn.scatter import scatter_sum
from equiforce.units import AMU_A2_PER_FS2_TO_EV, pressure_factor


def volume(state: MDState) -> torch.Tensor:
    """(n_systems,) cell volume, Å³."""
    return torch.linalg.det(state.cell).abs()


def pressure_tensor_diagonal(state: MDState) -> torch.Tensor:
    """(n_systems, 3) P_aa = (Σ p_a²/m)/V − σ_aa, eV/Å³ (needs ``state.stress``)."""
    two_k = scatter_sum(
        state.momenta**2 / state.masses[:, None], state.system_idx, state.n_systems
    )
    two_k = two_k * AMU_A2_PER_FS2_TO_EV  # (S, 3) eV
    return two_k / volume(state)[:, None] - torch.diagonal(state.stress, dim1=1, dim2=2)


def instantaneous_pressure(state: MDState) -> torch.Tensor:
    """(n_systems,) P = (2K/3)/V − tr(σ)/3, eV/Å³ (needs ``state.stress``)."""
    return pressure_tensor_diagonal(state).mean(-1)


def _log_gauss(x: torch.Tensor, mean: torch.Tensor, var: torch.Tensor) -> torch.Tensor:
    """(n_systems,) log density of independent normals N(mean, var) at x, summed."""
    out = -((x - mean) ** 2) / (2.0 * var) - 0.5 * torch.log(2.0 * math.pi * var)
    return out if out.ndim == 1 else out.sum(-1)


@dataclass
class StochasticCellRescaling(_Stochastic):
    """NPT integrator: stochastic cell rescaling + CSVR or Langevin thermostat.

    Args:
        dt: timestep, fs.
        temperature: K (float or per system).
        seed: noise seed (thermostat and barostat share one generator).
        pressure: target pressure P_0, eV/Å³.
        taup: barostat time constant τ_p, fs.
        compressibility: β_T, Å³/eV (1/bar ÷ ``equiforce.units.pressure_factor("bar")``).
        coupling: "isotropic" (one volume) or "anisotropic" (three axes).
        thermostat: "csvr" or "langevin".
        taut: CSVR time constant, fs.
        friction: Langevin γ, 1/fs.
    """

    pressure: float = 0.0
    taup: float = 1000.0
    compressibility: float = 4.5e-5 / pressure_factor("bar")
    coupling: Literal["isotropic", "anisotropic"] = "isotropic"
    thermostat: Literal["csvr", "langevin"] = "csvr"
    taut: float = 100.0
    friction: float = 0.01
    _csvr: CSVR | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.coupling not in ("isotropic", "anisotropic"):
            raise ValueError(f"unknown barostat coupling {self.coupling!r}")
        if self.thermostat == "csvr":
            self._csvr = CSVR(self.dt, self.temperature, taut=self.taut)
            self._csvr.generator = self.generator  # one stream, one checkpoint entry
        elif self.thermostat != "langevin":
            raise ValueError(f"unknown NPT thermostat {self.thermostat!r}")

    def init(self, state: MDState, force_fn: ForceFn) -> MDState:
        """Check the system and the force provider; forces and stress."""
        if not bool(state.pbc.all()):
            raise ValueError(
                "NPT needs structures periodic in all three directions; "
                f"got pbc={state.pbc.tolist()}"
            )
        if not returns_stress(force_fn):
            raise TypeError(
                f"NPT needs the stress, but the force provider "
                f"{type(force_fn).__name__} has no 'stress' argument "
                "(see equiforce.md.state.ForceFn)"
            )
        if state.forces is None or state.stress is None:
            compute_forces(state, force_fn, stress=True)
        if self.thermostat == "langevin":
            state.dof = 3.0 * state.n_atoms_per_system().to(state.dtype)
        self._init_heat(state)
        return state

    # ------------------------------------------------------------- pieces
    def _thermostat(self, state: MDState, dt: float) -> None:
        if self._csvr is not None:
            self._csvr._rescale(state, dt)
            return
        self._langevin_o(state, dt, self.friction)

    def _drift_and_diffusion(self, state: MDState) -> tuple[torch.Tensor, torch.Tensor]:
        """Drift of ε ((S,) or (S, 3)) per fs and diffusion D (S,) per fs."""
        share = 1.0 if self.coupling == "isotropic" else 1.0 / 3.0
        rate = share * self.compressibility / self.taup
        p_axes = pressure_tensor_diagonal(state)  # (S, 3)
        p = p_axes.mean(-1) if self.coupling == "isotropic" else p_axes
        diffusion = rate * self._kt(state) / volume(state)  # (S,)
        return rate * (p - self.pressure), diffusion

    def _scale_and_drift(self, state: MDState, scale: torch.Tensor, dt: float) -> None:
        """Scale cell, positions and momenta by ``scale`` (S, 3) and drift by dt."""
        s = scale[state.system_idx]  # (n_atoms, 3)
        velocity = state.momenta / state.masses[:, None]
        state.positions.mul_(s).add_(velocity * (0.5 * (s + 1.0 / s)) * dt)
        state.momenta.div_(s)
        state.cell.mul_(scale[:, None, :])  # component a of every lattice row

    def step(self, state: MDState, force_fn: ForceFn) -> MDState:
        """O · B · (cell step, scale, drift) · forces · B · O; see the module."""
        dt, half = self.dt, 0.5 * self.dt
        self._thermostat(state, half)
        _kick(state, half)
        drift0, diff0 = self._drift_and_diffusion(state)
        v0 = volume(state)
        var0 = 2.0 * diff0 * dt
        if drift0.ndim == 2:
            var0 = var0[:, None].expand_as(drift0)
        d_eps = drift0 * dt + torch.sqrt(var0) * self._randn(drift0.shape, state)
        log_fwd = _log_gauss(d_eps, drift0 * dt, var0)
        scale = (
            torch.exp(d_eps / 3.0)[:, None].expand(-1, 3)
            if d_eps.ndim == 1
            else torch.exp(d_eps)
        )
        self._scale_and_drift(state, scale.contiguous(), dt)
        compute_forces(state, force_fn, stress=True)
        drift1, diff1 = self._drift_and_diffusion(state)
        v1 = volume(state)
        var1 = 2.0 * diff1 * dt
        if drift1.ndim == 2:
            var1 = var1[:, None].expand_as(drift1)
        log_bwd = _log_gauss(-d_eps, drift1 * dt, var1)
        kt = self._kt(state)
        state.extra["heat"] += kt * (
            log_fwd - log_bwd - torch.log(v1 / v0)
        ) + self.pressure * (v1 - v0)
        _kick(state, half)
        self._thermostat(state, half)
        state.step += 1
        return state


def make_npt_integrator(config: MDConfig, seed: int) -> StochasticCellRescaling:
    """The NPT integrator of ``config`` (pressure in bar, compressibility in 1/bar).

    Args:
        config: MD settings with ``ensemble: npt``.
        seed: noise seed.
    """
    bar = pressure_factor("bar")
    return StochasticCellRescaling(
        config.timestep,
        config.temperature,
        seed=seed,
        pressure=config.pressure * bar,
        taup=config.taup,
        compressibility=config.compressibility / bar,
        coupling=config.barostat,
        thermostat=config.npt_thermostat,
        taut=config.taut,
        friction=config.friction,
    )
