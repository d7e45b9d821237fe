"""MediaPipe Holistic landmarks per frame (``mediapipe==0.10.14``, legacy ``mp.solutions``).

Only the pose model of ``model_complexity=1`` ("full") ships inside that wheel;
0 ("lite") and 2 ("heavy") would be downloaded at run time, which cannot work
offline, so 1 is the only choice here (measured: ~30-40 ms per 384x384 frame on
one CPU core with the face mesh, both hands and the segmentation mask; the mask
is nearly free and is used by the camera-motion estimate).

Coordinates: pixels of the analysed frame (x right, y down). ``pose3d`` is
MediaPipe's metric "world" pose turned into the engine's camera axes
(x right, y up, z towards the camera), origin between the hips.
Hands are the person's own left / right (index 0 / 1).

What MediaPipe returns is cleaned in three ways before the fit sees it (each comment below says what it
fixed; docs/BENCHMARKS.md, "People the pose model gets wrong"): a frame with nobody found is tried again
inside a border; a detection that jumps away from neighbours that agree is dropped; a back read as a front
for a few frames is read as the rest of the clip.
"""
from __future__ import annotations

import contextlib
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import torch

from engine.errors import IHVCError

# MediaPipe pose landmark index -> engine.synthesis.body.LANDMARK_NAMES entry.
POSE_LANDMARKS = {
    0: "nose", 2: "left_eye", 5: "right_eye", 7: "left_ear", 8: "right_ear",
    11: "left_shoulder", 12: "right_shoulder", 13: "left_elbow", 14: "right_elbow",
    15: "left_wrist", 16: "right_wrist", 23: "left_hip", 24: "right_hip",
    25: "left_knee", 26: "right_knee", 27: "left_ankle", 28: "right_ankle",
    31: "left_big_toe", 32: "right_big_toe", 29: "left_heel", 30: "right_heel",
    19: "left_index_mcp", 20: "right_index_mcp", 17: "left_pinky_mcp", 18: "right_pinky_mcp",
}
# MediaPipe hand landmark index -> knuckle name suffix (the hand model's wrist point, 0, sits
# ~7-10 px from the pose wrist at 384 px and is not the same anatomical point: not used)
HAND_LANDMARKS = {5: "index_mcp", 9: "middle_mcp", 17: "pinky_mcp"}
# Face-mesh points used for the head: nose tip and the two eye centres (ring means).
FACE_NOSE = 1
FACE_LEFT_EYE = (263, 362, 386, 374)      # person's left eye (image right)
FACE_RIGHT_EYE = (33, 133, 159, 145)


@dataclass
class Landmarks:
    width: int
    height: int
    pose2d: np.ndarray        # N x 33 x 2 px (NaN where no detection)
    pose_vis: np.ndarray      # N x 33 visibility in [0, 1] (0 where no detection)
    pose3d: np.ndarray        # N x 33 x 3 metric, engine camera axes
    face: np.ndarray          # N x 468 x 2 px (NaN where absent)
    hands: np.ndarray         # N x 2 x 21 x 2 px (NaN where absent), [left, right]
    detected: np.ndarray      # N bool: a pose was found
    masks: np.ndarray | None  # N x H x W uint8 person probability x 255, or None

    @property
    def n_frames(self) -> int:
        return int(self.detected.shape[0])

    def subset(self, idx) -> "Landmarks":
        return Landmarks(self.width, self.height, self.pose2d[idx], self.pose_vis[idx], self.pose3d[idx],
                         self.face[idx], self.hands[idx], self.detected[idx],
                         None if self.masks is None else self.masks[idx])


def _quiet_mediapipe():
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.filterwarnings("ignore", message=".*SymbolDatabase.GetPrototype.*")


