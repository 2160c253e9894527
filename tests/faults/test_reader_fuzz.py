"""Readers under random damage: always a clear DataError or a correct read.

Truncations and byte flips of shipped files must never give a traceback of
another kind or a hang (the fault policy, docs/conventions.md).
"""

import io
import zipfile

import numpy as np
import pytest
from ase import Atoms
from fault_helpers import DATA, ethanol_frames, write_xyz

from equiforce.data.io import DataError, read

N_TRIALS = 100


def _damaged(raw: bytes, rng: np.random.Generator) -> bytes:
    data = bytearray(raw)
    if rng.random() < 0.5:
        return bytes(data[: int(rng.integers(0, len(data)))])  # truncated
    for _ in range(int(rng.integers(1, 6))):  # byte flips
        k = int(rng.integers(0, len(data)))
        data[k] ^= int(rng.integers(1, 256))
    return bytes(data)


def _check(path, **kw) -> str:
    try:
        frames = read(path, **kw)
    except DataError as err:
        assert str(err).startswith(str(path)), err  # names the file
        return "error"
    assert frames and all(isinstance(a, Atoms) for a in frames)
    for a in frames:  # a read that succeeds is valid: finite, known elements
        assert np.isfinite(a.positions).all() and (a.numbers > 0).all()
    return "read"


@pytest.mark.timeout(120)
def test_damaged_npz_gives_a_data_error_or_a_valid_read(tmp_path):
    src = np.load(DATA / "rmd17_ethanol_test_01.npz")
    buf = io.BytesIO()  # a small npz of the shipped file's layout (fast to fuzz)
    np.savez(buf, **{k: src[k][:20] if src[k].ndim > 1 else src[k] for k in src.files})
    raw = buf.getvalue()
    rng = np.random.default_rng(0)
    outcomes = []
    for trial in range(N_TRIALS):
        path = tmp_path / f"d{trial}.npz"
        path.write_bytes(_damaged(raw, rng))
        outcomes.append(_check(path, energy_unit="kcal/mol"))
    assert "error" in outcomes  # the damage was seen


@pytest.mark.timeout(120)
def test_damaged_extxyz_gives_a_data_error_or_a_valid_read(tmp_path):
    raw = write_xyz(tmp_path / "good.xyz", ethanol_frames(6)).read_bytes()
    rng = np.random.default_rng(1)
    outcomes = []
    for trial in range(N_TRIALS):
        path = tmp_path / f"d{trial}.xyz"
        path.write_bytes(_damaged(raw, rng))
        outcomes.append(_check(path))
    assert "error" in outcomes


def test_an_npz_member_with_a_bad_crc_names_the_field(tmp_path):
    src = DATA / "rmd17_ethanol_test_01.npz"
    raw = bytearray(src.read_bytes())
    with zipfile.ZipFile(src) as z:  # flip a byte inside the forces member's data
        info = z.getinfo("forces.npy")
    raw[info.header_offset + 200] ^= 0xFF
    path = tmp_path / "crc.npz"
    path.write_bytes(raw)
    with pytest.raises(DataError, match=r"crc.npz: forces: cannot be read"):
        read(path)
