"""Head pose and a fit residual from 68 iBUG landmarks: the face model's mean shape, scaled-orthographic.

``fit_head_pose(points)`` solves ``points ~ s * P R X + t`` over the 51 inner points (brows, nose,
eyes, mouth; the jaw contour is left out: it follows the silhouette, not fixed points on the head) for
the mean face ``X`` (:data:`MEAN_FACE_68`), a rotation ``R``, a scale ``s`` and a shift ``t``; ``P``
keeps x and flips y (image y is down, the model's y is up). Closed-form start (affine fit, nearest
scaled rotation), then Gauss-Newton on (rotation vector, log scale, shift).

Angles (degrees) are intrinsic Y-X-Z Euler angles of ``R = R_y(yaw) R_x(pitch) R_z(roll)`` in the face
model's frame (+x the subject's left, +y up, +z out of the face): **yaw > 0** turns the face towards
the image's right (the subject's left), **pitch > 0** brings the forehead towards the camera (looking
down), **roll > 0** turns the face counter-clockwise in the image; the tests pin these signs on
rendered faces. The residual is the RMS distance of the inner points to the fitted mean face in image
pixels: it measures how face-like the points are, not whether they are on the right face (a shape
prior returns face-like points anywhere), so the confidence of :mod:`tvface.data.collect.landmarks`
rests on second opinions instead.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.spatial.transform import Rotation

# ICT-FaceKit's neutral face (MIT licence), its 68 fixed-vertex landmarks in millimetres, in the face
# model's frame. Made by ``tvface.face_models`` (ICT neutral, zero codes, ``lmks_3d``); the test
# ``test_mean_face_is_the_ict_neutral`` compares it with the model.
MEAN_FACE_68 = np.array([
    (-73.63, 42.24, 18.38),
    (-72.76, 20.38, 21.06),
    (-69.38, 0.86, 27.14),
    (-65.57, -18.09, 33.55),
    (-57.24, -39.39, 43.08),
    (-43.02, -56.60, 55.28),
    (-30.51, -63.65, 69.52),
    (-15.37, -67.11, 84.52),
    (0.00, -70.20, 86.13),
    (15.37, -67.11, 84.52),
    (30.51, -63.65, 69.52),
    (43.02, -56.60, 55.28),
    (57.24, -39.39, 43.08),
    (65.57, -18.09, 33.55),
    (69.38, 0.86, 27.14),
    (72.76, 20.38, 21.06),
    (73.63, 42.24, 18.38),
    (-58.15, 57.46, 60.91),
    (-49.33, 65.24, 71.70),
    (-37.93, 68.02, 80.08),
    (-24.15, 67.39, 86.63),
    (-11.72, 64.56, 89.09),
    (11.72, 64.56, 89.09),
    (24.15, 67.39, 86.63),
    (37.93, 68.02, 80.08),
    (49.33, 65.24, 71.70),
    (58.15, 57.46, 60.91),
    (0.00, 42.88, 89.15),
    (0.00, 31.82, 96.99),
    (0.00, 21.59, 104.87),
    (0.00, 9.53, 112.50),
    (-12.53, -5.97, 90.52),
    (-6.02, -5.90, 96.00),
    (0.00, -6.56, 97.47),
    (6.02, -5.90, 96.00),
    (12.53, -5.97, 90.52),
    (-44.59, 39.79, 67.84),
    (-38.69, 44.22, 75.44),
    (-27.81, 44.83, 77.12),
    (-18.44, 37.99, 73.77),
    (-27.29, 36.32, 75.95),
    (-38.56, 36.19, 74.10),
    (18.44, 38.00, 73.76),
    (27.81, 44.83, 77.12),
    (38.69, 44.22, 75.44),
    (44.59, 39.79, 67.84),
    (38.56, 36.19, 74.10),
    (27.29, 36.32, 75.95),
    (-25.35, -29.72, 83.68),
    (-17.02, -22.29, 94.02),
    (-7.28, -18.75, 99.10),
    (0.00, -19.35, 100.20),
    (7.28, -18.75, 99.10),
    (17.02, -22.29, 94.02),
    (25.35, -29.72, 83.68),
    (18.01, -35.09, 90.79),
    (10.34, -37.55, 95.69),
    (0.00, -38.30, 97.30),
    (-10.34, -37.55, 95.69),
    (-18.01, -35.09, 90.79),
    (-22.09, -29.43, 83.09),
    (-9.96, -27.50, 92.68),
    (0.00, -27.76, 94.62),
    (9.96, -27.50, 92.68),
    (22.09, -29.43, 83.09),
    (10.69, -28.32, 92.21),
    (0.00, -28.52, 94.33),
    (-10.69, -28.32, 92.21),
])
INNER = np.arange(17, 68)  # brows, nose, eyes, mouth: points fixed on the head
# iBUG 68 left-right mirror permutation: point k of a mirrored face is point MIRROR_68[k] of the face.
MIRROR_68 = np.array(list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31]
                     + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
                     + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55, 64, 63, 62, 61, 60, 67, 66, 65])


@dataclass(frozen=True)
class HeadPose:
    """A scaled-orthographic fit of the mean face to one set of 68 landmarks."""

    yaw: float  # degrees
    pitch: float
    roll: float
    scale: float  # image px per mm of the mean face
    residual: float  # RMS inner-point distance to the fitted mean face, in image px
    rotation: np.ndarray  # (3, 3)

    def to_dict(self) -> dict:
        return {"yaw": round(self.yaw, 2), "pitch": round(self.pitch, 2), "roll": round(self.roll, 2),
                "scale": round(self.scale, 5), "residual_px": round(self.residual, 3)}


def euler_yxz(R: np.ndarray) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees with ``R = R_y(yaw) R_x(pitch) R_z(roll)`` (right-handed, model frame)."""
    pitch = np.arcsin(np.clip(-R[1, 2], -1.0, 1.0))
    yaw = np.arctan2(R[0, 2], R[2, 2])
    roll = np.arctan2(R[1, 0], R[1, 1])
    return float(np.degrees(yaw)), float(np.degrees(pitch)), float(np.degrees(roll))


