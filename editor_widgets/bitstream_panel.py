"""Bitstream panel: the file's size and rate, what the pending edits change, plausibility warnings.

Display only: the figures are computed by the engine (engine.codec.rate,
engine.studio.plausibility) in whoever owns the document. Edits arrive in bursts (a
slider drag sends dozens of values a second) and the size of pending edits
costs a real coding pass, so ``schedule()`` debounces: ``refreshDue`` fires
once, DEBOUNCE_MS after the last call.

Signals
    refreshDue()            time to recompute pending size and warnings
    frameActivated(int)     the user clicked a warning: go to its frame
"""
from __future__ import annotations

from PySide6.QtCore import Qt, QTimer, Signal
from PySide6.QtWidgets import QFormLayout, QLabel, QListWidget, QListWidgetItem, QVBoxLayout, QWidget

DEBOUNCE_MS = 300
FRAME_ROLE = Qt.ItemDataRole.UserRole


def _label(parent) -> QLabel:
    lab = QLabel("–", parent)
    lab.setTextInteractionFlags(Qt.TextInteractionFlag.TextSelectableByMouse)
    lab.setWordWrap(True)
    return lab


class BitstreamPanel(QWidget):
    refreshDue = Signal()
    frameActivated = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.stats = None            # engine.codec.rate.Rate of the file
        self.change = None           # engine.codec.rate.SizeChange of the pending edits
        self.warnings: list = []     # engine.studio.plausibility.PlausibilityWarning
        self.file_label, self.size_label = _label(self), _label(self)
        self.key_label, self.sem_label, self.camera_label, self.total_label = (_label(self) for _ in range(4))
        self.rate_label, self.pending_label = _label(self), _label(self)
        form = QFormLayout()
        form.setContentsMargins(0, 0, 0, 0)
        for text, lab in (("File", self.file_label), ("Size", self.size_label),
                          ("Key pictures", self.key_label), ("Semantics + headers", self.sem_label),
                          ("  of which camera", self.camera_label), ("Total", self.total_label),
                          ("Rate", self.rate_label),
                          ("Pending edits", self.pending_label)):
            form.addRow(text, lab)
        self.warnings_title = QLabel("Warnings", self)
        self.warnings_title.setStyleSheet("font-weight: bold;")
        self.warning_list = QListWidget(self)
        self.warning_list.setToolTip("Implausible edits; click one to go to its frame")
        lay = QVBoxLayout(self)
        lay.setContentsMargins(6, 6, 6, 6)
        title = QLabel("Bitstream (bits per frame)", self)
        title.setStyleSheet("font-weight: bold;")
        lay.addWidget(title)
        lay.addLayout(form)
        lay.addWidget(self.warnings_title)
        lay.addWidget(self.warning_list, 1)
        self.timer = QTimer(self)
        self.timer.setSingleShot(True)
        self.timer.setInterval(DEBOUNCE_MS)
        self.timer.timeout.connect(self.refreshDue.emit)
        self.warning_list.itemClicked.connect(self._item_clicked)
        self.warning_list.itemActivated.connect(self._item_clicked)
        self.set_warnings([])

    # --- debounce -----------------------------------------------------------------------------
    def schedule(self):
        """Ask for a refresh; many calls within DEBOUNCE_MS give one ``refreshDue``."""
        self.timer.start()

    def flush(self):
        """Emit a scheduled refresh now (after a save, in tests)."""
        if self.timer.isActive():
            self.timer.stop()
            self.refreshDue.emit()

    # --- model -> widget ----------------------------------------------------------------------
    def set_stats(self, stats, name: str = ""):
        """The file's figures (engine.codec.rate.Rate) or None when no document is open."""
        self.stats = stats
        if stats is None:
            for lab in (self.file_label, self.size_label, self.key_label, self.sem_label, self.camera_label,
                        self.total_label, self.rate_label, self.pending_label):
                lab.setText("–")
            return
        self.file_label.setText(f"{name} · {stats.frames} frames at {stats.fps:g} fps" if name
                                else f"{stats.frames} frames at {stats.fps:g} fps")
        self.size_label.setText(f"{stats.bytes:,} bytes")
        self.key_label.setText(f"{stats.key_picture_bpf:.1f} bits")
        self.sem_label.setText(f"{stats.side_bpf:.1f} bits")
        self.camera_label.setText(f"{stats.camera_bpf:.1f} bits")
        self.total_label.setText(f"{stats.total_bpf:.1f} bits")
        self.rate_label.setText(stats.rate_text())

    def set_pending(self, change, edited_frames: int = 0, error: str = ""):
        """The pending edits' size change (SizeChange), or why it cannot be computed."""
        self.change = change
        if error:
            self.pending_label.setText(f"cannot code the edited semantics: {error}")
        elif change is None:
            self.pending_label.setText("–")
        elif edited_frames == 0 and change.delta_bytes == 0:
            self.pending_label.setText("none")
        else:
            self.pending_label.setText(change.text() + (f" · {edited_frames} edited frames" if edited_frames else ""))

    def set_warnings(self, warnings):
        self.warnings = list(warnings)
        self.warning_list.clear()
        for w in self.warnings:
            item = QListWidgetItem(w.text)
            item.setData(FRAME_ROLE, int(w.frame))
            item.setToolTip(w.text)
            self.warning_list.addItem(item)
        self.warnings_title.setText(f"Warnings ({len(self.warnings)})" if self.warnings else "Warnings: none")

    # --- widget -> model ----------------------------------------------------------------------
    def _item_clicked(self, item: QListWidgetItem):
        self.frameActivated.emit(int(item.data(FRAME_ROLE)))
