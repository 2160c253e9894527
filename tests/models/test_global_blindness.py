"""Training-free test: local models are blind to a twist farther away than their
receptive field; So3krates with Euclidean fast attention is not.

global-interactions.md §5.1. A cumulene H2C=(C=)_{n−2}CH2 lies on the z axis; one
CH2 end group is twisted rigidly about the axis. Every atom's energy in a local
model with T message-passing layers depends only on the atoms within T hops on
the cutoff graph. If the two end groups' H atoms are more than 2T hops apart, no
atom sees both: each sees one rigid end group plus carbons on the axis (which the
twist leaves in place), so a rotation-invariant local model gives the same
energy at every twist angle, whatever its weights. The EFA branch couples all
atoms within r_max and must see the twist.
"""

import math
from collections import deque

import numpy as np
import pytest
import torch

from equiforce.data.graph import AtomicGraph
from equiforce.models.registry import build_model
from equiforce.testing import TINY_SO3KRATES

F64 = torch.float64
CC, CH, HCH = 1.28, 1.09, 120.0  # Å, Å, degrees
ANGLES = (0.0, 30.0, 60.0, 90.0)

#: small local models, random non-zero readouts; (config, layers T, cutoff r_c)
LOCAL = {
    "so3krates": {**TINY_SO3KRATES},
    "schnet": {
        "num_features": 16,
        "num_interactions": 2,
        "num_radial": 8,
        "zero_init_readout": False,
    },
    "painn": {
        "num_features": 16,
        "num_interactions": 2,
        "num_radial": 8,
        "zero_init_readout": False,
    },
    "nequip": {
        "num_features": 8,
        "num_layers": 2,
        "l_max": 2,
        "zero_init_readout": False,
    },
}
#: config key holding the number of message-passing layers, per family
LAYER_KEY = {
    "so3krates": "num_layers",
    "schnet": "num_interactions",
    "painn": "num_interactions",
    "nequip": "num_layers",
}
#: r_max covers the 17-carbon chain (21.7 Å); b_max = π (order 13 for l ≤ 2)
EFA = {
    "r_max": 25.0,
    "max_frequency": math.pi / 25.0,
    "num_features_qk": 8,
    "num_features_v": 8,
    "zero_init": False,
}
EFA_MODELS = {
    "efa-l0": {"lebedev_order": 11, "degrees": (0,)},
    "efa-l012": {"lebedev_order": 13, "degrees": (0, 1, 2)},
}


def cumulene(n_carbons: int, twist_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """H2C=(C=)_{n−2}CH2 along z, the last CH2 twisted by ``twist_deg`` about z.

    C–C 1.28 Å, C–H 1.09 Å, H–C–H 120°; the end groups are coplanar at 0°.
    Returns positions (n + 4, 3) Å and atomic numbers (n + 4,).
    """
    z_c = CC * np.arange(n_carbons)
    carbons = np.stack([np.zeros(n_carbons), np.zeros(n_carbons), z_c], 1)
    half = math.radians(HCH / 2)
    radial, axial = CH * math.sin(half), CH * math.cos(half)
    twist = math.radians(twist_deg)
    hydrogens = []
    for end, sign, phi in ((z_c[0], -1.0, 0.0), (z_c[-1], 1.0, twist)):
        for side in (1.0, -1.0):
            hydrogens.append(
                [
                    side * radial * math.cos(phi),
                    side * radial * math.sin(phi),
                    end + sign * axial,
                ]
            )
    pos = np.concatenate([carbons, np.array(hydrogens)])
    numbers = np.array([6] * n_carbons + [1] * 4)
    return pos, numbers


def hop_distance(pos: np.ndarray, cutoff: float, a: list[int], b: list[int]) -> int:
    """Fewest edges of the r < cutoff graph between any atom of ``a`` and of ``b``."""
    adjacent = np.linalg.norm(pos[:, None] - pos[None], axis=-1) < cutoff
    np.fill_diagonal(adjacent, False)
    hops = {i: 0 for i in a}
    queue = deque(a)
    while queue:
        i = queue.popleft()
        for j in np.flatnonzero(adjacent[i]):
            if j not in hops:
                hops[int(j)] = hops[i] + 1
                queue.append(int(j))
    return min(hops.get(j, 10**9) for j in b)


def twist_energies(model, n_carbons: int, angles=ANGLES) -> np.ndarray:
    energies = []
    for angle in angles:
        pos, z = cumulene(n_carbons, angle)
        g = AtomicGraph.from_arrays(pos, z, model.cutoff, dtype=F64)
        energies.append(model(g, compute_forces=False)["energy"].item())
    return np.array(energies)


N_LONG, N_SHORT = 17, 3


def test_geometry():
    """The builder gives the bond lengths, angle and twist it claims."""
    pos, z = cumulene(N_LONG, 90.0)
    n = N_LONG
    assert np.allclose(np.linalg.norm(np.diff(pos[:n], axis=0), axis=1), CC)
    h = pos[n:]
    assert np.allclose(np.linalg.norm(h[:2] - pos[0], axis=1), CH)
    assert np.allclose(np.linalg.norm(h[2:] - pos[n - 1], axis=1), CH)
    a, b = h[0] - pos[0], h[1] - pos[0]
    assert math.degrees(math.acos(a @ b / CH**2)) == pytest.approx(HCH)
    plane_a, plane_b = h[0, :2], h[2, :2]
    assert abs(plane_a @ plane_b) < 1e-12  # end groups perpendicular at 90°


@pytest.mark.parametrize("family", sorted(LOCAL))
def test_local_family_is_blind_to_the_far_twist(family):
    """Same energy (to float64 rounding) at every twist angle for a random local
    model, while on allene (n = 3, end groups within reach) the same model does
    see the twist (so the long-chain equality is not a dead readout). The chain
    is checked to exceed the receptive field: H–H hop distance > 2T."""
    model = build_model(family, dtype=F64, seed=1, **LOCAL[family]).eval()
    layers = getattr(model.config, LAYER_KEY[family])
    pos, _ = cumulene(N_LONG, 0.0)
    n = N_LONG
    hops = hop_distance(pos, model.cutoff, [n, n + 1], [n + 2, n + 3])
    assert hops > 2 * layers, f"{family}: {hops} hops ≤ 2T = {2 * layers}"
    long = twist_energies(model, N_LONG)
    scale = max(np.abs(long).max(), 1.0)
    assert np.ptp(long) < 1e-12 * scale, f"{family} sees the far twist: {long}"
    short = twist_energies(model, N_SHORT)
    assert np.ptp(short) > 1e-6, f"{family} is blind even on allene: {short}"


@pytest.mark.parametrize("name", sorted(EFA_MODELS))
def test_efa_model_sees_the_far_twist(name):
    """So3krates + EFA (random weights) gives different energies at different
    twists on the same chain its local part is blind to. For l ≤ 2 the invariant
    output projection is then zeroed: the tensor outputs, through the Euclidean
    variables, still see the twist (fails if they are not wired in or not global)."""
    efa = {**EFA, **EFA_MODELS[name]}
    model = build_model(
        "so3krates", dtype=F64, seed=1, **TINY_SO3KRATES, global_attention=efa
    ).eval()
    energies = twist_energies(model, N_LONG, (0.0, 90.0))
    assert np.ptp(energies) > 1e-4, energies
    if efa["degrees"] == (0,):
        return
    with torch.no_grad():
        for block in model.global_attention.values():
            block.out.weight.zero_()
            block.out.bias.zero_()
    tensor_only = twist_energies(model, N_LONG, (0.0, 90.0))
    assert np.ptp(tensor_only) > 1e-4, tensor_only
