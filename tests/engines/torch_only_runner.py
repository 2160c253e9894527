"""Run an equiforce export with torch and numpy alone (run as a script, not a test).

Usage: python torch_only_runner.py EXPORT FORMAT STRUCTURES.npz OUT.npz

``equiforce`` is made unimportable before anything else is imported, and the
script proves it: the package is installed (``find_spec`` finds it), yet
``import equiforce`` fails, and no equiforce module is loaded at the end. The
neighbour list (cutoff from the file's metadata) is built here with numpy.
STRUCTURES.npz holds ``positions_K``, ``numbers_K``, ``cell_K`` (zeros: open)
for K = 0, 1, ...; OUT.npz gets ``energy_K``, ``forces_K``, ``virial_K``.
"""

import importlib.util
import sys

FOUND = importlib.util.find_spec("equiforce") is not None
sys.modules["equiforce"] = None  # `import equiforce` now raises ImportError

import itertools  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402


def neighbours(pos: np.ndarray, cell: np.ndarray, cutoff: float):
    """(edge_index (2, E), shift vectors (E, 3) Å): all pairs closer than cutoff."""
    periodic = np.abs(cell).sum() > 0
    reach = (
        int(np.ceil(cutoff / np.min(np.linalg.norm(cell, axis=1)))) if periodic else 0
    )
    edges, shifts = [], []
    for image in itertools.product(range(-reach, reach + 1), repeat=3):
        shift = np.asarray(image, float) @ cell  # (3,)
        d = pos[None, :, :] + shift - pos[:, None, :]  # (n, n, 3): r_j - r_i + shift
        close = np.linalg.norm(d, axis=-1) < cutoff
        if not any(image):
            np.fill_diagonal(close, False)
        i, j = np.nonzero(close)
        edges.append(np.stack([i, j]))
        shifts.append(np.broadcast_to(shift, (len(i), 3)))
    # C order: an AOTInductor package reads its inputs as contiguous whatever
    # their strides (np.concatenate of broadcast rows gives a Fortran-order array)
    return (
        np.ascontiguousarray(np.concatenate(edges, axis=1)),
        np.ascontiguousarray(np.concatenate(shifts)),
    )


def load(path: str, fmt: str):
    """(callable, metadata) of an export, with torch alone."""
    if fmt == "torchscript":
        extra = {"equiforce.json": ""}
        module = torch.jit.load(path, _extra_files=extra)
        return module, json.loads(extra["equiforce.json"])
    runner = torch._inductor.aoti_load_package(path)
    return runner, json.loads(runner.get_metadata()["equiforce.json"])


def main() -> None:
    path, fmt, structures, out_path = sys.argv[1:5]
    try:
        import equiforce  # noqa: F401
    except ImportError:
        blocked = True
    else:
        blocked = False
    if not (FOUND and blocked):
        raise SystemExit(f"equiforce installed: {FOUND}, import blocked: {blocked}")
    fn, meta = load(path, fmt)
    dtype = getattr(torch, meta["dtype"])
    data = np.load(structures)
    out = {}
    for k in itertools.count():
        if f"positions_{k}" not in data:
            break
        pos, cell = data[f"positions_{k}"], data[f"cell_{k}"]
        edge_index, shifts = neighbours(pos, cell, meta["cutoff"])
        energy, forces, _, virial = fn(
            torch.as_tensor(pos, dtype=dtype),
            torch.as_tensor(data[f"numbers_{k}"], dtype=torch.long),
            torch.as_tensor(edge_index, dtype=torch.long),
            torch.as_tensor(shifts, dtype=dtype),
        )
        out[f"energy_{k}"] = energy.double().numpy()
        out[f"forces_{k}"] = forces.double().numpy()
        out[f"virial_{k}"] = virial.double().numpy()
    loaded = sorted(m for m, v in sys.modules.items() if "equiforce" in m and v)
    if loaded:
        raise SystemExit(f"equiforce modules were loaded: {loaded}")
    np.savez(out_path, **out)
    print(json.dumps({"blocked": blocked, "installed": FOUND, "metadata": meta}))


if __name__ == "__main__":
    main()
