"""Atom order along a space-filling curve, for memory locality in large systems.

A message-passing call gathers the features of each edge's two atoms and sums
messages back into atom rows. When atoms that are close in space are also close in
memory, those gathers and scatters touch a small, cache-resident set of rows; when
they are not (a water box listed molecule by molecule along one axis, or any
trajectory frame after diffusion), each gather misses the cache. Sorting atoms along
a Morton (Z-order) curve before the call and putting per-atom outputs back in the
caller's order afterwards made a 10,000-atom water box with its atoms listed in
random order about 1.27x faster on the 2-core CPU (medians of separate processes,
``benchmarks/so3krates_ablations.py calls --shuffle``); for input already listed
along a grid the gain was within the noise (docs/benchmarks.md section 8, "Morton atom order"). The
sort and relabelling cost milliseconds per 10,000 atoms.

Only the order in memory changes: energies, forces and stress are the same numbers
(up to float summation order), and the permutation is applied inside
:meth:`equiforce.models.base.PotentialModel.forward` and the compiled path, so
callers always see their own atom order.
"""

from __future__ import annotations

import torch

from equiforce import keys

#: Systems with at least this many atoms in one call are reordered. At 1,029 atoms
#: the order made no measurable difference (``so3krates_ablations.py order``): the
#: atom rows of such systems stay in cache whatever their order.
SPATIAL_ORDER_MIN_ATOMS = 2000

#: Bits per axis of the Morton code (1,024 cells per axis of the bounding box).
MORTON_BITS = 10


def _spread_bits(v: torch.Tensor) -> torch.Tensor:
    """Put bit b of each 10-bit integer at bit 3b (room for two more axes)."""
    v = v & 0x3FF
    v = (v | (v << 16)) & 0x030000FF
    v = (v | (v << 8)) & 0x0300F00F
    v = (v | (v << 4)) & 0x030C30C3
    v = (v | (v << 2)) & 0x09249249
    return v


def morton_codes(positions: torch.Tensor, bits: int = MORTON_BITS) -> torch.Tensor:
    """Z-order code of each position in a grid over the bounding box.

    Args:
        positions: (n_atoms, 3) Å (any float dtype, any device).
        bits: grid bits per axis (≤ 10).

    Returns:
        (n_atoms,) int64 codes; interleaved bits x0 y0 z0 x1 y1 z1 … (x lowest).
    """
    if not 1 <= bits <= MORTON_BITS:
        raise ValueError(f"bits must be in 1..{MORTON_BITS}, got {bits}")
    p = positions.detach().to(torch.float64)
    p = p - p.min(0).values
    extent = p.max().clamp_min(1e-9)
    cells = (p / extent * (2**bits - 1)).to(torch.int64)  # (n_atoms, 3)
    cells = cells << (MORTON_BITS - bits)
    return (
        _spread_bits(cells[:, 0])
        | (_spread_bits(cells[:, 1]) << 1)
        | (_spread_bits(cells[:, 2]) << 2)
    )


def spatial_order(positions: torch.Tensor, graph_index: torch.Tensor) -> torch.Tensor:
    """Permutation that sorts atoms along a Morton curve within each structure.

    Args:
        positions: (n_atoms, 3) Å.
        graph_index: (n_atoms,) structure of each atom (sorted); structures keep
            their order and their atoms stay contiguous.

    Returns:
        (n_atoms,) int64 ``perm``: atom k of the reordered system is atom
        ``perm[k]`` of the input.
    """
    code = morton_codes(positions)  # < 2**30
    key = (graph_index.to(torch.int64) << 30) | code
    return torch.argsort(key, stable=True)


def inverse_permutation(perm: torch.Tensor) -> torch.Tensor:
    """``inv`` with ``inv[perm[k]] = k``: maps an input atom to its new index."""
    inv = torch.empty_like(perm)
    inv[perm] = torch.arange(perm.numel(), device=perm.device, dtype=perm.dtype)
    return inv


def restore_atom_order(
    out: dict[str, torch.Tensor], inv: torch.Tensor
) -> dict[str, torch.Tensor]:
    """Per-atom outputs of a reordered call, back in the caller's atom order.

    Args:
        out: model outputs computed on ``graph.permuted(perm, inv)``; per-atom
            entries are those whose first dimension is the atom count of
            ``inv`` and whose key is a per-atom output (forces, atomic energies,
            per-term atomic energies).
        inv: (n_atoms,) inverse permutation.
    """
    return {k: v.index_select(0, inv) if _per_atom(k) else v for k, v in out.items()}


def _per_atom(key: str) -> bool:
    per_atom = (
        keys.FORCES,
        keys.ATOMIC_ENERGIES,
        keys.NODE_FEATURES,
        keys.LATENT_DISTANCE,
        keys.FORCES_STD,
    )
    return key in per_atom or keys.term_name(key) is not None
