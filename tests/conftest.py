"""Shared fixtures: offscreen Qt, a small synthetic bitstream, and fast stand-ins for the decoder
and the body model (the GUI tests exercise the studio's wiring, not the engine's pixels)."""
from __future__ import annotations

import os
import sys
from fractions import Fraction
from pathlib import Path

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("PYOPENGL_PLATFORM", "egl")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from engine.codec.bitstream import Bitstream, GroupOfPictures, KeyPicture  # noqa: E402
from engine.codec.semantics import KeySemantics, QuantSpec, snap  # noqa: E402


def opaque_bitstream(n_frames: int = 30, gop: int = 15, camera: bool = False, size: int = 48, seed: int = 0):
    """A valid Bitstream with smooth semantics on the quantization grid and opaque (undecodable) key-picture
    bytes: for the document, edits and the studio, which never decode pixels here (FakeDecoder does).
    tests.factories.make_bitstream makes decodable ones."""
    rng = np.random.default_rng(seed)
    quant = QuantSpec()
    dims = 34 if camera else 31
    t = np.linspace(0, 1, n_frames)[:, None]
    base = np.zeros(dims)
    base[27:31] = (0.5, 0.55, 0.8, 0.9)
    base[26] = 5.0
    values = base + 0.2 * np.sin(2 * np.pi * t * rng.uniform(0.5, 1.5, dims)) * (np.arange(dims) < 27)
    values = snap(values, quant.steps(camera))
    gops = []
    for start in range(0, n_frames, gop):
        rows = values[start:start + gop]
        body_pose = np.zeros((21, 3))
        body_pose[14:] = rows[0, :21].reshape(7, 3)
        key = KeySemantics(body_pose=body_pose, betas=np.zeros(6), rot=rows[0, 21:24].copy(),
                           trans=rows[0, 24:27].copy(), loc=rows[0, 27:31].copy())
        kp = KeyPicture(codec=1, qp=37, width=size, height=size, payload=rng.bytes(200 + start))
        gops.append(GroupOfPictures(start, kp, key, rows.copy()))
    return Bitstream(size, size, Fraction(25), quant, 1, camera, gops)


class FakeDecoder:
    """decode_frame(i, semantics) -> an image whose colour is a function of the semantics."""

    def __init__(self, bitstream, prefs=None):
        self.bs = bitstream
        self.calls = 0

    def decode_frame(self, index, semantics=None):
        self.calls += 1
        row = self.bs.semantics()[index] if semantics is None else np.asarray(semantics)
        h, w = self.bs.height, self.bs.width
        wt = np.arange(1, row.size + 1)[:, None] * np.array([1.0, 0.7, 0.3])
        c = (np.abs(np.sin(row @ wt + index * 0.1)) * 255).astype(np.uint8)
        return np.broadcast_to(c, (h, w, 3)).copy()


class FakeBody:
    """A sphere whose vertices move with the pose (stands in for Anny)."""

    def __init__(self):
        import trimesh
        m = trimesh.creation.icosphere(subdivisions=2)
        self.faces = np.asarray(m.faces)
        self.v = np.asarray(m.vertices, np.float32) * 0.3

    def forward(self, body_pose, betas=None):
        import torch

        class Out:
            pass
        o = Out()
        shift = body_pose.reshape(body_pose.shape[0], -1).sum(1)[:, None, None] * 0.1
        o.vertices = torch.as_tensor(self.v)[None] + shift
        return o


@pytest.fixture
def bitstream():
    return opaque_bitstream()


@pytest.fixture
def studio(qtbot, tmp_path, monkeypatch):
    """A MainWindow on a saved synthetic bitstream, with fake decoder and body model."""
    from PySide6.QtCore import QSettings
    QSettings.setDefaultFormat(QSettings.Format.IniFormat)
    QSettings.setPath(QSettings.Format.IniFormat, QSettings.Scope.UserScope, str(tmp_path / "settings"))
    from PySide6.QtWidgets import QMessageBox
    # Never block on a modal box offscreen: tests that care replace these again.
    monkeypatch.setattr(QMessageBox, "critical", lambda *a, **k: QMessageBox.StandardButton.Ok)
    monkeypatch.setattr(QMessageBox, "question", lambda *a, **k: QMessageBox.StandardButton.Discard)
    from app.main_window import MainWindow
    from app.preferences import Preferences
    from engine.codec import container
    path = tmp_path / "clip.ihvc"
    container.write(opaque_bitstream(), path)
    win = MainWindow(Preferences(), decoder_factory=FakeDecoder, body_model_factory=lambda bs, prefs: FakeBody())
    qtbot.addWidget(win)
    win.show()
    assert win.open_path(path)
    qtbot.waitUntil(lambda: win.preview_pane.frame == 0 or bool(win.errors), timeout=5000)
    assert not win.errors, win.errors
    yield win
    win.preview.stop()
    win.mesh.stop()
