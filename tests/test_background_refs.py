"""The background from other key pictures (#13): disocclusions filled from the keys that saw that background,
mapped through the camera group across groups (engine/synthesis/decoder.py ``_background``,
engine/synthesis/motion.py ``background_sample``)."""
from dataclasses import replace
from fractions import Fraction

import numpy as np
import pytest
import torch

from engine.analysis.encoder import relative_camera
from engine.codec.bitstream import BODY_MODEL_IDS, Bitstream, GroupOfPictures, KeyPicture
from engine.codec.semantics import KeySemantics, QuantSpec
from engine.synthesis.decoder import Decoder
from engine.synthesis.motion import BACKGROUND_MARGIN, compose_cameras, dilate, invert_camera
from tests.test_decoder import BoxBody

S = 64


def test_camera_maps_compose_and_invert_like_the_camera_group():
    from engine.analysis.camera_motion import camera_affine
    A = lambda c: np.vstack([camera_affine(np.asarray(c), 100, 80), [0, 0, 1]])   # noqa: E731
    a, b = (0.03, -0.02, 0.1), (-0.01, 0.05, -0.04)
    assert np.allclose(A(compose_cameras(a, b)), A(b) @ A(a))
    assert np.allclose(compose_cameras(a, invert_camera(a)), 0)
    # relative_camera (the encoder's) is the composition with the key's inverse
    cams = np.array([[0.0, 0.0, 0.0], [0.02, -0.01, 0.05], [0.05, 0.01, 0.1]])
    assert np.allclose(relative_camera(cams, 1)[2], compose_cameras(invert_camera(cams[1]), cams[2]))


def _texture(pan_px: int) -> np.ndarray:
    """A noisy background (no smooth fill can guess it) seen through a camera panned by ``pan_px`` px."""
    rng = np.random.default_rng(5)
    big = rng.integers(0, 256, (S, S + 16, 3)).astype(np.uint8)
    return big[:, 8 - pan_px:8 - pan_px + S].copy()


def _clip(camera: bool, key1_x: float):
    """Two groups of 8 frames, keys at 0 and 8. The person (a box body) stands at the left in key 0 and at
    ``key1_x`` in key 8; frames 4 to 6 show it at the right, uncovering the background key 0 hid.
    The camera pans right: frames 0-3 at 0 px, 4-6 at 3 px, 7-11 at 2 px, 12-15 at 5 px (absolute), so
    groups meet where the camera does not move (the decoder's approximation is then exact); without the
    camera group the camera stands still."""
    pan = np.array([0, 0, 0, 0, 3, 3, 3, 2, 2, 2, 2, 2, 5, 5, 5, 5], float) * camera     # a still camera without
    xs = np.where((np.arange(16) >= 4) & (np.arange(16) <= 6), 0.72, 0.3)
    xs[8:] = key1_x
    rows = np.zeros((16, 34 if camera else 31))
    rows[:, 24:27] = (0.0, 0.0, 5.0)
    rows[:, 27:31] = np.stack([xs, np.full(16, 0.5), np.full(16, 0.35), np.full(16, 0.6)], 1)
    cams = np.stack([pan / S, np.zeros(16), np.zeros(16)], 1)
    pictures = {k: _texture(int(pan[k])) for k in (0, 8)}
    pictures[0][16:48, 8:32] = (250, 0, 0)            # the person in key 0 (red: a fill showing it is wrong)
    gops = []
    for j, (s, k) in enumerate(((0, 0), (8, 8))):
        g = rows[s:s + 8].copy()
        if camera:
            g[:, 31:34] = relative_camera(cams, k)[s:s + 8]
        key = KeySemantics(body_pose=np.zeros((21, 3)), betas=None, rot=g[k - s, 21:24], trans=g[k - s, 24:27],
                           loc=g[k - s, 27:31], focal=np.array([5.0, 5.0]))
        gops.append(GroupOfPictures(start=s, key_picture=KeyPicture(0, 37, S, S, b"x"), key=key, frames=g,
                                    refs=(1 - j,)))
    bs = Bitstream(width=S, height=S, fps=Fraction(25), quant=QuantSpec(), body_model=BODY_MODEL_IDS["anny"],
                   has_camera=camera, gops=gops, max_refs=2)
    return bs, pictures, pan


