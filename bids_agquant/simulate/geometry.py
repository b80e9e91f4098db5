"""Rigid transforms, head poses and oblique acquisition grids (all in mm, world = scanner RAS+).

Head space is the world at the baseline pose: a point ``p`` of the head sits at
``pose @ [p, 1]`` in the world during a session; the baseline pose is the identity.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["rotation_matrix", "random_rotation", "rigid", "Grid", "axis_flip", "rotation_angle_deg",
           "euler_xyz_deg"]


def rotation_matrix(axis, angle_deg: float) -> np.ndarray:
    """3x3 rotation by ``angle_deg`` about unit vector ``axis`` (Rodrigues)."""
    axis = np.asarray(axis, dtype=np.float64)
    axis = axis / np.linalg.norm(axis)
    a = np.deg2rad(angle_deg)
    k = np.array([[0, -axis[2], axis[1]], [axis[2], 0, -axis[0]], [-axis[1], axis[0], 0]])
    return np.eye(3) + np.sin(a) * k + (1 - np.cos(a)) * (k @ k)


def random_rotation(rng: np.random.Generator, max_deg: float, min_frac: float = 0.3) -> np.ndarray:
    """Rotation about a random axis by an angle uniform in ``[min_frac, 1] * max_deg``."""
    axis = rng.standard_normal(3)
    angle = rng.uniform(min_frac, 1.0) * max_deg if max_deg > 0 else 0.0
    return rotation_matrix(axis, angle)


def rigid(rotation: np.ndarray, translation, centre=(0.0, 0.0, 0.0)) -> np.ndarray:
    """4x4 ``x -> R (x - c) + c + t``: rotation about ``centre`` followed by translation."""
    c = np.asarray(centre, dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = c - rotation @ c + np.asarray(translation, dtype=np.float64)
    return out


def rotation_angle_deg(matrix: np.ndarray) -> float:
    """Total rotation angle (deg) of the 3x3 part of ``matrix``."""
    r = np.asarray(matrix)[:3, :3]
    return float(np.rad2deg(np.arccos(np.clip((np.trace(r) - 1) / 2, -1.0, 1.0))))


def euler_xyz_deg(matrix: np.ndarray) -> tuple[float, float, float]:
    """Euler angles (deg) with ``R = Rz @ Ry @ Rx`` (rotation about x first)."""
    r = np.asarray(matrix)[:3, :3]
    ry = np.arcsin(-np.clip(r[2, 0], -1, 1))
    rx = np.arctan2(r[2, 1], r[2, 2])
    rz = np.arctan2(r[1, 0], r[0, 0])
    return tuple(float(v) for v in np.rad2deg([rx, ry, rz]))


def axis_flip(codes: str) -> np.ndarray:
    """Diagonal sign matrix that makes voxel axes point to ``codes`` (e.g. 'LAS': i -> left)."""
    signs = []
    for c, (pos, neg) in zip(codes.upper(), (("R", "L"), ("A", "P"), ("S", "I"))):
        if c == pos:
            signs.append(1.0)
        elif c == neg:
            signs.append(-1.0)
        else:
            raise ValueError(f"axis codes {codes!r}: expected x in RL, y in AP, z in SI")
    return np.diag(signs)


@dataclass(frozen=True)
class Grid:
    """A voxel grid: ``shape`` and 4x4 ``affine`` (voxel index -> world mm)."""
    shape: tuple[int, int, int]
    affine: np.ndarray

    @classmethod
    def oblique(cls, fov_mm, voxel_mm, rotation: np.ndarray, centre_world, axis_codes="LAS") -> "Grid":
        """Grid of ``voxel_mm`` covering ``fov_mm`` (along the rotated axes), centred at
        ``centre_world``, voxel axes = ``rotation`` applied to the world axes (then flipped
        to ``axis_codes``)."""
        voxel = np.asarray(voxel_mm, dtype=np.float64)
        shape = tuple(int(max(1, round(f / v))) for f, v in zip(fov_mm, voxel))
        lin = rotation @ axis_flip(axis_codes) @ np.diag(voxel)
        centre_idx = (np.asarray(shape, dtype=np.float64) - 1) / 2
        aff = np.eye(4)
        aff[:3, :3] = lin
        aff[:3, 3] = np.asarray(centre_world, dtype=np.float64) - lin @ centre_idx
        return cls(shape, aff)

    @property
    def voxel_mm(self) -> np.ndarray:
        return np.sqrt((self.affine[:3, :3] ** 2).sum(axis=0))

    @property
    def size(self) -> int:
        return int(np.prod(self.shape))

    def points(self, i0: int, i1: int, sub: tuple[int, int, int] = (1, 1, 1),
               transform: np.ndarray | None = None) -> np.ndarray:
        """Coordinates of sub-voxel sample points of slabs ``i0:i1`` along the first axis.

        Returns shape ``(3, (i1-i0) * nj * nk * si * sj * sk)`` (point order: i, j, k, then
        sub-points), in world mm, or mapped by the 4x4 ``transform`` (world -> e.g. head space).
        ``sub`` points per axis sit at the centres of equal sub-boxes of each voxel
        (``(1, 1, 1)``: the voxel centres).
        """
        nj, nk = self.shape[1], self.shape[2]
        offs = [(np.arange(s) + 0.5) / s - 0.5 for s in sub]
        ii = (np.arange(i0, i1, dtype=np.float64)[:, None] + offs[0][None, :])[:, None, None, :, None, None]
        jj = (np.arange(nj, dtype=np.float64)[:, None] + offs[1][None, :])[None, :, None, None, :, None]
        kk = (np.arange(nk, dtype=np.float64)[:, None] + offs[2][None, :])[None, None, :, None, None, :]
        a = self.affine if transform is None else transform @ self.affine
        shape = (i1 - i0, nj, nk) + tuple(sub)
        out = np.empty((3,) + shape, dtype=np.float64)
        for r in range(3):
            out[r] = a[r, 0] * ii + a[r, 1] * jj + a[r, 2] * kk + a[r, 3]
        return out.reshape(3, -1)


def apply(matrix: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a 4x4 affine to points of shape (3, N)."""
    return matrix[:3, :3] @ points + matrix[:3, 3:4]
