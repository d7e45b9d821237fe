"""Range edit: offset or set one semantic over frames first..last with ease-in / ease-out."""
from __future__ import annotations

import math

from PySide6.QtWidgets import (
    QComboBox, QDialog, QDialogButtonBox, QDoubleSpinBox, QFormLayout, QSpinBox,
)

from editor_widgets.semantic_panel import is_angle


class RangeEditDialog(QDialog):
    def __init__(self, names, n_frames: int, first: int, last: int, index: int = 0, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Range edit")
        self.names = list(names)
        self.semantic = QComboBox()
        self.semantic.addItems(self.names)
        self.semantic.setCurrentIndex(index)
        self.mode = QComboBox()
        self.mode.addItems(["offset", "value"])
        self.amount = QDoubleSpinBox()
        self.amount.setRange(-1000, 1000)
        self.amount.setDecimals(4)
        self.first, self.last = QSpinBox(), QSpinBox()
        for s, v in ((self.first, first), (self.last, last)):
            s.setRange(0, n_frames - 1)
            s.setValue(v)
        self.ease_in, self.ease_out = QSpinBox(), QSpinBox()
        for s in (self.ease_in, self.ease_out):
            s.setRange(0, n_frames)
            s.setSuffix(" frames")
        form = QFormLayout(self)
        form.addRow("Semantic", self.semantic)
        form.addRow("Mode", self.mode)
        form.addRow("Amount", self.amount)
        form.addRow("First frame", self.first)
        form.addRow("Last frame", self.last)
        form.addRow("Ease in", self.ease_in)
        form.addRow("Ease out", self.ease_out)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)
        self.semantic.currentIndexChanged.connect(self._units)
        self._units()

    def _units(self):
        angle = is_angle(self.semantic.currentText())
        self.amount.setSuffix("°" if angle else "")
        self.amount.setDecimals(2 if angle else 4)

    def edit_kwargs(self) -> dict:
        """Arguments for DocumentAdapter.set_range (amount converted to internal units)."""
        amount = self.amount.value()
        if is_angle(self.semantic.currentText()):
            amount = math.radians(amount)
        a, b = sorted((self.first.value(), self.last.value()))
        kw = {"index": self.semantic.currentIndex(), "first": a, "last": b,
              "ease_in": self.ease_in.value(), "ease_out": self.ease_out.value()}
        kw["offset" if self.mode.currentText() == "offset" else "value"] = amount
        return kw
