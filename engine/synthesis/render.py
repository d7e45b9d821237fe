"""Offscreen mesh rendering (pyrender, EGL) in the projection convention of engine/synthesis/camera.py.

    render_mesh(vertices, faces, rot, trans, loc, focal, width, height) -> H x W x 4 uint8 RGBA
    overlay(frame_rgb, rgba) -> H x W x 3 uint8
    shared_renderer(w, h).render_view(vertices, faces, camera_pose, ghost=...) -> H x W x 3 uint8
        a free perspective camera (the studio's orbiting 3D view), the ghost translucent

The crop camera and the box collapse into one pinhole camera in frame pixels:
x_px = cx W + fx w W X / d and y_px = cy H - fy h H Y / d (d = tz - Z), i.e.
intrinsics (fx w W, fy h H, cx W, cy H) with the camera at (0, 0, tz) looking
down -z. ``render_mesh`` draws exactly where ``engine.synthesis.camera.project`` puts
the vertices (checked by tests/test_encoder.py).

Nothing here imports Qt; the studio's 3D viewport and the decoder can call it
from any thread, one renderer per thread (pyrender contexts are not shared). This is
the one mesh renderer of the program: the crop camera (``render``) and a free
perspective camera (``render_view``) share its offscreen context.
"""
from __future__ import annotations

import math
import os
import threading

os.environ.setdefault("PYOPENGL_PLATFORM", "egl")

import numpy as np

from engine.errors import IHVCError

DEFAULT_COLOR = (0.55, 0.75, 1.0)
BODY_COLOR = (0.85, 0.72, 0.62)            # the studio's 3D view: skin-like body
GHOST_COLOR = (0.4, 0.65, 1.0)             # and the decoded original as a translucent blue ghost
VIEW_BACKGROUND = (0.16, 0.17, 0.19)
_local = threading.local()


def _as_np(a) -> np.ndarray:
    if hasattr(a, "detach"):
        a = a.detach().cpu().numpy()
    return np.asarray(a, dtype=np.float64)


def _rotmat(aa: np.ndarray) -> np.ndarray:
    aa = np.asarray(aa, float).reshape(3)
    th = np.linalg.norm(aa)
    if th < 1e-12:
        return np.eye(3)
    k = aa / th
    K = np.array([[0, -k[2], k[1]], [k[2], 0, -k[0]], [-k[1], k[0], 0]])
    return np.eye(3) + np.sin(th) * K + (1 - np.cos(th)) * K @ K


