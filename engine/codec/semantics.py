"""Interactive semantics: the numbers an IHVC bitstream carries.

Per inter frame 31 values (paper eq. 1), in this order:

    pose  7x3  axis-angle (rad) of head, l/r shoulder, l/r elbow, l/r wrist
               (the last 7 of the 21 SMPL-X body joints)
    rot   3    global body orientation, axis-angle (rad)
    trans 3    body translation in the camera of the person crop (m)
    loc   4    person box in the frame: centre x, centre y, width, height in [0, 1]

plus an optional ``camera`` group (3): background pan x, pan y (fraction of the
frame width / height) and zoom (log scale factor) relative to the key frame.

The key frame also carries what the inter frames inherit: the first 14 body
joints, the body shape, and the crop camera (see DESIGN.md).
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

import numpy as np

# SMPL-X body joints (pelvis excluded: it is ``rot``), fixed order.
BODY_JOINTS = (
    "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2",
    "left_ankle", "right_ankle", "spine3", "left_foot", "right_foot", "neck",
    "left_collar", "right_collar", "head", "left_shoulder", "right_shoulder",
    "left_elbow", "right_elbow", "left_wrist", "right_wrist",
)
N_BODY_JOINTS = 21
N_INHERITED_JOINTS = 14          # joints 0..13 come from the key frame
FRAME_JOINTS = BODY_JOINTS[N_INHERITED_JOINTS:]   # the 7 coded per frame

# Names of the per-frame dimensions, in flat-array order.
_AXES = ("x", "y", "z")
POSE_NAMES = tuple(f"{j}.{a}" for j in FRAME_JOINTS for a in _AXES)
ROT_NAMES = tuple(f"rot.{a}" for a in _AXES)
TRANS_NAMES = tuple(f"trans.{a}" for a in _AXES)
LOC_NAMES = ("loc.cx", "loc.cy", "loc.w", "loc.h")
CAMERA_NAMES = ("camera.pan_x", "camera.pan_y", "camera.zoom")
CORE_NAMES = POSE_NAMES + ROT_NAMES + TRANS_NAMES + LOC_NAMES
assert len(CORE_NAMES) == 31

# Groups: name -> (slice into the flat array, unit). Editors and the
# quantization spec are per group.
GROUPS = {
    "pose": slice(0, 21),
    "rot": slice(21, 24),
    "trans": slice(24, 27),
    "loc": slice(27, 31),
    "camera": slice(31, 34),
}
ANGLE_GROUPS = ("pose", "rot")


def semantic_names(has_camera: bool) -> tuple[str, ...]:
    """Names of the flat per-frame vector (31 or 34 entries)."""
    return CORE_NAMES + (CAMERA_NAMES if has_camera else ())


def per_dimension(table: dict, dims: int) -> np.ndarray:
    """A value per semantic group (``table[group]``) spread over the flat vector of ``dims`` (31 or 34)."""
    out = np.empty(dims)
    for name, sl in GROUPS.items():
        if sl.start < dims:
            out[sl] = table[name]
    return out


def group_of(index: int) -> str:
    for name, sl in GROUPS.items():
        if sl.start <= index < sl.stop:
            return name
    raise IndexError(index)


@dataclass(frozen=True)
class QuantSpec:
    """Quantization step per group (value = integer * step).

    Defaults were chosen from the rate / joint-error table in
    docs/BENCHMARKS.md (``python main.py bench --quant``).
    """
    pose: float = 0.02      # rad, ~1.1 degree
    rot: float = 0.01       # rad
    trans: float = 0.004    # m
    loc: float = 1 / 512    # fraction of the frame
    camera: float = 1 / 1024  # pan fraction / log-zoom

    def steps(self, has_camera: bool) -> np.ndarray:
        """Step per flat dimension, shape (31,) or (34,)."""
        out = np.empty(34 if has_camera else 31)
        for name, sl in GROUPS.items():
            if sl.start < out.size:
                out[sl] = getattr(self, name)
        return out

    def as_tuple(self) -> tuple[float, ...]:
        return (self.pose, self.rot, self.trans, self.loc, self.camera)

    @classmethod
    def from_tuple(cls, t) -> "QuantSpec":
        return cls(*[float(x) for x in t])


@dataclass
class FrameSemantics:
    """The per-frame semantics of one frame.

    pose (7, 3), rot (3,), trans (3,), loc (4,), camera (3,) or None.
    """
    pose: np.ndarray
    rot: np.ndarray
    trans: np.ndarray
    loc: np.ndarray
    camera: np.ndarray | None = None

    def to_array(self) -> np.ndarray:
        parts = [np.asarray(self.pose, float).reshape(21), self.rot, self.trans, self.loc]
        if self.camera is not None:
            parts.append(self.camera)
        return np.concatenate([np.asarray(p, float).reshape(-1) for p in parts])

    @classmethod
    def from_array(cls, a) -> "FrameSemantics":
        a = np.asarray(a, dtype=float)
        if a.shape not in ((31,), (34,)):
            raise ValueError(f"per-frame semantics need 31 or 34 values, got shape {a.shape}")
        return cls(
            pose=a[0:21].reshape(7, 3).copy(), rot=a[21:24].copy(), trans=a[24:27].copy(),
            loc=a[27:31].copy(), camera=a[31:34].copy() if a.size == 34 else None,
        )


@dataclass
class KeySemantics:
    """What the key frame signals once for its group of pictures.

    body_pose (21, 3) axis-angle of all SMPL-X body joints; betas (K,) body
    shape in the body model's own parameters; rot, trans, loc as in
    FrameSemantics; focal (2,) crop-camera focal length in crop widths.
    """
    body_pose: np.ndarray
    betas: np.ndarray
    rot: np.ndarray
    trans: np.ndarray
    loc: np.ndarray
    focal: np.ndarray = field(default_factory=lambda: np.array([5.0, 5.0]))
    body_model: int = 1

    def frame(self, camera: bool = False) -> FrameSemantics:
        """The key frame's own per-frame semantics."""
        return FrameSemantics(
            pose=self.body_pose[N_INHERITED_JOINTS:].copy(), rot=self.rot.copy(),
            trans=self.trans.copy(), loc=self.loc.copy(),
            camera=np.zeros(3) if camera else None,
        )

    def with_frame(self, f: FrameSemantics) -> "KeySemantics":
        """Full body state of a frame: inherited joints from the key, the rest from f."""
        pose = self.body_pose.copy()
        pose[N_INHERITED_JOINTS:] = f.pose
        return replace(self, body_pose=pose, rot=np.asarray(f.rot, float).copy(),
                       trans=np.asarray(f.trans, float).copy(), loc=np.asarray(f.loc, float).copy())


def quantize(values: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """Float semantics (N, D) -> integers (N, D) on the step grid."""
    return np.rint(np.asarray(values, float) / steps).astype(np.int64)


def dequantize(q: np.ndarray, steps: np.ndarray) -> np.ndarray:
    return np.asarray(q, np.int64) * steps


def snap(values: np.ndarray, steps: np.ndarray) -> np.ndarray:
    """What the bitstream can carry: values rounded to the quantization grid."""
    return dequantize(quantize(values, steps), steps)
