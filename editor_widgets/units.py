"""What a user reads for each semantic: a human name, the unit it is shown in, and what it does.

Values cross widget boundaries in the semantics' own units (radians, metres, frame
fractions, log zoom); widgets *show* them as

    angles (pose, rot)       degrees
    trans                    metres
    loc (the box)            pixels of the frame (x and width scaled by its width, y and height by its height)
    camera pan               pixels of the frame
    camera zoom              log scale factor (0 = no zoom, 0.1 = about 10 % closer)

``unit(name, frame_size)`` gives the factor (internal -> shown) and the suffix; ``human_name``
the label used in every dialog ("box centre x (px)"); ``describe`` a tooltip line.
Frames are numbered from 0 everywhere (timeline, preview, status bar, edit lists, command line).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

FRAME_BASE_NOTE = "frames are numbered from 0 (as in edit lists and on the command line)"

_JOINTS = ("head", "left_shoulder", "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist")
_ANGLE_GROUPS = _JOINTS + ("rot",)

# Short labels beside a slider (inside a group box that names the joint or group).
_SHORT = {
    "head.x": "x nod", "head.y": "y turn", "head.z": "z tilt",
    "rot.x": "x lean", "rot.y": "y turn", "rot.z": "z roll",
    "trans.x": "x", "trans.y": "y", "trans.z": "z depth",
    "loc.cx": "centre x", "loc.cy": "centre y", "loc.w": "width", "loc.h": "height",
    "camera.pan_x": "pan x", "camera.pan_y": "pan y", "camera.zoom": "zoom",
}

_WHAT = {
    "head.x": "nods the head",
    "head.y": "turns the head left or right",
    "head.z": "tilts the head towards a shoulder",
    "rot.x": "leans the whole body forwards or backwards",
    "rot.y": "turns the whole body about the vertical",
    "rot.z": "rolls the whole body sideways",
    "trans.x": "moves the body sideways inside its box",
    "trans.y": "moves the body up or down inside its box",
    "trans.z": "body distance from the camera (larger: smaller in the box)",
    "loc.cx": "moves the person's box (and the person) left or right in the frame",
    "loc.cy": "moves the person's box up or down in the frame",
    "loc.w": "width of the person's box: scales the person horizontally",
    "loc.h": "height of the person's box: scales the person vertically",
    "camera.pan_x": "moves the background left or right (relative to the key frame)",
    "camera.pan_y": "moves the background up or down (relative to the key frame)",
    "camera.zoom": "zooms the background (log scale factor: 0 none, 0.1 about 10 % closer)",
}

_AXIS_WHAT = {
    "x": "rotation about the body's left-right axis (swings forwards or backwards)",
    "y": "rotation about the vertical axis (turns or twists)",
    "z": "rotation about the front-back axis (raises or lowers sideways)",
}


@dataclass(frozen=True)
class Unit:
    scale: float        # internal value x scale = shown value
    suffix: str         # spin-box suffix ("°", " px", " m" or "")
    short: str          # unit in a name: "°", "px", "m" or "log"


def group_of(name: str) -> str:
    return name.split(".")[0]


def is_angle(name: str) -> bool:
    return group_of(name) in _ANGLE_GROUPS


def unit(name: str, frame_size: tuple[int, int] | None = None) -> Unit:
    """How ``name`` is shown; frame_size (width, height) in pixels for the box and the camera pan."""
    if is_angle(name):
        return Unit(180.0 / math.pi, "°", "°")
    if group_of(name) == "trans":
        return Unit(1.0, " m", "m")
    if name == "camera.zoom":
        return Unit(1.0, "", "log")
    if group_of(name) in ("loc", "camera") and frame_size is not None:
        w, h = frame_size
        horizontal = name in ("loc.cx", "loc.w", "camera.pan_x")
        return Unit(float(w if horizontal else h), " px", "px")
    if group_of(name) in ("loc", "camera"):
        return Unit(1.0, "", "frame")          # no frame size known: fractions of the frame
    return Unit(1.0, "", "")


def short_label(name: str) -> str:
    """The label beside a slider inside its group box."""
    return _SHORT.get(name, name.split(".")[-1])


def human_name(name: str, frame_size: tuple[int, int] | None = None) -> str:
    """'left_shoulder.z' -> 'left shoulder z (°)', 'loc.cx' -> 'box centre x (px)'."""
    g, _, axis = name.partition(".")
    u = unit(name, frame_size).short
    if g in _JOINTS:
        text = f"{g.replace('_', ' ')} {_SHORT.get(name, axis)}"
    elif g == "rot":
        text = f"body rotation {_SHORT[name]}"
    elif g == "trans":
        text = f"body translation {_SHORT[name]}"
    elif g == "loc":
        text = f"box {_SHORT[name]}"
    elif g == "camera":
        text = f"background {_SHORT[name]}"
    else:
        text = name
    return f"{text} ({u})" if u else text


def describe(name: str, frame_size: tuple[int, int] | None = None) -> str:
    """A tooltip: the human name, what the value does, its unit and its edit-list name."""
    g, _, axis = name.partition(".")
    what = _WHAT.get(name)
    if what is None and g in _JOINTS:
        what = _AXIS_WHAT.get(axis, f"rotation about the joint's {axis} axis")
        if g.endswith("shoulder") and axis == "z":
            what += "; + raises the left arm, − raises the right arm"
    u = unit(name, frame_size)
    units = {"°": "in degrees", "px": "in pixels of the frame", "m": "in metres", "log": "as a log scale factor",
             "frame": "in fractions of the frame"}.get(u.short, "")
    stored = {"°": "radians, or degrees with \"unit\": \"deg\"", "px": "fractions of the frame",
              "m": "metres", "log": "log scale factor", "frame": "fractions of the frame"}.get(u.short, "")
    lines = [f"{human_name(name, frame_size)}: {what or name}."]
    if units:
        lines.append(f"Shown {units}.")
    lines.append(f"In edit lists: {name}" + (f" ({stored})" if stored else "") + ".")
    return " ".join(lines)


def to_display(name: str, value: float, frame_size=None) -> float:
    return float(value) * unit(name, frame_size).scale


def from_display(name: str, shown: float, frame_size=None) -> float:
    return float(shown) / unit(name, frame_size).scale
