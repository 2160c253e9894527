"""Run MD with outputs, progress, SIGINT safety and resume.

Files in ``out_dir``:

- ``trajectory.xyz`` / ``trajectory.h5`` (``trajectory_<k>.*`` per replica when
  several systems run in one batch), appended every ``output_interval`` steps;
- ``thermo.csv``: step, time, potential, kinetic, total, conserved energy, T
  (NPT runs add volume, pressure and cell lengths);
- ``md_state.pt``: the full state (positions, momenta, forces, thermostat
  variables), RNG state and config, replaced atomically at a frame at most every
  ``checkpoint_interval_s`` seconds of wall time (default 1 s), when the run stops,
  and after the trajectory has been flushed up to that frame. ``resume`` reloads it
  and cuts the trajectory and thermo files back to its step, so a run killed at any
  moment continues exactly from its last checkpoint and recomputes at most that
  interval. (A checkpoint and an HDF5 flush at every frame cost ~4 ms: for ethanol
  writing every 4 steps, more than the MD itself.);
- ``result.json``: steps done, wall time, steps/s, ns/day, stability events,
  and with an ensemble model the uncertainty stop reason and flagged frames;
- ``uncertainty.csv`` (ensemble models): the spread at every frame
  (:mod:`equiforce.md.uncertainty`).
"""

from __future__ import annotations

import signal
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from equiforce.atomic import atomic_torch_save, atomic_write_json
from equiforce.data.trajectory import open_writer, truncate_trajectory
from equiforce.md.barostat import instantaneous_pressure, make_npt_integrator, volume
from equiforce.md.config import MDConfig
from equiforce.md.integrators import conserved_energy, make_integrator
from equiforce.md.observers import (
    NPT_COLUMNS,
    THERMO_COLUMNS,
    StabilityEvent,
    StabilityMonitor,
    ThermoWriter,
    truncate_thermo,
)
from equiforce.md.outdir import CHECKPOINT, OutDirError, claim_out_dir
from equiforce.md.progress import MDProgress
from equiforce.md.state import (
    ForceFn,
    MDState,
    maxwell_boltzmann,
    state_from_atoms,
    state_to_atoms,
)
from equiforce.md.uncertainty import (
    UNCERTAINTY_FILE,
    UncertaintyEvent,
    UncertaintyMonitor,
    require_ensemble,
)
from equiforce.units import pressure_factor


@dataclass
class MDResult:
    """Summary of a run."""

    steps_done: int
    time_fs: float
    wall_s: float
    steps_per_s: float
    ns_per_day: float
    interrupted: bool
    events: list[StabilityEvent] = field(default_factory=list)
    out_dir: str | None = None
    #: why the run stopped before its last step other than instability or SIGINT
    stop_reason: str | None = None
    uncertainty_events: list[UncertaintyEvent] = field(default_factory=list)
    #: frames over the uncertainty threshold, including those not listed
    uncertainty_events_total: int = 0

    @property
    def stable(self) -> bool:
        """No stability event."""
        return not self.events


def _save_checkpoint(path: Path, payload: dict) -> None:
    """``torch.save`` to a temp file and rename (atomic against process death)."""
    atomic_torch_save(payload, path)


class _SigintFlag:
    """Turns SIGINT into a flag checked once per step (main thread only)."""

    def __init__(self) -> None:
        self.set = False
        self._old = None

    def __enter__(self) -> _SigintFlag:
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame) -> None:
        if self.set:  # second Ctrl-C: stop hard
            raise KeyboardInterrupt
        self.set = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)


