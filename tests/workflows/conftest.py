import sys
from pathlib import Path

# helpers.py (tiny models, LJ clusters) lives with the MD tests.
sys.path.insert(0, str(Path(__file__).parents[1] / "md"))

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread():
    """MD steps on tiny systems are latency-bound: one thread avoids contention."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
