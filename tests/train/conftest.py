"""Fixtures for training tests."""

from pathlib import Path

import pytest
import yaml
from _train_helpers import make_tiny_config


@pytest.fixture
def write_config(tmp_path):
    def write(raw: dict, name: str = "config.yaml") -> Path:
        path = tmp_path / name
        path.write_text(yaml.safe_dump(raw))
        return path

    return write


@pytest.fixture
def tiny_config():
    return make_tiny_config
