"""engine/synthesis/motion.py: analytic flow from rigid motions, identity, occlusion, off-body extension, warping."""
from __future__ import annotations

import math

import numpy as np
import torch
import trimesh

from engine.synthesis.camera import project, to_world
from engine.synthesis.motion import analytic_motion, background_grid, identity_grid, warp
from engine.synthesis.raster import rasterize

H = W = 64
FOCAL = torch.tensor([[2.0, 2.0]])


def _t(x):
    return torch.tensor([x], dtype=torch.float32)


def motion(verts_key, verts_frame, faces, key=((0, 0, 0), (0, 0, 5), (0.5, 0.5, 1, 1)),
           frame=((0, 0, 0), (0, 0, 5), (0.5, 0.5, 1, 1)), camera=None, size=(H, W)):
    h, w = size
    Vk = torch.as_tensor(np.asarray(verts_key), dtype=torch.float32)[None]
    Vf = torch.as_tensor(np.asarray(verts_frame), dtype=torch.float32)[None]
    F = torch.as_tensor(np.asarray(faces), dtype=torch.int64)
    kr, kt, kl = (_t(x) for x in key)
    fr, ft, fl = (_t(x) for x in frame)
    kxy, kd = project(Vk, kr, kt, kl, FOCAL, w, h)
    fxy, fd = project(Vf, fr, ft, fl, FOCAL, w, h)
    kras = rasterize(kxy, kd, F, h, w)
    fras = rasterize(fxy, fd, F, h, w)
    cam = None if camera is None else _t(camera)
    return analytic_motion(fras, F, to_world(Vk, kr, kt), kt, kl, FOCAL, kras.depth, camera=cam, tol=0.02), kras, fras


def box(ext=(0.6, 0.8, 0.3)):
    return trimesh.creation.box(extents=ext)


def test_rigid_shift_gives_uniform_flow():
    m = box()
    # Box moved in the frame by +0.1 of the frame width: backward flow -6.4 px on the body.
    mo, _, _ = motion(m.vertices, m.vertices, m.faces, frame=((0, 0, 0), (0, 0, 5), (0.6, 0.5, 1, 1)))
    fl = mo.flow[0][mo.body[0]]
    assert mo.body.sum() > 200
    assert torch.allclose(fl, torch.tensor([-6.4, 0.0]).expand_as(fl), atol=1e-3)
    assert mo.visible[0][mo.body[0]].all()
    # Far from the body the motion is the (identity) background.
    assert mo.flow[0, 0, 0].abs().max() < 1e-3 and mo.flow[0, -1, -1].abs().max() < 1e-3
    # Next to the body it follows the body, then decays monotonically.
    row = mo.flow[0, 32, :, 0]
    cols = torch.nonzero(mo.body[0, 32]).squeeze(1)
    right = int(cols.max()) + 1
    assert row[right] < -5.0
    assert (row[right:].diff() >= -1e-4).all()


def test_body_translation_in_depth_scales_about_the_projection():
    # trans moves the body inside its box: frame farther away -> smaller -> backward flow points outward.
    m = box()
    mo, _, _ = motion(m.vertices, m.vertices, m.faces, frame=((0, 0, 0), (0, 0, 6), (0.5, 0.5, 1, 1)))
    g = mo.grid[0][mo.body[0]]
    p = identity_grid(H, W)[0][mo.body[0]]
    c = torch.tensor([32.0, 32.0])
    # Front face (z = +0.15) at depth 5.85 in the frame, 4.85 in the key: exact ratio.
    expect = c + (p - c) * (5.85 / 4.85)
    assert torch.allclose(g, expect, atol=1e-3)


