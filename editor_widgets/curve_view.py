"""Curve view: one semantic over the whole clip, the decoded original against the edited values.

    [semantic v]  - - original   -- edited   (drag a point up / down)
    +--------------------------------------------------------------+
    |   ░░░░░ selected range ░░░░░         |  current frame        |
    |  - - - - - - - -.__.-----'''''--.____|_____                  |
    +--------------------------------------------------------------+
      0             25            50            75

Values cross this widget's boundary in the semantics' own units (radians,
metres, frame fractions); they are *shown* as editor_widgets.units says (degrees, pixels
of the frame for the box and the camera pan). Dragged values are
snapped to the quantization grid, like the slider panel's, so a drag emits
only values a bitstream can carry (and only when the grid tick changes).

Frame ``f`` is drawn at the centre of its slot, ``(f + 0.5) / N`` of the width,
as the timeline does, so a 1-frame clip is a single point in the middle.

Signals
    valueEdited(frame, index, value, final)   final is False while a point is being dragged
    frameClicked(frame)                       a click (or a drag off the curve) on a frame
"""
from __future__ import annotations

import math

import numpy as np
from PySide6.QtCore import QPointF, QRectF, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen, QPolygonF
from PySide6.QtWidgets import QComboBox, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from .binding import blocked
from . import units as U
from .semantic_panel import EDITED_COLOR

GRAB_PX = 8                       # how near (pixels, vertically) a press must be to grab the edited curve
SELECTION_COLOR = QColor(80, 140, 220, 70)
ORIGINAL_COLOR = QColor(190, 190, 190)
PLOT_BG = QColor("#2b2f33")
GRID_COLOR = QColor("#3e4449")


def nice_ticks(lo: float, hi: float, n: int = 6) -> np.ndarray:
    """About n round tick values (1, 2, 5 x 10^k apart) within [lo, hi]; hi > lo."""
    raw = (hi - lo) / max(n, 1)
    mag = 10.0 ** math.floor(math.log10(raw))
    step = next(m * mag for m in (1, 2, 5, 10) if m * mag >= raw)
    return np.arange(math.ceil(lo / step), math.floor(hi / step) + 1) * step


