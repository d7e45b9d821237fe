"""QUndoCommands over engine.studio.document.Change: every edit in the studio is one of these."""
from __future__ import annotations

import numpy as np
from PySide6.QtGui import QUndoCommand

from engine.studio.document import Change

MERGE_ID = 4711


def merge_changes(a: Change, b: Change) -> Change:
    """a then b as one change (before from a where a touched a frame, after from b where b did)."""
    frames = np.union1d(a.frames, b.frames)
    before = np.empty((frames.size, a.before.shape[1] if a.before.size else b.before.shape[1]))
    after = np.empty_like(before)
    pos = {int(f): i for i, f in enumerate(frames)}
    for f, row in zip(b.frames, b.before):
        before[pos[int(f)]] = row
    for f, row in zip(a.frames, a.before):
        before[pos[int(f)]] = row
    for f, row in zip(a.frames, a.after):
        after[pos[int(f)]] = row
    for f, row in zip(b.frames, b.after):
        after[pos[int(f)]] = row
    return Change(frames, before, after, a.text)


class ChangeCommand(QUndoCommand):
    """Apply / unapply one Change. Commands with the same ``merge_key`` merge (one slider drag)."""

    def __init__(self, document, change: Change, merge_key=None):
        super().__init__(change.text)
        self.document = document
        self.change = change
        self.merge_key = merge_key

    def id(self) -> int:
        return MERGE_ID if self.merge_key is not None else -1

    def redo(self):
        self.document.apply(self.change)

    def undo(self):
        self.document.unapply(self.change)

    def mergeWith(self, other) -> bool:
        if not isinstance(other, ChangeCommand) or other.merge_key != self.merge_key or self.merge_key is None:
            return False
        self.change = merge_changes(self.change, other.change)
        if np.array_equal(self.change.before, self.change.after):
            self.setObsolete(True)
        return True
