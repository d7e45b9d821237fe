"""The studio's document: a bitstream's decoded semantics and the user's edits, Qt-free.

    Document
      bitstream   the opened Bitstream (key pictures untouched by any edit)
      original    (N, D) decoded per-frame semantics, read-only
      edited      (N, D) current semantics, always on the quantization grid
      events      values_changed(frames), dirty_changed(bool), path_changed(path)

Every operation is split in two: ``plan_*`` computes a :class:`Change` (frames,
before, after) without touching the document, and :meth:`Document.apply` /
:meth:`Document.unapply` write it. The app wraps a Change in a QUndoCommand;
scripts call the convenience methods (``set_value``, ``set_range``, ...).

Edit log: every Change also carries the edit-list records (:class:`engine.studio.edits.Edit`)
that reproduce it: the Edit itself for range edits, mirror, revert and applied
edit lists; ``set`` records for slider values, pasted poses and partial reverts.
``apply`` appends a Change's records to the log, ``unapply`` removes them from
its end, so the log follows undo / redo because undo is last-in, first-out.
:meth:`Document.edit_log` replayed on the opened file (``python main.py edit``)
gives exactly ``edited``: every record's result is snapped to the same grid.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.studio import edits as E
from engine.fileio import atomic_path
from engine.codec.semantics import GROUPS, snap


class EventEmitter:
    """Minimal callback list (the napari ``EventEmitter`` idea without the machinery)."""

    def __init__(self):
        self._callbacks: list = []

    def connect(self, callback):
        self._callbacks.append(callback)
        return callback

    def disconnect(self, callback=None):
        if callback is None:
            self._callbacks.clear()
        elif callback in self._callbacks:
            self._callbacks.remove(callback)

    def __call__(self, *args):
        for cb in list(self._callbacks):
            cb(*args)


class Events:
    def __init__(self):
        self.values_changed = EventEmitter()   # (frames: np.ndarray of int)
        self.dirty_changed = EventEmitter()    # (dirty: bool)
        self.path_changed = EventEmitter()     # (path: Path | None)


@dataclass
class Change:
    """Rows ``frames`` go from ``before`` (n, D) to ``after`` (n, D)."""
    frames: np.ndarray
    before: np.ndarray
    after: np.ndarray
    text: str = "edit"
    edits: tuple = ()      # E.Edit records that turn ``before`` into ``after`` (the edit log's part)

    @property
    def empty(self) -> bool:
        return self.frames.size == 0


class Document:
    def __init__(self, bitstream, path=None):
        self.bitstream = bitstream
        self.path = Path(path) if path is not None else None
        self.source = self.path          # the file as opened: what the edit log applies to
        self.original = bitstream.semantics().astype(float)
        self.original.setflags(write=False)
        self.steps = bitstream.steps
        self.names = tuple(bitstream.names)
        self._edited = self.original.copy()
        self._saved = self.original.copy()
        self._dirty = False
        self._log: list[E.Edit] = []     # raw records of the applied changes, oldest first
        self._log_ok = True              # False once an unapply did not match the log's end
        self.events = Events()

    # --- read ------------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return self.original.shape[0]

    @property
    def dims(self) -> int:
        return self.original.shape[1]

    @property
    def fps(self) -> float:
        return float(self.bitstream.fps)

    @property
    def edited(self) -> np.ndarray:
        """Current semantics (N, D), a read-only view."""
        v = self._edited.view()
        v.setflags(write=False)
        return v

    @property
    def dirty(self) -> bool:
        return self._dirty

    def index(self, name: str) -> int:
        return self.names.index(name)

    def edited_mask(self) -> np.ndarray:
        """(N, D) bool: values that differ from the decoded original."""
        return self._edited != self.original

    def edited_frames(self) -> np.ndarray:
        return np.flatnonzero(self.edited_mask().any(1))

    # --- write -----------------------------------------------------------------------------
    def apply(self, change: Change) -> None:
        if not change.empty:             # log first: listeners of values_changed see a consistent log
            self._log.extend(change.edits)
        self._write(change.frames, change.after)

    def unapply(self, change: Change) -> None:
        if not change.empty:
            self.drop_edits(change.edits)
        self._write(change.frames, change.before)

    def drop_edits(self, edits) -> None:
        """Remove ``edits`` from the end of the log (an unapplied change, or an undo command that
        merged into nothing and is dropped without an undo). A mismatch means the log no longer
        describes the edits: it is then refused on export rather than silently wrong."""
        edits = tuple(edits)
        if not edits:
            return
        if tuple(self._log[-len(edits):]) == edits:
            del self._log[-len(edits):]
        else:
            self._log_ok = False

    def edit_log(self) -> list[E.Edit]:
        """The edits made so far as an edit list, relative to ``original`` (the file as opened).

        Consecutive records a later one makes redundant are folded (one slider drag is
        dozens of ``set`` records); the folded list replays to the same values.
        """
        if not self._log_ok:
            raise ValueError("the edit log lost track of the edits; it cannot be saved")
        return compact_edits(self._log, self.names, self.steps)

    def save_edit_log(self, path) -> list[E.Edit]:
        """Write :meth:`edit_log` as a JSON edit list (atomically); returns what was written."""
        log = self.edit_log()
        E.save(log, path)
        return log

    def _write(self, frames, rows) -> None:
        frames = np.asarray(frames, int)
        if frames.size == 0:
            return
        self._edited[frames] = rows
        self.events.values_changed(frames)
        self._update_dirty()

    def _update_dirty(self):
        dirty = not np.array_equal(self._edited, self._saved)
        if dirty != self._dirty:
            self._dirty = dirty
            self.events.dirty_changed(dirty)

    def _change(self, new: np.ndarray, text: str, edits=None) -> Change:
        """Diff the full (N, D) ``new`` against the current values. Without ``edits``, the change is
        logged as ``set`` records of its changed values (exact for any change on the grid)."""
        frames = np.flatnonzero((new != self._edited).any(1))
        before, after = self._edited[frames].copy(), new[frames].copy()
        if edits is None:
            edits = set_records(frames, before, after, self.names)
        return Change(frames, before, after, text, tuple(edits))

    # --- plans (pure: nothing changes until apply) -------------------------------------------
    def plan_set_value(self, frame: int, index: int, value: float) -> Change:
        new = self._edited.copy()
        new[frame, index] = snap(np.array([value]), self.steps[index:index + 1])[0]
        edit = E.Edit("set", int(frame), int(frame), self.names[index], float(new[frame, index]))
        return self._change(new, f"set {self.names[index]}", [edit])

    def plan_set_frame(self, frame: int, row: np.ndarray, text: str = "set frame") -> Change:
        new = self._edited.copy()
        new[frame] = snap(np.asarray(row, float), self.steps)
        return self._change(new, text)

    def plan_edit(self, edit: E.Edit) -> Change:
        new = E.apply_edit(self._edited, self.original, self.names, self.steps, edit)
        return self._change(new, edit.op if edit.semantic is None else f"{edit.op} {edit.semantic}", [edit])

    def plan_edits(self, edit_list, text: str = "apply edit list") -> Change:
        edit_list = list(edit_list)
        new = E.apply_edits(self._edited, self.original, self.names, self.steps, edit_list)
        return self._change(new, text, edit_list)

    def plan_range(self, index: int, first: int, last: int, *, offset=None, value=None,
                   ease_in: int = 0, ease_out: int = 0) -> Change:
        if (offset is None) == (value is None):
            raise ValueError("give exactly one of offset or value")
        op, amount = ("offset", offset) if offset is not None else ("set", value)
        return self.plan_edit(E.Edit(op, first, last, self.names[index], float(amount), ease_in, ease_out))

    def plan_revert(self, first: int, last: int | None = None, group: str | None = None,
                    columns=None) -> Change:
        """Restore the decoded original on frames first..last (all values, a group, or some columns)."""
        last = first if last is None else last
        new = self._edited.copy()
        cols = GROUPS[group] if group else (list(columns) if columns is not None else slice(None))
        new[first:last + 1, cols] = self.original[first:last + 1, cols]
        what = group or ("values" if columns is not None else ("frame" if first == last else "range"))
        # Whole frames are one "revert" record; a group or some columns become "set" records.
        whole = group is None and columns is None
        return self._change(new, f"revert {what}", [E.Edit("revert", first, last)] if whole else None)

    def plan_paste_pose(self, frames, row: np.ndarray, group: str | None = None) -> Change:
        """Paste a frame's values (all, or one group) onto frames (ints or a range)."""
        new = self._edited.copy()
        cols = GROUPS[group] if group else slice(None)
        row = snap(np.asarray(row, float), self.steps)
        new[np.asarray(list(frames), int), cols] = row[cols]
        return self._change(new, "paste " + (group or "pose"))

    def plan_mirror(self, first: int, last: int | None = None) -> Change:
        last = first if last is None else last
        return self.plan_edit(E.Edit("mirror", first, last))

    # --- convenience (apply at once) -----------------------------------------------------------
    def _do(self, change: Change) -> Change:
        self.apply(change)
        return change

    def set_value(self, frame, index, value):
        return self._do(self.plan_set_value(frame, index, value))

    def set_range(self, index, first, last, **kw):
        return self._do(self.plan_range(index, first, last, **kw))

    def revert(self, first, last=None, group=None):
        return self._do(self.plan_revert(first, last, group))

    def paste_pose(self, frames, row, group=None):
        return self._do(self.plan_paste_pose(frames, row, group))

    def mirror(self, first, last=None):
        return self._do(self.plan_mirror(first, last))

    def apply_edits(self, edit_list):
        return self._do(self.plan_edits(edit_list))

    # --- files -----------------------------------------------------------------------------
    def edited_bitstream(self):
        """The bitstream to write: same key-picture bytes, edited semantics."""
        return self.bitstream.with_semantics(self._edited)

    def save(self, path=None) -> Path:
        from engine.codec import container
        path = Path(path) if path is not None else self.path
        if path is None:
            raise ValueError("no path to save to")
        container.write(self.edited_bitstream(), path)
        self.mark_saved(path)
        return path

    def mark_saved(self, path) -> None:
        self._saved = self._edited.copy()
        if Path(path) != self.path:
            self.path = Path(path)
            self.events.path_changed(self.path)
        self._update_dirty()


