"""Grouped sliders + spin boxes for the semantics of one frame.

Values cross this widget's boundary in the semantics' own units (radians,
metres, frame fractions); they are *shown* as editor_widgets.units says (degrees,
metres, pixels of the frame for the box and the camera pan), with a tooltip naming
the unit and what the value does on every slider and value box. Slider positions are
integers on the quantization grid (value = tick * step), so whatever the user
drags is exactly what the bitstream can carry.

Signals
    valueEdited(index, value, final)   final is False while a slider is being dragged
    groupResetRequested(group_key)     a key of ``panel_groups(names)``
"""
from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import Qt, Signal
from PySide6.QtWidgets import (
    QDoubleSpinBox, QGridLayout, QGroupBox, QLabel, QScrollArea, QSizePolicy, QSlider, QToolButton,
    QVBoxLayout, QWidget,
)

from . import units as U
from .binding import blocked

EDITED_COLOR = "#e07b00"

# Display ranges (degrees for angles) per joint / group; widened to cover the clip's own values.
_ANGLE_RANGE = {
    "head": (-70, 70), "left_shoulder": (-150, 150), "right_shoulder": (-150, 150),
    "left_elbow": (-150, 150), "right_elbow": (-150, 150), "left_wrist": (-90, 90),
    "right_wrist": (-90, 90), "rot": (-180, 180),
}
_LINEAR_RANGE = {
    "trans.x": (-1.0, 1.0), "trans.y": (-1.0, 1.0), "trans.z": (0.5, 15.0),
    "loc.cx": (-0.25, 1.25), "loc.cy": (-0.25, 1.25), "loc.w": (0.05, 2.0), "loc.h": (0.05, 2.0),
    "camera.pan_x": (-0.5, 0.5), "camera.pan_y": (-0.5, 0.5), "camera.zoom": (-1.0, 1.0),
}
_TITLES = {"rot": "Body rotation (°)", "trans": "Body translation (m)", "loc": "Box in frame (px)",
           "camera": "Camera (background, px)"}

is_angle = U.is_angle


def panel_groups(names) -> dict[str, list[int]]:
    """Group key (joint name or semantic group) -> flat indices, in display order."""
    out: dict[str, list[int]] = {}
    for i, n in enumerate(names):
        out.setdefault(n.split(".")[0], []).append(i)
    return out


def group_title(key: str) -> str:
    return _TITLES.get(key, key.replace("_", " ").capitalize() + " (°)")


def display_range(name: str) -> tuple[float, float]:
    """(lo, hi) of the default slider range: degrees for angles, internal units otherwise."""
    if is_angle(name):
        return _ANGLE_RANGE[name.split(".")[0]]
    return _LINEAR_RANGE.get(name, (-1.0, 1.0))


def internal_range(name: str) -> tuple[float, float]:
    """(lo, hi) of the default slider range in internal units."""
    lo, hi = display_range(name)
    return (math.radians(lo), math.radians(hi)) if is_angle(name) else (lo, hi)


