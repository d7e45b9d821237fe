"""Camera group: the documented convention and the estimate on synthetic pans / zooms."""
from __future__ import annotations

import numpy as np
import pytest

from engine.analysis.camera_motion import alignment_error, apply_camera_motion, camera_affine, estimate_camera_motion

cv2 = pytest.importorskip("cv2")


def _texture(size, seed=0):
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 255, (size // 8, size // 8, 3)).astype(np.uint8)
    img = cv2.resize(small, (size, size), interpolation=cv2.INTER_CUBIC)
    return cv2.GaussianBlur(img, (0, 0), 1.2)


def test_convention_maps_key_points_as_documented():
    W = H = 64
    key = np.zeros((H, W), np.float32)
    key[20, 10] = 1.0                                   # p_key = (x=10, y=20)
    cam = np.array([5 / W, -3 / H, 0.0])                 # background moves right 5 px, up 3 px
    out = apply_camera_motion(key, cam)
    y, x = np.unravel_index(out.argmax(), out.shape)
    assert (x, y) == (15, 17)
    # zoom about the centre c = (31.5, 31.5): p_t = s (p - c) + c
    s = 1.25
    A = camera_affine([0, 0, np.log(s)], W, H)
    p = A @ np.array([10.0, 20.0, 1.0])
    assert np.allclose(p, [31.5 + s * (10 - 31.5), 31.5 + s * (20 - 31.5)])
    assert np.allclose(camera_affine([0, 0, 0], W, H), [[1, 0, 0], [0, 1, 0]])


def _sequence(n=10, S=160, pan_px=(2.0, -1.0), zoom_per_frame=0.004, person=True):
    """Frames cropped from a large canvas: frame t sees the background moved by t*pan_px
    (pixels) and magnified by exp(t*zoom) about the frame centre; a moving disc plays
    the person (its mask is given)."""
    canvas = _texture(3 * S, seed=1)
    C = 1.5 * S - 0.5
    frames, masks, truth = [], [], []
    for t in range(n):
        s = np.exp(t * zoom_per_frame)
        tx, ty = t * pan_px[0], t * pan_px[1]
        # p_t = s (p_canvas - c_key) + c + (tx, ty) with the key frame crop centred on the canvas
        c = (S - 1) / 2
        A = np.array([[s, 0, c - s * C + tx], [0, s, c - s * C + ty]])
        f = cv2.warpAffine(canvas, A, (S, S), flags=cv2.INTER_LINEAR)
        m = np.zeros((S, S), np.uint8)
        if person:
            centre = (int(S * 0.5 + 6 * np.sin(t)), int(S * 0.55))
            cv2.circle(f, centre, S // 5, (255, 200, 180), -1)
            cv2.circle(m, centre, S // 5, 255, -1)
        frames.append(f)
        masks.append(m)
        truth.append([tx / S, ty / S, np.log(s)])
    return np.stack(frames), np.stack(masks), np.array(truth)


def test_estimate_recovers_pan_and_zoom_with_a_moving_person():
    frames, masks, truth = _sequence()
    S = frames.shape[1]
    cam = estimate_camera_motion(frames, masks, key_index=0, smooth_sigma=0)
    assert cam.shape == (len(frames), 3)
    assert np.allclose(cam[0], 0)
    assert np.abs(cam[:, :2] - truth[:, :2]).max() * S < 0.5            # < 0.5 px
    assert np.abs(cam[:, 2] - truth[:, 2]).max() < 0.004                # < 0.4 % scale
    raw, comp = alignment_error(frames, cam, masks)
    assert comp < 0.35 * raw


def test_estimate_with_key_in_the_middle_and_static_scene():
    frames, masks, truth = _sequence(n=7, pan_px=(-1.5, 0.5), zoom_per_frame=0.0)
    cam = estimate_camera_motion(frames, masks, key_index=3, smooth_sigma=0)
    rel = truth - truth[3]
    assert np.allclose(cam[3], 0)
    assert np.abs(cam[:, :2] - rel[:, :2]).max() * frames.shape[1] < 0.5
    # a static background gives (almost exactly) no motion
    still, m, _ = _sequence(n=5, pan_px=(0, 0), zoom_per_frame=0)
    cam = estimate_camera_motion(still, m)
    assert np.abs(cam).max() < 1e-3


def test_no_texture_means_no_motion():
    frames = np.full((4, 64, 64, 3), 90, np.uint8)
    cam = estimate_camera_motion(frames, None)
    assert np.array_equal(cam, np.zeros((4, 3)))
