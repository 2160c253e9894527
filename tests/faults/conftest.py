"""Fixture of the fault-policy tests: a small model file."""

from pathlib import Path

import pytest
import torch


@pytest.fixture(scope="session")
def model_file(tmp_path_factory) -> Path:
    from equiforce.models.checkpoint import save_model
    from equiforce.models.registry import build_model

    model = build_model(
        "so3krates", num_features=8, num_layers=1, degrees=(1,), dtype=torch.float32
    )
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_model(model, path)
    return path