class CurvePlot(QWidget):
    """The painted plot; CurveView adds the semantic chooser. Works on (N, D) arrays it does not own."""

    valueEdited = Signal(int, int, float, bool)
    frameClicked = Signal(int)

    LEFT, RIGHT, TOP, BOTTOM = 50, 8, 17, 16     # TOP holds the value readout, above the curves

    def __init__(self, parent=None):
        super().__init__(parent)
        self.original: np.ndarray | None = None    # (N, D), internal units
        self.edited: np.ndarray | None = None      # (N, D)
        self.names: tuple[str, ...] = ()
        self.frame_size: tuple[int, int] | None = None   # (width, height): box and pan in pixels
        self.steps: np.ndarray | None = None       # (D,) quantization steps, or None (no snapping)
        self.index = 0
        self.frame = 0
        self.selection: tuple[int, int] | None = None
        self._frozen: tuple[float, float] | None = None   # y range held still while a point is dragged
        self._drag: int | None = None              # frame whose point is being dragged
        self._drag_tick: float | None = None       # last value emitted during the drag
        self._drag_start = 0.0                      # the point's value when it was grabbed
        self._drag_moved = False
        self._scrub = False
        self.setMinimumHeight(90)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setFocusPolicy(Qt.FocusPolicy.ClickFocus)

    # --- geometry ---------------------------------------------------------------------------
    @property
    def n_frames(self) -> int:
        return 0 if self.edited is None else int(self.edited.shape[0])

    @property
    def scale(self) -> float:
        """Internal -> display units (editor_widgets.units: degrees, pixels, metres)."""
        return self.unit.scale

    @property
    def unit(self) -> U.Unit:
        name = self.names[self.index] if self.index < len(self.names) else ""
        return U.unit(name, self.frame_size)

    def plot_rect(self) -> QRectF:
        return QRectF(self.LEFT, self.TOP, max(self.width() - self.LEFT - self.RIGHT, 1),
                      max(self.height() - self.TOP - self.BOTTOM, 1))

    def x_of(self, f: float) -> float:
        r = self.plot_rect()
        return r.left() + r.width() * (f + 0.5) / max(self.n_frames, 1)

    def frame_at(self, x: float) -> int:
        r = self.plot_rect()
        f = int(math.floor((x - r.left()) / r.width() * max(self.n_frames, 1)))
        return int(np.clip(f, 0, max(self.n_frames - 1, 0)))

    def value_range(self) -> tuple[float, float]:
        """(lo, hi) in display units, padded; never empty (a constant curve gets a band around it)."""
        if self._frozen is not None:
            return self._frozen
        if self.edited is None:
            return -1.0, 1.0
        col = np.concatenate([self.original[:, self.index], self.edited[:, self.index]]) * self.scale
        lo, hi = float(col.min()), float(col.max())
        dstep = float(self.steps[self.index]) * self.scale if self.steps is not None else 0.0
        pad = max(0.08 * (hi - lo), 5 * dstep, 1e-3)     # room to drag a flat curve a few steps
        return lo - pad, hi + pad

    def y_of(self, shown):
        """Pixel y of display-unit value(s) (a float or an array)."""
        lo, hi = self.value_range()
        r = self.plot_rect()
        return r.top() + r.height() * (hi - shown) / (hi - lo)

    def value_at(self, y: float) -> float:
        """Internal-unit value under a y pixel, on the quantization grid when steps are known."""
        lo, hi = self.value_range()
        r = self.plot_rect()
        v = (hi - (y - r.top()) / r.height() * (hi - lo)) / self.scale
        if self.steps is not None:
            s = float(self.steps[self.index])
            v = round(v / s) * s
        return float(v)

    # --- painting ----------------------------------------------------------------------------
    def paintEvent(self, _):
        p = QPainter(self)
        p.setRenderHint(QPainter.RenderHint.Antialiasing, True)
        p.fillRect(self.rect(), self.palette().window())
        r = self.plot_rect()
        p.fillRect(r, PLOT_BG)
        n = self.n_frames
        if n == 0:
            p.setPen(self.palette().text().color())
            p.drawText(r, Qt.AlignmentFlag.AlignCenter, "no bitstream")
            p.end()
            return
        fw = r.width() / n
        if self.selection:
            a, b = self.selection
            p.fillRect(QRectF(self.x_of(a) - fw / 2, r.top(), (b - a + 1) * fw, r.height()), SELECTION_COLOR)
        self._paint_axes(p, r)
        s, i = self.scale, self.index
        p.save()
        p.setClipRect(r)
        xs = self.x_of(np.arange(n, dtype=float))
        orig = self.y_of(self.original[:, i] * s)
        edit = self.y_of(self.edited[:, i] * s)
        p.setPen(QPen(ORIGINAL_COLOR, 1.2, Qt.PenStyle.DashLine))
        p.drawPolyline(QPolygonF([QPointF(x, y) for x, y in zip(xs, orig)]))
        p.setPen(QPen(QColor(EDITED_COLOR), 2.0))
        p.drawPolyline(QPolygonF([QPointF(x, y) for x, y in zip(xs, edit)]))
        # Points where the edit differs from the original are marked; the others get small dots
        # (grab handles) when there is room for them.
        changed = self.edited[:, i] != self.original[:, i]
        p.setPen(Qt.PenStyle.NoPen)
        p.setBrush(QColor(EDITED_COLOR))
        for f in range(n):
            if changed[f] or fw >= 6:
                p.drawEllipse(QPointF(xs[f], edit[f]), 2.7 if changed[f] else 1.4, 2.7 if changed[f] else 1.4)
        x = xs[self.frame] if self.frame < n else xs[-1]
        p.setPen(QPen(QColor("#ffffff"), 1.5))
        p.drawLine(QPointF(x, r.top()), QPointF(x, r.bottom()))
        f = min(self.frame, n - 1)
        p.setPen(QPen(QColor("#ffffff"), 1.5))
        p.setBrush(QColor(EDITED_COLOR))
        p.drawEllipse(QPointF(x, edit[f]), 4.5, 4.5)
        p.restore()
        self._paint_label(p, r, f)
        p.end()

    def _paint_axes(self, p: QPainter, r: QRectF):
        lo, hi = self.value_range()
        text = self.palette().text().color()
        font = p.font()
        font.setPointSizeF(max(font.pointSizeF() - 1.5, 6.5))
        p.setFont(font)
        for v in nice_ticks(lo, hi):
            y = self.y_of(v)
            p.setPen(QPen(GRID_COLOR, 1))
            p.drawLine(QPointF(r.left(), y), QPointF(r.right(), y))
            p.setPen(text)
            p.drawText(QRectF(0, y - 8, self.LEFT - 4, 16),
                       Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter, f"{v:g}")
        n = self.n_frames
        for f in nice_ticks(-0.5, n - 0.5, 8) if n > 1 else [0]:
            x = self.x_of(f)
            p.drawText(QRectF(x - 25, r.bottom() + 1, 50, self.BOTTOM - 1),
                       Qt.AlignmentFlag.AlignHCenter | Qt.AlignmentFlag.AlignTop, f"{int(f)}")

    def _paint_label(self, p: QPainter, r: QRectF, f: int):
        i, s = self.index, self.scale
        unit = self.unit.suffix
        e, o = self.edited[f, i] * s, self.original[f, i] * s
        text = f"{U.human_name(self.names[i], self.frame_size)}  frame {f}: {e:.4g}{unit}"
        if e != o:
            text += f"  (original {o:.4g}{unit})"
        p.setPen(self.palette().text().color())
        p.drawText(QRectF(r.left(), 0, r.width(), self.TOP), Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignVCenter,
                   text)

    # --- mouse -------------------------------------------------------------------------------
    def mousePressEvent(self, e):
        if e.button() != Qt.MouseButton.LeftButton or self.n_frames == 0:
            return
        pos = e.position()
        f = self.frame_at(pos.x())
        self.frameClicked.emit(f)
        y_point = self.y_of(self.edited[f, self.index] * self.scale)
        if abs(pos.y() - y_point) <= GRAB_PX:
            self._frozen = self.value_range()       # hold the axis still under the pointer
            self._drag, self._drag_tick = f, float(self.edited[f, self.index])
            self._drag_start, self._drag_moved = self._drag_tick, False
        else:
            self._scrub = True

    def mouseMoveEvent(self, e):
        pos = e.position()
        if self._drag is not None:
            v = self.value_at(pos.y())
            if v != self._drag_tick:
                self._drag_tick, self._drag_moved = v, True
                self.valueEdited.emit(self._drag, self.index, v, False)
        elif self._scrub:
            f = self.frame_at(pos.x())
            if f != self.frame:
                self.frameClicked.emit(f)

    def mouseReleaseEvent(self, e):
        if self._drag is not None:
            f = self._drag
            v = self.value_at(e.position().y())
            self._drag, self._frozen = None, None
            # A click on a point without moving it edits nothing; a drag always ends with final=True
            # (which closes the undo gesture, as a slider release does).
            if self._drag_moved or v != self._drag_start:
                self.valueEdited.emit(f, self.index, v, True)
        self._scrub = False
        self.update()


