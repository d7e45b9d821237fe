"""Original and edited decoded frames side by side, always showing the same frame."""
from __future__ import annotations

import numpy as np
from PySide6.QtCore import QSize, Qt, Signal
from PySide6.QtGui import QColor, QPainter, QPixmap
from PySide6.QtWidgets import QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from .images import to_pixmap


class ImageView(QWidget):
    """Shows a pixmap scaled to fit, keeping its aspect ratio."""

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pixmap: QPixmap | None = None
        self.message = "no frame"
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(160, 160)

    def set_image(self, rgb: np.ndarray | None):
        self._pixmap = None if rgb is None else to_pixmap(rgb)
        self.update()

    def set_message(self, text: str):
        self.message = text
        self.update()

    def sizeHint(self):
        return QSize(384, 384)

    def paintEvent(self, _):
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(41, 43, 48))
        if self._pixmap is not None:
            pm = self._pixmap.scaled(self.size(), Qt.AspectRatioMode.KeepAspectRatio,
                                     Qt.TransformationMode.SmoothTransformation)
            p.drawPixmap((self.width() - pm.width()) // 2, (self.height() - pm.height()) // 2, pm)
        else:
            p.setPen(Qt.GlobalColor.lightGray)
            p.drawText(self.rect(), Qt.AlignmentFlag.AlignCenter, self.message)
        p.end()


class PreviewPane(QWidget):
    """Two synchronised views; ``shown`` is emitted after a new pair is displayed."""

    shown = Signal(int, int)   # (request serial, frame)

    def __init__(self, parent=None):
        super().__init__(parent)
        self.original, self.edited = ImageView(self), ImageView(self)
        self.frame = -1
        self.serial = -1
        self.status = QLabel("", self)
        lay = QVBoxLayout(self)
        lay.setContentsMargins(0, 0, 0, 0)
        row = QHBoxLayout()
        for view, title in ((self.original, "Original"), (self.edited, "Edited")):
            col = QVBoxLayout()
            t = QLabel(title, self)
            t.setAlignment(Qt.AlignmentFlag.AlignCenter)
            t.setStyleSheet("font-weight: bold;")
            col.addWidget(t)
            col.addWidget(view, 1)
            row.addLayout(col, 1)
        lay.addLayout(row, 1)
        lay.addWidget(self.status)

    def set_frames(self, serial: int, frame: int, original: np.ndarray, edited: np.ndarray, note: str = ""):
        self.serial, self.frame = serial, frame
        self.original.set_image(original)
        self.edited.set_image(edited)
        self.status.setText(f"frame {frame}" + (f" · {note}" if note else ""))
        self.shown.emit(serial, frame)

    def set_message(self, text: str):
        self.status.setText(text)
