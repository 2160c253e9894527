"""Labelled files and configs for the fault-policy tests."""

from pathlib import Path

import ase.io
import numpy as np
from ase import Atoms
from ase.calculators.singlepoint import SinglePointCalculator

DATA = Path(__file__).resolve().parents[2] / "data" / "rmd17"
KCAL = 0.0433641  # kcal/mol in eV


def ethanol_frames(n: int = 12) -> list[Atoms]:
    """``n`` labelled rMD17 ethanol frames (eV, eV/Å), numbered 0..n-1."""
    d = np.load(DATA / "rmd17_ethanol_train_01.npz")
    frames = []
    for k in range(n):
        atoms = Atoms(numbers=d["nuclear_charges"], positions=d["coords"][k])
        atoms.calc = SinglePointCalculator(
            atoms, energy=float(d["energies"][k]) * KCAL, forces=d["forces"][k] * KCAL
        )
        frames.append(atoms)
    return frames


def write_xyz(path: Path, frames: list[Atoms]) -> Path:
    ase.io.write(path, frames, format="extxyz")
    return path


def train_yaml(tmp_path: Path, data: Path, **training) -> Path:
    """A tiny training config on ``data`` (fails or finishes in seconds)."""
    import yaml

    t = {"max_steps": 20, "valid_interval": 10, "batch_size": 2, "threads": 1}
    t.update(training)
    config = {
        "data": {"train": {"path": str(data)}, "n_valid": 2},
        "model": {
            "name": "so3krates",
            "overrides": {"num_features": 8, "num_layers": 1, "degrees": [1]},
        },
        "training": t,
    }
    path = tmp_path / "train.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
