"""Global background motion relative to the key frame: the optional ``camera`` group.

Per frame t, three numbers (semantics slice 31:34):

    camera = (pan_x, pan_y, zoom)

CONVENTION (the decoder uses exactly this; ``camera_affine`` is the reference):
coordinates are pixel indices of the working frame (x right, y down, the centre
of the top-left pixel at (0, 0)); c = ((W - 1) / 2, (H - 1) / 2) is the frame
centre. A background point seen at p_key in the KEY frame is seen in frame t at

    p_t = exp(zoom) * (p_key - c) + c + (pan_x * W, pan_y * H)

so pan_x > 0 means the background moved right in the picture (the camera
panned left), zoom > 0 means it grew (the camera zoomed in). The key frame's
own camera is (0, 0, 0). ``apply_camera_motion(key_image, camera)`` returns the
key frame's background as frame t shows it (out(p_t) = key(p_key), bilinear,
borders replicated); composing frames is not needed because every frame is
relative to its GOP's key frame.

Estimation: corners on the key frame's background (the person masked out with
MediaPipe's segmentation, dilated), tracked key -> t with pyramidal
Lucas-Kanade started from the previous frame's estimate, points landing on the
person in frame t dropped, then a RANSAC + least-squares fit of the 3-parameter
model (no rotation), and light temporal smoothing.
"""
from __future__ import annotations

import numpy as np

CAMERA_DIMS = 3


def camera_affine(camera, width: int, height: int) -> np.ndarray:
    """2 x 3 matrix A with p_t = A @ [p_key, 1] (pixel-index coordinates)."""
    pan_x, pan_y, zoom = (float(v) for v in np.asarray(camera, float).reshape(3))
    s = float(np.exp(zoom))
    cx, cy = (width - 1) / 2.0, (height - 1) / 2.0
    return np.array([[s, 0.0, (1 - s) * cx + pan_x * width],
                     [0.0, s, (1 - s) * cy + pan_y * height]])


def apply_camera_motion(image: np.ndarray, camera, border: str = "replicate") -> np.ndarray:
    """Warp the KEY frame ``image`` (H x W x C or H x W) to where frame t's camera sees it."""
    import cv2
    h, w = image.shape[:2]
    A = camera_affine(camera, w, h)
    mode = cv2.BORDER_REPLICATE if border == "replicate" else cv2.BORDER_CONSTANT
    return cv2.warpAffine(image, A, (w, h), flags=cv2.INTER_LINEAR, borderMode=mode)


def _person_mask(mask: np.ndarray | None, shape, dilate_px: int) -> np.ndarray:
    import cv2
    if mask is None:
        return np.zeros(shape, bool)
    m = (mask > 76).astype(np.uint8)
    if dilate_px > 0:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * dilate_px + 1, 2 * dilate_px + 1))
        m = cv2.dilate(m, k)
    return m.astype(bool)


def _fit_model(p0: np.ndarray, p1: np.ndarray, c: np.ndarray):
    """Least squares for p1 - c = s (p0 - c) + t: returns (s, tx, ty)."""
    a = p0 - c
    b = p1 - c
    am, bm = a.mean(0), b.mean(0)
    da, db = a - am, b - bm
    s = float((da * db).sum() / max((da * da).sum(), 1e-9))
    t = bm - s * am
    return s, float(t[0]), float(t[1])


def _robust_fit(p0, p1, c, thresh=1.5, iters=64, rng=None):
    """RANSAC over point pairs (vectorised), then least squares on the inliers."""
    rng = rng or np.random.default_rng(0)
    n = len(p0)
    i = rng.integers(0, n, iters)
    j = rng.integers(0, n, iters)
    a0, a1 = p0[i] - c, p0[j] - c
    b0, b1 = p1[i] - c, p1[j] - c
    da, db = a1 - a0, b1 - b0
    den = (da * da).sum(1)
    ok = den > 25.0                                   # pairs at least 5 px apart
    if not ok.any():
        return None, None
    s = (da * db).sum(1)[ok] / den[ok]
    t = ((b0 + b1) / 2)[ok] - s[:, None] * ((a0 + a1) / 2)[ok]
    pred = s[:, None, None] * (p0 - c)[None] + c + t[:, None, :]       # M x n x 2
    inl = ((pred - p1[None]) ** 2).sum(-1) < thresh ** 2
    best_in = inl[inl.sum(1).argmax()]
    if best_in.sum() < 6:
        return None, None
    for _ in range(2):
        s1, tx, ty = _fit_model(p0[best_in], p1[best_in], c)
        pred = s1 * (p0 - c) + c + (tx, ty)
        new_in = ((pred - p1) ** 2).sum(1) < thresh ** 2
        if new_in.sum() < 6:
            break
        best_in = new_in
    return _fit_model(p0[best_in], p1[best_in], c), best_in


