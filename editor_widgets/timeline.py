"""Timeline: scrubber with markers on edited frames, key frames and warnings, range selection, play / pause.

Mouse on the bar: click / drag scrubs; shift + drag selects a range (for range
edits); the [ and ] buttons set the range's ends at the current frame; Esc or
the clear button drops it.

Signals
    frameChanged(int)           the user moved to a frame (also emitted while playing)
    rangeChanged(int, int)      selection first, last (-1, -1 when cleared)
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRectF, Qt, QTimer, Signal
from PySide6.QtGui import QColor, QPainter, QPen
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSpinBox, QToolButton, QWidget

from .binding import blocked

try:
    import qtawesome as qta
except Exception:  # pragma: no cover - icons are optional in the widget library
    qta = None


class TimelineBar(QWidget):
    scrubbed = Signal(int)
    selected = Signal(int, int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.n_frames, self.frame = 1, 0
        self.edited = np.zeros(0, int)
        self.warnings = np.zeros(0, int)     # frames with plausibility warnings (red, above the bar)
        self.key_frames: list[int] = []
        self.selection: tuple[int, int] | None = None
        self._anchor = None
        self.setMinimumHeight(34)
        self.setMouseTracking(False)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)

    def _x(self, f: float) -> float:
        return 6 + (self.width() - 12) * (f + 0.5) / max(self.n_frames, 1)

    def frame_at(self, x: float) -> int:
        f = int((x - 6) / max(self.width() - 12, 1) * self.n_frames)
        return int(np.clip(f, 0, self.n_frames - 1))

    def paintEvent(self, _):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, False)
        h = self.height()
        p.fillRect(self.rect(), self.palette().window())
        bar = QRectF(6, 8, self.width() - 12, h - 16)
        p.fillRect(bar, QColor("#3a3f44"))
        fw = bar.width() / max(self.n_frames, 1)
        if self.selection:
            a, b = self.selection
            p.fillRect(QRectF(self._x(a) - fw / 2, 8, (b - a + 1) * fw, h - 16), QColor(80, 140, 220, 120))
        p.setPen(QPen(QColor("#6aa9ff"), 1))
        for k in self.key_frames:
            x = self._x(k)
            p.drawLine(int(x), 8, int(x), h - 9)
        for f in self.edited:
            p.fillRect(QRectF(self._x(f) - max(fw / 2, 1), h - 14, max(fw, 2), 6), QColor("#e07b00"))
        for f in self.warnings:     # in the top margin, so they never hide the edited marks
            p.fillRect(QRectF(self._x(f) - max(fw / 2, 1.5), 1, max(fw, 3), 6), QColor("#e0302a"))
        x = self._x(self.frame)
        p.setPen(QPen(QColor("#ffffff"), 2))
        p.drawLine(int(x), 2, int(x), h - 2)
        p.end()

    def mousePressEvent(self, e):
        f = self.frame_at(e.position().x())
        if e.modifiers() & Qt.KeyboardModifier.ShiftModifier:
            self._anchor = f
            self.selection = (f, f)
            self.selected.emit(f, f)
        else:
            self._anchor = None
            self.scrubbed.emit(f)
        self.update()

    def mouseMoveEvent(self, e):
        f = self.frame_at(e.position().x())
        if self._anchor is not None:
            self.selection = (min(self._anchor, f), max(self._anchor, f))
            self.selected.emit(*self.selection)
        else:
            self.scrubbed.emit(f)
        self.update()

    def mouseReleaseEvent(self, _):
        self._anchor = None


class Timeline(QWidget):
    frameChanged = Signal(int)
    rangeChanged = Signal(int, int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.fps = 25.0
        self.bar = TimelineBar(self)
        self.play_button = QToolButton(self)
        self.play_button.setCheckable(True)
        self.play_button.setToolTip("Play / pause (Space)")
        self.spin = QSpinBox(self)
        self.spin.setKeyboardTracking(False)
        self.in_button, self.out_button, self.clear_button = QToolButton(self), QToolButton(self), QToolButton(self)
        for b, text, tip in ((self.in_button, "[", "Range starts at this frame"),
                             (self.out_button, "]", "Range ends at this frame"),
                             (self.clear_button, "×", "Clear the range selection")):
            b.setText(text)
            b.setToolTip(tip)
        self.range_label = QLabel("no range", self)
        self.range_label.setMinimumWidth(90)
        self._set_play_icon(False)
        lay = QHBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.addWidget(self.play_button)
        lay.addWidget(self.bar, 1)
        lay.addWidget(self.spin)
        for w in (self.in_button, self.out_button, self.clear_button, self.range_label):
            lay.addWidget(w)
        self.timer = QTimer(self)
        self.timer.timeout.connect(self._tick)
        self.play_button.toggled.connect(self.set_playing)
        self.bar.scrubbed.connect(self._user_frame)
        self.bar.selected.connect(self._user_range)
        self.spin.valueChanged.connect(self._user_frame)
        self.in_button.clicked.connect(lambda: self._set_end(0))
        self.out_button.clicked.connect(lambda: self._set_end(1))
        self.clear_button.clicked.connect(self.clear_selection)

    def _set_play_icon(self, playing: bool):
        if qta is not None:
            self.play_button.setIcon(qta.icon("mdi6.pause" if playing else "mdi6.play"))
        else:
            self.play_button.setText("❚❚" if playing else "▶")

    # --- model -> widget -------------------------------------------------------------------
    def set_clip(self, n_frames: int, fps: float, key_frames=()):
        self.set_playing(False)
        self.fps = float(fps) or 25.0
        self.bar.n_frames = max(int(n_frames), 1)
        self.bar.key_frames = list(key_frames)
        self.bar.selection = None
        with blocked(self.spin):
            self.spin.setRange(0, self.bar.n_frames - 1)
        self._update_range_label()
        self.set_frame(0)

    def set_frame(self, frame: int):
        self.bar.frame = int(frame)
        with blocked(self.spin):
            self.spin.setValue(int(frame))
        self.bar.update()

    def set_markers(self, frames):
        self.bar.edited = np.asarray(frames, int)
        self.bar.update()

    def set_warning_frames(self, frames):
        """Mark frames that have plausibility warnings (engine.studio.plausibility)."""
        self.bar.warnings = np.unique(np.asarray(list(frames), int))
        self.bar.update()

    @property
    def warning_frames(self) -> list[int]:
        return [int(f) for f in self.bar.warnings]

    @property
    def frame(self) -> int:
        return self.bar.frame

    @property
    def selection(self):
        return self.bar.selection

    def set_selection(self, first: int, last: int):
        self._user_range(min(first, last), max(first, last))

    def clear_selection(self):
        self.bar.selection = None
        self._update_range_label()
        self.bar.update()
        self.rangeChanged.emit(-1, -1)

    # --- user -------------------------------------------------------------------------------
    def _user_frame(self, f: int):
        if f != self.bar.frame:
            self.set_frame(f)
            self.frameChanged.emit(int(f))

    def _user_range(self, a: int, b: int):
        self.bar.selection = (a, b)
        self._update_range_label()
        self.bar.update()
        self.rangeChanged.emit(a, b)

    def _set_end(self, end: int):
        f = self.frame
        a, b = self.bar.selection or (f, f)
        a, b = (f, max(f, b)) if end == 0 else (min(a, f), f)
        self._user_range(a, b)

    def _update_range_label(self):
        s = self.bar.selection
        self.range_label.setText(f"range {s[0]}–{s[1]}" if s else "no range")

    def set_playing(self, playing: bool):
        with blocked(self.play_button):
            self.play_button.setChecked(playing)
        self._set_play_icon(playing)
        if playing:
            self.timer.start(max(1, int(round(1000.0 / self.fps))))
        else:
            self.timer.stop()

    def toggle_play(self):
        self.set_playing(not self.timer.isActive())

    def _tick(self):
        self._user_frame((self.frame + 1) % self.bar.n_frames)