class Simulation:
    """An MD run: state + integrator + force provider + observers.

    Args:
        force_fn: force provider ``state -> (energy (S,), forces (N, 3))``.
        atoms_list: initial structures (one per system); used for the state (when
            no ``state`` is given), the stability bonds and trajectory metadata.
        config: MD settings.
        out_dir: output folder (None: no files, e.g. in tests).
        state: an initial state to use instead of building one from ``atoms_list``.
    """

    def __init__(
        self,
        force_fn: ForceFn,
        atoms_list: list,
        config: MDConfig,
        out_dir: str | Path | None = None,
        state: MDState | None = None,
    ) -> None:
        self.force_fn = force_fn
        self.config = config
        self.atoms_list = atoms_list
        self.out_dir = None if out_dir is None else Path(out_dir)
        if config.ensemble == "npt":
            self.integrator = make_npt_integrator(config, seed=config.seed + 1)
        else:
            self.integrator = make_integrator(
                config.ensemble,
                config.timestep,
                config.temperature,
                friction=config.friction,
                taut=config.taut,
                tdamp=config.tdamp,
                chain_length=config.chain_length,
                seed=config.seed + 1,
            )
        self.state = state if state is not None else self._initial_state()
        self.monitor = None
        if config.stability.enabled:
            st = config.stability
            target = None if config.ensemble == "nve" else config.temperature
            if target is None:
                target = config.init_temperature or config.temperature
            self.monitor = StabilityMonitor(
                atoms_list,
                temperature=target if target > 0 else None,
                bond_tolerance=st.bond_tolerance,
                min_distance=st.min_distance,
                max_temperature_factor=st.max_temperature_factor,
            )
        self.events: list[StabilityEvent] = []
        self.uncertainty = UncertaintyMonitor(config.uncertainty, self.out_dir)
        self._writers: list = []
        self._last_checkpoint = -float("inf")  # the first frame checkpoints
        self._thermo: ThermoWriter | None = None

    # ------------------------------------------------------------- set-up
    def _initial_state(self) -> MDState:
        cfg = self.config
        dtype = getattr(torch, cfg.dtype)
        state = state_from_atoms(self.atoms_list, dtype=dtype, device=cfg.device)
        gen = torch.Generator().manual_seed(cfg.seed)
        t0 = cfg.temperature if cfg.init_temperature is None else cfg.init_temperature
        maxwell_boltzmann(state, t0, gen, remove_rotation=cfg.remove_rotation)
        if t0 == 0:
            state.momenta.zero_()
        return state

    def resume(self) -> bool:
        """Load ``md_state.pt`` and cut the output files back to its step.

        Returns:
            True if a checkpoint was found.
        """
        path = self.out_dir / CHECKPOINT
        if not path.exists():
            return False
        try:
            payload = torch.load(path, map_location="cpu", weights_only=True)
            self.state = MDState.from_state_dict(payload["state"], self.config.device)
            self.integrator.set_rng_state(payload["rng"])
            self.events = [StabilityEvent(**e) for e in payload.get("events", [])]
            self.uncertainty.restore(
                payload.get("uncertainty_events", []),
                payload.get("uncertainty_events_total"),
            )
        except Exception as err:  # noqa: BLE001 - torch.load raises many kinds
            first = (str(err).splitlines() or [""])[0][:160]
            raise OutDirError(
                f"{path}: cannot resume from it (corrupt, truncated or from another "
                f"program: {type(err).__name__}: {first}); the outputs up to its "
                "last write are untouched: restore the file, or start again with "
                "--overwrite or a new --out"
            ) from None
        for p in self._trajectory_paths():
            if p.exists():
                truncate_trajectory(p, self.state.step)
        truncate_thermo(self.out_dir / "thermo.csv", self.state.step)
        truncate_thermo(self.out_dir / UNCERTAINTY_FILE, self.state.step)
        return True

    def _trajectory_paths(self) -> list[Path]:
        n = len(self.atoms_list)
        names = ["trajectory"] if n == 1 else [f"trajectory_{k}" for k in range(n)]
        suffix = self.config.trajectory_suffix
        for existing in (".xyz", ".h5"):  # a resumed run keeps its format
            if (self.out_dir / f"{names[0]}{existing}").exists():
                suffix = existing
        return [self.out_dir / f"{name}{suffix}" for name in names]

    # ------------------------------------------------------------ outputs
    def time_fs(self) -> float:
        """Simulated time of the current state, fs."""
        return self.state.step * self.config.timestep

    def _frames(self) -> list[dict]:
        st = self.state
        kin = st.kinetic_energy().cpu().numpy()
        energy = st.energy.detach().cpu().numpy()
        cpu = {
            "positions": st.positions,
            "velocities": st.velocities,
            "forces": st.forces,
        }
        cpu = {k: v.detach().cpu().double().numpy() for k, v in cpu.items()}
        idx = st.system_idx.cpu().numpy()
        frames = []
        for s in range(st.n_systems):
            sel = idx == s
            frame = {k: v[sel] for k, v in cpu.items()}
            frame.update(
                atomic_numbers=st.atomic_numbers.cpu().numpy()[sel],
                masses=st.masses.cpu().double().numpy()[sel],
                cell=st.cell[s].cpu().double().numpy(),
                pbc=st.pbc[s].cpu().numpy(),
                energy=energy[s],
                kinetic=kin[s],
                step=st.step,
                time_fs=self.time_fs(),
            )
            frames.append(frame)
        return frames

    def _write_outputs(self) -> None:
        st = self.state
        if self.out_dir is None:
            return
        frames = self._frames()
        if not self._writers:
            paths = self._trajectory_paths()
            self._writers = [
                open_writer(p, f) for p, f in zip(paths, frames, strict=True)
            ]
            npt = self.config.ensemble == "npt"
            columns = THERMO_COLUMNS + NPT_COLUMNS if npt else THERMO_COLUMNS
            self._thermo = ThermoWriter(self.out_dir / "thermo.csv", columns)
        due = time.perf_counter() - self._last_checkpoint >= (
            self.config.checkpoint_interval_s
        )
        for writer, frame in zip(self._writers, frames, strict=True):
            writer.write(frame, flush=due)
        kin = st.kinetic_energy()
        values = {
            "potential_eV": st.energy,
            "kinetic_eV": kin,
            "total_eV": st.energy + kin,
            "conserved_eV": conserved_energy(st),
            "temperature_K": st.temperature(),
        }
        if self.config.ensemble == "npt":
            lengths = st.cell.norm(dim=-1)  # (S, 3)
            values.update(
                volume_A3=volume(st),
                pressure_bar=instantaneous_pressure(st) / pressure_factor("bar"),
                a_A=lengths[:, 0],
                b_A=lengths[:, 1],
                c_A=lengths[:, 2],
            )
        values = {k: v.detach().cpu().numpy() for k, v in values.items()}
        self._thermo.write(st.step, self.time_fs(), values)
        if due:
            self._checkpoint()

    def _checkpoint(self) -> None:
        """Flush the trajectories, then replace the checkpoint (never ahead of them)."""
        for writer in self._writers:
            writer.flush()
        self._last_checkpoint = time.perf_counter()
        payload = {
            "state": self.state.state_dict(),
            "rng": self.integrator.rng_state(),
            "config": self.config.model_dump(mode="json"),
            "events": [asdict(e) for e in self.events],
            "uncertainty_events": [asdict(e) for e in self.uncertainty.events],
            "uncertainty_events_total": self.uncertainty.n_events,
        }
        _save_checkpoint(self.out_dir / CHECKPOINT, payload)

    def close(self) -> None:
        """Close the output files."""
        for w in self._writers:
            w.close()
        if self._thermo is not None:
            self._thermo.close()
        self.uncertainty.close()
        self._writers, self._thermo = [], None

    # ---------------------------------------------------------------- run
    def _on_frame(self) -> bool:
        """Check stability and write outputs; True if the run must stop."""
        new = self.monitor.check(self.state, self.time_fs()) if self.monitor else []
        self.events.extend(new)
        unsure = self.uncertainty.at_frame(self.force_fn, self.state, self.time_fs())
        self._write_outputs()
        return bool(new) or unsure

    def _fail(self, reason: str) -> None:
        st = self.state
        for s in range(st.n_systems):
            self.events.append(StabilityEvent(s, st.step, self.time_fs(), reason))

    def run(self, n_steps: int | None = None, progress: bool = True) -> MDResult:
        """Integrate until step ``n_steps`` (default: the config's), SIGINT or failure.

        Returns:
            An :class:`MDResult`; interrupted runs have ``interrupted=True`` and a
            checkpoint to resume from.
        """
        total = self.config.n_steps if n_steps is None else n_steps
        state, integ, interval = (
            self.state,
            self.integrator,
            self.config.output_interval,
        )
        if self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
        fresh = state.forces is None
        integ.init(state, self.force_fn)
        if fresh and self._on_frame():
            return self._result(0, 0.0, False)
        start, t0 = state.step, time.perf_counter()
        bar = MDProgress(total, start, self.config.timestep, enabled=progress)
        with _SigintFlag() as flag, bar:
            while state.step < total and not flag.set:
                try:
                    integ.step(state, self.force_fn)
                except FloatingPointError as err:
                    self._fail(str(err))
                    break
                if state.step % interval == 0 and self._on_frame():
                    break
                bar.update(state.step)
        if self.out_dir is not None:  # interrupted, failed or done: resumable here
            self._checkpoint()
        wall = time.perf_counter() - t0
        result = self._result(state.step - start, wall, flag.set)
        self.close()
        return result

    def _result(self, steps: int, wall: float, interrupted: bool) -> MDResult:
        rate = steps / wall if wall > 0 else 0.0
        result = MDResult(
            steps_done=steps,
            time_fs=self.time_fs(),
            wall_s=wall,
            steps_per_s=rate,
            ns_per_day=rate * self.config.timestep * 86400.0 * 1e-6,
            interrupted=interrupted,
            events=list(self.events),
            out_dir=None if self.out_dir is None else str(self.out_dir),
            stop_reason=self.uncertainty.stop_reason,
            uncertainty_events=list(self.uncertainty.events),
            uncertainty_events_total=self.uncertainty.n_events,
        )
        if self.out_dir is not None:
            payload = asdict(result) | {"stable": result.stable}
            atomic_write_json(self.out_dir / "result.json", payload)
        return result

    def final_atoms(self) -> list:
        """The current state as ``ase.Atoms`` (one per system)."""
        return state_to_atoms(self.state)


