"""Edit lists as data: the semantic edits of the studio, replayable from the command line.

An edit list is a JSON file::

    {"ihvc_edits": 1,
     "edits": [
       {"semantic": "left_shoulder.z", "frames": [20, 60], "offset": 30, "unit": "deg",
        "ease_in": 8, "ease_out": 8},
       {"semantic": "loc.cx", "frames": 42, "value": 0.55},
       {"mirror": true, "frames": [70, 99]},
       {"revert": true, "frames": [0, 9]}
     ]}

* ``frames``: one frame or an inclusive range ``[first, last]``.
* ``offset`` adds to the current value, ``value`` replaces it; both in the
  semantic's units (radians for pose / rot, metres for trans, frame fractions for
  loc / camera), or degrees with ``"unit": "deg"``.
* ``ease_in`` / ``ease_out`` (frames): the easing lies inside the range and every
  frame of the range is changed, both end frames included: the first ``ease_in``
  frames ramp up (smoothstep 3t^2 - 2t^3, at least one grid step of change on
  each), the last ``ease_out`` frames ramp down the same way, frames between get
  the full edit (all of them without easing) and frames outside the range are
  never touched.
* ``mirror`` swaps left and right (pose and body rotation reflected about the
  body's sagittal plane; placement in the picture is kept); mirroring twice is
  the identity. ``revert`` restores the decoded original values.

Every result is snapped to the bitstream's quantization grid (what a file can
carry), so the studio and ``python main.py edit`` give identical semantics.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.codec.container import MAX_FRAMES
from engine.errors import InputError
from engine.fileio import atomic_write_bytes
from engine.codec.semantics import ANGLE_GROUPS, CAMERA_NAMES, CORE_NAMES, FRAME_JOINTS, GROUPS, group_of, snap

FORMAT_VERSION = 1
OPS = ("offset", "set", "mirror", "revert")
# Numbers in an edit list are checked against these before any conversion (a 400-digit integer
# must not reach float()): amounts in any unit, frame numbers and ease lengths in frames.
MAX_AMOUNT = 1e4
MAX_EDIT_LIST_BYTES = 16 << 20
MAX_FRAME = MAX_FRAMES


def _short(x) -> str:
    """repr(x), cut to a length an error line can carry."""
    r = repr(x)
    return r if len(r) <= 40 else r[:37] + "..."


@dataclass(frozen=True)
class Edit:
    """One edit. ``op`` in OPS; frames first..last inclusive; ``amount`` in the semantic's own units."""
    op: str
    first: int
    last: int
    semantic: str | None = None
    amount: float = 0.0
    ease_in: int = 0
    ease_out: int = 0

    def to_json(self) -> dict:
        frames = self.first if self.first == self.last else [self.first, self.last]
        if self.op in ("mirror", "revert"):
            return {self.op: True, "frames": frames}
        out = {"semantic": self.semantic, "frames": frames,
               ("offset" if self.op == "offset" else "value"): self.amount}
        if self.ease_in:
            out["ease_in"] = self.ease_in
        if self.ease_out:
            out["ease_out"] = self.ease_out
        return out


# --- pure numeric operations (shared by engine.studio.document and the CLI) -------------------------

def smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def ease_weights(n: int, ease_in: int = 0, ease_out: int = 0) -> np.ndarray:
    """Weight per frame of an n-frame range, shape (n,): the first ``ease_in`` frames ramp up
    and the last ``ease_out`` ramp down inside the range (never 0: the end frames are part of
    the edit), 1 between them and everywhere without easing."""
    k = np.arange(n, dtype=float)
    w = np.ones(n)
    if ease_in > 0:
        w = np.minimum(w, smoothstep((k + 1) / (ease_in + 1)))
    if ease_out > 0:
        w = np.minimum(w, smoothstep((n - k) / (ease_out + 1)))
    return w


def mirror_permutation(dims: int) -> tuple[np.ndarray, np.ndarray]:
    """(source index, sign) per flat dimension for a left/right mirror of one frame."""
    src = np.arange(dims)
    sign = np.ones(dims)
    joints = list(FRAME_JOINTS)
    for j, name in enumerate(joints):
        other = name.replace("left_", "@").replace("right_", "left_").replace("@", "right_")
        jo = joints.index(other)
        src[3 * j:3 * j + 3] = np.arange(3 * jo, 3 * jo + 3)
        sign[3 * j + 1:3 * j + 3] = -1.0           # reflect about x = 0: (x, y, z) -> (x, -y, -z)
    rot = GROUPS["rot"]
    sign[rot.start + 1:rot.stop] = -1.0
    return src, sign


