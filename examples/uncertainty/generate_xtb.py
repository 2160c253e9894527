"""GFN2-xTB data for the extrapolation study: 300 K training frames, 600/1,200 K MD.

The 3BPA and acetylacetone training geometries (300 K, ``shared/data``) are
relabelled with GFN2-xTB (tblite), and the same method drives Langevin MD at
600 K and 1,200 K from the first training geometry, so that the hot frames carry
labels of exactly the same level of theory. A model trained on the 300 K frames
is then tested on the hot frames: its errors grow, and a good uncertainty
estimate grows with them (``benchmarks/uncertainty_study.py``).

Settings are stored in ``<molecule>_xtb.json`` beside the data with the tblite
version and each file's SHA-256. Usage (a few minutes per temperature on one
core; set ``OMP_NUM_THREADS=1`` on a shared machine)::

    PYTHONPATH=src python examples/uncertainty/generate_xtb.py --molecule 3bpa \
        --shared ../shared/data --out data/uncertainty
"""

from __future__ import annotations

import argparse
import hashlib
import json
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

#: Source geometries (relative to the shared data folder) and MD settings.
MOLECULES = {"3bpa": "3bpa/train_300K.xyz", "acac": "acac/train_300K.xyz"}
SETTINGS = {
    "method": "GFN2-xTB",
    "accuracy": 1.0,
    "electronic_temperature_K": 300.0,
    "charge": 0,
    "md_temperatures_K": [600.0, 1200.0],
    "md_timestep_fs": 0.5,
    "md_friction_per_fs": 0.02,
    "md_equilibration_steps": 400,
    "md_sample_every": 20,
    "md_frames": 100,
    "seed": 2026,
}


def calculator():
    """The tblite ASE calculator with the stored settings."""
    from tblite.ase import TBLite

    return TBLite(
        method=SETTINGS["method"],
        accuracy=SETTINGS["accuracy"],
        electronic_temperature=SETTINGS["electronic_temperature_K"],
        charge=SETTINGS["charge"],
        verbosity=0,
    )


def labelled(atoms, **info):
    """A copy of ``atoms`` carrying its xTB energy (eV) and forces (eV/Å)."""
    from ase.calculators.singlepoint import SinglePointCalculator

    out = atoms.copy()
    out.info = {"charge": SETTINGS["charge"], **info}
    out.calc = SinglePointCalculator(
        out,
        energy=atoms.get_potential_energy(),
        forces=atoms.get_forces(),
    )
    return out


def write(path: Path, frames: list) -> str:
    """Write extxyz atomically; return its SHA-256."""
    import ase.io

    tmp = path.with_suffix(".tmp")
    ase.io.write(tmp, frames, format="extxyz")
    tmp.replace(path)
    return hashlib.sha256(path.read_bytes()).hexdigest()


def relabel(source: Path) -> list:
    """Every frame of ``source`` with xTB labels (the file's own labels dropped)."""
    import ase.io

    frames = ase.io.read(source, ":")
    calc, out, start = calculator(), [], time.perf_counter()
    for k, atoms in enumerate(frames):
        atoms = atoms.copy()
        atoms.calc = calc
        out.append(labelled(atoms, source_frame=k, temperature_K=300.0))
        if (k + 1) % 50 == 0:
            rate = (k + 1) / (time.perf_counter() - start)
            print(f"  relabel {k + 1}/{len(frames)} ({rate:.1f} frames/s)", flush=True)
    return out


def hot_md(start, temperature: float) -> list:
    """Langevin MD with xTB at ``temperature``; sampled frames with their labels."""
    from ase import units
    from ase.md.langevin import Langevin
    from ase.md.velocitydistribution import MaxwellBoltzmannDistribution

    s = SETTINGS
    atoms = start.copy()
    atoms.calc = calculator()
    rng = np.random.default_rng(s["seed"] + int(temperature))
    MaxwellBoltzmannDistribution(atoms, temperature_K=temperature, rng=rng)
    dyn = Langevin(
        atoms,
        timestep=s["md_timestep_fs"] * units.fs,
        temperature_K=temperature,
        friction=s["md_friction_per_fs"] / units.fs,
        rng=rng,
    )
    dyn.run(s["md_equilibration_steps"])
    frames, t0 = [], time.perf_counter()
    for k in range(s["md_frames"]):
        dyn.run(s["md_sample_every"])
        frames.append(labelled(atoms, temperature_K=temperature, md_step=dyn.nsteps))
        if (k + 1) % 10 == 0:
            rate = (k + 1) * s["md_sample_every"] / (time.perf_counter() - t0)
            left = (s["md_frames"] - k - 1) * s["md_sample_every"] / rate
            print(
                f"  {temperature:.0f} K: {k + 1}/{s['md_frames']} frames "
                f"({rate:.1f} steps/s, ETA {left:.0f} s)",
                flush=True,
            )
    return frames


def main() -> None:
    """Relabel the 300 K set, run the hot MD, write the files and their settings."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--molecule", choices=sorted(MOLECULES), required=True)
    parser.add_argument("--shared", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("data/uncertainty"))
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    name = args.molecule
    meta = {
        "settings": SETTINGS,
        "tblite": version("tblite"),
        "source": MOLECULES[name],
        "files": {},
    }
    print(
        f"{name}: relabelling {MOLECULES[name]} with {SETTINGS['method']}", flush=True
    )
    train = relabel(args.shared / MOLECULES[name])
    path = args.out / f"{name}_xtb_train_300K.extxyz"
    meta["files"][path.name] = write(path, train)
    for temperature in SETTINGS["md_temperatures_K"]:
        print(f"{name}: MD at {temperature:.0f} K", flush=True)
        frames = hot_md(train[0], temperature)
        path = args.out / f"{name}_xtb_md_{temperature:.0f}K.extxyz"
        meta["files"][path.name] = write(path, frames)
    (args.out / f"{name}_xtb.json").write_text(json.dumps(meta, indent=2) + "\n")


if __name__ == "__main__":
    main()