def _notice(message: str) -> None:
    import sys

    print(message, file=sys.stderr, flush=True)


def run_md(
    model,
    atoms_list: list,
    config: MDConfig,
    out_dir: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
    overwrite: bool = False,
) -> MDResult:
    """Run MD of ``atoms_list`` (× ``n_replicas``) with a model or force function.

    Args:
        model: a :class:`~equiforce.models.base.PotentialModel` (wrapped in a
            :class:`~equiforce.md.forcefield.ModelForceField`) or a force provider.
        atoms_list: initial structures (``ase.Atoms``), one per system.
        config: MD settings.
        out_dir: output folder (None: no files).
        resume: continue from ``out_dir/md_state.pt`` when it exists.
        progress: show a progress bar.
        overwrite: replace an earlier run's outputs in ``out_dir``; without it or
            ``resume``, a folder holding a run is refused
            (:func:`~equiforce.md.outdir.claim_out_dir`).
    """
    from equiforce.accel.denormals import flush_denormals
    from equiforce.accel.runtime import tune_allocator

    tune_allocator()
    flush_denormals()  # a command-level run, like train(): opt out with ..._DENORMALS=0
    from equiforce.md.forcefield import ModelForceField
    from equiforce.models.base import PotentialModel

    if isinstance(model, PotentialModel):
        require_ensemble(model, config.uncertainty)
        dtype = config.model_dtype and getattr(torch, config.model_dtype)
        model = model.to(config.device)
        force_fn = ModelForceField(
            model, skin=config.skin, dtype=dtype, compile=config.compile
        )
        if progress:  # a notice before the compiled backend's slow first call
            force_fn.potential.notify = _notice
    else:
        force_fn = model
    if out_dir is not None:
        claim_out_dir(out_dir, resume, overwrite)
    systems = [a.copy() for a in atoms_list for _ in range(config.n_replicas)]
    if isinstance(force_fn, ModelForceField):  # total charge and spin (SO3LR)
        force_fn.set_totals(systems)
    sim = Simulation(force_fn, systems, config, out_dir)
    if resume and out_dir is not None:
        sim.resume()
    return sim.run(progress=progress)


def thermo_table(path: str | Path) -> dict[str, np.ndarray]:
    """Read ``thermo.csv`` into column arrays."""
    data = np.genfromtxt(path, delimiter=",", names=True)
    return {name: np.atleast_1d(data[name]) for name in data.dtype.names}
