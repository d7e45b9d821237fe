"""Plausibility warnings for edited semantics (Qt-free).

    check(original, edited, names, body_model=1, meshes=None) -> [PlausibilityWarning]   sorted by frame

Three checks, each only where the user edited (a value that differs from the
decoded original), and only when the edit made things worse than the original
already was, so an unedited clip never warns and fit noise in the source is
not blamed on the editor:

* ``range``  a frame joint beyond an anatomical range (JOINT_RANGES);
* ``jump``   a step between neighbouring frames far beyond the clip's own motion:
             |edited[t] - edited[t-1]| > max(JUMP_FACTOR * p99_t |original[t] - original[t-1]|,
             JUMP_FLOOR[group]), per semantic;
* ``box``    the person box (loc) with no size, or pushed out of the frame; and, for frames
             whose posed mesh is known (``meshes``, e.g. the 3D view's), the projected body
             leaving its box or the frame (engine/synthesis/camera.py's projection).

Limitation: without meshes the box check cannot see a body that outgrows its
box through pose / trans edits (that needs the body model, which the studio
only runs for the frame on screen); it then checks the box alone.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Mapping

import numpy as np

from engine.codec.anatomy import REST_LEFT_ARM, AxisRange, joint_ranges  # noqa: F401  (re-exported)
from engine.codec.bitstream import BODY_MODEL_IDS
from engine.codec.semantics import group_of


# A step counts as a jump past JUMP_FACTOR x the clip's own 99th-percentile step of that
# semantic: the 99th percentile ignores the odd fit glitch, and three times the clip's fastest
# ordinary motion between two frames is a visible pop. The floors keep a still semantic (p99 = 0)
# from flagging every small edit: about 6 degrees, 2 cm, 1 % of the frame per frame.
JUMP_FACTOR = 3.0
JUMP_FLOOR = {"pose": 0.1, "rot": 0.1, "trans": 0.02, "loc": 0.01, "camera": 0.01}
# The box: at least this share of it must stay inside the frame (the body fills most of a
# person box, so a quarter outside cuts off limbs). Mesh: the share of the body's vertices
# that may newly leave the box or the frame.
MIN_BOX_INSIDE = 0.75
MAX_NEW_OUTSIDE = 0.2
_EPS = 1e-9


# Hard limits, refused rather than warned (``python main.py edit`` and edit lists, through
# engine.studio.edits.check_limits): the values each semantic is meant to take, with wide margins
# around the studio's slider ranges (editor_widgets/semantic_panel.py). They keep the body in
# front of the camera (trans.z: 0.5 m clears the body's own depth, about +-0.35 m around the
# pelvis) and the person box with a size, so an edit cannot ask the renderer for a body at or
# behind the camera plane or squeezed into a degenerate box. Angles: one full turn each way.
LIMITS = {
    "pose": (-2 * math.pi, 2 * math.pi), "rot": (-2 * math.pi, 2 * math.pi),
    "trans.x": (-10.0, 10.0), "trans.y": (-10.0, 10.0), "trans.z": (0.5, 100.0),
    "loc.cx": (-1.0, 2.0), "loc.cy": (-1.0, 2.0), "loc.w": (0.02, 10.0), "loc.h": (0.02, 10.0),
    "camera.pan_x": (-1.0, 1.0), "camera.pan_y": (-1.0, 1.0), "camera.zoom": (-2.0, 2.0),
}


def limits(names) -> tuple[np.ndarray, np.ndarray]:
    """(lo, hi) per semantic, shape (D,) each: LIMITS by name, else by group."""
    pairs = [LIMITS.get(n, LIMITS.get(group_of(i))) for i, n in enumerate(names)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def limit_problems(original: np.ndarray, edited: np.ndarray, names) -> list[str]:
    """One line per semantic that an edit took outside LIMITS (first offending frame named);
    values the edit did not change are the file's own and are not judged here."""
    original, edited = np.asarray(original, float), np.asarray(edited, float)
    lo, hi = limits(names)
    bad = (edited != original) & ~((edited >= lo) & (edited <= hi))      # NaN counts as outside
    out = []
    for d in np.flatnonzero(bad.any(0)):
        f = int(np.flatnonzero(bad[:, d])[0])
        out.append(f"{names[d]} = {edited[f, d]:.6g} at frame {f} is outside {lo[d]:g}..{hi[d]:g}"
                   + (f" ({int(bad[:, d].sum())} frames)" if bad[:, d].sum() > 1 else ""))
    return out


