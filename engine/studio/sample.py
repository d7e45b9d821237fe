"""Build assets/sample.ihvc: the studio's demo bitstream (``python -m engine.studio.sample``).

Key picture: the public-domain NASA portrait of astronaut Eileen Collins that
scikit-image ships (``skimage.data.astronaut()``), cropped around her to a
square and resized to 384 x 384, coded with VVC.

Key semantics are set by hand (no analysis needed): Anny's rest A-pose with the
arms lowered along the body, placed by solving for ``trans`` so that the head
and both shoulder joints project onto hand-picked points of the photo.

Inter frames: 100 frames at 25 fps of scripted smooth motion: a head turn
(left, right, back), her right arm raised sideways and lowered with the elbow
bending, and a small box move (the person drifts right and back).

    python -m engine.studio.sample [--out assets/sample.ihvc] [--frames 100] [--overlay out/sample_overlay.png]
"""
from __future__ import annotations

import argparse
import math
from fractions import Fraction
from pathlib import Path

import numpy as np

from engine.codec.bitstream import BODY_MODEL_IDS, Bitstream, GroupOfPictures
from engine.codec.semantics import BODY_JOINTS, FrameSemantics, KeySemantics, QuantSpec, semantic_names, snap
from engine.fileio import ASSETS

SIZE = 384
CROP = (0, 0, 448)                         # x0, y0, side in the 512 x 512 photo
FOCAL = np.array([5.0, 5.0])
LOC = np.array([0.5, 0.5, 1.0, 1.0])       # the crop is the whole frame
BETAS = np.array([-0.4, 0.0, 0.0, 0.0, 0.0, 0.0])   # Anny phenotypes - 0.5: female, otherwise average
# Target pixels (in the 384 x 384 picture) of the SMPL-X joints used to place the body.
TARGETS = {"head": (193.0, 105.0), "right_shoulder": (66.0, 246.0), "left_shoulder": (278.0, 246.0)}
DEG = math.pi / 180


def key_picture_rgb() -> np.ndarray:
    """The 384 x 384 RGB key picture (uint8)."""
    from skimage import data
    from skimage.transform import resize
    x0, y0, s = CROP
    img = data.astronaut()[y0:y0 + s, x0:x0 + s]
    return (resize(img, (SIZE, SIZE), anti_aliasing=True, preserve_range=True) + 0.5).clip(0, 255).astype(np.uint8)


def key_body_pose() -> np.ndarray:
    """21 x 3 axis-angle: Anny's A-pose with the arms lowered along the body, elbows slightly bent."""
    pose = np.zeros((21, 3))
    j = BODY_JOINTS.index
    pose[j("left_shoulder")] = (0.0, 0.0, -32 * DEG)     # +z lifts the left arm: lower it
    pose[j("right_shoulder")] = (0.0, 0.0, 32 * DEG)
    pose[j("left_elbow")] = (0.0, -12 * DEG, 0.0)
    pose[j("right_elbow")] = (0.0, 12 * DEG, 0.0)
    return pose


def fit_trans(model, body_pose: np.ndarray) -> np.ndarray:
    """trans (3,) placing the head and shoulder joints on TARGETS (least squares, rot = 0)."""
    import torch
    from scipy.optimize import least_squares

    from engine.synthesis.body import JOINT_NAMES
    from engine.synthesis.camera import project
    with torch.no_grad():
        joints = model.joints(torch.as_tensor(body_pose[None], dtype=torch.float32),
                              torch.as_tensor(BETAS[None], dtype=torch.float32))
    names = list(TARGETS)
    pts = joints[:, [JOINT_NAMES.index(n) for n in names]].double()
    target = np.array([TARGETS[n] for n in names])

    def residual(t):
        xy, _ = project(pts, torch.zeros(1, 3, dtype=torch.float64), torch.as_tensor(t[None]),
                        torch.as_tensor(LOC[None]), torch.as_tensor(FOCAL), SIZE, SIZE)
        return (xy[0].numpy() - target).ravel()

    return least_squares(residual, x0=np.array([0.0, -0.4, 4.0])).x


