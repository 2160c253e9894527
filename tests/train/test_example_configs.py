"""Every shipped example config loads and validates (keys, paths, model settings).

Fails when a config key is renamed or a model option changes its rules (e.g. an EFA
grid too coarse for the requested degrees) without the examples following.
"""

from pathlib import Path

import pytest

from equiforce.config import load_config

EXAMPLES = sorted((Path(__file__).resolve().parents[2] / "examples").glob("*.yaml"))


def test_there_are_examples():
    assert len(EXAMPLES) >= 5


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: p.name)
def test_example_config_loads(path):
    config = load_config(path)
    assert Path(config.data.train.path).exists(), config.data.train.path
