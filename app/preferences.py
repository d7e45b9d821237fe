"""Preferences: decoder device, analytic / learned decoder, preview size, compare mode (stored with QSettings)."""
from __future__ import annotations

from dataclasses import asdict, dataclass

from PySide6.QtCore import QSettings
from PySide6.QtWidgets import QComboBox, QDialog, QDialogButtonBox, QFormLayout

from editor_widgets.preview import COMPARE_MODES

DEVICES = ("auto", "cpu", "cuda")
DECODERS = ("analytic", "learned")
PREVIEW_SIZES = (256, 384, 512, 768)


@dataclass
class Preferences:
    device: str = "auto"
    # analytic by default: the studio's drafts (while a slider moves) are analytic, and the learned
    # refinement is softer on the sample, so a release never replaces a draft with a softer frame.
    decoder: str = "analytic"
    preview_size: int = 384
    compare_mode: str = "side"     # the preview's compare mode (chosen in its header, kept here)

    @classmethod
    def load(cls, settings: QSettings | None = None) -> "Preferences":
        s = settings or QSettings("IHVC", "IHVC Studio")
        p = cls()
        dev = str(s.value("device", p.device))
        dec = str(s.value("decoder", p.decoder))
        try:
            size = int(s.value("preview_size", p.preview_size))
        except (TypeError, ValueError):
            size = p.preview_size
        mode = str(s.value("compare_mode", p.compare_mode))
        return cls(dev if dev in DEVICES else "auto", dec if dec in DECODERS else p.decoder,
                   size if size in PREVIEW_SIZES else 384, compare_mode=mode if mode in COMPARE_MODES else "side")

    def save(self, settings: QSettings | None = None):
        s = settings or QSettings("IHVC", "IHVC Studio")
        for k, v in asdict(self).items():
            s.setValue(k, v)


class PreferencesDialog(QDialog):
    def __init__(self, prefs: Preferences, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        self.device = QComboBox()
        self.device.addItems(DEVICES)
        self.device.setCurrentText(prefs.device)
        self.decoder = QComboBox()
        self.decoder.addItems(DECODERS)
        self.decoder.setCurrentText(prefs.decoder)
        self.decoder.setToolTip("analytic (default): mesh-flow warping, no network, as sharp as the drafts "
                                "shown while a slider moves; learned: the trained refinement (softer on "
                                "most clips, see docs/BENCHMARKS.md)")
        self.device.setToolTip("Where the decoder runs; auto: the GPU when there is one")
        self.size = QComboBox()
        self.size.addItems([str(s) for s in PREVIEW_SIZES])
        self.size.setCurrentText(str(prefs.preview_size))
        self.size.setToolTip("Longest side of the preview frames, in pixels (larger: sharper, slower)")
        form = QFormLayout(self)
        form.addRow("Decoder device", self.device)
        form.addRow("Decoder", self.decoder)
        form.addRow("Preview size (px)", self.size)
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def preferences(self) -> Preferences:
        return Preferences(self.device.currentText(), self.decoder.currentText(), int(self.size.currentText()))