def _smooth(a: np.ndarray, sigma: float) -> np.ndarray:
    r = int(3 * sigma)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    return np.convolve(np.pad(a, r, mode="edge"), k, mode="valid")


def _compose(b, a):
    """Similarity b after a (both (s, tx, ty) about the frame centre)."""
    return (b[0] * a[0], b[0] * a[1] + b[1], b[0] * a[2] + b[2])


def estimate_camera_motion(frames: np.ndarray, masks: np.ndarray | None = None, key_index: int = 0,
                           smooth_sigma: float = 1.0, max_corners: int = 300) -> np.ndarray:
    """Camera semantics N x 3 for ``frames`` (N x H x W x 3 uint8 RGB) relative to frame ``key_index``.

    masks: N x H x W person probability (uint8, 0..255) or None (then the whole
    frame is used and the robust fit has to reject the person's motion).
    Each frame is first estimated by chaining the motion from its neighbour
    (fresh background corners there, tracked to this frame) onto the
    neighbour's estimate, then refined by tracking the key frame's corners
    directly when enough of them are still in view and agree (no drift).
    Frames where nothing tracks keep the neighbour's estimate.
    """
    import cv2
    N, H, W = frames.shape[:3]
    out = np.zeros((N, 3))
    if N == 0:
        return out
    gray = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames]
    c = np.array([(W - 1) / 2.0, (H - 1) / 2.0])
    dil = max(4, int(round(0.03 * max(W, H))))
    person = {}

    def person_mask(t):
        if t not in person:
            person[t] = _person_mask(None if masks is None else masks[t], (H, W), dil)
        return person[t]

    def corners(t):
        allowed = (~person_mask(t)).astype(np.uint8) * 255
        pts = cv2.goodFeaturesToTrack(gray[t], maxCorners=max_corners, qualityLevel=0.01,
                                      minDistance=max(4, W // 64), mask=allowed, blockSize=7)
        return None if pts is None else pts.reshape(-1, 2).astype(np.float32)

    lk = dict(winSize=(21, 21), maxLevel=3, criteria=(cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 30, 0.01))
    rng = np.random.default_rng(0)

    def track(src, dst, p0, guess_model):
        """Robust model src -> dst from points p0 of src; (model, n_inliers, n_tracked)."""
        if p0 is None or len(p0) < 8:
            return None, 0, 0
        s_, tx, ty = guess_model
        guess = (s_ * (p0 - c) + c + (tx, ty)).astype(np.float32)
        p1, st, _ = cv2.calcOpticalFlowPyrLK(gray[src], gray[dst], p0, guess.copy(),
                                             flags=cv2.OPTFLOW_USE_INITIAL_FLOW, **lk)
        p1 = p1.reshape(-1, 2)
        ok = (st.reshape(-1) == 1) & (p1[:, 0] >= 0) & (p1[:, 0] < W - 1) & (p1[:, 1] >= 0) & (p1[:, 1] < H - 1)
        if masks is not None and ok.any():
            xi = np.clip(p1[:, 0].round().astype(int), 0, W - 1)
            yi = np.clip(p1[:, 1].round().astype(int), 0, H - 1)
            ok &= ~person_mask(dst)[yi, xi]
        if ok.sum() < 8:
            return None, 0, int(ok.sum())
        model, inl = _robust_fit(p0[ok].astype(np.float64), p1[ok].astype(np.float64), c, rng=rng)
        return model, (0 if inl is None else int(inl.sum())), int(ok.sum())

    key_pts = corners(key_index)
    ident = (1.0, 0.0, 0.0)
    # half-resolution gray images and background masks for the photometric check
    small = [cv2.resize(g, (W // 2, H // 2), interpolation=cv2.INTER_AREA).astype(np.float32) for g in gray]
    key_bg_small = cv2.resize((~person_mask(key_index)).astype(np.uint8), (W // 2, H // 2),
                              interpolation=cv2.INTER_NEAREST)
    cur = {}

    def photometric_cost(model):
        t = cur["t"]
        s_, tx, ty = model
        A = camera_affine((tx / W, ty / H, np.log(max(s_, 1e-3))), W // 2, H // 2)
        warped = cv2.warpAffine(small[key_index], A, (W // 2, H // 2), flags=cv2.INTER_LINEAR,
                                borderMode=cv2.BORDER_CONSTANT, borderValue=-1)
        wbg = cv2.warpAffine(key_bg_small, A, (W // 2, H // 2), flags=cv2.INTER_NEAREST)
        if "bg" not in cur:
            cur["bg"] = cv2.resize((~person_mask(t)).astype(np.uint8), (W // 2, H // 2),
                                   interpolation=cv2.INTER_NEAREST).astype(bool)
        m = cur["bg"] & (wbg > 0) & (warped >= 0)
        if m.sum() < 0.05 * m.size:
            return np.inf
        return float(np.abs(warped - small[t])[m].mean())
    est = {key_index: ident}
    order = list(range(key_index + 1, N)) + list(range(key_index - 1, -1, -1))
    nb_pts = {}
    for t in order:
        cur.clear()
        cur["t"] = t
        ref = t - 1 if t > key_index else t + 1
        n_key = 0 if key_pts is None else len(key_pts)
        # direct key -> t from the neighbour's estimate (no drift); chain through the
        # neighbour (fresh corners there) only when too few key corners agree
        direct, n_dir, _ = track(key_index, t, key_pts, est[ref])
        if direct is not None and n_dir >= max(15, 0.25 * n_key):
            cand = direct
        else:
            if ref not in nb_pts:
                nb_pts[ref] = corners(ref)
            step, _, _ = track(ref, t, nb_pts[ref], ident)
            chained = _compose(step, est[ref]) if step is not None else est[ref]
            direct, n_dir, _ = track(key_index, t, key_pts, chained)
            cand = direct if direct is not None and n_dir >= max(15, 0.25 * n_key) else chained
        # photometric check on the background: keep whichever of the estimate and
        # "no motion" explains frame t better (flat, textureless backgrounds)
        if cand != ident and photometric_cost(cand) >= photometric_cost(ident):
            cand = ident
        est[t] = cand
        nb_pts.pop(ref - 1 if t > key_index else ref + 1, None)
        s_, tx, ty = est[t]
        out[t] = (tx / W, ty / H, np.log(max(s_, 1e-3)))
    if smooth_sigma > 0 and N > 2:
        for d in range(3):
            out[:, d] = _smooth(out[:, d], smooth_sigma)
        out[key_index] = 0.0
    return out


def alignment_error(frames: np.ndarray, camera: np.ndarray, masks: np.ndarray | None = None,
                    key_index: int = 0) -> tuple[float, float]:
    """Mean absolute background pixel difference to the key frame (0..255 scale), without and
    with compensation by ``camera``; over pixels that are background in both frames and
    inside the warped key frame."""
    N, H, W = frames.shape[:3]
    key = frames[key_index].astype(np.float32)
    dil = max(4, int(round(0.03 * max(W, H))))
    key_person = _person_mask(None if masks is None else masks[key_index], (H, W), dil)
    raw, comp = [], []
    ones = np.ones((H, W), np.float32)
    for t in range(N):
        if t == key_index:
            continue
        bg = ~_person_mask(None if masks is None else masks[t], (H, W), dil)
        warped_person = apply_camera_motion(key_person.astype(np.uint8), camera[t], border="constant").astype(bool)
        valid_c = apply_camera_motion(ones, camera[t], border="constant") > 0.99
        f = frames[t].astype(np.float32)
        m0 = bg & ~key_person
        m1 = bg & ~warped_person & valid_c
        if m0.any():
            raw.append(np.abs(f - key)[m0].mean())
        if m1.any():
            comp.append(np.abs(f - apply_camera_motion(key, camera[t]))[m1].mean())
    return (float(np.mean(raw)) if raw else 0.0, float(np.mean(comp)) if comp else 0.0)