class SemanticRow(QWidget):
    """One semantic: name, slider, spin box and the decoded original (shown when edited)."""

    edited = Signal(int, float, bool)

    def __init__(self, index: int, name: str, step: float, lo: float, hi: float, parent=None, frame_size=None):
        """lo, hi: the slider's range in internal units."""
        super().__init__(parent)
        self.index, self.name, self.step = index, name, float(step)
        self.angle = is_angle(name)
        self.unit = U.unit(name, frame_size)
        self.scale = self.unit.scale          # internal -> display
        self._value = 0.0
        self.label = QLabel(U.short_label(name))
        self.label.setMinimumWidth(max(34, self.label.fontMetrics().horizontalAdvance("z depth") + 6))
        self.slider = QSlider(Qt.Orientation.Horizontal)
        self.slider.setRange(int(math.floor(lo / step)), int(math.ceil(hi / step)))
        self.slider.setMinimumWidth(110)
        self.spin = QDoubleSpinBox()
        self.spin.setKeyboardTracking(False)
        dstep = step * self.scale
        self.spin.setDecimals(max(1, min(4, int(math.ceil(-math.log10(dstep))) + 1)))
        self.spin.setSingleStep(dstep)
        self.spin.setRange(self.slider.minimum() * dstep, self.slider.maximum() * dstep)
        self.spin.setSuffix(self.unit.suffix)
        self.spin.setFixedWidth(92)
        tip = U.describe(name, frame_size)
        for w in (self.label, self.slider):
            w.setToolTip(tip)
        self.spin.setToolTip(tip + " Type a value and press Enter.")
        self.orig = QLabel("")
        self.orig.setMinimumWidth(70)
        self.orig.setStyleSheet(f"color: {EDITED_COLOR};")
        self.slider.valueChanged.connect(self._on_slider)
        self.slider.sliderReleased.connect(lambda: self._emit(self.slider.value() * self.step, True))
        self.spin.valueChanged.connect(self._on_spin)

    def widgets(self):
        return self.label, self.slider, self.spin, self.orig

    def _on_slider(self, tick: int):
        v = tick * self.step
        with blocked(self.spin):
            self.spin.setValue(v * self.scale)
        self._emit(v, not self.slider.isSliderDown())

    def _on_spin(self, shown: float):
        tick = round(shown / self.scale / self.step)
        with blocked(self.slider):
            self.slider.setValue(tick)
        self._emit(tick * self.step, True)

    def _emit(self, value: float, final: bool):
        self._value = value
        self.edited.emit(self.index, float(value), bool(final))

    def set_values(self, value: float, original: float):
        """Show a value (model -> widget, no echo) and mark it when it differs from the original."""
        self._value = float(value)
        tick = int(round(value / self.step))
        if tick < self.slider.minimum() or tick > self.slider.maximum():
            with blocked(self.slider, self.spin):
                self.slider.setRange(min(tick, self.slider.minimum()), max(tick, self.slider.maximum()))
                self.spin.setRange(self.slider.minimum() * self.step * self.scale,
                                   self.slider.maximum() * self.step * self.scale)
        with blocked(self.slider, self.spin):
            if not self.slider.isSliderDown():
                self.slider.setValue(tick)
            self.spin.setValue(value * self.scale)
        edited = abs(value - original) > 0.5 * self.step
        self.orig.setText(f"● {original * self.scale:.{self.spin.decimals()}f}{self.unit.suffix}" if edited else "")
        self.orig.setToolTip("decoded original value" if edited else "")
        self.label.setStyleSheet(f"color: {EDITED_COLOR}; font-weight: bold;" if edited else "")

    @property
    def value(self) -> float:
        return self._value


class SemanticPanel(QScrollArea):
    valueEdited = Signal(int, float, bool)
    groupResetRequested = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.setWidgetResizable(True)
        self.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.rows: list[SemanticRow] = []
        self.groups: dict[str, QGroupBox] = {}
        self.reset_buttons: dict[str, QToolButton] = {}
        self._inner = QWidget()
        self._layout = QVBoxLayout(self._inner)
        self._layout.setContentsMargins(4, 4, 4, 4)
        self._layout.setSpacing(4)
        self.setWidget(self._inner)
        self.setMinimumWidth(405)

    def set_semantics(self, names, steps, data_min=None, data_max=None, frame_size=None):
        """Build rows for ``names`` (steps per name; optional clip min / max widen the ranges;
        frame_size (width, height) shows the box and the camera pan in pixels)."""
        for box in self.groups.values():
            box.setParent(None)
            box.deleteLater()
        self.rows, self.groups, self.reset_buttons = [], {}, {}
        while self._layout.count():
            self._layout.takeAt(0)
        for key, idx in panel_groups(names).items():
            box = QGroupBox(group_title(key))
            grid = QGridLayout(box)
            grid.setContentsMargins(6, 4, 6, 4)
            grid.setVerticalSpacing(2)
            for r, i in enumerate(idx):
                lo, hi = internal_range(names[i])
                if data_min is not None:
                    lo, hi = min(lo, data_min[i]), max(hi, data_max[i])
                row = SemanticRow(i, names[i], float(steps[i]), lo, hi, box, frame_size)
                row.edited.connect(self.valueEdited)
                for c, w in enumerate(row.widgets()):
                    grid.addWidget(w, r, c)
                self.rows.append(row)
            reset = QToolButton(box)
            reset.setText("↺")
            reset.setToolTip(f"Reset {group_title(key).lower()} to the decoded original on this frame")
            reset.setAutoRaise(True)
            reset.clicked.connect(lambda _=False, k=key: self.groupResetRequested.emit(k))
            grid.addWidget(reset, 0, 4)
            grid.setColumnStretch(1, 1)
            self.reset_buttons[key] = reset
            self.groups[key] = box
            self._layout.addWidget(box)
        self._layout.addStretch(1)
        self._inner.setSizePolicy(QSizePolicy.Policy.Preferred, QSizePolicy.Policy.Minimum)

    def set_frame_values(self, values: np.ndarray, original: np.ndarray):
        """Show one frame (D,) and its decoded original (D,) without emitting edits."""
        for row in self.rows:
            row.set_values(float(values[row.index]), float(original[row.index]))

    def row(self, name_or_index) -> SemanticRow:
        if isinstance(name_or_index, str):
            return next(r for r in self.rows if r.name == name_or_index)
        return self.rows[name_or_index]
