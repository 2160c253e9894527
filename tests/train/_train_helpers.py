"""Tiny training configs on a slice of the shipped ethanol data."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ETHANOL = ROOT / "data" / "rmd17" / "rmd17_ethanol_train_01.npz"

TINY_MODEL = {
    "num_features": 16,
    "num_layers": 1,
    "num_heads": 2,
    "degrees": [1, 2],
    "num_radial": 8,
    "readout_hidden": 16,
}
#: the tiny SO3LR of the training tests (long-range pairs within 6 Å)
TINY_SO3LR = TINY_MODEL | {"head_hidden": 16, "lr_cutoff": 6.0}


def make_tiny_config(**training) -> dict:
    """A raw config dict: 40 ethanol frames, tiny So3krates, single thread."""
    train = {
        "batch_size": 4,
        "max_steps": 40,
        "max_epochs": None,
        "valid_interval": 10,
        "log_interval": 5,
        "threads": 1,
        "lr": 3e-3,
    }
    train.update(training)
    return {
        "data": {
            "train": {"path": str(ETHANOL), "energy_unit": "kcal/mol", "index": "0:40"},
            "n_train": 30,
            "n_valid": 10,
        },
        "model": {
            "name": "so3krates",
            "preset": "default",
            "overrides": dict(TINY_MODEL),
        },
        "training": train,
    }
