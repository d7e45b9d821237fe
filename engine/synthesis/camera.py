"""The OSX-style crop camera and the box that places the crop in the frame.

Conventions (one place, used by the fit and by the decoder):

* The body model outputs vertices in its canonical frame: y up, the body facing
  +z (towards the viewer), pelvis near the origin.
* ``rot`` rotates the body about its root, ``trans`` = (tx, ty, tz) places it:
  world = R(rot) v + (tx, ty, 0); the crop camera sits at (0, 0, tz) looking
  down -z, so tz is the body's distance from the camera (positive) and
  rot = 0 shows an upright person facing the camera.
* Crop coordinates: u = 0.5 + fx * X / d, v = 0.5 - fy * Y / d with d = tz - Z,
  (u, v) in [0, 1] over the crop, v downwards.
* The box loc = (cx, cy, w, h), normalised to the frame, maps the crop onto the
  frame: x_px = (cx + (u - 0.5) w) W, y_px = (cy + (v - 0.5) h) H.
"""
from __future__ import annotations

import torch


def axis_angle_to_matrix(aa: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula. aa: ... x 3 -> ... x 3 x 3 (differentiable, safe at 0)."""
    theta2 = (aa * aa).sum(-1, keepdim=True)
    theta = torch.sqrt(theta2 + 1e-12)
    k = aa / theta
    kx, ky, kz = k.unbind(-1)
    zero = torch.zeros_like(kx)
    K = torch.stack([zero, -kz, ky, kz, zero, -kx, -ky, kx, zero], -1).reshape(*aa.shape[:-1], 3, 3)
    s = torch.sin(theta)[..., None]
    c = torch.cos(theta)[..., None]
    eye = torch.eye(3, dtype=aa.dtype, device=aa.device).expand(K.shape)
    return eye + s * K + (1 - c) * (K @ K)


def to_world(points: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor) -> torch.Tensor:
    """Body-frame points B x N x 3 -> world points (rotation about the origin, x/y shift)."""
    R = axis_angle_to_matrix(rot)                          # B x 3 x 3
    out = points @ R.transpose(-1, -2)
    shift = torch.stack([trans[:, 0], trans[:, 1], torch.zeros_like(trans[:, 0])], -1)
    return out + shift[:, None, :]


def world_to_crop(world: torch.Tensor, trans: torch.Tensor, focal: torch.Tensor):
    """World points B x N x 3 -> crop coordinates B x N x 2 and depth B x N."""
    depth = trans[:, None, 2] - world[..., 2]
    d = depth.clamp(min=1e-3)
    u = 0.5 + focal[..., 0, None] * world[..., 0] / d
    v = 0.5 - focal[..., 1, None] * world[..., 1] / d
    return torch.stack([u, v], -1), depth


def crop_to_frame(uv: torch.Tensor, loc: torch.Tensor, width: int, height: int) -> torch.Tensor:
    """Crop coordinates B x N x 2 -> frame pixels B x N x 2 through the box B x 4."""
    cx, cy, w, h = loc.unbind(-1)
    x = (cx[:, None] + (uv[..., 0] - 0.5) * w[:, None]) * width
    y = (cy[:, None] + (uv[..., 1] - 0.5) * h[:, None]) * height
    return torch.stack([x, y], -1)


def project(points: torch.Tensor, rot: torch.Tensor, trans: torch.Tensor, loc: torch.Tensor,
            focal: torch.Tensor, width: int, height: int):
    """Body-frame points B x N x 3 -> frame pixels B x N x 2 and depth B x N.

    rot, trans: B x 3; loc: B x 4; focal: 2 or B x 2 (crop widths).
    """
    focal = torch.as_tensor(focal, dtype=points.dtype, device=points.device)
    if focal.dim() == 1:
        focal = focal.expand(points.shape[0], 2)
    world = to_world(points, rot, trans)
    uv, depth = world_to_crop(world, trans, focal)
    return crop_to_frame(uv, loc, width, height), depth