def mirror_rows(rows: np.ndarray) -> np.ndarray:
    """Mirror frames (n, D) left/right; exact on the quantization grid, an involution."""
    rows = np.asarray(rows, float)
    src, sign = mirror_permutation(rows.shape[-1])
    return rows[..., src] * sign


def to_internal(semantic: str, amount: float, unit: str | None) -> float:
    """Convert a user amount to the semantic's internal unit (degrees -> radians for angles)."""
    if unit in (None, "", "rad", "m", "native"):
        return float(amount)
    if unit in ("deg", "degree", "degrees"):
        if group_of(list(CORE_NAMES + CAMERA_NAMES).index(semantic)) not in ANGLE_GROUPS:
            raise InputError(f"unit 'deg' only applies to angles, not {semantic}")
        return math.radians(float(amount))
    raise InputError(f"unknown unit {_short(unit)} (use 'deg' or 'rad')")


def apply_edit(values: np.ndarray, original: np.ndarray, names, steps: np.ndarray, edit: Edit) -> np.ndarray:
    """One edit on semantics (N, D) -> new (N, D); rows outside first..last are returned unchanged."""
    check_edit(edit, names, values.shape[0])
    out = np.array(values, float, copy=True)
    sl = slice(edit.first, edit.last + 1)
    if edit.op == "mirror":
        out[sl] = mirror_rows(out[sl])
    elif edit.op == "revert":
        out[sl] = original[sl]
    else:
        i = list(names).index(edit.semantic)
        col = out[sl, i]
        target = col + edit.amount if edit.op == "offset" else np.full_like(col, edit.amount)
        w = ease_weights(col.size, edit.ease_in, edit.ease_out)
        new = snap(col + w * (target - col), steps[i])
        # An eased frame whose small share rounds to no change still moves one grid step towards
        # the target: every frame of the range is part of the edit (never past the target).
        step = float(steps[i])
        base, goal = snap(col, steps[i]), snap(target, steps[i])
        stuck = (new == base) & (goal != base)
        new[stuck] = snap(base + step * np.sign(goal - base), steps[i])[stuck]
        out[sl, i] = new
    return out


def apply_edits(values: np.ndarray, original: np.ndarray, names, steps, edits) -> np.ndarray:
    """Apply a whole edit list in order (all checked first: a bad list changes nothing)."""
    for e in edits:
        check_edit(e, names, values.shape[0])
    for e in edits:
        values = apply_edit(values, original, names, steps, e)
    return values


def apply_to_bitstream(bs, edit_list, source: str = "edit list"):
    """Bitstream -> edited Bitstream (the same computation the studio's Document does; ``main.py edit``,
    ``bench --edit``)."""
    original = bs.semantics()
    check_all(edit_list, bs.names, bs.n_frames)
    values = apply_edits(original, original, bs.names, bs.steps, edit_list)
    check_limits(original, values, bs.names, source)
    return bs.with_semantics(values)


def check_edit(edit: Edit, names, n_frames: int, where: str = "") -> None:
    """Raise InputError (one line) if the edit names an unknown semantic or frames off the clip."""
    if edit.op not in OPS:
        raise InputError(f"{where}unknown operation {edit.op!r} (use offset, value, mirror or revert)")
    if edit.op in ("offset", "set") and edit.semantic not in names:
        hint = " (this bitstream has no camera group)" if edit.semantic in CAMERA_NAMES else ""
        raise InputError(f"{where}unknown semantic {edit.semantic!r}{hint}; names look like "
                         f"'head.x', 'left_elbow.z', 'rot.y', 'trans.z', 'loc.cx'")
    if not (0 <= edit.first <= edit.last < n_frames):
        raise InputError(f"{where}frames {edit.first}..{edit.last} outside the clip (0..{n_frames - 1})")
    if not (0 <= edit.ease_in <= n_frames and 0 <= edit.ease_out <= n_frames):
        raise InputError(f"{where}ease_in / ease_out must be 0..{n_frames} frames (the clip's length)")
    if not (math.isfinite(edit.amount) and abs(edit.amount) <= MAX_AMOUNT):
        raise InputError(f"{where}amount must be a finite number of at most {MAX_AMOUNT:g} in magnitude")


