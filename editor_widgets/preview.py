"""Decoded original and edited frames, always of the same frame, in one of four compare modes.

    side      original | edited, two synchronised views
    wipe      one view: the original left of a vertical divider, the edited right of it (drag to move)
    diff      a heat map of |edited - original| (mean over RGB) with a legend giving the largest difference
    invented  the edited frame with the pixels the decoder had to guess tinted magenta (no key picture
              saw what is there: background an edit uncovers, body surface no key showed), and their share

The header names the mode (a combo box) and says "draft" while a reduced-size frame is shown (the
studio decodes small frames while a slider is dragged). Wipe and difference need an edit to show
anything, and invented needs the decoder to say which pixels it guessed: otherwise (or before any
frame) the pane shows side by side and says why (``fallback``), and returns to the chosen mode once
there is something to compare; the chosen mode (``mode``) is what is remembered. The image arithmetic lives in
compare_images (numpy only).
"""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QRect, QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPen, QPixmap
from PySide6.QtWidgets import (
    QComboBox, QHBoxLayout, QLabel, QSizePolicy, QStackedWidget, QVBoxLayout, QWidget,
)

from .compare_images import (INFERNO_LUT, difference_heatmap, invented_tint, match_size, wipe_column,
                             wipe_composite)
from .images import to_pixmap

COMPARE_MODES = {"side": "Side by side", "wipe": "Wipe", "diff": "Difference", "invented": "Invented pixels"}


