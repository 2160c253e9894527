"""Shared fixtures: repository data paths and small structures.

The suite compiles with ``torch.compile`` (``EQUIFORCE_COMPILE_BACKEND=inductor``)
unless the variable is set: the CPU default, AOTInductor, takes about a minute
per library, and ``tests/models/test_aoti.py`` tests it by name.
"""

import os
from pathlib import Path

import pytest
import torch

os.environ.setdefault("EQUIFORCE_COMPILE_BACKEND", "inductor")

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data" / "rmd17"


#: where tests run on tiny systems, latency-bound: one thread avoids contention
#: (paths below tests/: a folder, or one file)
ONE_THREAD = {"analysis", "md", "uncertainty", "engines/test_torchsim.py"}


@pytest.fixture(autouse=True)
def _threads(request):
    rel = Path(request.node.path).resolve().relative_to(ROOT / "tests")
    one = rel.parts[0] in ONE_THREAD or rel.as_posix() in ONE_THREAD
    torch.set_num_threads(1 if one else 2)


@pytest.fixture
def ethanol_train() -> Path:
    return DATA / "rmd17_ethanol_train_01.npz"


@pytest.fixture
def ethanol_test() -> Path:
    return DATA / "rmd17_ethanol_test_01.npz"


@pytest.fixture
def isolated_atoms() -> Path:
    return DATA / "isolated_atoms.xyz"
