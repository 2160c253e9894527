import subprocess
import sys

import pytest

SCRIPT = """
import resource, sys, torch
from equiforce.runtime import tune_allocator
print(tune_allocator())
n = 48 * 2**20 // 4  # 48 MiB of float32: above glibc's largest mmap threshold
for _ in range(2):
    torch.ones(n)
faults = []
for _ in range(10):
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    x = torch.ones(n)
    del x
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0)
print(min(faults))
"""


def page_faults(env_value: str) -> tuple[str, int]:
    env = {"EQUIFORCE_MALLOC_TUNING": env_value, "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    return out[0], int(out[1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc tuning")
def test_large_tensors_are_reused_without_page_faults():
    tuned, faults_tuned = page_faults("1")
    untuned, faults_default = page_faults("0")
    assert tuned == "True" and untuned == "False"
    # fewest page faults of one 48 MiB allocation over 10: with glibc's default every
    # allocation maps fresh pages (12,288 faults); tuned, blocks are reused (0)
    assert faults_default >= 10_000
    assert faults_tuned < 1_000