def rotation_yxz(yaw: float, pitch: float, roll: float) -> np.ndarray:
    """Inverse of :func:`euler_yxz` (degrees -> (3, 3))."""
    y, p, r = np.radians([yaw, pitch, roll])
    Ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    Rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    Rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return Ry @ Rx @ Rz


def project(X: np.ndarray, R: np.ndarray, s: float, t: np.ndarray) -> np.ndarray:
    """Scaled-orthographic image points (x right, y down) of model points ``X`` (N, 3)."""
    Y = X @ R.T
    return np.stack([s * Y[:, 0], -s * Y[:, 1]], 1) + t


def _initial(x: np.ndarray, X: np.ndarray) -> tuple[np.ndarray, float, np.ndarray]:
    """Closed form: affine camera by least squares, then the nearest scaled rotation."""
    xc, Xc = x - x.mean(0), X - X.mean(0)
    M = np.linalg.lstsq(Xc, xc * np.array([1.0, -1.0]), rcond=None)[0].T  # (2, 3): image (x, -y) ~ M X
    U, S, Vt = np.linalg.svd(M, full_matrices=False)
    r12 = U @ Vt
    R = np.vstack([r12, np.cross(r12[0], r12[1])])
    s = float(S.mean())
    return R, s, x.mean(0) - project(X.mean(0)[None], R, s, np.zeros(2))[0]


def fit_head_pose(points: np.ndarray, iterations: int = 10) -> HeadPose:
    """Fit the mean face to (68, 2) image landmarks (x right, y down); see the module docstring."""
    pts = np.asarray(points, np.float64)
    if pts.shape != (68, 2) or not np.isfinite(pts).all():
        raise ValueError(f"head pose needs (68, 2) finite landmarks, got shape {pts.shape}")
    x, X = pts[INNER], MEAN_FACE_68[INNER]
    R, s, t = _initial(x, X)
    # Gauss-Newton on R <- exp([w]) R, s <- s e^a, t <- t + dt. Residual r = project - x, (2N,).
    for _ in range(iterations):
        Y = X @ R.T  # (N, 3) rotated model points
        r = (project(X, R, s, t) - x).ravel()
        # d(R Y)/dw = -[Y]x : d Y_x / dw = (0, Y_z, -Y_y), d Y_y / dw = (-Y_z, 0, Y_x)
        J = np.zeros((len(x), 2, 6))
        J[:, 0, 0:3] = s * np.stack([np.zeros(len(x)), Y[:, 2], -Y[:, 1]], 1)
        J[:, 1, 0:3] = -s * np.stack([-Y[:, 2], np.zeros(len(x)), Y[:, 0]], 1)
        J[:, 0, 3], J[:, 1, 3] = s * Y[:, 0], -s * Y[:, 1]
        J[:, 0, 4], J[:, 1, 5] = 1.0, 1.0
        J = J.reshape(-1, 6)
        step = np.linalg.lstsq(J, -r, rcond=None)[0]
        R, s, t = Rotation.from_rotvec(step[:3]).as_matrix() @ R, s * float(np.exp(step[3])), t + step[4:]
        if np.abs(step).max() < 1e-9:
            break
    res = project(X, R, s, t) - x
    yaw, pitch, roll = euler_yxz(R)
    return HeadPose(yaw, pitch, roll, s, float(np.sqrt((res ** 2).sum(1).mean())), R)
