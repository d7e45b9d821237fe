"""3D body-mesh viewport: the engine's offscreen renderer (engine.synthesis.render, pyrender on EGL)
into a widget, orbit / zoom / pan, and the decoded original pose as a translucent ghost.

Mouse: left-drag orbits, right- or middle-drag pans, wheel zooms, double-click resets.
Meshes arrive as arrays (``set_meshes``); this widget never computes a body model.
Rendering is coalesced: many updates in one event-loop turn give one render.
"""
from __future__ import annotations

import math
import os

import numpy as np
from PySide6.QtCore import QPointF, QSize, Qt, QTimer
from PySide6.QtGui import QColor, QPainter
from PySide6.QtWidgets import QSizePolicy, QWidget

from .images import to_qimage

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

FOV_DEG = 40.0      # vertical field of view of the orbit camera (the point fallback uses the same)


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 1.0, 0.0)) -> np.ndarray:
    """Camera-to-world 4x4 (OpenGL: camera looks down its -z)."""
    f = target - eye
    f = f / (np.linalg.norm(f) + 1e-12)
    r = np.cross(f, up)
    r = r / (np.linalg.norm(r) + 1e-12)
    u = np.cross(r, f)
    m = np.eye(4)
    m[:3, 0], m[:3, 1], m[:3, 2], m[:3, 3] = r, u, -f, eye
    return m


class OrbitCamera:
    def __init__(self):
        self.reset()

    def reset(self, target=(0.0, 0.3, 0.0), distance=2.6):
        self.yaw, self.pitch = 0.0, 0.1
        self.distance = distance
        self.target = np.asarray(target, float)

    def pose(self) -> np.ndarray:
        d = np.array([math.cos(self.pitch) * math.sin(self.yaw), math.sin(self.pitch),
                      math.cos(self.pitch) * math.cos(self.yaw)])
        return look_at(self.target + self.distance * d, self.target)

    def orbit(self, dx: float, dy: float):
        self.yaw -= dx * 0.01
        self.pitch = float(np.clip(self.pitch + dy * 0.01, -1.5, 1.5))

    def pan(self, dx: float, dy: float):
        m = self.pose()
        s = self.distance * 0.0015
        self.target = self.target - m[:3, 0] * dx * s + m[:3, 1] * dy * s

    def zoom(self, steps: float):
        self.distance = float(np.clip(self.distance * (0.9 ** steps), 0.3, 30.0))


class ViewRenderer:
    """The engine's mesh renderer (engine.synthesis.render.shared_renderer(...).render_view) at the
    widget's render size: the GUI thread's one offscreen context, resized in place, never deleted
    (deleting an EGL renderer breaks every other one: engine.synthesis.render.MeshRenderer)."""

    def render(self, faces, vertices, ghost, camera_pose, width, height) -> np.ndarray:
        from engine.synthesis.render import shared_renderer
        return shared_renderer(width, height).render_view(vertices, faces, camera_pose,
                                                          yfov=math.radians(FOV_DEG), ghost=ghost)

    def close(self):
        """Nothing to release: the context is the thread's (kept for the widget's closeEvent)."""