@dataclass(frozen=True)
class PlausibilityWarning:
    frame: int
    kind: str           # "range", "jump" or "box"
    subject: str        # a joint, a semantic name, or "loc"
    message: str        # one line, without the frame

    @property
    def text(self) -> str:
        return f"frame {self.frame}: {self.message}"


@dataclass(frozen=True)
class FrameMesh:
    """The posed body of one frame for the box check.

    vertices, ghost: V x 3 body-frame vertices already turned by ``rot`` (app.services.posed_vertices),
    of the edited and the original semantics; focal (2,) the crop camera's (KeySemantics.focal).
    """
    vertices: np.ndarray
    ghost: np.ndarray
    focal: np.ndarray


def check(original: np.ndarray, edited: np.ndarray, names, body_model: int = BODY_MODEL_IDS["anny"],
          meshes: Mapping[int, FrameMesh] | None = None) -> list[PlausibilityWarning]:
    """Warnings for the edited frames of semantics (N, D); names as engine.codec.semantics.semantic_names."""
    original = np.asarray(original, float)
    edited = np.asarray(edited, float)
    names = list(names)
    changed = edited != original                          # (N, D)
    if not changed.any():
        return []
    out = _range_warnings(original, edited, names, changed, body_model)
    out += _jump_warnings(original, edited, names, changed)
    out += _box_warnings(original, edited, names, changed, meshes or {})
    return sorted(out, key=lambda w: (w.frame, w.kind, w.subject))


# --- anatomical ranges -------------------------------------------------------------------------

def _violation(values: np.ndarray, lo: float, hi: float) -> np.ndarray:
    return np.maximum(np.maximum(lo - values, values - hi), 0.0)


def _range_warnings(original, edited, names, changed, body_model):
    out = []
    for joint, ranges in joint_ranges(body_model).items():
        cols = [names.index(f"{joint}.{a}") for a in "xyz"]
        rows = np.flatnonzero(changed[:, cols].any(1))
        if rows.size == 0:
            continue
        aa_e, aa_o = edited[rows][:, cols], original[rows][:, cols]
        for r in ranges:
            ax = np.asarray(r.axis)
            comp = aa_e @ ax
            worse = _violation(comp, r.lo, r.hi) > _violation(aa_o @ ax, r.lo, r.hi) + _EPS
            for f, v in zip(rows[worse], comp[worse]):
                out.append(PlausibilityWarning(
                    int(f), "range", joint,
                    f"{joint.replace('_', ' ')} {r.label} {math.degrees(v):.0f}° is outside its range "
                    f"({math.degrees(r.lo):.0f}° to {math.degrees(r.hi):.0f}°)"))
    return out


# --- jumps -----------------------------------------------------------------------------------------

def jump_thresholds(original: np.ndarray, names) -> np.ndarray:
    """Per semantic (D,): the largest step between neighbouring frames that does not warn."""
    original = np.asarray(original, float)
    floor = np.array([JUMP_FLOOR[group_of(i)] for i in range(len(names))])
    if original.shape[0] < 2:
        return floor
    p99 = np.percentile(np.abs(np.diff(original, axis=0)), 99, axis=0)
    return np.maximum(JUMP_FACTOR * p99, floor)


def _jump_warnings(original, edited, names, changed):
    if edited.shape[0] < 2:
        return []
    limit = jump_thresholds(original, names)
    de, do = np.abs(np.diff(edited, axis=0)), np.abs(np.diff(original, axis=0))   # step t-1 -> t at row t-1
    touched = changed[1:] | changed[:-1]
    bad = touched & (de > limit) & (de > do + _EPS)
    out, seen = [], set()
    for t, d in np.argwhere(bad):
        f = t + 1 if changed[t + 1, d] else t          # name the edited frame of the pair (the later if both)
        if (f, d) in seen:
            continue
        seen.add((f, d))
        out.append(PlausibilityWarning(int(f), "jump", names[d],
                                       f"{names[d]} jumps {_amount(names, d, de[t, d])} between frames "
                                       f"{t} and {t + 1} (the clip's own steps stay under "
                                       f"{_amount(names, d, limit[d])})"))
    return out