# --- edit-log helpers ------------------------------------------------------------------------

def set_records(frames: np.ndarray, before: np.ndarray, after: np.ndarray, names) -> list[E.Edit]:
    """``set`` records for the changed values of rows ``frames`` (n,), before / after (n, D).

    One record per semantic and run of consecutive frames that got the same value (a
    pasted pose over a range is one record per semantic).
    """
    out = []
    changed = before != after
    for j in np.flatnonzero(changed.any(0)):
        k = np.flatnonzero(changed[:, j])
        f, v = frames[k], after[k, j]
        starts = np.flatnonzero(np.r_[True, (np.diff(f) != 1) | (v[1:] != v[:-1])])
        ends = np.r_[starts[1:], k.size] - 1
        out += [E.Edit("set", int(f[a]), int(f[b]), names[j], float(v[a])) for a, b in zip(starts, ends)]
    return out


def _on_grid(amount: float, step: float) -> bool:
    return abs(amount / step - round(amount / step)) < 1e-6


def compact_edits(edits, names, steps) -> list[E.Edit]:
    """Fold records that replay to the same values as a shorter list.

    * a ``set`` without easing hides earlier ``set`` / ``offset`` records of the same
      semantic that lie inside its frames (a slider drag on one frame keeps its last value);
    * two ``offset`` records without easing on the same semantic and frames add up when
      both are whole grid steps (a slider drag over a range): snap(snap(x + a) + b) equals
      snap(x + a + b) exactly then, and a sum of zero is dropped.
    """
    out: list[E.Edit] = []
    for e in edits:
        plain = e.op in ("set", "offset") and not e.ease_in and not e.ease_out
        while plain and e.op == "set" and out:
            p = out[-1]
            if p.op in ("set", "offset") and p.semantic == e.semantic and e.first <= p.first and p.last <= e.last:
                out.pop()
            else:
                break
        if plain and e.op == "offset" and out:
            p, step = out[-1], float(steps[list(names).index(e.semantic)])
            if (p.op == "offset" and not p.ease_in and not p.ease_out and p.semantic == e.semantic
                    and (p.first, p.last) == (e.first, e.last) and _on_grid(p.amount, step)
                    and _on_grid(e.amount, step)):
                out.pop()
                ticks = round((p.amount + e.amount) / step)
                if ticks:
                    out.append(E.Edit("offset", e.first, e.last, e.semantic, float(ticks * step)))
                continue
        out.append(e)
    return out


def export_semantics_json(path, names, values: np.ndarray, fps: float, key_frames=()) -> None:
    """Per-frame semantics as {"names": [...], "fps": f, "frames": [[...], ...]} (radians, metres)."""
    data = {"names": list(names), "fps": float(fps), "key_frames": [int(k) for k in key_frames],
            "frames": np.asarray(values, float).round(9).tolist()}
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data), encoding="utf-8")


def export_semantics_csv(path, names, values: np.ndarray) -> None:
    """One row per frame: frame, then one column per semantic (radians, metres, fractions)."""
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as fh:
            w = csv.writer(fh)
            w.writerow(["frame", *names])
            for i, row in enumerate(np.asarray(values, float)):
                w.writerow([i, *(f"{x:.9g}" for x in row)])
