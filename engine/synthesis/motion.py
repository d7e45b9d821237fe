"""Analytic dense motion from two body meshes: backward flow, occlusion, warping.

DESIGN.md, "Decoder: mesh-based motion and generation", step 1 (the paper's
mesh-image-guided motion, sec. 3.3, computed here in closed form instead of
being regressed): every pixel of the frame covered by the frame mesh knows its
surface point (triangle + barycentrics, engine/synthesis/raster.py); the same surface
point on the key mesh projects to a key-frame pixel, which is an exact
backward flow key <- frame. The key frame's depth buffer says whether that
point was visible in the key frame (occlusion, the paper's eq. 5 weight). Off
the body (hair, loose clothes, background) the flow is extended smoothly and
blends into the background motion of the camera group (identity when the
bitstream has none). "The analytic flow alone is a complete, training-free
decoder" (DESIGN.md): :func:`warp` applies it to the key picture.

Pixel convention (engine/synthesis/raster.py): pixel (row i, col j) has its centre at
(j + 0.5, i + 0.5) in continuous frame coordinates; a *grid* is B x H x W x 2
of (x, y) key-frame coordinates per frame pixel, i.e. the backward map;
``flow = grid - identity``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as Fn

from engine.synthesis.camera import crop_to_frame, world_to_crop
from engine.synthesis.raster import Raster

PERSON_MARGIN = 0.02      # hair, clothes and fit error around the mesh, fraction of the frame size
# Background from other key pictures is taken only this far from the frame's own mesh (fraction of the frame
# size); nearer, the real person often still covers it (hair, loose clothes, a fit a few pixels narrow) and the
# smooth fill is closer. Measured on the five TED clips (keys by content, QP 42, squared error in the
# disocclusions): at 0, ted_c 626 -> 2333 (its speaker is wider than her mesh), the others 10-60 % lower;
# at 2 x PERSON_MARGIN (16 px at 384) ted_c 653 and the others 5-53 % lower (docs/BENCHMARKS.md).
BACKGROUND_MARGIN = 2 * PERSON_MARGIN
# A pixel beside the frame's mesh whose key sample shows the key's person is a disocclusion when what the key
# shows there goes more than this far from the pixel (fraction of the frame size; ``key_forward``): the arm
# that stood there has left. Chosen on one-key decodes of eight people, where frames leave the key's pose
# as after a studio edit (docs/BENCHMARKS.md "Ghosts of a moved arm"): at 2 x PERSON_MARGIN PSNR, SSIM and
# MS-SSIM rose on all eight; at 1 x it fell on two.
FORWARD_TOLERANCE = 2 * PERSON_MARGIN
# A disocclusion is a region of at least this share of the frame's pixels (295 at 384 x 384). Smaller islands
# of it beside the body, and smaller pockets of background it encloses, come from the sampled key mask and the
# forward-backward check flipping along a key person's edge: after a large studio edit they showed as grey
# specks in a sweater or in hair, and as fragments of sleeve inside the filled background (docs/BENCHMARKS.md
# "Specks and fragments around an edited arm", docs/edit_specks.png). The metrics do not see them: 18 files of
# 10 people decoded again moved by -0.024 to +0.009 dB.
HOLE_MIN_AREA = 0.002


@dataclass
class Motion:
    """Dense motion of B frames towards their key frame.

    grid:      B x H x W x 2 float, key-frame pixel coordinates (x, y) sampled for each frame pixel
    visible:   B x H x W bool, on the body: the surface point was visible in the key frame
               (False = occluded there or off the key frame); True off the body
    body:      B x H x W bool, pixels covered by the frame mesh
    weight:    B x H x W float in [0, 1], how much of the body motion the pixel follows (1 on the
               body, decaying to 0 = pure background motion away from it)
    hole:      B x H x W bool or None, background disocclusion: pixels that are background in the
               frame (outside the frame person's margin, weight < 0.5) but whose key-frame sample lands
               on the person there, or pixels off the frame mesh sampling the key mesh's interior (the
               key picture shows the person, not the background behind it), in regions of at least
               HOLE_MIN_AREA of the frame (``tidy_disocclusion``); None without a key mask
    """
    grid: torch.Tensor
    visible: torch.Tensor
    body: torch.Tensor
    weight: torch.Tensor
    hole: torch.Tensor | None = None

    @property
    def flow(self) -> torch.Tensor:
        """B x H x W x 2 backward flow in pixels (grid minus the pixel centres)."""
        B, H, W, _ = self.grid.shape
        return self.grid - identity_grid(H, W, self.grid.device, self.grid.dtype)


def identity_grid(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """1 x H x W x 2 pixel centres (x, y)."""
    ys = torch.arange(height, device=device, dtype=dtype) + 0.5
    xs = torch.arange(width, device=device, dtype=dtype) + 0.5
    gy, gx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([gx, gy], -1)[None]


def background_grid(camera: torch.Tensor | None, height: int, width: int, batch: int = 1,
                    device=None, dtype=torch.float32) -> torch.Tensor:
    """Backward map of the background from the camera group, B x H x W x 2.

    camera: B x 3 (pan_x, pan_y, zoom) or None (identity). The convention is
    engine/analysis/camera_motion.py's (``camera_affine``): a background point at p_key in
    the key frame is seen in frame t at p_t = exp(zoom) (p_key - c) + c + (pan_x W, pan_y H),
    c the frame centre. Its pixel-index coordinates are ours minus 0.5, so c = (W/2, H/2)
    here and the key pixel seen at p_t is p_key = c + (p_t - c - pan) / exp(zoom).
    """
    ident = identity_grid(height, width, device, dtype)
    if camera is None:
        return ident.expand(batch, -1, -1, -1)
    cam = torch.as_tensor(camera, device=device, dtype=dtype).reshape(-1, 3)
    c = torch.tensor([width / 2.0, height / 2.0], device=device, dtype=dtype)
    pan = cam[:, :2] * torch.tensor([width, height], device=device, dtype=dtype)
    s = torch.exp(cam[:, 2])
    return c + (ident - c - pan[:, None, None, :]) / s[:, None, None, None]


def surface_grid(frame: Raster, faces: torch.Tensor, key_world: torch.Tensor, key_trans: torch.Tensor,
                 key_loc: torch.Tensor, focal: torch.Tensor, width: int, height: int, idx: torch.Tensor | None = None):
    """Key-frame position and depth of the surface point seen at each covered frame pixel.

    frame: Raster of B frame meshes (B x H x W); faces: F x 3; key_world: 1 x V x 3 or B x V x 3
    world-space key vertices (engine.synthesis.camera.to_world); key_trans 1|B x 3; key_loc 1|B x 4; focal 1|B x 2.
    Returns (idx, xy, depth): idx N flat indices into B*H*W of the covered pixels, xy N x 2 key-frame
    pixels, depth N key-camera depths (engine.synthesis.camera.world_to_crop). ``idx``: only these
    covered pixels (default: all of them).
    """
    B, H, W = frame.tri.shape
    if idx is None:
        idx = frame.mask.reshape(-1).nonzero().squeeze(1)
    b = idx // (H * W)
    tri = frame.tri.reshape(-1)[idx]
    bary = frame.bary.reshape(-1, 3)[idx]
    kb = b if key_world.shape[0] > 1 else torch.zeros_like(b)
    vid = faces[tri]                                                    # N x 3
    pts = (key_world[kb[:, None], vid] * bary[..., None]).sum(1)        # N x 3 world points
    # Project every point with its own frame's key camera (B groups; usually one).
    if key_trans.shape[0] == 1:
        uv, d = world_to_crop(pts[None], key_trans, focal.expand(1, 2))
        xy = crop_to_frame(uv, key_loc, width, height)[0]
        return idx, xy, d[0]
    kt, kl, kf = key_trans[b], key_loc[b], focal.expand(key_trans.shape[0], 2)[b]
    uv, d = world_to_crop(pts[:, None], kt, kf)
    xy = crop_to_frame(uv, kl, width, height)[:, 0]
    return idx, xy, d[:, 0]


@dataclass
class ReferenceSample:
    """What one more reference key picture says about the body pixels of B frames.

    idx:    N flat indices into B*H*W of the covered frame pixels (engine.synthesis.raster order)
    colour: N x 3 float, the reference picture sampled at the surface point's position there
    weight: N float >= 0, how much to trust it: 0 where the point was hidden or outside that picture,
            else frontality^2 x size in that picture x nearness in time
    """
    idx: torch.Tensor
    colour: torch.Tensor
    weight: torch.Tensor


def reference_sample(frame: Raster, faces: torch.Tensor, key_world: torch.Tensor, key_trans: torch.Tensor,
                     key_loc: torch.Tensor, focal: torch.Tensor, key_depth: torch.Tensor, tol: float,
                     key_image: torch.Tensor, time_weight: torch.Tensor | float = 1.0,
                     idx: torch.Tensor | None = None) -> ReferenceSample:
    """Sample one reference key (world vertices 1 x V x 3, camera, depth buffer 1 x H x W, picture
    1 x 3 x H x W) at the surface points of the frame pixels, with a trust weight per pixel.

    time_weight: scalar or B (one per frame): nearness in time of the key to each frame.
    idx: only these covered pixels (flat indices into B*H*W; default: every covered pixel).
    Frontality is the cosine between the surface normal in the key and the direction to the key's
    camera (0, 0, tz); size is the key's pixels per body unit at that point (focal x box / depth).
    """
    B, H, W = frame.tri.shape
    idx, xy, d = surface_grid(frame, faces, key_world, key_trans, key_loc, focal, W, H, idx)
    vis = key_visibility(xy, d, key_depth, tol)
    tri = frame.tri.reshape(-1)[idx]
    v = key_world[0][faces[tri]]                                           # N x 3 x 3
    n = torch.cross(v[:, 1] - v[:, 0], v[:, 2] - v[:, 0], dim=-1)
    pts = (v * frame.bary.reshape(-1, 3)[idx][..., None]).sum(1)
    cam = torch.zeros_like(pts)
    cam[:, 2] = key_trans[0, 2]
    to_cam = cam - pts
    frontal = ((n * to_cam).sum(-1) / (n.norm(dim=-1) * to_cam.norm(dim=-1)).clamp(min=1e-12)).clamp(min=0)
    size = focal[0, 0] * key_loc[0, 2] * W / d.clamp(min=1e-6)
    tw = torch.as_tensor(time_weight, dtype=xy.dtype, device=xy.device).reshape(-1)
    tw = tw[idx // (H * W)] if tw.numel() > 1 else tw.expand_as(d)
    weight = vis.to(xy.dtype) * frontal ** 2 * size * tw
    scale = torch.tensor([2.0 / key_image.shape[-1], 2.0 / key_image.shape[-2]], device=xy.device, dtype=xy.dtype)
    g = (xy * scale - 1.0).to(key_image.dtype).reshape(1, 1, -1, 2)
    colour = Fn.grid_sample(key_image, g, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T
    return ReferenceSample(idx=idx, colour=colour, weight=weight)


def fuse_references(frames: torch.Tensor, samples: list[ReferenceSample]) -> torch.Tensor:
    """B x 3 x H x W ``frames`` with the pixels the ``samples`` cover replaced by their trust-weighted
    mean colour, where at least one of them saw the surface point (weight > 0); the rest unchanged.

    The decoder samples the other references only at the body pixels the frame's own key did not
    see: where the own key saw the point its warp stands, since another key's texture is placed by
    another fit and averaging the two ghosts (measured on ted_e, key every 20 frames: SSIM
    0.827 -> 0.819 when every reference was averaged everywhere)."""
    return _fuse(frames, samples)[0]


def _fuse(frames: torch.Tensor, samples: list[ReferenceSample]) -> tuple[torch.Tensor, torch.Tensor | None]:
    """:func:`fuse_references`, and the B x H x W bool mask of the pixels it replaced (None: none)."""
    if not samples:
        return frames, None
    B, C, H, W = frames.shape
    acc = torch.zeros(B * H * W, C, dtype=frames.dtype, device=frames.device)
    wsum = torch.zeros(B * H * W, dtype=frames.dtype, device=frames.device)
    for s in samples:
        w = s.weight.to(frames.dtype)
        acc.index_add_(0, s.idx, s.colour.to(frames.dtype) * w[:, None])
        wsum.index_add_(0, s.idx, w)
    seen = wsum > 0
    if not bool(seen.any()):
        return frames, None
    flat = frames.permute(0, 2, 3, 1).reshape(-1, C).clone()
    flat[seen] = acc[seen] / wsum[seen][:, None]
    return flat.reshape(B, H, W, C).permute(0, 3, 1, 2), seen.reshape(B, H, W)


# -- the background from other key pictures ----------------------------------------------------------
# A camera here is (pan_x, pan_y, zoom) as the camera group codes it (engine/analysis/camera_motion.py,
# ``background_grid``): the map a -> b of background positions p_b = exp(zoom) (p_a - c) + c + pan (pan in
# fractions of the frame size, c the frame centre). These maps form a group: composing and inverting
# them is exact, at any frame size.

def compose_cameras(first, then) -> tuple[float, float, float]:
    """The camera map ``then`` o ``first`` (a -> b by ``first``, then b -> c by ``then``), as (pan_x, pan_y, zoom)."""
    s = math.exp(float(then[2]))
    return (s * float(first[0]) + float(then[0]), s * float(first[1]) + float(then[1]),
            float(first[2]) + float(then[2]))


def invert_camera(cam) -> tuple[float, float, float]:
    """The inverse camera map (b -> a for a camera a -> b)."""
    s = math.exp(-float(cam[2]))
    return (-s * float(cam[0]), -s * float(cam[1]), -float(cam[2]))


def background_sample(shape: tuple[int, int, int], idx: torch.Tensor, camera: torch.Tensor | None,
                      key_image: torch.Tensor, key_person: torch.Tensor,
                      time_weight: torch.Tensor | float = 1.0) -> ReferenceSample:
    """What one more key picture shows of the background at the frame pixels ``idx``.

    shape: (B, H, W) of the frames; idx: N flat indices into B*H*W (the disocclusions, ``Motion.hole``);
    camera: B x 3, the camera map from that key to each frame (None: identity); key_image: 1 x 3 x H x W;
    key_person: 1 x 1|2 x H x W float, that key's person (:func:`person_mask`, channel 0 used).
    weight: ``time_weight`` where the background point lies inside that key picture and off its person
    (nearest lookup, as ``Motion.hole`` looks up the own key's), else 0.
    """
    B, H, W = shape
    b = idx // (H * W)
    p = torch.stack([(idx % W).to(key_image.dtype) + 0.5, ((idx // W) % H).to(key_image.dtype) + 0.5], 1)
    if camera is not None:
        cam = torch.as_tensor(camera, dtype=p.dtype, device=p.device).reshape(-1, 3)[b]
        c = torch.tensor([W / 2.0, H / 2.0], dtype=p.dtype, device=p.device)
        pan = cam[:, :2] * torch.tensor([W, H], dtype=p.dtype, device=p.device)
        p = c + (p - c - pan) / torch.exp(cam[:, 2:3])
    kh, kw = key_image.shape[-2:]
    inside = (p[:, 0] >= 0) & (p[:, 0] <= kw) & (p[:, 1] >= 0) & (p[:, 1] <= kh)
    xi = p[:, 0].floor().long().clamp(0, kw - 1)
    yi = p[:, 1].floor().long().clamp(0, kh - 1)
    free = key_person[0, 0].reshape(-1)[yi * kw + xi] < 0.5
    tw = torch.as_tensor(time_weight, dtype=p.dtype, device=p.device).reshape(-1)
    tw = tw[b] if tw.numel() > 1 else tw.expand(idx.shape[0])
    weight = (inside & free).to(p.dtype) * tw
    scale = torch.tensor([2.0 / kw, 2.0 / kh], device=p.device, dtype=p.dtype)
    g = (p * scale - 1.0).to(key_image.dtype).reshape(1, 1, -1, 2)
    colour = Fn.grid_sample(key_image, g, mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T
    return ReferenceSample(idx=idx, colour=colour, weight=weight)


def key_visibility(xy: torch.Tensor, depth: torch.Tensor, key_depth: torch.Tensor, tol: float,
                   batch_index: torch.Tensor | None = None) -> torch.Tensor:
    """Was the surface point at key pixel ``xy`` (N x 2) with depth ``depth`` (N) visible in the key frame?

    key_depth: K x H x W depth buffer of the key mesh (+inf off the mesh), K = 1 or one per point's batch.
    A point is visible when at least one of the four pixel centres around it has no surface
    nearer than ``depth - tol``; points outside the key frame are not visible.
    """
    K, H, W = key_depth.shape
    x = xy[:, 0] - 0.5
    y = xy[:, 1] - 0.5
    x0 = torch.floor(x).long()
    y0 = torch.floor(y).long()
    inside = (xy[:, 0] >= 0) & (xy[:, 0] <= W) & (xy[:, 1] >= 0) & (xy[:, 1] <= H)
    base = (batch_index if (batch_index is not None and K > 1) else torch.zeros_like(x0)) * (H * W)
    zflat = key_depth.reshape(-1)
    zmax = torch.full_like(depth, -math.inf)
    for dx in (0, 1):
        for dy in (0, 1):
            xi = (x0 + dx).clamp(0, W - 1)
            yi = (y0 + dy).clamp(0, H - 1)
            zmax = torch.maximum(zmax, zflat[base + yi * W + xi])
    return inside & (zmax >= depth - tol)


def _gauss_kernel(sigma: float, device, dtype) -> torch.Tensor:
    r = max(1, int(math.ceil(3 * sigma)))
    t = torch.arange(-r, r + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of B x C x H x W (zero padding)."""
    k = _gauss_kernel(sigma, x.device, x.dtype)
    C = x.shape[1]
    r = (k.numel() - 1) // 2
    x = Fn.conv2d(x, k.view(1, 1, 1, -1).expand(C, 1, 1, -1), padding=(0, r), groups=C)
    return Fn.conv2d(x, k.view(1, 1, -1, 1).expand(C, 1, -1, 1), padding=(r, 0), groups=C)


def push_pull(values: torch.Tensor, weight: torch.Tensor, min_size: int = 2) -> torch.Tensor:
    """Smooth scattered-data fill (push-pull pyramid): B x C x H x W values known where weight > 0.

    Known pixels keep their value; unknown ones get a smooth weighted average of
    the known ones, coarser the farther away they are. Returns B x C x H x W.
    """
    levels = [(values * weight, weight)]
    vw, w = levels[0]
    while min(vw.shape[-2:]) > min_size:
        vw = Fn.avg_pool2d(vw, 2, ceil_mode=True)
        w = Fn.avg_pool2d(w, 2, ceil_mode=True)
        levels.append((vw, w))
    vw, w = levels[-1]
    est = vw / w.clamp(min=1e-8)
    for vw, w in reversed(levels[:-1]):
        up = Fn.interpolate(est, size=vw.shape[-2:], mode="bilinear", align_corners=False)
        a = (w * 4).clamp(max=1)            # how much this level knows by itself
        est = a * (vw / w.clamp(min=1e-8)) + (1 - a) * up
    return est


def analytic_motion(frame: Raster, faces: torch.Tensor, key_world: torch.Tensor, key_trans: torch.Tensor,
                    key_loc: torch.Tensor, focal: torch.Tensor, key_depth: torch.Tensor,
                    camera: torch.Tensor | None = None, tol: float = 0.02, ramp: float = 0.06,
                    key_mask: torch.Tensor | None = None, key_distance: torch.Tensor | None = None,
                    key_forward: torch.Tensor | None = None) -> Motion:
    """Backward motion of B frames towards the key frame.

    frame:     Raster of the frame meshes (B x H x W)
    faces:     F x 3 int64
    key_world: 1 x V x 3 key-mesh vertices in world space (engine.synthesis.camera.to_world)
    key_trans, key_loc, focal: 1 x 3, 1 x 4, 1 x 2 key-frame camera (engine.synthesis.camera conventions)
    key_depth: 1 x H x W depth buffer of the key mesh (Raster.depth)
    camera:    B x 3 camera group of the frames (pan_x, pan_y, zoom) or None
    tol:       depth tolerance of the visibility test, in body-model units
    ramp:      width of the transition from body motion to background motion, as a fraction of
               the frame size
    key_mask:  1 x H x W or 1 x 2 x H x W float, the person in the key frame (:func:`person_mask`:
               channel 0 the key mesh's coverage dilated to take in hair and clothes, optional
               channel 1 its interior, eroded); enables ``Motion.hole``, and keeps the band from
               dragging the background beside a far-moved body (background motion there instead)
    key_distance: 1 x H x W, :func:`outline_distance` of key_mask's channel 0, when the caller keeps it per key
               (the decoder's KeyState.person_distance); computed here otherwise
    key_forward: B x 2 x h x w, :func:`key_forward` (with key_mask): a pixel off the frame mesh whose sample
               shows the key's person, and whose content goes farther than FORWARD_TOLERANCE from it in the
               frame, is a disocclusion too
    """
    B, H, W = frame.tri.shape
    device, dtype = frame.bary.device, frame.bary.dtype
    bg = background_grid(camera, H, W, B, device, dtype)                      # B x H x W x 2
    idx, xy, d = surface_grid(frame, faces, key_world, key_trans, key_loc, focal, W, H)
    b = idx // (H * W)
    vis_pts = key_visibility(xy, d, key_depth, tol, b)
    grid = bg.reshape(-1, 2).clone()
    grid[idx] = xy.to(dtype)
    body = frame.mask
    visible = torch.ones(B * H * W, dtype=torch.bool, device=device)
    visible[idx] = vis_pts
    visible = visible.reshape(B, H, W)
    known = (body & visible).to(dtype)[:, None]                               # B x 1 x H x W
    # Residual body motion relative to the background, filled smoothly where unknown.
    resid = (grid.reshape(B, H, W, 2) - bg).permute(0, 3, 1, 2)               # B x 2 x H x W
    s = 4 if min(H, W) >= 64 else 1                                           # work at 1/4 resolution
    k_lo = Fn.avg_pool2d(known, s) if s > 1 else known
    r_lo = Fn.avg_pool2d(resid * known, s) / k_lo.clamp(min=1e-8) if s > 1 else resid
    fill_lo = push_pull(r_lo, k_lo)
    sigma = max(1.0, ramp * min(H, W) / s)
    wgt_lo = (_blur(Fn.avg_pool2d(body.to(dtype)[:, None], s) if s > 1 else body.to(dtype)[:, None], sigma) * 2).clamp(max=1)
    if s > 1:
        fill = Fn.interpolate(fill_lo, size=(H, W), mode="bilinear", align_corners=False)
        wgt = Fn.interpolate(wgt_lo, size=(H, W), mode="bilinear", align_corners=False)
    else:
        fill, wgt = fill_lo, wgt_lo
    # A pinhole in the frame mesh (every neighbour covered: a fold of the body model) moves as the body.
    covered_around = Fn.avg_pool2d(Fn.pad(body.to(dtype)[:, None], (1, 1, 1, 1)), 3, stride=1) * 9   # 3 x 3 count
    wgt = torch.where(body[:, None] | (covered_around > 7.5), torch.ones_like(wgt), wgt)
    resid = torch.where(known > 0, resid, fill * wgt)
    grid = bg + resid.permute(0, 2, 3, 1)
    hole = None
    if key_mask is not None:
        km = key_mask.to(dtype)
        if km.dim() == 3:
            km = km[:, None]
        kh, kw = km.shape[-2:]

        def lookup(maps, g):
            # Nearest lookup of key maps (1|B x C x H x W) at the sampled positions: B x C x H x W.
            xi = g[..., 0].floor().long().clamp(0, kw - 1)
            yi = g[..., 1].floor().long().clamp(0, kh - 1)
            flat = (yi * kw + xi).reshape(B, 1, -1).expand(-1, maps.shape[1], -1)
            return torch.gather(maps.reshape(maps.shape[0], maps.shape[1], -1).expand(B, -1, -1), 2, flat).reshape(
                B, maps.shape[1], H, W)

        # Band pixels (off the frame mesh, following the body's motion in part) are hair, loose clothes and
        # the fit's error around the body, which keep about their distance to it. One whose sample lies
        # farther from the key's person than the pixel lies from the frame's own, by more than
        # PERSON_MARGIN, is background the body's motion drags along: it takes the background's motion.
        # Without this an arm swung far (a large studio edit, a dancer's turn) bent the wall behind it
        # (docs/BENCHMARKS.md "Background no longer dragged by a moving arm").
        margin = max(1, int(round(PERSON_MARGIN * max(H, W))))
        frame_person = person_margin(body)
        band = ~body & (wgt[:, 0] > 0) & (wgt[:, 0] < 1)
        if bool(band.any()):
            if key_distance is None:
                key_distance = outline_distance(km[:, 0] > 0.5, max(H, W))
            sample_distance = lookup(key_distance[:, None], grid)[:, 0]
            dragged = band & (sample_distance > outline_distance(frame_person, max(H, W)) + margin)
            grid = torch.where(dragged[..., None], bg, grid)
            wgt = torch.where(dragged[:, None], torch.zeros_like(wgt), wgt)
        samp = lookup(km, grid)
        # Definitely background in the frame (outside the frame person's own margin), yet
        # sampling where the key frame may show the person.
        hole = (samp[:, 0] > 0.5) & ~frame_person & (wgt[:, 0] < 0.5)
        if km.shape[1] > 1:
            # Off the frame mesh but sampling the key mesh's interior: that surface is elsewhere now.
            # Not next to the frame mesh: a pixel in a pinhole or a notch of its outline (a fold or seam of
            # the body model, a silhouette edge through the pixel) samples the key's interior as its
            # neighbours on the mesh do; taken for a place the person left, it was filled with the
            # background further off (a dark speck on the outline, several a frame with one key).
            hole |= (samp[:, 1] > 0.5) & ~_box_any(body.to(dtype)[:, None], 1)[:, 0]
        if key_forward is not None:
            # Beside the frame's mesh (its margin, the band), a pixel may sample a part of the key's person
            # that has moved far away: where an arm hung in the key, after the arm was raised (a studio
            # edit, a dancer). The sample then shows that arm's sleeve or hand, a ghost beside the body
            # with spikes along the shoulder, where the frame shows background. A forward-backward check,
            # as optical flow tests occlusions: where the key's content at the sample goes in the frame
            # (``key_forward``), against the pixel itself.
            test = (~body & (samp[:, 0] > 0.5) & ~hole).reshape(-1).nonzero().squeeze(1)
            if test.numel():
                fh, fw = key_forward.shape[-2:]
                g = grid.reshape(-1, 2)[test]
                fb = test // (H * W)
                xi = (g[:, 0] * fw / W).floor().long().clamp(0, fw - 1)
                yi = (g[:, 1] * fh / H).floor().long().clamp(0, fh - 1)
                went = g + key_forward[fb if key_forward.shape[0] > 1 else torch.zeros_like(fb), :, yi, xi]
                here = torch.stack([(test % W).to(dtype) + 0.5, ((test // W) % H).to(dtype) + 0.5], 1)
                far = (went - here).norm(dim=1) > FORWARD_TOLERANCE * max(H, W)
                hole = hole.reshape(-1).index_fill(0, test[far], True).reshape(B, H, W)
        # A disocclusion is a region: what is too thin to hold a 3 x 3 square (lone pixels, a one-pixel
        # line) is the fit's noise on a key mask's edge, and filled from the background it made a speck
        # (white on ubc_2's dress, dark on a TED stage). An opening keeps the rest exactly.
        core = ~_box_any((~hole).to(dtype)[:, None], 1)                 # the centres of 3 x 3 squares of hole
        hole = hole & _box_any(core.to(dtype), 1)[:, 0]
        # What is smaller than HOLE_MIN_AREA is the key mask's edge flipping, not a place the person left; a
        # small pocket the disocclusion encloses samples the key's person as the disocclusion does.
        hole = tidy_disocclusion(hole, frame_person, HOLE_MIN_AREA * H * W)
    return Motion(grid=grid, visible=visible, body=body, weight=wgt[:, 0], hole=hole)


def key_forward(surface: tuple, faces: torch.Tensor, frame_xy: torch.Tensor) -> torch.Tensor:
    """Where what each key pixel shows goes in each frame: B x 2 x h x w displacements in frame pixels, on the
    grid of ``surface`` (1/4 resolution), the key mesh's own motion filled smoothly around it (push-pull) to
    reach the hair, clothes and fit error beside it (analytic_motion's forward-backward check).

    surface: :func:`key_surface` of the key's Raster; faces: F x 3; frame_xy: B x V x 2 projected vertices
    of the frames (pixels)."""
    cells, tri, bary, centre, shape = surface
    h, w = shape
    pos = (frame_xy[:, faces[tri]] * bary[None, :, :, None].to(frame_xy.dtype)).sum(2)          # B x N x 2
    B = pos.shape[0]
    disp = torch.zeros(B, 2, h * w, dtype=pos.dtype, device=pos.device)
    disp[:, :, cells] = (pos - centre[None].to(pos.dtype)).permute(0, 2, 1)
    known = torch.zeros(1, 1, h * w, dtype=pos.dtype, device=pos.device)
    known[..., cells] = 1.0
    return push_pull(disp.reshape(B, 2, h, w), known.reshape(1, 1, h, w).expand(B, 1, h, w))


def key_surface(key: Raster, step: int = 4) -> tuple:
    """The key mesh's surface points on a grid of one pixel in ``step`` (the centre pixel of each step x step
    cell), for :func:`key_forward`: (cells, tri, bary, centre, (h, w)), cells the N covered grid cells (flat
    indices into h*w), tri and bary their surface points, centre their N x 2 pixel centres."""
    H, W = key.tri.shape[-2:]
    s = step if min(H, W) >= 16 * step else 1
    ys = torch.arange(s // 2, H, s, device=key.tri.device)
    xs = torch.arange(s // 2, W, s, device=key.tri.device)
    tri = key.tri[0][ys][:, xs].reshape(-1)
    cells = (tri >= 0).nonzero().squeeze(1)
    w = xs.numel()
    centre = torch.stack([xs[cells % w].to(key.bary.dtype) + 0.5, ys[cells // w].to(key.bary.dtype) + 0.5], 1)
    bary = key.bary[0][ys][:, xs].reshape(-1, 3)[cells]
    return cells, tri[cells], bary, centre, (ys.numel(), w)


def dilate(mask: torch.Tensor, radius: int, step: int = 4) -> torch.Tensor:
    """B x H x W bool -> B x H x W bool dilated by a square of ``radius`` px (computed at 1/step
    resolution, so it may reach up to step - 1 px further)."""
    H, W = mask.shape[-2:]
    m = mask.to(torch.float32)[:, None]
    if step > 1 and radius >= step and H % step == 0 and W % step == 0:
        lo = Fn.max_pool2d(m, step)
        lo = _box_any(lo, -(-radius // step))
        return Fn.interpolate(lo.to(torch.float32), scale_factor=step, mode="nearest")[:, 0] > 0.5
    return _box_any(m, radius)[:, 0]


# The steps in which outline_distance measures, as fractions of the frame size: coarse, as the band rule
# of analytic_motion compares two such distances with a margin of PERSON_MARGIN.
OUTLINE_STEPS = tuple(1 / n for n in (96, 48, 32, 24, 16, 12, 8, 6, 4))


def outline_distance(mask: torch.Tensor, size: int, step: int = 4) -> torch.Tensor:
    """B x H x W bool -> B x H x W float: each pixel's distance in px from ``mask``, rounded up to the
    next of OUTLINE_STEPS x ``size`` (0 on the mask, inf beyond the last step). Each step is the pixels
    ``dilate(mask, r)`` adds; the steps of ``step`` px and more are taken together at 1/step resolution
    (one pooling and one upsampling for all of them, the same pixels as one :func:`dilate` each)."""
    H, W = mask.shape[-2:]
    radii = [max(1, int(round(f * size))) for f in OUTLINE_STEPS]
    coarse = [r for r in radii if step > 1 and r >= step and H % step == 0 and W % step == 0]
    d = torch.full(mask.shape, math.inf, device=mask.device)
    if coarse:
        lo = Fn.max_pool2d(mask.to(torch.float32)[:, None], step)
        d_lo = torch.full_like(lo, math.inf)
        for r in reversed(coarse):
            d_lo = torch.where(_box_any(lo, -(-r // step)), float(r), d_lo)
        d = Fn.interpolate(d_lo, scale_factor=step, mode="nearest")[:, 0]
    for r in reversed([r for r in radii if r not in coarse]):
        d = torch.where(_box_any(mask.to(torch.float32)[:, None], r)[:, 0], float(r), d)
    return torch.where(mask, 0.0, d)


def unseen_interior(unseen: torch.Tensor, radius: int) -> torch.Tensor:
    """B x H x W bool -> the pixels of ``unseen`` whose whole (2 radius + 1)^2 square is unseen: thin
    slivers (narrower than 2 radius + 1 px) go, and a rim of ``radius`` px around the rest (the body
    pixels the decoder's other references fill, engine.synthesis.decoder.UNSEEN_EROSION)."""
    return unseen & ~dilate(~unseen, radius, step=1)


def tidy_disocclusion(hole: torch.Tensor, person: torch.Tensor, min_area: float) -> torch.Tensor:
    """``hole`` (B x H x W bool) without its regions of fewer than ``min_area`` pixels, and with the pockets of
    fewer pixels that it encloses filled: regions of neither ``hole`` nor ``person`` (B x H x W bool, the frame
    person's margin) that touch no ``person`` pixel. 8-connected regions of one frame, labelled by scipy on the
    CPU in the box around the frame's hole (a pocket that reaches the box's edge is not enclosed): the same
    frames on any device."""
    if not bool(hole.any()):
        return hole
    from scipy import ndimage
    eight = np.ones((3, 3), bool)
    h = hole.cpu().numpy().copy()
    p = person.cpu().numpy()
    for b in range(h.shape[0]):
        ys, xs = np.flatnonzero(h[b].any(1)), np.flatnonzero(h[b].any(0))
        if ys.size == 0:
            continue
        y0, y1, x0, x1 = max(int(ys[0]) - 1, 0), int(ys[-1]) + 2, max(int(xs[0]) - 1, 0), int(xs[-1]) + 2
        box, near = h[b, y0:y1, x0:x1], p[b, y0:y1, x0:x1]          # ``box`` is a view: written in place
        label, n = ndimage.label(box, eight)
        small = np.bincount(label.reshape(-1), minlength=n + 1) < min_area
        small[0] = False
        box &= ~small[label]
        pocket = ~box & ~near
        label, n = ndimage.label(pocket, eight)
        small = np.bincount(label.reshape(-1), minlength=n + 1) < min_area
        edge = _grow(near)                                       # what touches the person ...
        edge[[0, -1], :] = True                                  # ... or the box's edge
        edge[:, [0, -1]] = True
        small &= np.bincount(label[edge], minlength=n + 1) == 0
        small[0] = False
        box |= small[label]
    return torch.as_tensor(h, device=hole.device)


def _grow(m: np.ndarray) -> np.ndarray:
    """H x W bool -> grown by one pixel into its 8 neighbours (a 3 x 3 dilation, by shifted ORs). The same
    pixels as ``_box_any(m, 1)``, on the numpy box ``tidy_disocclusion`` works in: ``_box_any`` over the
    whole batch, then cropped, took the step from 1.9 to 2.5 ms a decoded frame to 3.1 to 4.0 (one-off timing)."""
    rows = m.copy()
    rows[1:] |= m[:-1]
    rows[:-1] |= m[1:]
    out = rows.copy()
    out[:, 1:] |= rows[:, :-1]
    out[:, :-1] |= rows[:, 1:]
    return out


def _box_any(m: torch.Tensor, radius: int) -> torch.Tensor:
    """B x 1 x H x W of 0/1 -> bool: is any pixel of the (2 radius + 1)^2 square around each one set?

    Running sums along each axis (whole numbers, exact in float32): the same pixels as a max pooling
    of that square, about 10 times faster on a CPU (a 7 x 7 square of 8 frames at 128 px: 0.5 against
    5.1 ms, and the closed loop dilates one per optimiser step)."""
    k = 2 * radius + 1
    s = Fn.pad(m, (radius + 1, radius)).cumsum(-1)
    s = s[..., k:] - s[..., :-k]
    s = Fn.pad(s, (0, 0, radius + 1, radius)).cumsum(-2)
    return (s[..., k:, :] - s[..., :-k, :]) > 0.5


def person_margin(mask: torch.Tensor, margin: float | None = None) -> torch.Tensor:
    """B x H x W bool mesh coverage dilated by ``margin`` (default PERSON_MARGIN) x frame size, pixel by pixel:
    the person with hair, loose clothes and fit error, in the key (:func:`person_mask`) and in the frame
    (analytic_motion's band and disocclusions).

    Exact, not at 1/4 resolution (``dilate``'s default): the outline then went in steps of 4 px, and the
    disocclusions it bounds drew those steps as a sawtooth beside a moving arm, key sample and filled
    background in turn (a dancer's sleeve against a wall, and after every arm edit in the studio;
    docs/BENCHMARKS.md "A sawtooth beside moving arms"). Once per key, and about 0.8 ms more per frame at
    384 x 384 on one thread."""
    H, W = mask.shape[-2:]
    r = max(1, int(round((PERSON_MARGIN if margin is None else margin) * max(H, W))))
    return dilate(mask, r, step=1)


def person_mask(raster_mask: torch.Tensor, margin: float | None = None, core: float = 0.006) -> torch.Tensor:
    """B x H x W bool mesh coverage -> B x 2 x H x W float: the person dilated by ``margin`` x frame
    size (:func:`person_margin`: hair, loose clothes and fit error around the body) and the mesh interior
    eroded by ``core``."""
    H, W = raster_mask.shape[-2:]
    e = max(1, int(round(core * max(H, W))))
    dil = person_margin(raster_mask, margin).to(torch.float32)[:, None]
    ero = (~dilate(~raster_mask, e, step=1)).to(torch.float32)[:, None]
    return torch.cat([dil, ero], 1)


def fill_holes(image: torch.Tensor, hole: torch.Tensor, known: torch.Tensor, step: int = 4) -> torch.Tensor:
    """Replace ``hole`` pixels of B x C x H x W ``image`` by a smooth fill (push-pull) of ``known`` pixels.

    hole, known: B x H x W bool. Used for background disocclusions, where the key picture has no
    background to show: the fill continues the surrounding background instead of ghosting the
    person that stood there in the key frame. The fill is smooth, so it is computed at 1/step
    resolution and upsampled.
    """
    w = known.to(image.dtype)[:, None]
    H, W = image.shape[-2:]
    if step > 1 and H >= 8 * step and W >= 8 * step:
        wl = Fn.avg_pool2d(w, step, ceil_mode=True)
        vl = Fn.avg_pool2d(image * w, step, ceil_mode=True) / wl.clamp(min=1e-8)
        fill = Fn.interpolate(push_pull(vl, wl), size=(H, W), mode="bilinear", align_corners=False)
    else:
        fill = push_pull(image, w)
    return torch.where(hole[:, None], fill, image)


def warp(image: torch.Tensor, grid: torch.Tensor) -> torch.Tensor:
    """Backward-warp key images: image 1|B x C x H x W float, grid B x H x W x 2 (pixel coords) -> B x C x H x W.

    Bilinear, borders replicated (grid_sample, align_corners=False matches the pixel-centre convention).
    """
    B, H, W, _ = grid.shape
    Hi, Wi = image.shape[-2:]
    scale = torch.tensor([2.0 / Wi, 2.0 / Hi], device=grid.device, dtype=grid.dtype)
    g = grid * scale - 1.0
    if image.shape[0] != B:
        image = image.expand(B, -1, -1, -1)
    return Fn.grid_sample(image, g.to(image.dtype), mode="bilinear", padding_mode="border", align_corners=False)


def hole_of(mo: Motion) -> torch.Tensor | None:
    """``mo.hole`` when some pixel is a disocclusion, else None."""
    hole = getattr(mo, "hole", None)
    return hole if hole is not None and bool(hole.any()) else None


def _seen(samples: list[ReferenceSample], shape: tuple[int, int, int], device) -> torch.Tensor:
    """B x H x W bool: the pixels at least one of ``samples`` saw (weight > 0)."""
    seen = torch.zeros(shape[0] * shape[1] * shape[2], dtype=torch.bool, device=device)
    for s in samples:
        seen[s.idx[s.weight > 0]] = True
    return seen.reshape(shape)


def fill_unseen_body(frames: torch.Tensor, mo: Motion, references: list[ReferenceSample] | None,
                     radius: int) -> torch.Tensor:
    """B x 3 x H x W ``frames`` with the body surface no key picture saw filled smoothly from the body around it:
    the regions of what the frame's own key did not see that hold a square of 2 ``radius`` + 1 px (their rim
    included) and that no other reference saw either. The warp drew there whatever covered the point in the
    key: a hand over a chest, the near arm over the far one; a ghost that an arm edit in the studio made plain.
    Thinner slivers along an occluder keep the warp's sample, as the references leave them (decoder
    UNSEEN_EROSION). One-key decodes of eight people: PSNR up on seven and level on one, SSIM up on six,
    VMAF -0.17 to +0.03; a back one key never saw comes out a smooth guess in the colours around it
    (docs/BENCHMARKS.md "Body surface no key saw")."""
    unseen = mo.body & ~mo.visible
    unknown = unseen & ~_seen(references, tuple(unseen.shape), unseen.device) if references else unseen
    inside = unseen_interior(unseen, radius) & unknown
    if not bool(inside.any()):
        return frames
    return fill_holes(frames, dilate(inside, radius, step=1) & unknown, mo.body & ~unknown)


def invented(mo: Motion, background: list[ReferenceSample] | None = None,
             references: list[ReferenceSample] | None = None) -> torch.Tensor:
    """B x H x W bool: the pixels the decoder draws where no key picture saw what is there, so their
    colour is a guess: background disocclusions (``Motion.hole``) that no other key's ``background``
    sample saw (filled smoothly), background beyond the edge of the key picture (its edge repeated: a
    camera pan), and body surface the frame's own key did not see that no other key's ``references``
    sample saw either (filled from the body around it, :func:`fill_unseen_body`; a sliver along an occluder
    drawn with what covered the point in the key). The key
    picture is the frames' size. The studio shows them after an edit ("Invented pixels" compare mode)."""
    shape = tuple(mo.body.shape)
    H, W = shape[1:]
    x, y = mo.grid[..., 0], mo.grid[..., 1]
    out = (mo.body & ~mo.visible) | (~mo.body & ((x < 0) | (x > W) | (y < 0) | (y > H)))
    if references:
        out &= ~_seen(references, shape, out.device)
    hole = hole_of(mo)
    if hole is not None:
        if background:
            hole = hole & ~_seen(background, shape, out.device)
        out |= hole
    return out


def analytic_frame(image: torch.Tensor, mo: Motion, background: list[ReferenceSample] | None = None) -> torch.Tensor:
    """The analytic decoder's frames: the key picture (1 x 3 x H x W, 0..255) warped by ``mo``,
    disocclusions filled from the other key pictures that saw that background (``background``:
    :func:`background_sample` of each, at ``Motion.hole``; their time-weighted mean where one saw it),
    what none saw filled smoothly from the surrounding background; B x 3 x H x W float."""
    out = warp(image, mo.grid)
    hole = hole_of(mo)
    if hole is not None:
        out, seen = _fuse(out, background or [])
        if seen is not None:
            hole = hole & ~seen
        if bool(hole.any()):
            out = fill_holes(out, hole, ~hole & (mo.weight < 0.5))
    return out
