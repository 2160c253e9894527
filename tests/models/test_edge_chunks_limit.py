"""How many edges a forces-only call takes at once, by device."""

import pytest

import equiforce
from equiforce.models.so3krates.fast import (
    FORCES_BYTES_PER_EDGE,
    GPU_MEMORY_SHARE,
    GPU_MIN_EDGES,
    gpu_edge_limit,
)
from equiforce.testing import TINY_SO3KRATES


def test_gpu_edge_limit_scales_with_memory_dtype_and_width():
    h200 = 143_771 * 2**20
    limit = gpu_edge_limit(h200, 4)
    assert limit == int(GPU_MEMORY_SHARE * h200 / FORCES_BYTES_PER_EDGE)
    assert 1_000_000 < limit < 2_000_000  # a 10k-atom box (562k edges) fits
    assert gpu_edge_limit(h200, 8) == pytest.approx(limit / 2, abs=1)
    assert gpu_edge_limit(h200 // 2, 4) == pytest.approx(limit / 2, abs=1)
    assert gpu_edge_limit(h200, 4, width=3.0) == pytest.approx(limit / 3, abs=1)
    assert gpu_edge_limit(2**30, 8, width=4.0) == GPU_MIN_EDGES  # a floor


def test_cpu_limits_are_the_configured_ones():
    model = equiforce.build_model("so3krates", **TINY_SO3KRATES)
    assert model._device_edge_limit() == 0
    n = model.auto_chunk_edges_detached
    assert not model.chunks_edges(n, False) and model.chunks_edges(n + 1, False)
    m = model.auto_chunk_edges
    assert not model.chunks_edges(m, True) and model.chunks_edges(m + 1, True)
    model.edge_chunk_size = 100  # an explicit size wins at any device
    assert model.chunks_edges(101, False) and not model.chunks_edges(100, False)
