"""Twist between two planar end groups (e.g. the CH₂ ends of a cumulene or allene).

Each end group is a centre atom with two substituents (X–Y₂). Its orientation is
the Y–Y vector; the twist is the angle between the two groups' Y–Y vectors after
projecting both onto the plane perpendicular to the axis joining the two centres,
i.e. the dihedral angle between the two Y–X–Y planes about that axis. Swapping the
two substituents of a group (or mirroring) gives the same conformer, so the angle
is folded into [0°, 90°]: 0° planar ends, 90° perpendicular ends. A uniform
distribution of the dihedral (a free rotor) is uniform on [0°, 90°].
"""

from __future__ import annotations

import numpy as np

#: (centre, substituent 1, substituent 2) atom indices of one end group.
EndGroup = tuple[int, int, int]


def end_group_twist(
    positions: np.ndarray,  # (n_atoms, 3) or (n_frames, n_atoms, 3), Å
    end_a: EndGroup,
    end_b: EndGroup,
) -> np.ndarray:
    """Twist angle between the planes of two X–Y₂ end groups, degrees in [0, 90].

    Args:
        positions: one frame (n_atoms, 3) or a trajectory (n_frames, n_atoms, 3).
        end_a: (centre, substituent, substituent) indices of the first group.
        end_b: the same for the second group.

    Returns:
        The twist per frame, shape () for one frame or (n_frames,).
    """
    pos = np.asarray(positions, dtype=float)
    frames = pos[None] if pos.ndim == 2 else pos  # (T, N, 3)
    axis = frames[:, end_b[0]] - frames[:, end_a[0]]  # (T, 3)
    axis = axis / np.linalg.norm(axis, axis=1, keepdims=True)

    def projected(group: EndGroup) -> np.ndarray:  # (T, 3), unit
        d = frames[:, group[2]] - frames[:, group[1]]
        d = d - (d * axis).sum(1, keepdims=True) * axis
        return d / np.linalg.norm(d, axis=1, keepdims=True)

    cos = np.abs((projected(end_a) * projected(end_b)).sum(1))  # fold φ and 180° − φ
    twist = np.degrees(np.arccos(np.clip(cos, 0.0, 1.0)))
    return twist[0] if pos.ndim == 2 else twist