class ImageView(QWidget):
    """Shows a pixmap scaled to fit, keeping its aspect ratio; ``image`` is the array shown."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pixmap: QPixmap | None = None
        self.image: np.ndarray | None = None
        self.message = "no frame"
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 160)

    def set_image(self, rgb: np.ndarray | None):
        self.image = rgb
        self._pixmap = None if rgb is None else to_pixmap(rgb)
        self.update()

    def set_message(self, text: str):
        self.message = text
        self.update()

    def sizeHint(self):
        return QSize(384, 384)

    def image_rect(self) -> QRect:
        """Where the pixmap is drawn (fitted and centred); empty without one."""
        if self._pixmap is None or self._pixmap.isNull():
            return QRect()
        size = self._pixmap.size().scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio)
        return QRect((self.width() - size.width()) // 2, (self.height() - size.height()) // 2,
                     size.width(), size.height())

    def paintEvent(self, _):
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(41, 43, 48))
        if self._pixmap is not None:
            r = self.image_rect()
            p.setRenderHint(QPainter.RenderHint.SmoothPixmapTransform)
            p.drawPixmap(r, self._pixmap)
            self.paint_overlay(p, r)
        else:
            p.setPen(Qt.GlobalColor.lightGray)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.message)
        p.end()

    def paint_overlay(self, p: QPainter, rect: QRect):
        """Drawn over the image (subclasses: divider, legend)."""


def _caption(p: QPainter, rect: QRect, text: str, align):
    """Small white text on a dark plate, inside ``rect`` at ``align``, readable over any frame."""
    fm = p.fontMetrics()
    w, h = fm.horizontalAdvance(text) + 8, fm.height() + 2
    x = rect.left() + 4 if align & Qt.AlignmentFlag.AlignLeft else rect.right() - w - 3
    box = QRect(x, rect.top() + 4, w, h)
    p.fillRect(box, QColor(0, 0, 0, 150))
    p.setPen(Qt.GlobalColor.white)
    p.drawText(box, Qt.AlignmentFlag.AlignCenter, text)


class WipeView(ImageView):
    """Original left of a vertical divider, edited right of it; press or drag to move the divider."""

    splitChanged = Signal(float)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.split = 0.5
        self._pair: tuple[np.ndarray, np.ndarray] | None = None
        self.setCursor(Qt.CursorShape.SplitHCursor)

    def set_images(self, original: np.ndarray, edited: np.ndarray):
        self._pair = (original, edited)
        self._compose()

    def set_split(self, split: float):
        split = float(np.clip(split, 0.0, 1.0))
        if split != self.split:
            self.split = split
            self._compose()
            self.splitChanged.emit(split)

    def _compose(self):
        if self._pair is not None:
            self.set_image(wipe_composite(*self._pair, self.split))

    def _split_at(self, x: float):
        r = self.image_rect()
        if r.width() > 0:
            self.set_split((x - r.left()) / r.width())

    def mousePressEvent(self, ev):
        if ev.button() == Qt.MouseButton.LeftButton:
            self._split_at(ev.position().x())

    def mouseMoveEvent(self, ev):
        if ev.buttons() & Qt.MouseButton.LeftButton:
            self._split_at(ev.position().x())

    def paint_overlay(self, p: QPainter, rect: QRect):
        w = self.image.shape[1]
        x = rect.left() + round(wipe_column(w, self.split) * rect.width() / w)
        p.setPen(QPen(QColor(255, 255, 255, 230), 2))
        p.drawLine(x, rect.top(), x, rect.bottom())
        p.setBrush(QColor(255, 255, 255, 230))
        p.drawEllipse(x - 6, rect.center().y() - 6, 12, 12)
        _caption(p, rect, "Original", Qt.AlignmentFlag.AlignLeft)
        _caption(p, rect, "Edited", Qt.AlignmentFlag.AlignRight)


class HeatView(ImageView):
    """|edited - original| through the inferno colour map, with a colour bar and the largest difference."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.peak = 0.0
        self._top = 8.0
        self.legend = ""
        self._bar = to_pixmap(INFERNO_LUT[None])          # 1 x 256 strip, stretched when drawn

    def set_images(self, original: np.ndarray, edited: np.ndarray, min_scale: float = 8.0):
        heat, self.peak = difference_heatmap(original, edited, min_scale)
        top = max(self.peak, min_scale)
        self.legend = f"max |edited − original| = {self.peak:.0f} / 255 (mean RGB); bar 0 … {top:.0f}"
        self._top = top
        self.set_image(heat)

    def paint_overlay(self, p: QPainter, rect: QRect):
        fm = p.fontMetrics()
        text = f"max Δ {self.peak:.0f}/255"
        bar_w = min(160, max(60, rect.width() // 3))
        plate = QRect(rect.left() + 4, rect.bottom() - 2 * fm.height() - 14, bar_w + 16, 2 * fm.height() + 10)
        p.fillRect(plate, QColor(0, 0, 0, 160))
        bar = QRect(plate.left() + 8, plate.top() + 5, bar_w, 8)
        p.drawPixmap(bar, self._bar)
        p.setPen(Qt.GlobalColor.white)
        lab = QRect(bar.left(), bar.bottom() + 2, bar_w, fm.height())
        p.drawText(lab, Qt.AlignmentFlag.AlignLeft, "0")
        p.drawText(lab, Qt.AlignmentFlag.AlignRight, f"{self._top:.0f}")
        p.drawText(QRect(bar.left(), lab.bottom(), bar_w, fm.height()), Qt.AlignmentFlag.AlignLeft, text)


class InventedView(ImageView):
    """The edited frame with the pixels no key picture saw tinted (compare_images.invented_tint), and
    their share of the frame."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self.share = 0.0

    def set_images(self, edited: np.ndarray, invented: np.ndarray):
        tinted, self.share = invented_tint(edited, invented)
        self.set_image(tinted)

    def paint_overlay(self, p: QPainter, rect: QRect):
        _caption(p, rect, f"invented: {100 * self.share:.1f} % of the frame (no key picture saw it)",
                 Qt.AlignmentFlag.AlignLeft)


class PreviewPane(QWidget):
    """Original and edited frames in the chosen compare mode; ``shown`` is emitted after a new pair
    is displayed, ``modeChanged`` when the user picks another mode."""

    shown = Signal(int, int)   # (request serial, frame)
    modeChanged = Signal(str)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.original, self.edited = ImageView(self), ImageView(self)
        self.wipe, self.heat, self.invented = WipeView(self), HeatView(self), InventedView(self)
        self.frame = -1
        self.serial = -1
        self.draft = False
        self.mode = "side"             # the mode chosen (remembered in preferences)
        self.shown_mode = "side"       # the page shown: "side" while wipe / diff have nothing to compare
        self._pair: tuple[np.ndarray, np.ndarray] | None = None
        self._invented: np.ndarray | None = None     # the edited frame's guessed pixels, if the decoder says
        self.status = QLabel("", self)
        self.fallback = QLabel("", self)
        self.fallback.setStyleSheet("color: #9ab8e6;")
        self.fallback.setWordWrap(True)
        self.fallback.hide()

        header = QHBoxLayout()
        title = QLabel("Decoded frame", self)
        title.setStyleSheet("font-weight: bold;")
        self.draft_label = QLabel("draft", self)
        self.draft_label.setToolTip("a reduced-size frame while the slider moves; full size on release")
        self.draft_label.setStyleSheet("background: #e07b00; color: white; border-radius: 3px; padding: 0 5px;")
        self.draft_label.hide()
        self.mode_box = QComboBox(self)
        for key, text in COMPARE_MODES.items():
            self.mode_box.addItem(text, key)
        self.mode_box.setToolTip("How to compare the edited frame with the decoded original")
        self.mode_box.currentIndexChanged.connect(self._on_mode_index)
        header.addWidget(title)
        header.addWidget(self.draft_label)
        header.addStretch(1)
        header.addWidget(self.fallback, 1)
        header.addWidget(QLabel("Compare", self))
        header.addWidget(self.mode_box)

        side = QWidget(self)
        row = QHBoxLayout(side)
        row.setContentsMargins(0, 0, 0, 0)
        for view, text in ((self.original, "Original"), (self.edited, "Edited")):
            col = QVBoxLayout()
            t = QLabel(text, self)
            t.setAlignment(Qt.AlignmentFlag.AlignCenter)
            t.setStyleSheet("font-weight: bold;")
            col.addWidget(t)
            col.addWidget(view, 1)
            row.addLayout(col, 1)
        self.stack = QStackedWidget(self)
        self._pages = {"side": side, "wipe": self.wipe, "diff": self.heat, "invented": self.invented}
        for page in self._pages.values():
            self.stack.addWidget(page)

        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        lay.addLayout(header)
        lay.addWidget(self.stack, 1)
        lay.addWidget(self.status)

    # --- compare mode ---------------------------------------------------------------------------
    def set_mode(self, mode: str):
        if mode not in COMPARE_MODES:
            raise ValueError(f"unknown compare mode {mode!r}; one of {', '.join(COMPARE_MODES)}")
        self.mode_box.setCurrentIndex(list(COMPARE_MODES).index(mode))

    def _on_mode_index(self, i: int):
        mode = self.mode_box.itemData(i)
        if mode == self.mode:
            return
        self.mode = mode
        self._show_compare()
        self.modeChanged.emit(mode)

    @property
    def has_difference(self) -> bool:
        """Is there anything for wipe / difference to compare (an edited picture unlike the original)?"""
        if self._pair is None:
            return False
        a, b = self._pair
        return a is not b and not np.array_equal(a, b)

    def _available(self, mode: str) -> bool:
        if mode == "side":
            return True
        if mode == "invented":
            return self._pair is not None and self._invented is not None
        return self.has_difference

    def _show_compare(self):
        # Only the visible compare view is computed: the heat map costs a few ms per frame.
        shown = self.mode if self._available(self.mode) else "side"
        self.shown_mode = shown
        self.stack.setCurrentWidget(self._pages[shown])
        if shown != self.mode:
            what = COMPARE_MODES[self.mode]
            why = ("no frame yet" if self._pair is None
                   else "this decoder does not say which pixels it guessed" if self.mode == "invented"
                   else "this frame is not edited, nothing to compare")
            self.fallback.setText(f"{what}: {why}; showing side by side")
            self.fallback.setToolTip(f"{what} shows once there is something to show; the choice is kept")
            self.fallback.show()
        else:
            self.fallback.hide()
        if self._pair is None:
            return
        if shown == "wipe":
            self.wipe.set_images(*self._pair)
        elif shown == "diff":
            self.heat.set_images(*self._pair)
        elif shown == "invented":
            self.invented.set_images(self._pair[1], self._invented)

    # --- frames ---------------------------------------------------------------------------------
    def set_frames(self, serial: int, frame: int, original: np.ndarray, edited: np.ndarray, note: str = "",
                   draft: bool = False, invented: np.ndarray | None = None):
        """``invented``: H x W bool, the edited frame's pixels no key picture saw (None: not known)."""
        self.serial, self.frame, self.draft = serial, frame, bool(draft)
        self._invented = invented
        # The two frames come from one decode request, so they normally share a size; if not, the
        # edited one is fitted to the original so that wipe and difference compare like with like.
        self._pair = (original, match_size(edited, original.shape[:2]))
        self.original.set_image(original)
        self.edited.set_image(edited)
        self._show_compare()
        self.draft_label.setVisible(self.draft)
        size = f"{original.shape[1]}×{original.shape[0]} draft" if self.draft else ""
        # What the decoder guessed, in every mode: a large edit's share is worth knowing without switching.
        guessed = f"{100 * float(np.mean(invented)):.1f} % invented" if invented is not None and invented.any() else ""
        self.status.setText(" · ".join(s for s in (f"frame {frame}", note, size, guessed) if s))
        self.shown.emit(serial, frame)

    def set_message(self, text: str):
        self.status.setText(text)