def test_rotation_about_camera_axis_is_image_rotation():
    m = box()
    theta = 0.3
    mo, _, _ = motion(m.vertices, m.vertices, m.faces, frame=((0, 0, theta), (0, 0, 5), (0.5, 0.5, 1, 1)))
    body = mo.body[0] & mo.visible[0]
    assert body.sum() > 200
    p = identity_grid(H, W)[0][body] - 32.0
    # Frame = key rotated by theta (counter-clockwise in the world, clockwise on screen with y down):
    # the key pixel of frame pixel p is p rotated back.
    c, s = math.cos(theta), math.sin(theta)
    expect = torch.stack([c * p[:, 0] - s * p[:, 1], s * p[:, 0] + c * p[:, 1]], -1) + 32.0
    assert (mo.grid[0][body] - expect).abs().max() < 1e-3


def test_identity_reproduces_key_picture():
    m = box()
    mo, _, _ = motion(m.vertices, m.vertices, m.faces, camera=(0.0, 0.0, 0.0))
    assert mo.flow.abs().max() < 1e-4
    assert mo.visible.all()
    rng = np.random.default_rng(0)
    img = torch.tensor(rng.integers(0, 256, (1, 3, H, W)), dtype=torch.float32)
    out = warp(img, mo.grid)
    assert (out - img).abs().max() < 1e-2


def test_occlusion_box_in_front_of_box():
    # Key: a small box in front of the middle of a big box. Frame: the small box moved aside,
    # revealing the part of the big box it hid: those pixels are occluded in the key.
    big = box((1.2, 1.2, 0.2))
    small = box((0.4, 0.4, 0.2))
    small.apply_translation([0.0, 0.0, 0.5])
    key = trimesh.util.concatenate([big, small])
    moved = small.copy()
    moved.apply_translation([0.8, 0.0, 0.0])
    frame = trimesh.util.concatenate([big, moved])
    mo, kras, fras = motion(key.vertices, frame.vertices, key.faces)
    nb = len(big.faces)
    on_big = fras.tri[0].ge(0) & fras.tri[0].lt(nb)
    hidden_in_key = kras.tri[0].ge(nb)                 # where the small box covered the key picture
    occl = on_big & hidden_in_key & ~mo.visible[0]
    # Every big-box pixel that the small box hid in the key is reported occluded...
    inner = on_big & hidden_in_key
    inner_core = inner & torch.roll(inner, 1, 0) & torch.roll(inner, -1, 0) & torch.roll(inner, 1, 1) & torch.roll(inner, -1, 1)
    assert inner_core.sum() > 20
    assert (~mo.visible[0][inner_core]).all()
    # ...and big-box pixels that were in plain view are visible.
    open_core = on_big & ~hidden_in_key
    open_core = open_core & torch.roll(open_core, 2, 1) & torch.roll(open_core, -2, 1)
    assert mo.visible[0][open_core].float().mean() > 0.99
    # The moved small box is visible in the key (its front face was in view).
    on_small = fras.tri[0].ge(nb)
    assert mo.visible[0][on_small].float().mean() > 0.95
    assert occl.sum() > 20


def test_background_follows_camera_group():
    m = box((0.3, 0.3, 0.3))
    pan = (0.05, -0.1, 0.0)
    mo, _, _ = motion(m.vertices, m.vertices, m.faces, frame=((0, 0, 0), (0, 0, 5), (0.5, 0.5, 1, 1)), camera=pan)
    # Far corners: pure background motion (frame content = key shifted by pan -> backward flow -pan).
    bg = background_grid(_t(pan), H, W) - identity_grid(H, W)
    assert torch.allclose(bg[0, 0, 0], torch.tensor([-0.05 * W, 0.1 * H]), atol=1e-4)
    assert torch.allclose(mo.flow[0, 0, 0], bg[0, 0, 0], atol=0.05)
    # The body itself did not move: zero flow on it, a blend in between.
    assert mo.flow[0][mo.body[0]].abs().max() < 1e-3
    right = int(torch.nonzero(mo.body[0, 32]).max()) + 1
    assert float(mo.weight[0, 32, right]) > 0.4 and float(mo.weight[0, 0, 0]) < 0.05
    f_near = mo.flow[0, 32, right, 0]
    assert bg[0, 32, right, 0] < f_near < 0.0             # between body (0) and background motion


