"""End-group twist (equiforce.analysis.torsion): the dihedral between two X–Y₂ planes."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from equiforce.analysis.torsion import end_group_twist


def chain(twist_deg: float, length: float = 6.4) -> np.ndarray:
    """H₂C…CH₂ ends on the x axis (C 0, C 1; H 2, 3 on C 0; H 4, 5 on C 1),
    the far end rotated by ``twist_deg`` about x."""
    ch, half = 1.09, np.radians(60.0)
    phi = np.radians(twist_deg)
    pos = [[0.0, 0.0, 0.0], [length, 0.0, 0.0]]
    for s in (1, -1):
        pos.append([-ch * np.cos(half), s * ch * np.sin(half), 0.0])
    for s in (1, -1):
        r = s * ch * np.sin(half)
        pos.append([length + ch * np.cos(half), r * np.cos(phi), r * np.sin(phi)])
    return np.array(pos)


ENDS = ((0, 2, 3), (1, 4, 5))


@pytest.mark.parametrize("twist", [0.0, 17.0, 45.0, 73.0, 90.0])
def test_twist_is_recovered_under_rotation_translation_and_relabelling(twist):
    """Catches a wrong axis projection (a rotated molecule would change the angle),
    a missing fold (swapping the two H of one end gives 180° − φ) and a sign error."""
    rng = np.random.default_rng(int(twist))
    pos = chain(twist) @ Rotation.random(random_state=rng).as_matrix().T + 3.0
    assert end_group_twist(pos, *ENDS) == pytest.approx(twist, abs=1e-9)
    assert end_group_twist(pos, (0, 3, 2), ENDS[1]) == pytest.approx(twist, abs=1e-9)


def test_angles_beyond_90_fold_back_and_trajectories_give_one_angle_per_frame():
    """φ, 180° − φ, 180° + φ and −φ are the same conformer of a symmetric end group;
    a (T, N, 3) trajectory gives (T,) angles."""
    traj = np.stack([chain(a) for a in (30.0, 150.0, 210.0, -30.0, 120.0)])
    np.testing.assert_allclose(
        end_group_twist(traj, *ENDS), [30.0, 30.0, 30.0, 30.0, 60.0], atol=1e-9
    )


def test_bending_the_chain_does_not_change_the_twist_about_its_axis():
    """The angle is measured about the centre-centre axis: swinging the far end off
    the x axis (a chain bent by 17° in the plane of the near CH₂, the far group
    rotated with it) keeps 40°; an angle between the raw H–H vectors would not."""
    pos = chain(40.0)
    bend = Rotation.from_rotvec([0.0, 0.0, 0.3]).as_matrix()  # about z, through C 0
    pos[[1, 4, 5]] = pos[[1, 4, 5]] @ bend.T
    assert end_group_twist(pos, *ENDS) == pytest.approx(40.0, abs=1e-9)
    raw = np.degrees(
        np.arccos(
            abs(np.dot(pos[3] - pos[2], pos[5] - pos[4]))
            / np.linalg.norm(pos[3] - pos[2])
            / np.linalg.norm(pos[5] - pos[4])
        )
    )
    assert abs(raw - 40.0) > 1.0  # the bend is large enough to matter
