"""Qt adapter over engine.studio.document.Document: Qt signals, the undo stack, current frame and range.

The engine Document emits plain callbacks; this adapter re-emits them as Qt
signals for widgets, and turns every edit into a ChangeCommand on its
QUndoStack (so every edit is undoable). View state (current frame, selected
range) lives here, not in the document: it is not part of the file or undo.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6.QtCore import QObject, Signal
from PySide6.QtGui import QUndoStack

from engine.studio.document import Document

from .commands import ChangeCommand


class LoggedChangeCommand(ChangeCommand):
    """A ChangeCommand whose merges keep the edit-log records of both changes.

    The document logged ``a.edits`` then ``b.edits`` when the two commands ran, so
    the merged change must carry both for its undo to remove them again; a merge
    that nets to nothing is dropped by the stack without an undo, so its records
    are dropped from the log here.
    """

    def mergeWith(self, other) -> bool:
        edits = tuple(self.change.edits) + tuple(getattr(other.change, "edits", ()))
        if not super().mergeWith(other):
            return False
        self.change.edits = edits
        if self.isObsolete():
            self.document.drop_edits(edits)
        return True


class DocumentAdapter(QObject):
    documentReplaced = Signal()
    valuesChanged = Signal(object)       # np.ndarray of touched frames
    dirtyChanged = Signal(bool)
    pathChanged = Signal(object)
    frameChanged = Signal(int)
    selectionChanged = Signal(object)    # (first, last) or None
    saved = Signal(object)               # engine.studio.verify.SavedFile, after a verified save

    def __init__(self, parent=None):
        super().__init__(parent)
        self.doc: Document | None = None
        self.undo_stack = QUndoStack(self)
        self.frame = 0
        self.selection: tuple[int, int] | None = None
        self.untitled = False        # a freshly encoded video that has never been saved
        self._gesture = 0
        self.last_index = 0          # the semantic edited last (default of the range-edit dialog)
        self._clipboard: np.ndarray | None = None

    # --- document lifetime ---------------------------------------------------------------------
    def set_document(self, doc: Document, untitled: bool = False):
        if self.doc is not None:
            self.doc.events.values_changed.disconnect(self._on_values)
            self.doc.events.dirty_changed.disconnect(self._on_dirty)
            self.doc.events.path_changed.disconnect(self._on_path)
        self.undo_stack.clear()
        self.doc = doc
        self.untitled = untitled
        self.frame, self.selection = 0, None
        doc.events.values_changed.connect(self._on_values)
        doc.events.dirty_changed.connect(self._on_dirty)
        doc.events.path_changed.connect(self._on_path)
        self.documentReplaced.emit()
        self.dirtyChanged.emit(self.needs_save)

    def _on_values(self, frames):
        self.valuesChanged.emit(frames)

    def _on_dirty(self, _dirty):
        self.dirtyChanged.emit(self.needs_save)

    def _on_path(self, path):
        self.pathChanged.emit(path)

    @property
    def needs_save(self) -> bool:
        return self.doc is not None and (self.doc.dirty or self.untitled)

    def save(self, path=None):
        """Write the edited bitstream, read it back and check it (engine.studio.verify); returns a SavedFile.

        On a failed check a VerifyError (one line) propagates, the previous file is left in
        place and the document stays unsaved.
        """
        from engine.studio.verify import save_verified
        doc = self.doc
        path = Path(path) if path is not None else doc.path
        if path is None:
            raise ValueError("no path to save to")
        saved = save_verified(doc.edited_bitstream(), path, doc.edited,
                              [g.key_picture.payload for g in doc.bitstream.gops])
        doc.mark_saved(saved.path)
        self.untitled = False
        self.undo_stack.setClean()
        self.dirtyChanged.emit(False)
        self.saved.emit(saved)
        return saved

    # --- view state ---------------------------------------------------------------------------
    def set_frame(self, frame: int):
        frame = int(np.clip(frame, 0, self.doc.n_frames - 1))
        if frame != self.frame:
            self.frame = frame
            self.frameChanged.emit(frame)

    def set_selection(self, first: int, last: int):
        self.selection = None if first < 0 else (int(first), int(last))
        self.selectionChanged.emit(self.selection)

    def target_range(self) -> tuple[int, int]:
        """The selected range when it holds the current frame, else the current frame alone."""
        s = self.selection
        if s and s[0] <= self.frame <= s[1]:
            return s
        return self.frame, self.frame

    # --- edits (all through the undo stack) --------------------------------------------------------
    def push(self, change, merge_key=None) -> bool:
        if change.empty:
            return False
        self.undo_stack.push(LoggedChangeCommand(self.doc, change, merge_key))
        return True

    def set_value(self, index: int, value: float, final: bool = True):
        """A slider / spin-box edit on the current frame (or, as an offset, on the selected range).

        While a slider is dragged (final False) the commands merge into one; the
        release (final True) closes the gesture, so the next drag is a new command.
        """
        self.last_index = int(index)
        first, last = self.target_range()
        if first == last:
            change = self.doc.plan_set_value(self.frame, index, value)
        else:
            offset = value - self.doc.edited[self.frame, index]
            change = self.doc.plan_range(index, first, last, offset=offset)
            change.text = f"offset {self.doc.names[index]} on {first}–{last}"
        self.push(change, merge_key=("value", index, first, last, self._gesture))
        if final:
            self._gesture += 1

    def end_gesture(self):
        self._gesture += 1

    def set_range(self, index, first, last, *, offset=None, value=None, ease_in=0, ease_out=0):
        self.last_index = int(index)
        self.end_gesture()
        return self.push(self.doc.plan_range(index, first, last, offset=offset, value=value,
                                             ease_in=ease_in, ease_out=ease_out))

    def revert_frame(self):
        first, last = self.target_range()
        self.end_gesture()
        return self.push(self.doc.plan_revert(first, last))

    def revert_group(self, columns: list[int]):
        """Reset some columns of the current frame (or range) to the decoded original."""
        first, last = self.target_range()
        self.end_gesture()
        return self.push(self.doc.plan_revert(first, last, columns=columns))

    def mirror(self):
        first, last = self.target_range()
        self.end_gesture()
        return self.push(self.doc.plan_mirror(first, last))

    def copy_pose(self):
        self._clipboard = self.doc.edited[self.frame].copy()

    @property
    def can_paste(self) -> bool:
        return self._clipboard is not None and self._clipboard.size == self.doc.dims

    def paste_pose(self, group: str | None = "pose"):
        if not self.can_paste:
            return False
        first, last = self.target_range()
        self.end_gesture()
        return self.push(self.doc.plan_paste_pose(range(first, last + 1), self._clipboard, group))

    def apply_edit_list(self, edit_list):
        self.end_gesture()
        return self.push(self.doc.plan_edits(edit_list))