def test_warp_shift_moves_content():
    img = torch.zeros(1, 1, 16, 16)
    img[0, 0, 5, 7] = 1.0
    g = identity_grid(16, 16) + torch.tensor([-2.0, 0.0])    # frame pixel samples key pixel 2 to its left
    out = warp(img, g)
    assert out[0, 0, 5, 9] == 1.0 and out.sum() == 1.0


def test_background_grid_inverts_camera_motion_convention():
    from engine.analysis.camera_motion import camera_affine
    cam = (0.03, -0.05, 0.1)
    g = background_grid(_t(cam), 40, 50)[0]                 # H x W x 2, our coords (centres at +0.5)
    A = camera_affine(cam, 50, 40)                          # key pixel index -> frame pixel index
    pk = g.reshape(-1, 2).double().numpy() - 0.5
    pt = pk @ A[:, :2].T + A[:, 2]
    assert np.allclose(pt + 0.5, identity_grid(40, 50)[0].reshape(-1, 2).numpy(), atol=1e-4)


def _walked(size: int = H):
    """A box person in the key frame and 40 % of the frame to the right in the frame: (faces, key pose, key
    raster, frame raster, key world vertices); frames ``size`` x ``size``."""
    m = box((0.4, 0.6, 0.2))
    key = ((0, 0, 0), (0, 0, 5), (0.3, 0.5, 1, 1))
    frame = ((0, 0, 0), (0, 0, 5), (0.7, 0.5, 1, 1))
    Vk = torch.as_tensor(np.asarray(m.vertices), dtype=torch.float32)[None]
    F = torch.as_tensor(np.asarray(m.faces))
    kxy, kd = project(Vk, *(_t(x) for x in key), FOCAL, size, size)
    fxy, fd = project(Vk, *(_t(x) for x in frame), FOCAL, size, size)
    return (F, key, rasterize(kxy, kd, F, size, size), rasterize(fxy, fd, F, size, size),
            to_world(Vk, _t(key[0]), _t(key[1])))


def test_background_disocclusion_is_a_hole_and_filled():
    from engine.synthesis.motion import fill_holes, person_mask
    F, key, kras, fras, kw = _walked()
    mo = analytic_motion(fras, F, kw, _t(key[1]), _t(key[2]), FOCAL, kras.depth, key_mask=person_mask(kras.mask))
    old = kras.mask[0] & ~person_mask(fras.mask)[0, 0].bool()   # where the key person stood, now background
    assert old.sum() > 50
    assert mo.hole[0][old].float().mean() > 0.95
    assert not (mo.hole[0] & fras.mask[0]).any()
    assert not mo.hole[0, :, -8:].any() and not mo.hole[0, :4].any()
    # Filled from the background, not the key's person: key = grey background, white person.
    img = torch.full((1, 3, H, W), 80.0)
    img[:, :, kras.mask[0]] = 250.0
    out = warp(img, mo.grid)
    assert out[0, 0][old].mean() > 200                         # the ghost, without the fill
    out = fill_holes(out, mo.hole, ~mo.hole & (mo.weight < 0.5))
    assert (out[0, 0][old] - 80).abs().max() < 1.0
    assert (out[0, 0][fras.mask[0]] > 249).float().mean() > 0.85  # the person moved along (edges bilinear)


def test_a_disocclusion_too_thin_to_hold_a_3x3_square_is_not_a_hole():
    """Lone pixels and one-pixel lines of a key mask (the fit's noise on its edge) are not filled as
    background the person left; a real disocclusion is kept whole."""
    from engine.synthesis.motion import person_mask
    F, key, kras, fras, kw = _walked()
    km = person_mask(kras.mask).clone()
    km[0, 0, 60, 2] = 1.0                                      # a lone pixel of the key mask
    km[0, 0, 2, 30:50] = 1.0                                   # a one-pixel line
    mo = analytic_motion(fras, F, kw, _t(key[1]), _t(key[2]), FOCAL, kras.depth, key_mask=km)
    assert not mo.hole[0, 60, 2] and not mo.hole[0, 2, 30:50].any()
    old = kras.mask[0] & ~person_mask(fras.mask)[0, 0].bool()   # where the key person stood, now background
    inner = old & ~torch.nn.functional.max_pool2d((~old).float()[None], 3, 1, 1)[0].bool()
    assert inner.sum() > 30 and mo.hole[0][old].float().mean() > 0.95