class MeshViewport(QWidget):
    def __init__(self, parent=None, max_side: int = 640):
        super().__init__(parent)
        self.camera = OrbitCamera()
        self.faces = None
        self.vertices = None
        self.ghost = None
        self.show_ghost = True
        self.message = "no mesh"
        self.max_side = max_side
        self.image: np.ndarray | None = None
        self.render_count = 0
        self._renderer = None
        self._render_error = None
        self._last = None
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(0)
        self._timer.timeout.connect(self.render_now)
        self.setSizePolicy(QSizePolicy.Policy.Expanding, QSizePolicy.Policy.Expanding)
        self.setMinimumSize(200, 200)
        self.setToolTip("Left-drag: orbit · right/middle-drag: pan · wheel: zoom · double-click: reset view")

    def sizeHint(self):
        return QSize(384, 384)

    # --- data ---------------------------------------------------------------------------------
    def set_meshes(self, faces, vertices, ghost=None, recenter: bool = False):
        """faces F x 3 int; vertices, ghost V x 3 (y up, body facing +z)."""
        first = self.vertices is None
        self.faces = np.asarray(faces, np.int64)
        self.vertices = np.asarray(vertices, np.float32)
        self.ghost = None if ghost is None else np.asarray(ghost, np.float32)
        if first or recenter:
            self.frame_all()
        self.schedule()

    def frame_all(self):
        """Fit the mesh's bounding box in the view (the narrower of the two fields of view)."""
        lo, hi = self.vertices.min(0), self.vertices.max(0)
        ext = hi - lo
        aspect = max(self.width(), 1) / max(self.height(), 1)
        t = math.tan(math.radians(FOV_DEG / 2))
        d = max(0.5 * ext[1] / t, 0.5 * max(ext[0], ext[2]) / (t * aspect)) / 0.9 + 0.5 * ext[2]
        self.camera.reset(target=(lo + hi) / 2, distance=float(d))

    def set_message(self, text: str):
        self.message = text
        self.update()

    def schedule(self):
        self._timer.start()

    # --- rendering ------------------------------------------------------------------------------
    def _render_size(self):
        w, h = max(self.width(), 64), max(self.height(), 64)
        s = min(1.0, self.max_side / max(w, h))
        return int(w * s) // 2 * 2, int(h * s) // 2 * 2

    def render_now(self):
        if self.vertices is None or self._render_error:
            self.update()
            return
        w, h = self._render_size()
        try:
            if self._renderer is None:
                self._renderer = ViewRenderer()
            ghost = self.ghost if self.show_ghost else None
            self.image = self._renderer.render(self.faces, self.vertices, ghost, self.camera.pose(), w, h)
        except Exception as exc:  # no EGL / GL: fall back to a point projection
            self._render_error = f"3D rendering unavailable ({type(exc).__name__}); showing points"
            self.image = None
        self.render_count += 1
        self.update()

    def _paint_points(self, p: QPainter):
        m = np.linalg.inv(self.camera.pose())
        f = 0.5 * self.height() / math.tan(math.radians(FOV_DEG / 2))
        for verts, color in ((self.ghost, QColor(100, 160, 255, 90)), (self.vertices, QColor(230, 190, 160))):
            if verts is None:
                continue
            c = verts[::7] @ m[:3, :3].T + m[:3, 3]
            z = np.minimum(c[:, 2], -1e-3)
            x = self.width() / 2 + f * c[:, 0] / -z
            y = self.height() / 2 - f * c[:, 1] / -z
            p.setPen(color)
            p.drawPoints([QPointF(a, b) for a, b in zip(x, y)])

    def paintEvent(self, _):
        p = QPainter(self)
        p.fillRect(self.rect(), QColor(41, 43, 48))
        if self.image is not None:
            img = to_qimage(self.image)
            p.drawImage(self.rect(), img)
        elif self.vertices is not None:
            self._paint_points(p)
        if self.vertices is None or self._render_error:
            p.setPen(Qt.GlobalColor.lightGray)
            p.drawText(self.rect().adjusted(6, 6, -6, -6), Qt.AlignmentFlag.AlignTop | Qt.AlignmentFlag.AlignLeft,
                       self._render_error or self.message)
        p.end()

    def resizeEvent(self, e):
        super().resizeEvent(e)
        self.schedule()

    # --- mouse ----------------------------------------------------------------------------------
    def mousePressEvent(self, e):
        self._last = e.position()

    def mouseMoveEvent(self, e):
        if self._last is None:
            return
        d = e.position() - self._last
        self._last = e.position()
        if e.buttons() & Qt.MouseButton.LeftButton:
            self.camera.orbit(d.x(), d.y())
        else:
            self.camera.pan(d.x(), d.y())
        self.schedule()

    def mouseReleaseEvent(self, _):
        self._last = None

    def wheelEvent(self, e):
        self.camera.zoom(e.angleDelta().y() / 120.0)
        self.schedule()

    def mouseDoubleClickEvent(self, _):
        if self.vertices is not None:
            self.set_meshes(self.faces, self.vertices, self.ghost, recenter=True)

    def closeEvent(self, e):
        if self._renderer is not None:
            self._renderer.close()
        super().closeEvent(e)
