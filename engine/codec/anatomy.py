"""Anatomical ranges of the seven frame joints (Qt-free; the codec's vocabulary, shared by the
studio's plausibility warnings and the closed-loop encoder's prior).

    joint_ranges(body_model) -> {joint: (AxisRange, ...)}
    range_axes(body_model) -> the same as arrays (joint, axis, lo, hi), for vectorised use
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from engine.codec.bitstream import BODY_MODEL_IDS
from engine.codec.semantics import FRAME_JOINTS

# Axis-angle components are measured along unit axes in the body frame at the rest pose
# (y up, the body facing +z, its left towards +x; engine/synthesis/body.py), which is where the
# SMPL-X convention expresses a joint's rotation relative to its parent.
_X, _Y, _Z = (1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)
# Rest-pose directions of the left arm (body frame): upper arm (shoulder -> elbow) and forearm
# (elbow -> wrist), measured from each model's joints at pose 0. Anny rests in an A-pose, the
# upper arm 48 degrees below horizontal and the elbow already bent 42 degrees forward; SMPL-X
# rests in a T-pose with straight arms. The elbow's axes follow from them: the hinge is
# perpendicular to upper arm and forearm, the twist runs along the forearm.
REST_LEFT_ARM = {
    BODY_MODEL_IDS["anny"]: ((0.669, -0.743, 0.020), (0.511, -0.521, 0.684)),
    BODY_MODEL_IDS["smplx"]: ((1.0, 0.0, 0.0), (1.0, 0.0, 0.0)),
}


@dataclass(frozen=True)
class AxisRange:
    """An allowed interval [lo, hi] (rad) of the rotation about ``axis`` (unit, body frame)."""
    label: str
    axis: tuple[float, float, float]
    lo: float
    hi: float


def _deg(a: float) -> float:
    return math.radians(a)


def joint_ranges(body_model: int = BODY_MODEL_IDS["anny"]) -> dict[str, tuple[AxisRange, ...]]:
    """Per frame joint, the ranges its axis-angle must stay in (rad).

    Rough anatomical bases (normal adult active range of motion, AAOS / Norkin & White
    tables), with some slack because the fitted values carry noise and the neck, collars
    and spine are frozen at the key frame, so the head and shoulders absorb some of their
    motion:
      head      flexion / extension about 50 / 60 deg, rotation 80, lateral bending 45;
                the head joint carries all per-frame neck motion, so about 70 / 80 / 45.
      shoulder  the most mobile joint: abduction to 180 deg, flexion 180, extension 60,
                rotation 90. Ranges are wide, from the rest pose's arm angle, and mirrored
                left / right (a rotation about +z lifts the left arm, about -z the right).
      elbow     a hinge ("elbows bend one way"): flexion 0..150 deg, hyperextension at most
                about 10; measured from the rest pose's own bend (Anny: 42 deg), so Anny's
                range is -57..113 deg about its hinge. Pronation / supination 80 each way about
                the forearm; almost no sideways (varus / valgus) bend: the 10..15 deg carrying
                angle, plus slack for fit noise and for one-slider edits (on Anny's bent rest
                arm a rotation about y alone is two thirds hinge, one half sideways bend).
      wrist     flexion 80, extension 70, radial / ulnar deviation 20 / 30 deg; which body
                axis each maps to depends on the hand's rest orientation, so every axis
                gets the largest (80 deg).
    """
    upper, fore = (np.asarray(v, float) for v in REST_LEFT_ARM.get(body_model, REST_LEFT_ARM[BODY_MODEL_IDS["anny"]]))
    upper, fore = upper / np.linalg.norm(upper), fore / np.linalg.norm(fore)
    bend = math.acos(float(np.clip(upper @ fore, -1.0, 1.0)))              # rest flexion
    hinge = np.cross(upper, fore) if bend > 0.1 else np.cross(upper, _Z)    # straight arm: bend forward
    hinge /= np.linalg.norm(hinge)
    side_axis = np.cross(hinge, fore)
    drop = math.atan2(-upper[1], upper[0])                                  # upper arm below horizontal
    out: dict[str, tuple[AxisRange, ...]] = {
        "head": (AxisRange("nod", _X, _deg(-70), _deg(70)), AxisRange("turn", _Y, _deg(-80), _deg(80)),
                 AxisRange("tilt", _Z, _deg(-45), _deg(45))),
    }
    for side, m in (("left", 1.0), ("right", -1.0)):
        # Mirroring left to right (x -> -x) maps a rotation vector (ax, ay, az) to (ax, -ay, -az).
        mirror = np.array([1.0, m, m])

        def ax(v):
            return tuple(float(c) for c in np.asarray(v) * mirror)
        out[f"{side}_shoulder"] = (
            AxisRange("swing forward / back", _X, _deg(-175), _deg(90)),
            AxisRange("horizontal swing", _Y, *sorted((m * _deg(-140), m * _deg(70)))),
            # raise: from the rest angle up to overhead; lower: down to the side, then 45 deg across the body
            AxisRange("raise / lower", _Z, *sorted((m * (-(math.pi / 2 - drop) - _deg(55)),
                                                   m * (math.pi / 2 + drop + _deg(15))))),
        )
        out[f"{side}_elbow"] = (
            AxisRange("flexion", ax(hinge), -bend - _deg(15), _deg(155) - bend),
            AxisRange("forearm twist", ax(fore), _deg(-90), _deg(90)),
            AxisRange("sideways bend", ax(side_axis), _deg(-40), _deg(40)),
        )
        out[f"{side}_wrist"] = tuple(AxisRange(n, a_, _deg(-80), _deg(80))
                                     for n, a_ in (("x", _X), ("y", _Y), ("z", _Z)))
    assert set(out) == set(FRAME_JOINTS)
    return out



def range_axes(body_model: int = BODY_MODEL_IDS["anny"]):
    """The ranges as arrays for vectorised checks: (joint index 0..6, axis 3, lo, hi) per range."""
    rows = []
    ranges = joint_ranges(body_model)
    for j, name in enumerate(FRAME_JOINTS):
        for r in ranges[name]:
            rows.append((j, r.axis, r.lo, r.hi))
    return (np.array([r[0] for r in rows]), np.array([r[1] for r in rows], float),
            np.array([r[2] for r in rows]), np.array([r[3] for r in rows]))