class MeshRenderer:
    """A reusable offscreen renderer; :meth:`resize` changes its output size in place.

    Use :func:`shared_renderer` (one per thread) rather than making and closing these: pyrender's
    ``delete`` on EGL terminates the display that every offscreen context of the process shares,
    which breaks all the other renderers (GLError "invalid operation" on their next frame).
    """

    def __init__(self, width: int, height: int):
        try:
            import pyrender
        except Exception as exc:  # pragma: no cover - environment problem
            raise IHVCError(f"mesh rendering unavailable (pyrender/EGL: {exc.__class__.__name__}: {exc})") from None
        self._pr = pyrender
        self.width, self.height = int(width), int(height)
        try:
            self._r = pyrender.OffscreenRenderer(self.width, self.height)
        except Exception as exc:  # pragma: no cover - no EGL device
            raise IHVCError(f"cannot create an offscreen OpenGL context ({exc.__class__.__name__}: {exc})") from None

    def resize(self, width: int, height: int) -> "MeshRenderer":
        """Render at width x height from now on (pyrender reallocates its framebuffers, same context)."""
        if (int(width), int(height)) != (self.width, self.height):
            self.width, self.height = int(width), int(height)
            self._r.viewport_width, self._r.viewport_height = self.width, self.height
        return self

    def render(self, vertices, faces, rot, trans, loc, focal, color=DEFAULT_COLOR, alpha: float = 1.0,
               vertex_colors=None) -> np.ndarray:
        """RGBA uint8 (H x W x 4): the shaded mesh, alpha = ``alpha`` where it covers, else 0."""
        import trimesh
        pr = self._pr
        v = _as_np(vertices).reshape(-1, 3)
        rot, trans, loc = _as_np(rot).reshape(3), _as_np(trans).reshape(3), _as_np(loc).reshape(4)
        focal = np.broadcast_to(_as_np(focal).reshape(-1), (2,))
        world = v @ _rotmat(rot).T + np.array([trans[0], trans[1], 0.0])
        cam = world - np.array([0.0, 0.0, trans[2]])          # camera at (0, 0, tz), looking down -z
        W, H = self.width, self.height
        fx, fy = focal[0] * loc[2] * W, focal[1] * loc[3] * H
        cx, cy = loc[0] * W, loc[1] * H
        depth = -cam[:, 2]
        near = max(1e-3, float(depth.min()) * 0.5) if depth.size else 0.05
        far = max(near * 2, float(depth.max()) * 2 + 1.0) if depth.size else 100.0
        tm = trimesh.Trimesh(cam, np.asarray(faces, np.int64), process=False)
        if vertex_colors is not None:
            tm.visual.vertex_colors = np.asarray(vertex_colors)
            mesh = pr.Mesh.from_trimesh(tm, smooth=True)
        else:
            mat = pr.MetallicRoughnessMaterial(baseColorFactor=(*color, 1.0), metallicFactor=0.0,
                                               roughnessFactor=0.7, alphaMode="OPAQUE")
            mesh = pr.Mesh.from_trimesh(tm, material=mat, smooth=True)
        scene = pr.Scene(bg_color=(0, 0, 0, 0), ambient_light=(0.35, 0.35, 0.35))
        scene.add(mesh)
        camera = pr.IntrinsicsCamera(fx=fx, fy=fy, cx=cx, cy=cy, znear=near, zfar=far)
        scene.add(camera, pose=np.eye(4))
        light_pose = np.eye(4)
        light_pose[:3, :3] = _rotmat([-0.4, 0.3, 0.0])
        scene.add(pr.DirectionalLight(color=np.ones(3), intensity=3.0), pose=light_pose)
        rgba, d = self._r.render(scene, flags=pr.RenderFlags.RGBA)
        out = np.array(rgba, dtype=np.uint8, copy=True)
        out[..., 3] = np.where(d > 0, int(round(255 * float(alpha))), 0).astype(np.uint8)
        return out


    def render_view(self, vertices, faces, camera_pose, yfov: float = math.radians(40), ghost=None,
                    color=BODY_COLOR, ghost_color=GHOST_COLOR, ghost_alpha: float = 0.28,
                    background=VIEW_BACKGROUND) -> np.ndarray:
        """RGB uint8 (H x W x 3): the mesh (and, translucent, ``ghost``: same faces, other vertices)
        seen by a perspective camera of vertical field of view ``yfov`` (radians) placed at
        ``camera_pose`` (4 x 4 camera-to-world, OpenGL: it looks down its -z), lit from the camera."""
        import trimesh
        pr = self._pr
        faces = np.asarray(faces, np.int64)
        scene = pr.Scene(bg_color=(*background, 1.0), ambient_light=(0.35, 0.35, 0.35))
        body = pr.MetallicRoughnessMaterial(baseColorFactor=(*color, 1.0), metallicFactor=0.0, roughnessFactor=0.8)
        scene.add(pr.Mesh.from_trimesh(trimesh.Trimesh(_as_np(vertices).reshape(-1, 3), faces, process=False),
                                       material=body))
        if ghost is not None:
            gm = pr.MetallicRoughnessMaterial(baseColorFactor=(*ghost_color, float(ghost_alpha)), alphaMode="BLEND",
                                              metallicFactor=0.0, roughnessFactor=1.0)
            scene.add(pr.Mesh.from_trimesh(trimesh.Trimesh(_as_np(ghost).reshape(-1, 3), faces, process=False),
                                           material=gm))
        pose = np.asarray(camera_pose, float)
        scene.add(pr.PerspectiveCamera(yfov=float(yfov), aspectRatio=self.width / self.height), pose=pose)
        scene.add(pr.DirectionalLight(intensity=3.0), pose=pose)
        color_img, _ = self._r.render(scene)
        return np.ascontiguousarray(color_img[..., :3])


def shared_renderer(width: int, height: int) -> MeshRenderer:
    """This thread's renderer (pyrender contexts are not shared between threads), at width x height.
    It lives as long as the thread: see MeshRenderer on why renderers are never deleted."""
    r = getattr(_local, "renderer", None)
    if r is None:
        r = _local.renderer = MeshRenderer(width, height)
    return r.resize(width, height)


def render_mesh(vertices, faces, rot, trans, loc, focal, width: int, height: int,
                color=DEFAULT_COLOR, alpha: float = 1.0, vertex_colors=None) -> np.ndarray:
    """Render a body-frame mesh placed by (rot, trans, loc, focal): H x W x 4 uint8 RGBA.

    vertices: V x 3 (numpy or torch) in the body frame (engine.synthesis.body output);
    faces: F x 3; rot, trans (3,), loc (4,), focal (2,) as in engine.synthesis.camera.
    """
    return shared_renderer(width, height).render(vertices, faces, rot, trans, loc, focal, color, alpha, vertex_colors)


def overlay(frame: np.ndarray, rgba: np.ndarray) -> np.ndarray:
    """Alpha-composite an RGBA rendering over an RGB frame."""
    a = rgba[..., 3:4].astype(np.float32) / 255.0
    out = frame.astype(np.float32) * (1 - a) + rgba[..., :3].astype(np.float32) * a
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def bitstream_overlay_frames(bs, frames, model, alpha: float = 0.6, color=DEFAULT_COLOR):
    """Yield frames with the mesh of each frame's (decoded) semantics drawn over them.

    bs: engine.codec.bitstream.Bitstream; frames: iterable of H x W x 3 uint8 matching
    bs.width x bs.height; model: the engine.synthesis.body.BodyModel that coded it.
    """
    import torch
    for i, rgb in enumerate(frames):
        if i >= bs.n_frames:
            break
        g, j = bs.gop_of(i)
        st = g.key.with_frame(bs.frame(i))
        with torch.no_grad():
            out = model.forward(torch.as_tensor(st.body_pose[None], dtype=torch.float32),
                                torch.as_tensor(np.asarray(st.betas)[None], dtype=torch.float32))
        rgba = render_mesh(out.vertices[0], model.faces, st.rot, st.trans, st.loc, st.focal,
                           rgb.shape[1], rgb.shape[0], color=color, alpha=alpha)
        yield overlay(rgb, rgba)