def test_tidy_disocclusion_drops_specks_and_fills_the_pockets_it_encloses_within_each_frame():
    from engine.synthesis.motion import tidy_disocclusion
    hole = torch.zeros(2, 20, 20, dtype=torch.bool)
    person = torch.zeros_like(hole)
    hole[0, 1:3, 1:3] = True                    # 4 px: a speck
    hole[0, 5:15, 5:15] = True                  # 100 px, with a 2 x 2 pocket inside
    hole[0, 9:11, 9:11] = False
    hole[1, 1:3, 1:3] = True                    # 4 px in the next frame, not joined to frame 0's ...
    hole[1, 3:5, 3:5] = True                    # ... but to these 4 px at a corner: 8 px together
    out = tidy_disocclusion(hole, person, 6)
    assert not out[0, 1:3, 1:3].any() and out[0, 5:15, 5:15].all()
    assert torch.equal(out[1], hole[1])
    person[0, 9, 9] = True                      # the pocket holds a pixel of the person: it is not filled
    out = tidy_disocclusion(hole, person, 6)
    assert not out[0, 9:11, 9:11].any() and out[0, 5:9, 5:15].all()
    ring = torch.zeros(1, 20, 20, dtype=torch.bool)
    ring[0, 0:6, 0:6] = True                    # a pocket against the frame's edge is not enclosed
    ring[0, 0:2, 0:2] = False
    assert torch.equal(tidy_disocclusion(ring, torch.zeros_like(ring), 6), ring)
    assert not tidy_disocclusion(torch.zeros_like(ring), ring, 6).any()


def test_specks_of_disocclusion_and_pockets_inside_one_are_not_left():
    """Beside a person's edge the sampled key mask flips: islands of disocclusion too small to be one (grey
    specks in a sweater after a large edit) are drawn as the pixels around them, and a small pocket inside a
    disocclusion (a fragment of sleeve in the filled background) is filled with it."""
    from engine.synthesis.motion import HOLE_MIN_AREA, person_mask
    n = 128
    F, key, kras, fras, kw = _walked(n)
    assert 4 * 4 < HOLE_MIN_AREA * n * n
    km = person_mask(kras.mask).clone()
    clean = analytic_motion(fras, F, kw, _t(key[1]), _t(key[2]), FOCAL, kras.depth, key_mask=km).hole[0]
    old = kras.mask[0] & ~person_mask(fras.mask)[0, 0].bool()   # where the key person stood, now background
    ys, xs = old.nonzero(as_tuple=True)
    cy, cx = int(ys.float().mean()), int(xs.float().mean())
    assert old[cy - 4:cy + 5, cx - 4:cx + 5].all() and clean[cy - 4:cy + 5, cx - 4:cx + 5].all()
    km[0, 0, 4:8, 4:8] = 1.0                                   # a 4 x 4 speck of key person in the background
    mo = analytic_motion(fras, F, kw, _t(key[1]), _t(key[2]), FOCAL, kras.depth, key_mask=km)
    assert torch.equal(mo.hole[0], clean)
    pocket = km.clone()
    pocket[0, :, cy - 1:cy + 3, cx - 1:cx + 3] = 0.0           # a 4 x 4 pocket inside where the person stood
    mo = analytic_motion(fras, F, kw, _t(key[1]), _t(key[2]), FOCAL, kras.depth, key_mask=pocket)
    assert mo.hole[0, cy - 1:cy + 3, cx - 1:cx + 3].all()
    km[0, 0, 4:12, 4:12] = 1.0                                  # 8 x 8 = 64 px: a region the person left
    assert 8 * 8 > HOLE_MIN_AREA * n * n
    mo = analytic_motion(fras, F, kw, _t(key[1]), _t(key[2]), FOCAL, kras.depth, key_mask=km)
    assert mo.hole[0, 5:11, 5:11].all()