@contextlib.contextmanager
def _native_stderr_silenced():
    """Point fd 2 at /dev/null for a moment.

    MediaPipe's C++ side logs through absl before any log level can be set (GLOG_minloglevel
    does not reach it): eight "Feedback manager requires a model with a single signature"
    warnings and an XNNPACK line when its graph starts. They are noise to a user, so the
    graph's construction and its first frames run with the native stderr closed; Python's
    own messages printed meanwhile (a progress bar refresh) are lost for that moment only.
    """
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        yield
        return
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def _check_model_available(model_complexity: int):
    import mediapipe as mp
    name = {0: "pose_landmark_lite.tflite", 1: "pose_landmark_full.tflite",
            2: "pose_landmark_heavy.tflite"}.get(model_complexity)
    if name is None:
        raise IHVCError(f"model_complexity must be 0, 1 or 2, got {model_complexity}")
    path = Path(mp.__file__).parent / "modules" / "pose_landmark" / name
    if not path.exists():
        raise IHVCError(f"MediaPipe pose model {name} is not installed (only complexity 1 ships offline)")


class HolisticDetector:
    """One MediaPipe Holistic graph in video (tracking) mode; ``process`` one RGB frame at a time."""

    def __init__(self, model_complexity: int = 1, segmentation: bool = True, static: bool = False):
        _quiet_mediapipe()
        _check_model_available(model_complexity)
        import mediapipe as mp
        with _native_stderr_silenced():
            self._h = mp.solutions.holistic.Holistic(
                static_image_mode=static, model_complexity=model_complexity, smooth_landmarks=True,
                enable_segmentation=segmentation, smooth_segmentation=True, refine_face_landmarks=False,
                min_detection_confidence=0.5, min_tracking_confidence=0.5)
        self.segmentation = segmentation
        self._warm = 0            # frames processed with the native stderr silenced (see below)

    def close(self):
        self._h.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def process(self, rgb: np.ndarray) -> dict:
        h, w = rgb.shape[:2]
        if self._warm < 2:        # the graph loads its models on the first frames
            self._warm += 1
            with _native_stderr_silenced():
                r = self._h.process(np.ascontiguousarray(rgb))
        else:
            r = self._h.process(np.ascontiguousarray(rgb))
        out = {"detected": r.pose_landmarks is not None}
        if r.pose_landmarks is not None:
            lm = r.pose_landmarks.landmark
            out["pose2d"] = np.array([[p.x * w, p.y * h] for p in lm], np.float32)
            out["pose_vis"] = np.array([p.visibility for p in lm], np.float32)
        if r.pose_world_landmarks is not None:
            out["pose3d"] = np.array([[p.x, -p.y, -p.z] for p in r.pose_world_landmarks.landmark], np.float32)
        if r.face_landmarks is not None:
            out["face"] = np.array([[p.x * w, p.y * h] for p in r.face_landmarks.landmark], np.float32)
        for k, attr in ((0, "left_hand_landmarks"), (1, "right_hand_landmarks")):
            hl = getattr(r, attr)
            if hl is not None:
                out[f"hand{k}"] = np.array([[p.x * w, p.y * h] for p in hl.landmark], np.float32)
        if self.segmentation and r.segmentation_mask is not None:
            out["mask"] = np.clip(r.segmentation_mask * 255.0, 0, 255).astype(np.uint8)
        return out


# MediaPipe's person detector misses a person who fills the picture from top to bottom: taichi_14 (a man
# seen side on, head to feet in the frame) had no detection in any of its 180 frames, and taichi_02 none in
# 53 of 149; on the same frames with a grey border of a quarter of the side all around, every frame was
# found. A frame with no detection is tried again so framed, by a second tracker (its frames in order).
RETRY_BORDER = 0.25        # of the frame's larger side, on every side
_GREY = 127


def _unframed(r: dict, b: int, height: int, width: int) -> dict:
    """A result on a frame with a border of ``b`` pixels, in the frame's own pixels."""
    out = dict(r)
    for k in ("pose2d", "face", "hand0", "hand1"):
        if k in out:
            out[k] = out[k] - np.float32(b)
    if "mask" in out:
        out["mask"] = np.ascontiguousarray(out["mask"][b:b + height, b:b + width])
    return out


