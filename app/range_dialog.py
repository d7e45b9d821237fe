"""Range edit: offset or set one semantic over frames first..last with ease-in / ease-out.

Semantics are listed by their human names with the unit the amount is typed in
(editor_widgets.units: degrees, pixels of the frame, metres); frames count from 0.
Every frame of the range is changed, both ends included; easing ramps the edit
in and out inside the range (engine.studio.edits.ease_weights).
"""
from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QLabel, QSpinBox,
)

from editor_widgets import units as U


class RangeEditDialog(QDialog):
    def __init__(self, names, n_frames: int, first: int, last: int, index: int = 0, parent=None,
                 frame_size=None):
        super().__init__(parent)
        self.setWindowTitle("Range edit")
        self.names = list(names)
        self.frame_size = frame_size
        self.semantic = QComboBox()
        for k, n in enumerate(self.names):
            self.semantic.addItem(U.human_name(n, frame_size), n)
            self.semantic.setItemData(k, U.describe(n, frame_size), Qt.ItemDataRole.ToolTipRole)
        self.semantic.setCurrentIndex(index)
        self.semantic.setToolTip("The value to change over the range")
        self.mode = QComboBox()
        self.mode.addItem("offset (add to each frame's value)", "offset")
        self.mode.addItem("value (set every frame to it)", "value")
        self.mode.setToolTip("offset adds the amount to each frame; value replaces each frame's value")
        self.amount = QDoubleSpinBox()
        self.amount.setRange(-100000, 100000)
        self.amount.setDecimals(4)
        self.first, self.last = QSpinBox(), QSpinBox()
        for s, v, tip in ((self.first, first, "First frame of the range (changed too)"),
                          (self.last, last, "Last frame of the range (changed too)")):
            s.setRange(0, n_frames - 1)
            s.setValue(v)
            s.setToolTip(f"{tip}; {U.FRAME_BASE_NOTE}")
        self.ease_in, self.ease_out = QSpinBox(), QSpinBox()
        for s, tip in ((self.ease_in, "Frames at the start of the range over which the edit ramps up"),
                       (self.ease_out, "Frames at the end of the range over which the edit ramps down")):
            s.setRange(0, n_frames)
            s.setSuffix(" frames")
            s.setToolTip(tip + " (inside the range; 0: full strength from the first frame)")
        form = QFormLayout(self)
        form.addRow("Semantic", self.semantic)
        form.addRow("Mode", self.mode)
        form.addRow("Amount", self.amount)
        form.addRow(f"First frame (from 0 to {n_frames - 1})", self.first)
        form.addRow("Last frame", self.last)
        form.addRow("Ease in", self.ease_in)
        form.addRow("Ease out", self.ease_out)
        note = QLabel("Every frame from first to last is changed; easing ramps the edit in and out "
                      "inside the range.")
        note.setWordWrap(True)
        form.addRow(note)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.semantic.currentIndexChanged.connect(self._units)
        self._units()

    @property
    def name(self) -> str:
        return self.names[self.semantic.currentIndex()]

    def _units(self):
        u = U.unit(self.name, self.frame_size)
        self.amount.setSuffix(u.suffix)
        self.amount.setDecimals(2 if u.short in ("°", "px") else 4)
        self.amount.setToolTip(U.describe(self.name, self.frame_size))

    def edit_kwargs(self) -> dict:
        """Arguments for DocumentAdapter.set_range (amount converted to internal units)."""
        amount = U.from_display(self.name, self.amount.value(), self.frame_size)
        a, b = sorted((self.first.value(), self.last.value()))
        kw = {"index": self.semantic.currentIndex(), "first": a, "last": b,
              "ease_in": self.ease_in.value(), "ease_out": self.ease_out.value()}
        kw["offset" if self.mode.currentData() == "offset" else "value"] = amount
        return kw
