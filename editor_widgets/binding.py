"""Binding helpers (napari's pattern): widget -> model through one connect, model -> widget with
signals blocked so an update never echoes back as an edit, and explicit teardown."""
from __future__ import annotations

import contextlib

from PySide6.QtCore import QSignalBlocker


@contextlib.contextmanager
def blocked(*widgets):
    """Update widgets without emitting their signals (no echo back to the model)."""
    blockers = [QSignalBlocker(w) for w in widgets]
    try:
        yield
    finally:
        for b in blockers:
            b.unblock()


class Connections:
    """Records (signal, slot) pairs so a widget can disconnect everything on teardown."""

    def __init__(self):
        self._pairs = []

    def connect(self, signal, slot):
        signal.connect(slot)
        self._pairs.append((signal, slot))
        return slot

    def disconnect_all(self):
        for signal, slot in self._pairs:
            try:
                signal.disconnect(slot)
            except (RuntimeError, TypeError):
                pass
        self._pairs.clear()