class CurveView(QWidget):
    """Semantic chooser + CurvePlot. Feed it with set_semantics / set_curves / set_frame / set_selection."""

    valueEdited = Signal(int, int, float, bool)
    frameClicked = Signal(int)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.combo = QComboBox(self)
        self.combo.setToolTip("Semantic shown (follows the last slider you touched)")
        self.combo.setSizeAdjustPolicy(QComboBox.SizeAdjustPolicy.AdjustToContents)
        self.plot = CurvePlot(self)
        legend = QLabel(f"<span style='color:#aaaaaa'>- - original</span> &nbsp; "
                        f"<span style='color:{EDITED_COLOR}'><b>—</b> edited</span> &nbsp; "
                        "drag a point to edit · click to go to a frame", self)
        top = QHBoxLayout()
        top.setContentsMargins(0, 0, 0, 0)
        top.addWidget(QLabel("Curve:", self))
        top.addWidget(self.combo)
        top.addWidget(legend, 1)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(4, 2, 4, 2)
        lay.setSpacing(2)
        lay.addLayout(top)
        lay.addWidget(self.plot, 1)
        self.combo.currentIndexChanged.connect(self._on_combo)
        self.plot.valueEdited.connect(self.valueEdited)
        self.plot.frameClicked.connect(self.frameClicked)

    # --- model -> widget ---------------------------------------------------------------------
    def set_semantics(self, names, steps=None, frame_size=None):
        """Semantic names (D,) and their quantization steps (D,); keeps the shown semantic if it still exists.
        frame_size (width, height): the box and the camera pan are shown in pixels."""
        names = tuple(names)
        keep = self.plot.names[self.plot.index] if self.plot.index < len(self.plot.names) else None
        self.plot.names = names
        self.plot.frame_size = frame_size
        self.plot.steps = None if steps is None else np.asarray(steps, float)
        with blocked(self.combo):
            self.combo.clear()
            for k, n in enumerate(names):
                self.combo.addItem(U.human_name(n, frame_size), n)
                self.combo.setItemData(k, U.describe(n, frame_size), Qt.ItemDataRole.ToolTipRole)
        self.set_index(names.index(keep) if keep in names else 0)

    def set_curves(self, original: np.ndarray, edited: np.ndarray):
        """(N, D) arrays in internal units; kept by reference (a live read-only view is fine)."""
        self.plot.original, self.plot.edited = original, edited
        self.plot.frame = min(self.plot.frame, max(edited.shape[0] - 1, 0))
        self.plot.update()

    def set_index(self, index: int):
        index = int(index)
        if not 0 <= index < len(self.plot.names) or (index == self.plot.index and self.combo.currentIndex() == index):
            return
        if self.plot._drag is not None:       # never switch curves under a dragged point
            return
        self.plot.index = index
        with blocked(self.combo):
            self.combo.setCurrentIndex(index)
        self.plot.update()

    def set_frame(self, frame: int):
        self.plot.frame = int(frame)
        self.plot.update()

    def set_selection(self, selection):
        """(first, last) inclusive, or None."""
        self.plot.selection = None if selection is None or selection[0] < 0 else (int(selection[0]), int(selection[1]))
        self.plot.update()

    @property
    def index(self) -> int:
        return self.plot.index

    def _on_combo(self, index: int):
        if index >= 0:
            self.plot.index = index
            self.plot.update()