def _amount(names, d: int, v: float) -> str:
    g = group_of(d)
    if g in ("pose", "rot"):
        return f"{math.degrees(v):.0f}°"
    if g == "trans":
        return f"{v * 100:.1f} cm"
    if names[d] == "camera.zoom":                      # a log scale factor, not a length
        return f"{v:.3f} (log zoom)"
    return f"{v * 100:.1f} % of the frame"


# --- the person box ----------------------------------------------------------------------------------

def box_inside_fraction(loc: np.ndarray) -> np.ndarray:
    """Share of each box (..., 4: cx, cy, w, h in frame fractions) that lies inside the frame; 0 if empty."""
    loc = np.asarray(loc, float)
    cx, cy, w, h = np.moveaxis(loc, -1, 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        fx = (np.clip(cx + w / 2, 0, 1) - np.clip(cx - w / 2, 0, 1)) / w
        fy = (np.clip(cy + h / 2, 0, 1) - np.clip(cy - h / 2, 0, 1)) / h
    f = np.where((w > 0) & (h > 0), fx * fy, 0.0)
    return np.nan_to_num(f)


def project_to_frame(vertices: np.ndarray, trans: np.ndarray, loc: np.ndarray, focal: np.ndarray):
    """V x 3 turned body vertices -> crop coordinates V x 2 and frame fractions V x 2.

    engine/synthesis/camera.py's projection in NumPy (world = v + (tx, ty, 0), d = tz - Z,
    u = 0.5 + fx X / d, v = 0.5 - fy Y / d, frame = box centre + (uv - 0.5) * box size).
    """
    v = np.asarray(vertices, float).reshape(-1, 3)
    tx, ty, tz = np.asarray(trans, float)
    fx, fy = np.broadcast_to(np.asarray(focal, float).reshape(-1), (2,))
    d = np.maximum(tz - v[:, 2], 1e-3)
    uv = np.stack([0.5 + fx * (v[:, 0] + tx) / d, 0.5 - fy * (v[:, 1] + ty) / d], -1)
    cx, cy, w, h = np.asarray(loc, float)
    xy = np.stack([cx + (uv[:, 0] - 0.5) * w, cy + (uv[:, 1] - 0.5) * h], -1)
    return uv, xy


def _outside(p: np.ndarray) -> float:
    return float(np.mean(((p < 0) | (p > 1)).any(-1))) if p.size else 0.0


def _box_warnings(original, edited, names, changed, meshes):
    if "loc.cx" not in names:
        return []
    loc = slice(names.index("loc.cx"), names.index("loc.h") + 1)
    trans = slice(names.index("trans.x"), names.index("trans.z") + 1)
    out = []
    rows = np.flatnonzero(changed[:, loc].any(1))
    le, lo = edited[rows, loc], original[rows, loc]
    fe, fo = box_inside_fraction(le), box_inside_fraction(lo)
    for f, box, a, b in zip(rows, le, fe, fo):
        if box[2] <= 0 or box[3] <= 0:
            out.append(PlausibilityWarning(int(f), "box", "loc", f"the person box has no size "
                                           f"(w {box[2]:.3f}, h {box[3]:.3f})"))
        elif a < MIN_BOX_INSIDE and a < b - _EPS:
            out.append(PlausibilityWarning(int(f), "box", "loc", f"only {a:.0%} of the person box is inside "
                                           f"the frame (original {b:.0%})"))
    for f, m in meshes.items():
        if not (0 <= f < edited.shape[0]) or not changed[f].any():
            continue
        uv_e, xy_e = project_to_frame(m.vertices, edited[f, trans], edited[f, loc], m.focal)
        uv_o, xy_o = project_to_frame(m.ghost, original[f, trans], original[f, loc], m.focal)
        crop_e, crop_o = _outside(uv_e), _outside(uv_o)
        frame_e, frame_o = _outside(xy_e), _outside(xy_o)
        if crop_e > crop_o + MAX_NEW_OUTSIDE:
            out.append(PlausibilityWarning(int(f), "box", "loc", f"the box no longer fits the body: {crop_e:.0%} "
                                           f"of it projects outside the box (original {crop_o:.0%})"))
        if frame_e > frame_o + MAX_NEW_OUTSIDE:
            out.append(PlausibilityWarning(int(f), "box", "loc", f"{frame_e:.0%} of the body projects outside "
                                           f"the frame (original {frame_o:.0%})"))
    return out
