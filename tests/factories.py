"""Test builders: a bitstream from a real picture (a TED still when ../shared is present)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import numpy as np

from engine.codec.bitstream import BODY_MODEL_IDS, Bitstream, GroupOfPictures
from engine.codec.keypicture import encode_key_picture
from engine.codec.semantics import KeySemantics, QuantSpec, snap

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def real_picture(size: int = 128) -> np.ndarray:
    """A real still (resized) when ../shared/data is there, otherwise a generated image."""
    still = SHARED_DATA / "stills" / "ted_still_3.png"
    if still.exists():
        import cv2
        rgb = cv2.cvtColor(cv2.imread(str(still)), cv2.COLOR_BGR2RGB)
        return cv2.resize(rgb, (size, size), interpolation=cv2.INTER_AREA)
    return generated_picture(size)


def generated_picture(size: int = 128) -> np.ndarray:
    """A smooth synthetic picture with a face-like blob (licence-clean, the same on every machine)."""
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.5 + 0.5 * np.sin(6 * x), 0.5 + 0.5 * np.cos(5 * y), (x * y) ** 0.5], -1)
    img[(x - 0.5) ** 2 + (y - 0.45) ** 2 < 0.04] = (0.9, 0.7, 0.6)    # a face-like blob
    return (img * 255).astype(np.uint8)


def smooth_semantics(n: int, camera: bool, seed: int = 0) -> np.ndarray:
    """Smooth synthetic motion (N, 31 or 34): sinusoids plus a slow random walk."""
    rng = np.random.default_rng(seed)
    d = 34 if camera else 31
    t = np.arange(n)[:, None]
    base = np.r_[np.zeros(21), [0.0, 0.1, 0.0], [0.0, 0.2, 5.0], [0.5, 0.55, 0.7, 0.8], np.zeros(3)][:d]
    amp = np.r_[np.full(21, 0.3), np.full(3, 0.1), np.full(3, 0.03), np.full(4, 0.02), np.full(3, 0.01)][:d]
    wave = amp * np.sin(2 * np.pi * t * rng.uniform(0.005, 0.03, d) + rng.uniform(0, 6, d))
    walk = np.cumsum(rng.normal(0, 1, (n, d)) * amp * 0.01, 0)
    return base + wave + walk


def make_bitstream(n_frames: int = 30, gop: int | None = None, camera: bool = True, codec: str = "hevc",
                   qp: int = 37, size: int = 128, seed: int = 0, picture=real_picture) -> Bitstream:
    """A decodable Bitstream: smooth synthetic semantics, key pictures coded from ``picture(size)``."""
    quant = QuantSpec()
    bs = Bitstream(width=size, height=size, fps=Fraction(25), quant=quant,
                   body_model=BODY_MODEL_IDS["anny"], has_camera=camera)
    values = snap(smooth_semantics(n_frames, camera, seed), bs.steps)
    gop = gop or n_frames
    rng = np.random.default_rng(seed + 1)
    for start in range(0, n_frames, gop):
        frames = values[start:start + gop]
        if camera:
            frames[0, 31:] = 0.0        # camera rows are relative to the group's key, as the encoder writes them
        pose = np.zeros((21, 3))
        pose[:14] = rng.normal(0, 0.1, (14, 3))
        pose[14:] = frames[0, :21].reshape(7, 3)
        key = KeySemantics(body_pose=pose, betas=rng.normal(0, 1, 10), rot=frames[0, 21:24],
                           trans=frames[0, 24:27], loc=frames[0, 27:31], focal=np.array([5.0, 5.0]))
        kp = encode_key_picture(picture(size), codec, qp)
        bs.gops.append(GroupOfPictures(start=start, key_picture=kp, key=key, frames=frames))
    return bs