def script(key_row: np.ndarray, n: int, names) -> np.ndarray:
    """Per-frame semantics (n, D): smooth scripted motion around the key frame's own values."""
    t = np.arange(n) / 25.0
    rows = np.repeat(key_row[None], n, 0)
    col = {k: i for i, k in enumerate(names)}

    def bump(a, b):           # 0 before frame a, smooth rise to 1 at the middle, back to 0 at b
        x = np.clip((np.arange(n) - a) / max(b - a, 1), 0, 1)
        return np.sin(np.pi * x) ** 2

    # head turn: yaw left, right, back to centre over the first 60 frames, a little nod
    rows[:, col["head.y"]] += 28 * DEG * np.sin(2 * np.pi * np.clip(t / 2.4, 0, 1))
    rows[:, col["head.x"]] += 6 * DEG * bump(10, 70)
    # her right arm raised sideways (rotation about -z lifts the right arm), elbow bends
    rows[:, col["right_shoulder.z"]] -= 70 * DEG * bump(30, 90)
    rows[:, col["right_elbow.y"]] += 35 * DEG * bump(40, 90)
    # small box move: the person drifts right and a bit up, then back
    rows[:, col["loc.cx"]] += 0.03 * bump(20, 100)
    rows[:, col["loc.cy"]] -= 0.012 * bump(20, 100)
    return rows


def build(n_frames: int = 100, qp: int = 32, body_model=None) -> Bitstream:
    from engine.synthesis.body import load_body_model
    from engine.codec.keypicture import encode_key_picture
    model = body_model or load_body_model("anny")
    pose = key_body_pose()
    trans = fit_trans(model, pose)
    quant = QuantSpec()
    names = semantic_names(True)
    steps = quant.steps(True)
    key = KeySemantics(body_pose=pose, betas=BETAS.copy(), rot=np.zeros(3), trans=trans, loc=LOC.copy(),
                       focal=FOCAL.copy(), body_model=BODY_MODEL_IDS["anny"])
    # The key is coded on the grid too: snap it so frame 0 equals the key exactly.
    key_row = snap(key.frame(camera=True).to_array(), steps)
    key = key.with_frame(FrameSemantics(pose=key_row[:21].reshape(7, 3), rot=key_row[21:24],
                                           trans=key_row[24:27], loc=key_row[27:31]))
    frames = snap(script(key_row, n_frames, names), steps)
    kp = encode_key_picture(key_picture_rgb(), codec="vvc", qp=qp)
    gop = GroupOfPictures(0, kp, key, frames)
    return Bitstream(SIZE, SIZE, Fraction(25), quant, BODY_MODEL_IDS["anny"], True, [gop])


def overlay(bs: Bitstream, frame: int = 0, body_model=None, alpha: float = 0.5) -> np.ndarray:
    """The key picture with the frame's body mesh rendered over it (a visual check of the placement)."""
    import torch

    from engine.synthesis.body import load_body_model
    from engine.codec.keypicture import decode_key_picture
    from engine.synthesis.render import overlay as blend
    from engine.synthesis.render import render_mesh
    model = body_model or load_body_model("anny")
    g, _ = bs.gop_of(frame)
    full = g.key.with_frame(bs.frame(frame))
    with torch.no_grad():
        v = model.forward(torch.as_tensor(full.body_pose[None], dtype=torch.float32),
                          torch.as_tensor(np.asarray(g.key.betas)[None], dtype=torch.float32)).vertices[0]
    rgba = render_mesh(v.numpy(), model.faces, full.rot, full.trans, full.loc, g.key.focal, bs.width, bs.height,
                       alpha=alpha)
    return blend(decode_key_picture(g.key_picture), rgba)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.studio.sample", description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ASSETS / "sample.ihvc"))
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--qp", type=int, default=32)
    ap.add_argument("--overlay", default=None, help="also write a PNG of frame 0 with the mesh drawn on it")
    args = ap.parse_args(argv)
    from engine.codec import container
    bs = build(args.frames, args.qp)
    n = container.write(bs, args.out)
    print(f"wrote {args.out}: {bs.n_frames} frames, {bs.width}x{bs.height}, {n} bytes, trans={bs.gops[0].key.trans}")
    if args.overlay:
        from PIL import Image
        Path(args.overlay).parent.mkdir(parents=True, exist_ok=True)
        img = np.concatenate([overlay(bs, 0), overlay(bs, min(60, bs.n_frames - 1))], 1)
        Image.fromarray(img).save(args.overlay)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