def detect_landmarks(frames: Iterable[np.ndarray], n_frames: int | None = None,
                     progress: Callable[[int], None] | None = None, segmentation: bool = True,
                     model_complexity: int = 1) -> Landmarks:
    """Run Holistic over RGB frames (any iterable); ``progress(1)`` after each frame. Frames where it
    finds nobody are tried again inside a border (RETRY_BORDER): taken again from ``frames`` when it is an
    array, kept aside otherwise (only those frames)."""
    indexable = isinstance(frames, np.ndarray)
    results, missed = [], {}
    width = height = None
    with HolisticDetector(model_complexity, segmentation) as d:
        for rgb in frames:
            if width is None:
                height, width = rgb.shape[:2]
            r = d.process(rgb)
            if not r["detected"]:
                missed[len(results)] = None if indexable else np.array(rgb, copy=True)
            results.append(r)
            if progress is not None:
                progress(1)
    if missed:
        b = int(round(RETRY_BORDER * max(height, width)))
        with HolisticDetector(model_complexity, segmentation) as d:
            for i, rgb in missed.items():
                rgb = frames[i] if indexable else rgb
                r = d.process(np.pad(rgb, ((b, b), (b, b), (0, 0)), constant_values=_GREY))
                if r["detected"]:
                    results[i] = _unframed(r, b, height, width)
    if width is None:
        return Landmarks(0, 0, np.zeros((0, 33, 2)), np.zeros((0, 33)), np.zeros((0, 33, 3)),
                         np.zeros((0, 468, 2)), np.zeros((0, 2, 21, 2)), np.zeros(0, bool), None)
    get = lambda k, shape, fill=np.nan: np.stack([r.get(k, np.full(shape, fill, np.float32)) for r in results])  # noqa: E731
    hands = np.stack([get("hand0", (21, 2)), get("hand1", (21, 2))], 1)
    masks = np.stack([r.get("mask", np.zeros((height, width), np.uint8)) for r in results]) if segmentation else None
    return one_facing(drop_jumps(Landmarks(width, height, get("pose2d", (33, 2)), get("pose_vis", (33,), 0.0),
                                           get("pose3d", (33, 3)), get("face", (468, 2)), hands,
                                           np.array([r["detected"] for r in results], bool), masks)))


# A pose far from where the frames around it put the person, while those frames agree with each other,
# is the pose model's mistake, not the person's motion. taichi_lia1 opens with a fade-in: on its blurred
# first frame the model drew the torso upside down above the picture (3.1 torso lengths from the next
# detection), and the fit turned it into a giant arm across the first two decoded frames (16 dB against
# 30 for the clip). Nobody moves the torso JUMP torso lengths within JUMP_REACH frames: the largest step
# between two frames measured on the clips of ../shared/data, dancers included, is in docs/BENCHMARKS.md
# ("People the pose model gets wrong").
JUMP = 1.5                 # torso lengths (shoulders' midpoint to hips' midpoint)
JUMP_REACH = 4             # frames either side that are compared
_TORSO = (11, 12, 23, 24)  # shoulders and hips


def pose_jumps(lm: Landmarks) -> list[int]:
    """Frames whose pose detection jumps away from its neighbours' (the nearest two detected frames on
    each side within JUMP_REACH): farther than JUMP from more than half of them, those far ones agreeing
    with each other. A cut to another shot is not a jump: on each side of it the frames agree."""
    pts = lm.pose2d[:, list(_TORSO)].astype(np.float64)
    size = np.linalg.norm(pts[:, :2].mean(1) - pts[:, 2:].mean(1), axis=1)
    size = np.maximum(np.nan_to_num(size), 0.05 * min(lm.width, lm.height))   # a torso seen end on
    det = np.flatnonzero(lm.detected)

    def far(i, j):
        # The median of the four points' moves: one mislocated hip is not a jump.
        return np.median(np.linalg.norm(pts[i] - pts[j], axis=1)) > JUMP * min(size[i], size[j])
    out = []
    for n, i in enumerate(det):
        near = [j for j in (*det[max(0, n - 2):n], *det[n + 1:n + 3]) if abs(j - i) <= JUMP_REACH]
        away = [j for j in near if far(i, j)]
        if len(near) >= 2 and 2 * len(away) > len(near) and any(
                not far(a, b) for k, a in enumerate(away) for b in away[k + 1:]):
            out.append(int(i))
    return out


def drop_jumps(lm: Landmarks) -> Landmarks:
    """``lm`` with the detections of :func:`pose_jumps` removed: the fit carries its neighbours' state there."""
    bad = pose_jumps(lm)
    if not bad:
        return lm
    pose2d, vis, pose3d, face, hands, det = (a.copy() for a in (lm.pose2d, lm.pose_vis, lm.pose3d, lm.face,
                                                                 lm.hands, lm.detected))
    for a in (pose2d, pose3d, face, hands):
        a[bad] = np.nan
    vis[bad] = 0.0
    det[bad] = False
    return Landmarks(lm.width, lm.height, pose2d, vis, pose3d, face, hands, det, lm.masks)