def _decode(bs, pictures, frame):
    dec = Decoder(bs, device="cpu", body_model=BoxBody(), pictures=lambda g: pictures[g.key_frame])
    g, j = bs.gop_of(frame)
    fa = dec.analyse(g, g.frames[j:j + 1], [frame])
    return dec, fa, dec.render(fa)[0]


@pytest.mark.parametrize("camera", [False, True])
def test_uncovered_background_comes_from_the_key_that_saw_it(camera):
    torch.set_num_threads(1)
    bs, pictures, pan = _clip(camera, key1_x=0.72)
    dec, fa, out = _decode(bs, pictures, 5)
    hole = fa.motion.hole[0].numpy()
    assert hole.sum() > 100                                   # key 0's person stood there: a disocclusion
    truth = _texture(int(pan[5]))                             # what the camera saw behind the person in frame 5
    seen = np.zeros(S * S, bool)
    seen[fa.background[0].idx[fa.background[0].weight > 0].numpy()] = True
    seen = seen.reshape(S, S)
    # key 8 saw nearly all of it; the rim within BACKGROUND_MARGIN of the frame's mesh keeps the smooth fill
    rim = dilate(fa.raster.mask, max(1, round(BACKGROUND_MARGIN * S)))[0].numpy()
    assert seen[hole & ~rim].mean() > 0.9 and not (seen & ~(hole & ~rim)).any()
    err = np.abs(out[seen].astype(int) - truth[seen].astype(int)).max(-1)
    assert err.max() <= 1                                     # the very pixels, through key 8 and the camera
    if camera:                                                # key 8 -> key 0: the camera moved 2 px back
        assert np.allclose(dec.key_camera(1, 0), (-2 / S, 0, 0))
    # without the other key (version 1), the hole is a smooth guess: far from the noisy truth
    single = replace(bs, gops=[replace(g, refs=()) for g in bs.gops], max_refs=1)
    _, _, one = _decode(single, pictures, 5)
    assert np.abs(one[hole].astype(int) - truth[hole].astype(int)).mean() > 30
    assert np.array_equal(one[~hole], out[~hole])             # nothing else changes


def test_a_key_whose_person_hid_the_same_background_does_not_fill_it():
    torch.set_num_threads(1)
    bs, pictures, _ = _clip(False, key1_x=0.3)                # key 8's person stands where key 0's did
    dec, fa, out = _decode(bs, pictures, 5)
    (bg,) = fa.background
    # a still camera: the background at a pixel is the same pixel of key 8, used only off key 8's person
    person = dec.key_state(bs.gops[1]).person[0, 0].reshape(-1)
    assert torch.equal(bg.weight > 0, person[bg.idx] < 0.5)
    # the hole lies mostly behind key 8's person too: little of it is taken from key 8 (most when it moved away)
    _, far, _ = _decode(_clip(False, key1_x=0.72)[0], pictures, 5)
    assert int((bg.weight > 0).sum()) < 0.5 * int((far.background[0].weight > 0).sum())


def test_the_learned_stage_keeps_the_background_another_key_saw(monkeypatch):
    """The learned decoder starts from the analytic frame with the other keys' background (an untrained network
    is that frame), and the network is not asked to redraw what another key saw."""
    from engine.synthesis.networks import Generator
    from engine.synthesis.refiner import LearnedRefiner
    from tests.test_learned import TINY
    torch.set_num_threads(1)
    bs, pictures, _ = _clip(False, key1_x=0.72)
    ref = LearnedRefiner(Generator(TINY))
    holes = []
    real = ref.refine
    monkeypatch.setattr(ref, "refine", lambda *a: holes.append(a[8]) or real(*a))
    dec, fa, out = _decode(bs, pictures, 5)
    learned = Decoder(bs, device="cpu", body_model=BoxBody(), pictures=lambda g: pictures[g.key_frame], refiner=ref)
    got = learned.render(learned.analyse(bs.gops[0], bs.gops[0].frames[5:6], [5]))[0]
    assert np.array_equal(got, out)
    seen = np.zeros(S * S, bool)
    seen[fa.background[0].idx[fa.background[0].weight > 0].numpy()] = True
    assert seen.sum() > 100 and not (holes[0][0].numpy().reshape(-1) & seen).any()