def test_a_pinhole_or_notch_in_the_frame_mesh_is_body_not_a_hole():
    """A pixel no triangle covers next to the frame mesh (a pinhole at a fold or seam of the body model,
    a notch in its outline) samples the key person's interior like its neighbours on the mesh: it is drawn
    as they are, not filled as background the person left (which made a dark speck)."""
    from dataclasses import replace

    from engine.synthesis.motion import analytic_frame, person_mask
    m = box((0.4, 0.6, 0.2))
    pose = ((0, 0, 0), (0, 0, 5), (0.5, 0.5, 1, 1))
    Vk = torch.as_tensor(np.asarray(m.vertices), dtype=torch.float32)[None]
    F = torch.as_tensor(np.asarray(m.faces))
    xy, d = project(Vk, *(_t(x) for x in pose), FOCAL, W, H)
    ras = rasterize(xy, d, F, H, W)
    y, x = 32, 32
    assert ras.mask[0, y - 3:y + 4, x - 3:x + 4].all()
    right = int(ras.mask[0, y].nonzero().max())               # the outline's last column on row y
    tri = ras.tri.clone()
    tri[0, y, x] = -1                                          # a pinhole
    tri[0, y - 2:y + 3, right - 1:] = -1                       # a notch two pixels deep into the outline
    holed = replace(ras, tri=tri)
    kw = to_world(Vk, _t(pose[0]), _t(pose[1]))
    km = person_mask(ras.mask)
    assert km.shape[1] == 2 and km[0, 1, y, x] > 0.5 and km[0, 1, y, right - 1] > 0.5    # the key's interior
    mo = analytic_motion(holed, F, kw, _t(pose[1]), _t(pose[2]), FOCAL, ras.depth, key_mask=km)
    assert mo.hole is None or not (mo.hole[0, y, x] or mo.hole[0, y - 2:y + 3, right - 1:right + 1].any())
    assert mo.weight[0, y, x] == 1                             # the pinhole moves as the body around it
    img = torch.full((1, 3, H, W), 20.0)
    img[:, :, ras.mask[0]] = 240.0                             # a dark background, a bright person
    out = analytic_frame(img, mo)
    assert out[0, :, y, x].min() > 230 and out[0, :, y, right - 1].min() > 200