def check_limits(original: np.ndarray, values: np.ndarray, names, source: str = "edit list") -> None:
    """InputError (one line) when the edits took a semantic outside its hard limits
    (engine.studio.plausibility.LIMITS: body in front of the camera, a box with a size, ...)."""
    from engine.studio.plausibility import limit_problems
    problems = limit_problems(original, values, names)
    if problems:
        more = f" (and {len(problems) - 1} more semantics)" if len(problems) > 1 else ""
        raise InputError(f"{source}: the edits take {problems[0]}{more}")


# --- JSON ------------------------------------------------------------------------------------

def _frame_number(x) -> bool:
    return isinstance(x, int) and not isinstance(x, bool) and 0 <= x <= MAX_FRAME


def _frames(item, where):
    f = item.get("frames")
    if isinstance(f, bool) or f is None:
        raise InputError(f"{where}missing 'frames' (a frame number or [first, last])")
    if _frame_number(f):
        return f, f
    if isinstance(f, list) and len(f) == 2 and all(_frame_number(x) for x in f):
        return f[0], f[1]
    raise InputError(f"{where}'frames' must be a frame number 0..{MAX_FRAME} or [first, last], got {_short(f)}")


def parse_edit(item, where: str = "") -> Edit:
    if not isinstance(item, dict):
        raise InputError(f"{where}each edit must be an object")
    first, last = _frames(item, where)
    for op in ("mirror", "revert"):
        if item.get(op):
            return Edit(op, first, last)
    sem = item.get("semantic")
    if not isinstance(sem, str):
        raise InputError(f"{where}missing 'semantic' (or 'mirror': true / 'revert': true)")
    if ("offset" in item) == ("value" in item):
        raise InputError(f"{where}give exactly one of 'offset' or 'value'")
    op, key = ("offset", "offset") if "offset" in item else ("set", "value")
    raw = item[key]
    # abs(int) <= float compares exactly, without converting a huge integer; NaN fails it
    if isinstance(raw, bool) or not isinstance(raw, (int, float)) or not abs(raw) <= MAX_AMOUNT:
        raise InputError(f"{where}'{key}' must be a number of at most {MAX_AMOUNT:g} in magnitude, got {_short(raw)}")
    if sem not in CORE_NAMES + CAMERA_NAMES:
        raise InputError(f"{where}unknown semantic {_short(sem)}; names look like 'head.x', 'left_elbow.z', "
                         f"'rot.y', 'trans.z', 'loc.cx'")
    amount = to_internal(sem, raw, item.get("unit"))
    ease = []
    for k in ("ease_in", "ease_out"):
        v = item.get(k, 0)
        if not _frame_number(v):
            raise InputError(f"{where}'{k}' must be a whole number of frames, 0..{MAX_FRAME}")
        ease.append(v)
    return Edit(op, first, last, sem, amount, ease[0], ease[1])


def loads(text: str, source: str = "edit list") -> list[Edit]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{source}: not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except (ValueError, RecursionError) as exc:      # an integer past Python's digit limit, nesting too deep
        raise InputError(f"{source}: not a usable edit list ({exc.__class__.__name__}: {str(exc)[:80]})") from None
    if isinstance(data, list):
        items = data
    elif isinstance(data, dict) and isinstance(data.get("edits"), list):
        if data.get("ihvc_edits", FORMAT_VERSION) != FORMAT_VERSION:
            raise InputError(f"{source}: unsupported edit-list version {_short(data.get('ihvc_edits'))}")
        items = data["edits"]
    else:
        raise InputError(f"{source}: expected {{\"edits\": [...]}}")
    return [parse_edit(it, f"{source}, edit {k + 1}: ") for k, it in enumerate(items)]


def load(path) -> list[Edit]:
    path = Path(path)
    if path.is_dir():
        raise InputError(f"edit list {path} is a folder")
    try:
        if path.stat().st_size > MAX_EDIT_LIST_BYTES:
            raise InputError(f"edit list {path} is larger than {MAX_EDIT_LIST_BYTES >> 20} MiB")
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read edit list {path}: {getattr(exc, 'strerror', None) or exc}") from None
    return loads(text, source=path.name)


def dumps(edits) -> str:
    return json.dumps({"ihvc_edits": FORMAT_VERSION, "edits": [e.to_json() for e in edits]}, indent=1)


def save(edits, path) -> None:
    atomic_write_bytes(path, dumps(edits).encode("utf-8"))


def check_all(edits, names, n_frames: int, source: str = "edit list") -> None:
    for k, e in enumerate(edits):
        check_edit(e, names, n_frames, f"{source}, edit {k + 1}: ")