# Seen from behind, MediaPipe may read a back as a front: the same 2D points with left and right swapped
# and the depth mirrored. taichi_11's woman, her back to the camera throughout, had her torso read
# turning between -160 and +5 degrees of yaw every few frames, and the decoder mapped her back onto her
# front wherever a key and a frame disagreed. Nobody turns FLIP degrees between two frames (the fastest
# real turn in the data, ubc_1's, is about 20 a frame): such a step is the other reading. The clip's
# frames are split into runs at those steps, alternately one reading and the other; the reading held by
# more frames is kept, and the other runs are swapped to it.
FLIP = 120.0              # degrees of torso yaw between two detected frames at most FLIP_REACH apart
FLIP_REACH = 2
_MIRROR = np.arange(33)
for _a in (1, 2, 3, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31):
    _b = _a + 3 if _a < 4 else _a + 1                 # eyes: 1-3 <-> 4-6; the rest in (left, right) pairs
    _MIRROR[_a], _MIRROR[_b] = _b, _a


def torso_frame(pts: torch.Tensor) -> torch.Tensor:
    """Rotation (... x 3 x 3) whose columns are the torso's left, up and forward axes, from points
    ordered l_shoulder, r_shoulder, l_hip, r_hip, in any right-handed axes (the engine camera's or
    MediaPipe's metric ones). The fit's rotation start and :func:`torso_yaw` both read the torso here."""
    ls, rs, lh, rh = pts.unbind(-2)
    left = (ls - rs) + 0.5 * (lh - rh)
    up = (ls + rs - lh - rh) / 2
    left = left / left.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    up = up - (up * left).sum(-1, keepdim=True) * left
    up = up / up.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    fwd = torch.linalg.cross(left, up, dim=-1)
    return torch.stack([left, up, fwd], -1)


def torso_yaw(lm: Landmarks) -> np.ndarray:
    """N: the degrees MediaPipe's metric torso is turned from facing the camera about the vertical (NaN
    where no pose); 0 facing the camera, +-180 its back."""
    fwd = torso_frame(torch.from_numpy(lm.pose3d[:, list(_TORSO)].astype(np.float64)))[..., 2].numpy()
    return np.degrees(np.arctan2(fwd[:, 0], fwd[:, 2]))


def facing_flips(lm: Landmarks) -> np.ndarray:
    """N bool: the frames that :func:`one_facing` reads the other way round (left and right swapped)."""
    yaw = torso_yaw(lm)
    det = np.flatnonzero(lm.detected & np.isfinite(yaw))
    other = np.zeros(lm.n_frames, bool)
    reading = False
    for a, b in zip(det[:-1], det[1:]):
        if b - a <= FLIP_REACH and abs((yaw[b] - yaw[a] + 180.0) % 360.0 - 180.0) > FLIP:
            reading = not reading
        other[b] = reading
    if 2 * other[det].sum() > len(det):              # the other reading holds more frames: it is kept
        other[det] = ~other[det]
    return other


def one_facing(lm: Landmarks) -> Landmarks:
    """``lm`` with the frames of :func:`facing_flips` read the other way round: left and right swapped
    (pose points, their visibilities, the hands) and the metric pose's depth mirrored; the 2D points stay
    where they are."""
    swap = np.flatnonzero(facing_flips(lm))
    if not len(swap):
        return lm
    pose2d, vis, pose3d, hands = (a.copy() for a in (lm.pose2d, lm.pose_vis, lm.pose3d, lm.hands))
    pose2d[swap] = lm.pose2d[swap][:, _MIRROR]
    vis[swap] = lm.pose_vis[swap][:, _MIRROR]
    pose3d[swap] = lm.pose3d[swap][:, _MIRROR] * np.array([1.0, 1.0, -1.0], np.float32)
    hands[swap] = lm.hands[swap][:, ::-1]
    return Landmarks(lm.width, lm.height, pose2d, vis, pose3d, lm.face, hands, lm.detected, lm.masks)