def test_dilate_matches_a_square_max_pooling():
    """dilate's running-sum square is the max pooling it replaced, pixel for pixel."""
    import torch.nn.functional as Fn

    from engine.synthesis.motion import dilate

    def pooled(mask, radius, step):
        H, W = mask.shape[-2:]
        m = mask.to(torch.float32)[:, None]
        if step > 1 and radius >= step and H % step == 0 and W % step == 0:
            lo = Fn.max_pool2d(m, step)
            r = -(-radius // step)
            lo = Fn.max_pool2d(lo, 2 * r + 1, stride=1, padding=r)
            return Fn.interpolate(lo, scale_factor=step, mode="nearest")[:, 0] > 0.5
        return Fn.max_pool2d(m, 2 * radius + 1, stride=1, padding=radius)[:, 0] > 0.5

    g = torch.Generator().manual_seed(0)
    for h, w in [(128, 128), (96, 64), (30, 17)]:
        for p in (0.002, 0.05, 0.5):
            m = torch.rand(2, h, w, generator=g) < p
            for radius in (1, 3, 4, 9):
                for step in (1, 4):
                    assert torch.equal(dilate(m, radius, step), pooled(m, radius, step)), (h, w, p, radius, step)


def test_the_key_person_reaches_the_same_distance_all_along_a_slanted_arm():
    """The person with its margin, in the key (person_mask, channel 0) and in the frame (person_margin, the
    band's and the disocclusions' bound in analytic_motion), is the mesh dilated pixel by pixel: beside a
    slanted arm its outline is a straight slanted line, not steps of 4 px that the disocclusions it bounds
    drew as a sawtooth."""
    from scipy import ndimage

    from engine.synthesis.motion import PERSON_MARGIN, person_margin, person_mask
    H = W = 384
    y, x = np.mgrid[:H, :W]
    arm = (np.abs(x - 0.6 * y - 80) < 9) & (y > 40) & (y < 340)        # a forearm at about 30 degrees
    r = max(1, round(PERSON_MARGIN * H))
    exact = ndimage.binary_dilation(arm, np.ones((2 * r + 1, 2 * r + 1), bool))
    assert np.array_equal(person_mask(torch.as_tensor(arm)[None])[0, 0].numpy() > 0.5, exact)   # the key's
    assert np.array_equal(person_margin(torch.as_tensor(arm)[None])[0].numpy(), exact)          # the frame's


def test_background_beside_a_far_moved_body_is_not_dragged_with_it():
    """The band around the body follows its motion (hair, loose clothes), but a band pixel whose sample
    would lie farther from the key's person than the pixel lies from the frame's own, by more than the
    person margin, is background: it keeps the background's motion instead of dragging the wall along
    with an arm swung far (a large studio edit). Under a small motion the whole band is kept."""
    from engine.synthesis.motion import PERSON_MARGIN, person_mask
    n = 128
    m = box((0.2, 0.6, 0.2))
    Vk = torch.as_tensor(np.asarray(m.vertices), dtype=torch.float32)[None]
    F = torch.as_tensor(np.asarray(m.faces))
    key = ((0, 0, 0), (0, 0, 5), (0.3, 0.5, 1, 1))
    kras = rasterize(*project(Vk, *(_t(x) for x in key), FOCAL, n, n), F, n, n)
    kw = to_world(Vk, _t(key[0]), _t(key[1]))
    y = n // 2
    for shift, far in ((0.4, True), (0.02, False)):            # 51 px, then 2.6 px to the right
        frame = ((0, 0, 0), (0, 0, 5), (0.3 + shift, 0.5, 1, 1))
        fras = rasterize(*project(Vk, *(_t(x) for x in frame), FOCAL, n, n), F, n, n)
        plain = analytic_motion(fras, F, kw, _t(key[1]), _t(key[2]), FOCAL, kras.depth)
        mo = analytic_motion(fras, F, kw, _t(key[1]), _t(key[2]), FOCAL, kras.depth,
                             key_mask=person_mask(kras.mask))
        assert torch.equal(mo.grid[mo.body], plain.grid[plain.body])     # the body moves as it did
        right = int(fras.mask[0, y].nonzero().max())            # the frame body's last column on row y
        band = slice(right + round(PERSON_MARGIN * n) + 2, right + 12)
        if far:
            # Without the key's person (no masks) the band drags the background beside the body along,
            # by up to tens of pixels; with it, that background stays where it was (identity camera).
            assert plain.flow[0, y, band, 0].min() < -10
            assert mo.flow[0, y, band].abs().max() < 1e-3
        else:
            assert plain.flow[0, y, band, 0].min() < -0.5
            moving = plain.flow.norm(dim=-1) > 0.5                # the band near the body, kept
            assert (moving & ~plain.body).sum() > 100
            assert torch.equal(mo.grid[moving], plain.grid[moving])


def test_outline_distance_is_the_first_dilation_that_reaches_each_pixel():
    """outline_distance's pooled steps give the pixels of one dilate per step, at every frame size."""
    from engine.synthesis.motion import OUTLINE_STEPS, dilate, outline_distance
    g = torch.Generator().manual_seed(1)
    for n in (384, 128, 50):
        m = torch.nn.functional.interpolate((torch.rand(3, 1, n // 8 + 1, n // 8 + 1, generator=g) < 0.1).float(),
                                            size=(n, n))[:, 0] > 0.5
        ref = torch.full(m.shape, math.inf)
        for f in reversed(OUTLINE_STEPS):
            r = max(1, round(f * n))
            ref = torch.where(dilate(m, r), float(r), ref)
        d = outline_distance(m, n)
        assert torch.equal(d, torch.where(m, 0.0, ref))
        assert len(d.unique()) > 4 and (d[~m] > 0).all()


def test_invented_pixels_are_those_no_key_saw():
    """``invented``: body surface the own key did not see and disocclusions, less what another key's
    sample saw (weight > 0); a sample of weight 0 (that key did not see it either) leaves the guess."""
    from engine.synthesis.motion import Motion, ReferenceSample, invented
    B, h, w = 1, 4, 6
    body = torch.zeros(B, h, w, dtype=torch.bool)
    body[0, :, :3] = True
    visible = torch.ones(B, h, w, dtype=torch.bool)
    visible[0, 0:2, 0:2] = False                         # 4 body pixels the own key did not see
    hole = torch.zeros(B, h, w, dtype=torch.bool)
    hole[0, 2:4, 4:6] = True                             # 4 background pixels the key's person hid
    mo = Motion(grid=identity_grid(h, w).expand(B, -1, -1, -1), visible=visible, body=body, weight=body.float(),
                hole=hole)
    alone = invented(mo)
    assert alone.sum() == 8 and bool(alone[0, 0, 0]) and bool(alone[0, 3, 5]) and not bool(alone[0, 3, 0])

    def sample(flat, weight):
        idx = torch.tensor(flat)
        return ReferenceSample(idx=idx, colour=torch.zeros(len(flat), 3), weight=torch.tensor(weight))
    refs = [sample([0, 1], [1.0, 0.0])]                  # another key saw pixel (0, 0), not (0, 1)
    back = [sample([2 * w + 4, 3 * w + 5], [0.5, 1.0])]   # another key saw two of the four background pixels
    both = invented(mo, background=back, references=refs)
    assert both.sum() == 5
    assert not bool(both[0, 0, 0]) and bool(both[0, 0, 1])
    assert not bool(both[0, 2, 4]) and not bool(both[0, 3, 5]) and bool(both[0, 2, 5])
    none = Motion(grid=identity_grid(h, w).expand(B, -1, -1, -1), visible=torch.ones_like(visible), body=body,
                  weight=mo.weight, hole=None)
    assert not bool(invented(none).any())
    panned = Motion(grid=none.grid + torch.tensor([2.5, 0.0]), visible=none.visible, body=body, weight=mo.weight)
    beyond = invented(panned)                            # background sampled right of the key picture's edge
    assert beyond.sum() == 2 * h and bool(beyond[0, :, 4:].all()) and not bool(beyond[0, :, :4].any())


def test_beside_the_body_where_a_moved_arm_hung_is_a_hole():
    """A pixel right beside the frame's body whose key sample shows an arm that has since moved far away
    (raised in a studio edit) is background the arm uncovered, not the arm's sleeve dragged along with the
    body: the forward-backward check (``key_forward``) makes it a disocclusion, filled from the background.
    Where nothing moved, or the arm moved a little, the check changes nothing."""
    from engine.synthesis.motion import analytic_frame, dilate, key_forward, key_surface, person_margin, person_mask
    n = 128
    torso, arm = box((0.3, 0.6, 0.2)), box((0.1, 0.5, 0.1))
    arm.apply_translation((0.26, -0.05, 0))                     # hanging 3 px beside the torso
    mesh = trimesh.util.concatenate([torso, arm])
    F = torch.as_tensor(np.asarray(mesh.faces))
    Vk = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)[None]
    nt = len(torso.vertices)
    r, t, loc = _t((0, 0, 0)), _t((0, 0, 5)), _t((0.5, 0.5, 1, 1))

    def raster(V):
        xy, d = project(V, r, t, loc, FOCAL, n, n)
        return xy, rasterize(xy, d, F, n, n)
    _, kras = raster(Vk)
    hidden = Vk.clone()
    hidden[0, :nt, 2] -= 9                                      # the torso pushed out of view: the arm alone
    arm_key = raster(hidden)[1].mask[0]
    sleeve = dilate(arm_key[None], 3, step=1)[0]                # the picture's arm: a sleeve wider than its mesh
    img = torch.full((1, 3, n, n), 20.0)                        # dark background,
    img[:, :, kras.mask[0]] = 120.0                             # grey torso,
    img[:, :, sleeve] = 250.0                                   # white sleeve
    kw = to_world(Vk, r, t)
    for lift, moved in ((0.6, True), (0.01, False), (0.0, False)):
        Vf = Vk.clone()
        Vf[0, nt:, 1] += lift                                   # the arm raised (y up), the torso still
        fxy, fras = raster(Vf)
        args = (fras, F, kw, t, loc, FOCAL, kras.depth)
        plain = analytic_motion(*args, key_mask=person_mask(kras.mask))
        mo = analytic_motion(*args, key_mask=person_mask(kras.mask),
                             key_forward=key_forward(key_surface(kras), F, fxy))
        assert torch.equal(mo.grid, plain.grid)                 # the check decides holes, not motion
        if moved:
            # Between torso and arm mesh in the key (sleeve), off the frame's body within its person margin.
            beside = sleeve & ~arm_key & ~fras.mask[0] & person_margin(fras.mask)[0]
            assert beside.sum() > 30
            assert plain.hole[0][beside].float().mean() < 0.1   # the old rule kept them: the sleeve's ghost
            assert analytic_frame(img, plain)[0, 0][beside].mean() > 200
            assert mo.hole[0][beside].float().mean() > 0.9
            assert analytic_frame(img, mo)[0, 0][beside].max() < 130    # background (and torso beside it)
            assert not (mo.hole[0] & fras.mask[0]).any()
        else:
            assert torch.equal(mo.hole, plain.hole)


def test_body_surface_no_key_saw_is_filled_from_the_body_around_it():
    """``fill_unseen_body``: body surface the own key did not see, which the warp drew with the occluder's
    colour (a hand over a chest), takes the colour of the body around it, not the hand's and not the
    background's; a sliver too thin to hold a square (an arm's edge), what another key saw and everything off
    the body keep their pixels."""
    from engine.synthesis.motion import Motion, ReferenceSample, fill_unseen_body
    B, h, w = 1, 48, 48
    body = torch.zeros(B, h, w, dtype=torch.bool)
    body[0, 8:40, 8:40] = True                                  # a torso
    visible = torch.ones(B, h, w, dtype=torch.bool)
    visible[0, 16:32, 16:32] = False                            # where a hand covered it in the key
    visible[0, 36:38, 10:30] = False                            # a sliver two pixels thin
    frames = torch.zeros(B, 3, h, w)
    frames[:, 0] = 200.0                                        # red background
    frames[:, 0][body] = 0.0
    frames[:, 2][body] = 180.0                                  # a blue torso
    frames[:, 1][~visible] = 220.0                              # the hand's colour, drawn by the warp
    mo = Motion(grid=identity_grid(h, w).expand(B, -1, -1, -1), visible=visible, body=body, weight=body.float())
    out = fill_unseen_body(frames, mo, None, radius=2)
    region = out[0, :, 16:32, 16:32]
    assert float(region[1].max()) < 1 and float(region[0].max()) < 1 and float(region[2].min()) > 179
    changed = (out != frames).any(1)[0]
    assert bool(changed[16:32, 16:32].all()) and int(changed.sum()) == 16 * 16
    assert torch.equal(out[0, :, 36:38, 10:30], frames[0, :, 36:38, 10:30])
    # a pixel another key saw keeps what the fusion drew there; one it did not see (weight 0) is filled
    seen_px, unseen_px = 24 * w + 24, 24 * w + 20
    refs = [ReferenceSample(idx=torch.tensor([seen_px, unseen_px]), colour=torch.zeros(2, 3),
                            weight=torch.tensor([1.0, 0.0]))]
    out2 = fill_unseen_body(frames, mo, refs, radius=2)
    assert torch.equal(out2[0, :, 24, 24], frames[0, :, 24, 24]) and float(out2[0, 1, 24, 20]) < 40
    whole = Motion(grid=mo.grid, visible=torch.ones_like(visible), body=body, weight=mo.weight)
    assert fill_unseen_body(frames, whole, None, radius=2) is frames
