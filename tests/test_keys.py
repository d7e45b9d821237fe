"""Key pictures chosen by content (engine/analysis/keys.py) and the multi-reference bitstream (format 2)."""
from dataclasses import replace

import numpy as np
import pytest

import engine.analysis.keys as K
from engine.analysis.encoder import relative_camera
from engine.codec import container
from tests.factories import generated_picture, make_bitstream


def test_groups_references_and_affected_frames():
    assert K.group_starts([5, 20, 40], 50) == [0, 13, 31]          # each frame to its nearest key
    assert K.uniform_keys(3, 30) == [5, 15, 25]
    assert K.reference_lists(4, 4) == [(1,), (2, 0), (3, 1, 0), (2, 1, 0)]   # the next key, then the previous ones
    assert K.reference_lists(3, 1) == [(), (), ()]
    keys = [5, 20, 40, 60, 80, 95, 110]
    # the key at 40 serves its group, the one before (next key), the two after (previous keys) and the
    # last one (which, having no next key, draws from three previous ones)
    assert K.affected_frames(keys, 40, 120, 4) == range(13, 88)
    assert K.affected_frames(keys[:-1], 40, 100, 4) == range(13, 100)
    assert K.affected_frames(keys, 40, 120, 1) == range(13, 51)


def test_group_boundaries_go_where_the_frames_are_drawn_best(monkeypatch):
    keys = [5, 20, 40]
    after, before = np.zeros(50), np.zeros(50)
    after[6:20] = np.r_[np.full(10, 1.0), np.full(4, 9.0)]     # 6..15 drawn well from key 5, 16..19 badly
    before[6:20] = 4.0
    after[21:40] = before[21:40] = 2.0                           # a tie: the midpoint
    assert K.group_starts(keys, 50) == [0, 13, 31]
    assert K.best_group_starts(keys, after, before) == [0, 16, 31]
    # choose_group_starts: a draft decode with every frame between two keys drawn from the key before it,
    # one from the key after it; its choice is the split with the least error a frame by frame decode gives
    pose = 3 * np.sin(np.arange(50) / 5.0) + np.arange(50) / 10   # a frame is drawn the worse the further its pose

    class Bs:
        def __init__(self, starts):
            self.starts, self.n_frames = starts, 50

    def own_key(starts, i):
        return keys[int(np.searchsorted(starts, i, side="right")) - 1]
    seen = []

    def score(bs, pool, frames=None):
        seen.append((list(bs.starts), sorted(frames)))
        err = np.zeros(50)
        for i in frames:
            err[i] = (pose[i] - pose[own_key(bs.starts, i)]) ** 2
        return err
    monkeypatch.setattr(K, "_score", score)
    starts = K.choose_group_starts(np.zeros((50, 8, 8, 3), np.uint8), Bs, keys, pool=object())   # _score's stand-in
    even = [i for i in range(6, 40) if i % 2 == 0 and i != 20]     # between the keys, every second frame
    assert seen == [([0, 20, 40], even), ([0, 6, 21], even)]      # decoded; the rest interpolated

    def total(st):
        return sum((pose[i] - pose[own_key(st, i)]) ** 2 for i in range(50))
    every = [[0, s1, s2] for s1 in range(6, 21) for s2 in range(21, 41)]
    assert total(starts) <= 1.01 * min(total(st) for st in every)
    assert total(starts) < 0.9 * total(K.group_starts(keys, 50))
    assert K.choose_group_starts(np.zeros((50, 8, 8, 3), np.uint8), Bs, [7]) == [0]


def test_key_qp_follows_the_frames_a_key_serves():
    # groups of 40, 20, 20, 20 frames (mean 25): 3 log2(25/40) = -2.03, 3 log2(25/20) = +0.97
    assert K.key_qp_offsets([0, 40, 60, 80], 100) == [-2, 1, 1, 1]
    assert K.key_qp_offsets([0, 25, 50, 75], 100) == [0, 0, 0, 0]          # equal groups: one QP
    assert K.key_qp_offsets([0], 100) == [0]
    # bounded: a key serving one frame of 100 is not made 19 QPs coarser
    assert K.key_qp_offsets([0, 1], 100) == [K.MAX_QP_OFFSET, -K.MAX_QP_OFFSET]


def test_relative_camera_composes_with_the_key():
    cams = np.array([[0.0, 0.0, 0.0], [0.02, -0.01, 0.05], [0.05, 0.01, 0.1]])
    rel = relative_camera(cams, 1)
    assert np.allclose(rel[1], 0)
    # a background point seen at p_1 in frame 1 lands where the global model puts it in frame 2
    from engine.analysis.camera_motion import camera_affine
    A = lambda c: np.vstack([camera_affine(c, 100, 80), [0, 0, 1]])   # noqa: E731
    p0 = np.array([30.0, 20.0, 1.0])
    p1, p2 = A(cams[1]) @ p0, A(cams[2]) @ p0
    assert np.allclose(A(rel[2]) @ p1, p2)


def _fake_clip(monkeypatch, best: int, n: int = 60):
    """choose_keys on a stub: key pictures cost 100 B each, and the draft error of a frame is its distance
    to the nearest key, a key the better the nearer it is to frame ``best`` (content that helps its
    neighbours: a pose that shows what they need)."""
    frames = np.zeros((n, 8, 8, 3), np.uint8)

    class Bs:
        def __init__(self, keys):
            self.keys, self.n_frames = keys, n

    def build(keys, placeholder=None):
        return Bs(list(keys))
    monkeypatch.setattr(container, "to_bytes", lambda bs: b"x" * (100 * len(bs.keys) + 50))

    def score(bs, pool, frames=None):
        idx = range(n) if frames is None else frames
        err = np.zeros(n)
        for i in idx:
            err[i] = min(abs(i - k) * (0.1 + 0.9 * min(1.0, abs(k - best) / 10)) for k in bs.keys) * 1e4 + 1
        return err
    _stub_score(monkeypatch, score)
    return frames, build, (lambda k: type("P", (), {"payload": b"p" * 100})())


def _stub_score(monkeypatch, score):
    """The draft decoder replaced by ``score(bs, pool, frames)``, for one placement or several at once."""
    monkeypatch.setattr(K, "_score_many", lambda items, pool: [score(bs, pool, frames) for bs, frames in items])


def test_rate_target_takes_as_many_keys_as_fit_and_moves_them_to_the_content(monkeypatch):
    frames, build, picture = _fake_clip(monkeypatch, best=14)
    budget_bytes = 3 * 100 + 50                       # three keys fit, not four
    rate = budget_bytes * 8 / 1000 * 25 / len(frames)
    keys, trials = K.choose_keys(frames, build, picture, rate_kbps=rate)
    assert len(keys) == 3 and len(container.to_bytes(build(keys))) <= budget_bytes
    assert all(t.bytes is not None for t in trials if list(t.keys) == K.uniform_keys(len(t.keys), len(frames)))
    assert any(t.bytes is None for t in trials)                # the moves: judged by their error alone
    assert min(abs(k - 14) for k in keys) <= 1       # moved from the even spread (10, 30, 50) to the good frame
    assert keys == sorted(keys) and min(np.diff(keys)) >= K.MIN_SPACING


def test_lambda_picks_the_count_with_least_cost(monkeypatch):
    frames, build, picture = _fake_clip(monkeypatch, best=-100)
    cheap, _ = K.choose_keys(frames, build, picture, lam=1e-3)      # bits are nearly free: many keys
    dear, _ = K.choose_keys(frames, build, picture, lam=1e6)        # bits are dear: one key
    assert len(dear) == 1 and len(cheap) > 5


def test_the_count_search_finds_the_least_cost_count_in_fewer_drafts(monkeypatch):
    frames, build, picture = _fake_clip(monkeypatch, best=-100)
    n = len(frames)
    score, wants = K._score, []
    for lam in (2000, 700, 300, 150, 80):
        def cost(c):
            keys = K.uniform_keys(c, n)
            return score(build(keys), None).sum() + lam * 8 * (100 * len(keys) + 50)
        every = [cost(c) for c in range(1, n // K.MIN_SPACING + 1)]
        want = 1 + int(np.argmin(every))
        keys, trials = K.choose_keys(frames, build, picture, lam=lam)
        counted = {len(t.keys) for t in trials if list(t.keys) == K.uniform_keys(len(t.keys), n)}
        assert len(keys) == want
        # trying every count up to three past the best took want + 3 drafts; every second one, about half
        assert len(counted) <= want // 2 + 6 and (want < 8 or len(counted) < want + 3)
        wants.append(want)
    assert max(wants) >= 8


@pytest.mark.parametrize("best", [3, 22, 47, 58])
def test_one_key_goes_where_the_draft_decoder_draws_the_clip_best(monkeypatch, best):
    """``count=1`` (``encode --keys one``): the one key is not the first frame but the frame whose pose
    serves the clip best, found among ONE_KEY_CANDIDATES frames and then moved, whatever the rate."""
    frames, build, picture = _fake_clip(monkeypatch, best=best)
    n = len(frames)
    for kw in (dict(lam=1e-3), dict(rate_kbps=1e3)):           # many keys would be cheap: still one
        keys, trials = K.choose_keys(frames, build, picture, count=1, **kw)
        assert len(keys) == 1 and abs(keys[0] - best) <= 3
        assert all(len(t.keys) == 1 for t in trials)
        first = K._score(build([0]), None).sum()
        assert next(t.sse for t in trials if t.kept) < first
    three, _ = K.choose_keys(frames, build, picture, count=3, lam=1e6)      # a count given: that many, moved
    assert len(three) == 3 and min(abs(k - best) for k in three) <= 3


def test_the_count_search_looks_past_a_plateau(monkeypatch):
    # ubc_2: the draft error stays high until enough keys catch a person turning; trying every count to
    # three past the best stopped at one key there. Here the error is flat up to four keys, then falls.
    frames, build, picture = _fake_clip(monkeypatch, best=-100)
    n = len(frames)

    def score(bs, pool, frames=None):
        idx = range(n) if frames is None else frames
        err = np.zeros(n)
        err[list(idx)] = 1e6 if len(bs.keys) < 5 else 1e3
        return err
    _stub_score(monkeypatch, score)
    keys, _ = K.choose_keys(frames, build, picture, lam=10.0)
    assert len(keys) == 5                         # the first count past the plateau: bits cost the rest


def test_version_2_round_trip_and_version_1_unchanged():
    bs = make_bitstream(n_frames=24, gop=8, size=64, picture=generated_picture)
    v1 = container.to_bytes(bs, version=1)
    assert v1[4] == 1                                  # nothing of version 2 used: version 1 can hold it
    gops = [replace(g, refs=r, key_offset=o) for g, r, o in zip(bs.gops, K.reference_lists(3, 4), (0, 3, 7))]
    v2bs = replace(bs, gops=gops, max_refs=4, sizes={})
    data = container.to_bytes(v2bs, version=2)
    assert data[4] == 2
    back = container.from_bytes(data)
    assert back.max_refs == 4 and [g.refs for g in back.gops] == [(1,), (2, 0), (1, 0)]
    assert back.key_frames == [0, 11, 23] and np.allclose(back.semantics(), bs.semantics())
    for a, b in zip(back.gops, container.from_bytes(v1).gops):
        assert np.allclose(a.key.body_pose, b.key.body_pose) and a.key_picture.payload == b.key_picture.payload
    assert container.to_bytes(back, version=2) == data and back.version == 2
    # the keys' semantics are coded from the previous key's: they cost less than from zero
    assert back.sizes["KSEM"] < container.from_bytes(v1).sizes["KSEM"]
    # a reference to a group that does not exist, or to itself, is refused by both sides
    with pytest.raises(Exception, match="reference"):
        container.to_bytes(replace(v2bs, gops=[replace(gops[0], refs=(0,))] + gops[1:]))


def test_decoder_draws_from_every_reference_and_shows_each_key_picture():
    from engine.codec.keypicture import decode_key_picture
    from engine.synthesis.decoder import Decoder
    from tests.test_decoder import BoxBody
    bs = make_bitstream(n_frames=16, gop=8, size=64, picture=generated_picture)
    gops = []
    for g, r, o in zip(bs.gops, K.reference_lists(2, 3), (2, 5)):
        f = g.frames.copy()
        # The person walks up to 13 px away from where the key saw her: a disocclusion wider than the
        # thin ones the decoder leaves unfilled, which the other key's background fills.
        f[:, 27] += 0.2 * np.abs(np.arange(len(f)) - o) / len(f)
        f[o] = g.key.frame(camera=bs.has_camera).to_array()   # the key frame's row is its key's own, as encoded
        gops.append(replace(g, refs=r, key_offset=o, frames=f))
    multi = replace(bs, gops=gops, max_refs=3, sizes={})
    dec = Decoder(multi, device="cpu", body_model=BoxBody())
    for g in multi.gops:                                # the key frame shows its key picture, wherever it is
        assert np.array_equal(dec.decode_frame(g.key_frame), decode_key_picture(g.key_picture))
    fa = dec.analyse(multi.gops[0], multi.gops[0].frames[:3], frames=[0, 1, 3])
    # the other key is sampled only inside what the frame's own key did not see (not at all when that is none)
    from engine.synthesis.decoder import UNSEEN_EROSION
    from engine.synthesis.motion import unseen_interior
    unseen = unseen_interior(fa.raster.mask & ~fa.motion.visible, max(1, round(UNSEEN_EROSION * 64))).reshape(-1)
    for ref in fa.references:
        assert bool(unseen[ref.idx].all()) and ref.idx.numel() == int(unseen.sum())
    assert len(fa.references) == (1 if bool(unseen.any()) else 0)
    frames = dec.decode_all()
    assert frames.shape == (16, 64, 64, 3)
    # Other keys only fill what the frame's own key did not see (body pixels it did not see, background
    # its person hid: Motion.hole): everywhere else the frame is the single-key decoder's, bit for bit.
    single = replace(multi, gops=[replace(g, refs=()) for g in gops], max_refs=1)
    one = Decoder(single, device="cpu", body_model=BoxBody()).decode_all()
    g = multi.gops[0]
    idx = [i for i in range(g.start, g.start + g.n_frames) if i != g.key_frame]
    fa = dec.analyse(g, g.frames[[i - g.start for i in idx]], frames=idx)
    unseen = (fa.raster.mask & ~fa.motion.visible).numpy()
    if fa.motion.hole is not None:
        unseen |= fa.motion.hole.numpy()
    changed = (frames[idx] != one[idx]).any(-1)
    assert changed.any() and not (changed & ~unseen).any()


def test_other_references_fill_the_inside_of_what_the_own_key_did_not_see_not_its_slivers():
    """unseen_interior: a sliver narrower than 2 radius + 1 px (an arm's edge over the torso, where the
    fits of two keys disagree) keeps the own key's sample; a wide region loses a rim of radius px."""
    import torch

    from engine.synthesis.motion import unseen_interior
    unseen = torch.zeros(1, 20, 20, dtype=torch.bool)
    unseen[0, 2:18, 3:5] = True                   # a sliver 2 px wide
    unseen[0, 6:16, 8:18] = True                  # a 10 x 10 region
    inside = unseen_interior(unseen, 2)[0]
    assert not inside[:, :6].any()                # the sliver is gone
    assert inside[8:14, 10:16].all() and int(inside.sum()) == 36    # the region less a 2 px rim
    assert not (inside & ~unseen[0]).any()
    assert torch.equal(unseen_interior(unseen, 0), unseen)


def test_fusion_takes_the_trust_weighted_mean_where_a_reference_saw_the_point():
    import torch

    from engine.synthesis.motion import ReferenceSample, fuse_references
    frames = torch.zeros(1, 3, 2, 2)
    a = ReferenceSample(torch.tensor([1, 2]), torch.full((2, 3), 100.0), torch.tensor([1.0, 0.0]))
    b = ReferenceSample(torch.tensor([1]), torch.full((1, 3), 200.0), torch.tensor([3.0]))
    out = fuse_references(frames, [a, b]).permute(0, 2, 3, 1).reshape(4, 3)[:, 0]
    # pixel 1: (100 x 1 + 200 x 3) / 4; pixel 2: sampled but seen by none (weight 0), kept; 0 and 3 kept
    assert out.tolist() == [0.0, 175.0, 0.0, 0.0]
    assert fuse_references(frames, []) is frames


def test_studio_edit_keeps_every_key_picture_and_the_reference_structure(tmp_path):
    from engine.studio.document import Document
    from engine.studio.verify import save_verified, structure_of
    bs = make_bitstream(n_frames=24, gop=8, size=64, picture=generated_picture)
    gops = [replace(g, refs=r, key_offset=o) for g, r, o in zip(bs.gops, K.reference_lists(3, 4), (0, 3, 7))]
    src = container.from_bytes(container.to_bytes(replace(bs, gops=gops, max_refs=4, sizes={})))
    doc = Document(src)
    doc.set_value(12, doc.index("left_elbow.z"), 0.9)
    saved = save_verified(doc.edited_bitstream(), tmp_path / "e.ihvc", doc.edited,
                          [g.key_picture.payload for g in src.gops])
    back = saved.bitstream
    assert structure_of(back) == structure_of(src) and back.key_frames == src.key_frames == [0, 11, 23]
    assert all(a.key_picture.payload == b.key_picture.payload for a, b in zip(back.gops, src.gops))
    assert back.semantics()[12, doc.index("left_elbow.z")] == pytest.approx(0.9, abs=0.02)


@pytest.mark.parametrize("kw, msg", [(dict(gop=20, rate_kbps=5.0), "do not go with --gop"),
                                     (dict(rate_kbps=5.0, lam=100.0), "not both"),
                                     (dict(keys="many"), "--keys"), (dict(max_refs=0), "--refs"),
                                     (dict(rate_kbps=-1.0), "--rate"),
                                     (dict(key_qp="auto"), "--key-qp auto"),
                                     (dict(key_qp="auto", rate_kbps=5.0, keys="one"), "--key-qp auto"),
                                     (dict(key_qp="fine"), "--key-qp must be")])
def test_encode_refuses_contradictory_key_options_before_any_work(kw, msg, tmp_path):
    from engine.analysis.encoder import encode_video
    from engine.errors import InputError
    with pytest.raises(InputError, match=msg):
        encode_video(tmp_path / "not_read.mp4", **kw)


@pytest.mark.parametrize("argv, qp", [(["--rate", "5"], "auto"), ([], 37), (["--rate", "5", "--key-qp", "42"], "42"),
                                      (["--rate", "5", "--keys", "one"], 37), (["--gop", "20"], 37)])
def test_encode_with_a_rate_target_chooses_the_key_qp_unless_told(argv, qp, tmp_path, monkeypatch):
    """`encode --rate R` lets the encoder choose the key QP with the keys (a fixed QP 37 can be over the
    rate with one key picture); --key-qp N still fixes it, and without a rate target it stays 37."""
    import engine.analysis.encoder as enc
    import main
    seen = {}

    def fake(path, progress=None, **kw):
        seen.update(kw)
        raise enc.InputError("stop here")
    monkeypatch.setattr(enc, "encode_video", fake)
    assert main.main(["encode", str(tmp_path / "in.mp4"), "-o", str(tmp_path / "o.ihvc"), "--quiet", *argv]) != 0
    assert seen["key_qp"] == qp and not (tmp_path / "o.ihvc").exists()


def test_key_search_reuses_what_a_trial_leaves_unchanged_and_chooses_the_same_keys(monkeypatch):
    """choose_keys with the real draft decoder (a box body) on a small clip, with and without the shared
    DecodeCache: the same keys and the same scores for every trial, with fewer body-model evaluations; and
    the same again with the drafts decoded on two worker processes (engine.workers)."""
    from fractions import Fraction
    from types import SimpleNamespace

    import torch

    from engine.analysis.encoder import _auto_bitstream
    from engine.codec.bitstream import BODY_MODEL_IDS, Bitstream, KeyPicture
    from engine.codec.semantics import QuantSpec
    from tests.factories import smooth_semantics
    from tests.test_decoder import BoxBody
    torch.set_num_threads(1)
    N, S = 28, 48
    sem = smooth_semantics(N, False, seed=3)
    sem[:, 27:31] = np.c_[0.5 + 0.15 * np.sin(np.arange(N) / 4), np.full(N, 0.55), np.full(N, 0.5), np.full(N, 0.7)]
    fit = SimpleNamespace(n_frames=N, semantics=lambda: sem.copy(), body_pose=np.zeros((N, 21, 3)),
                          betas=np.zeros(10), focal=np.array([5.0, 5.0]))
    rng = np.random.default_rng(0)
    frames = np.stack([np.roll(generated_picture(S), 2 * i, 1) for i in range(N)])
    frames = np.clip(frames.astype(int) + rng.integers(-8, 9, frames.shape), 0, 255).astype(np.uint8)
    cams = np.c_[np.linspace(0, 0.05, N), np.zeros(N), np.zeros(N)]
    one = Bitstream(width=S, height=S, fps=Fraction(25), quant=QuantSpec(), body_model=BODY_MODEL_IDS["anny"],
                    has_camera=True)

    def picture(k):
        return KeyPicture(2, 37, S, S, b"p" * 300)

    def build(keys, placeholder=None):
        pic = picture if placeholder is None else (lambda k: KeyPicture(2, 37, S, S, placeholder(k)))
        return _auto_bitstream(one, fit, cams, keys, pic, QuantSpec(), 0.3, 4)

    runs = {}
    for reuse, workers in ((False, "1"), (True, "1"), (True, "2")):
        monkeypatch.setenv("IHVC_WORKERS", workers)
        body = BoxBody()
        keys, trials = K.choose_keys(frames, build, picture, lam=2.0, body_model=body, reuse=reuse)
        runs[reuse, workers] = (keys, [(t.keys, t.bytes, t.sse) for t in trials], body.calls)
    assert len(runs[True, "1"][0]) > 1 and len(runs[True, "1"][1]) > 3             # a real search ran
    assert runs[True, "1"][:2] == runs[False, "1"][:2] == runs[True, "2"][:2]     # same keys, same scores
    assert runs[True, "1"][2] < 0.8 * runs[False, "1"][2]                         # less work
    assert runs[True, "2"][2] == 0                                                # ... done in the workers


def test_under_a_rate_the_key_qp_is_chosen_with_the_keys(monkeypatch):
    """choose_key_qp on a stub: coarser key pictures cost fewer bytes (more keys fit the rate) but carry
    more coding error into every frame. It returns the QP whose keys, placed by choose_keys at that QP,
    have the least expected error (draft error + the key pictures' own), among those that fit; a QP
    whose one key is over the rate is passed over."""
    import engine.codec.keypicture as KP
    n, side = 60, 8
    frames = np.zeros((n, side, side, 3), np.uint8)
    cost = {37: 400, 42: 200, 47: 100, 52: 50, 57: 25}          # bytes of one key picture
    noise = {37: 1.0, 42: 2.0, 47: 4.0, 52: 40.0, 57: 80.0}      # its coding error (grey levels)

    class Bs:
        def __init__(self, keys, qp):
            self.keys, self.qp, self.n_frames = keys, qp, n

    class Pic:
        def __init__(self, k, qp):
            self.k, self.qp, self.payload = k, qp, b"p" * cost[qp]

    monkeypatch.setattr(container, "to_bytes", lambda bs: b"x" * (cost[bs.qp] * len(bs.keys) + 50))
    monkeypatch.setattr(KP, "decode_key_picture", lambda p: np.clip(frames[p.k].astype(int) + int(noise[p.qp]), 0, 255)
                        .astype(np.uint8))

    def score(bs, pool, frames=None):
        idx = range(n) if frames is None else frames
        err = np.zeros(n)
        for i in idx:
            err[i] = min(abs(i - k) for k in bs.keys) * 200.0
        return err
    _stub_score(monkeypatch, score)
    tried = []

    def build(qp):
        tried.append(qp)
        return lambda keys, placeholder=None: Bs(list(keys), qp)

    def picture(qp):
        return lambda k: Pic(k, qp)
    budget = 450
    rate = budget * 8 / 1000 * 25 / n
    qps = sorted(cost)
    qp, keys = K.choose_key_qp(frames, build, picture, qps, rate_kbps=rate)
    first = list(tried)

    def expected(q):
        ks, trials = K.choose_keys(frames, build(q), picture(q), rate_kbps=rate, key_qp=q)
        sse = next(t.sse for t in trials if t.kept)
        fits = cost[q] * len(ks) + 50 <= budget
        return sse / (len(range(0, n, K.DRAFT_STRIDE)) * side * side) + K.KEY_ERROR_WEIGHT * noise[q] ** 2, fits, ks
    table = {q: expected(q) for q in qps}
    best = min((v[0], q) for q, v in table.items() if v[1])[1]
    assert qp == best and keys == table[best][2]
    assert 37 < best < 57                                     # neither the finest nor the coarsest
    assert len(keys) > 1
    assert sorted(set(first)) == qps                         # every QP tried
    # a budget one key at QP 37 does not fit: QP 37 is passed over
    qp, keys = K.choose_key_qp(frames, build, picture, qps, rate_kbps=300 * 8 / 1000 * 25 / n)
    assert qp > 37 and cost[qp] * len(keys) + 50 <= 300
    # the key pictures' own error weighs KEY_ERROR_WEIGHT times: counted once, a coarser QP wins here
    monkeypatch.setattr(K, "KEY_ERROR_WEIGHT", 1.0)
    table = {q: expected(q) for q in qps}
    once = min((v[0], q) for q, v in table.items() if v[1])[1]
    assert K.choose_key_qp(frames, build, picture, qps, rate_kbps=rate)[0] == once > best


def test_the_chosen_key_qp_is_made_finer_while_the_file_fits():
    """finer_key_qp: the finest QP at most four below the chosen one whose file fits the budget; it stops
    at the first that does not (the size falls as the QP rises) and never goes under min_qp."""
    asked = []

    def size(q):
        asked.append(q)
        return 1000 * 2 ** ((52 - q) / 6)            # about twice the bytes every six QPs finer
    assert K.finer_key_qp(size, 52, 1000) == 52 and asked == [51]
    asked.clear()
    assert K.finer_key_qp(size, 52, 1400) == 50 and asked == [51, 50, 49]
    assert K.finer_key_qp(size, 52, 1e9) == 48                   # four steps at most
    assert K.finer_key_qp(size, 52, 1e9, min_qp=50) == 50
    assert K.finer_key_qp(size, 0, 1e9) == 0


def test_encode_says_when_the_rate_target_was_not_reached():
    """One line when the file is over --rate by more than 2 % (nothing at or under that, nor without a
    target), naming the rate reached and what the semantics alone take."""
    from engine.cli.encode import rate_missed
    from engine.codec.rate import Rate

    def rate(total_bytes):            # 50 frames; 40 + 2 bits per frame of per-frame semantics and camera
        return Rate(50, 25.0, total_bytes, 0.0, 0.0, 40.0, 2.0, 0.0, {})
    assert rate(1000).kbps_at_25fps == pytest.approx(4.0)
    assert rate_missed(None, rate(1000)) is None and rate_missed(4.0, rate(1000)) is None
    assert rate_missed(3.95, rate(1000)) is None                              # within 2 %
    note = rate_missed(1.0, rate(1000))
    assert "not reached" in note and "4.00 kbps" in note and "1.05" in note and "\n" not in note


def test_the_encoder_fills_the_rate_and_keeps_back_what_the_closed_loop_may_add():
    """encoder._fill_rate: the finest QP (at most four below) whose whole file fits the rate, or the first
    coarser one that fits when the chosen one's does not; with the closed loop to come, the bytes it may add
    (semantics up to MAX_SEMANTIC_BPF) are kept back."""
    from engine.analysis.closed_loop import MAX_SEMANTIC_BPF
    from engine.analysis.encoder import _fill_rate
    from engine.codec.bitstream import KeyPicture
    from engine.codec.rate import REFERENCE_FPS, with_sizes
    base = make_bitstream(50, gop=25)
    base = replace(base, gops=[replace(g, frames=np.repeat(g.frames[:1], g.n_frames, 0)) for g in base.gops])   # still

    def builder(q):
        def build(keys, placeholder=None):
            pic = lambda g: KeyPicture(g.key_picture.codec, q, g.key_picture.width, g.key_picture.height,
                                       bytes([g.start]) + b"k" * int(400 * 2 ** ((40 - q) / 6)))   # nothing shared
            return replace(base, gops=[replace(g, key_picture=pic(g)) for g in base.gops], sizes={})
        return build
    size = {q: len(container.to_bytes(builder(q)([0, 25]))) for q in range(30, 41)}
    for target_q in (38, 36):                       # a rate that fits QP target_q and not one finer
        rate = (size[target_q] + size[target_q - 1]) / 2 * 8 / 1000 * REFERENCE_FPS / 50
        assert _fill_rate(builder, 40, [0, 25], rate, 0, False, None) == target_q
    rate = (size[36] + size[35]) / 2 * 8 / 1000 * REFERENCE_FPS / 50
    reserve = MAX_SEMANTIC_BPF * 50 / 8 - with_sizes(builder(40)([0, 25])).sizes["FSEM"]
    assert reserve > 0
    expected = min(q for q in range(36, 41) if size[q] <= size[35] / 2 + size[36] / 2 - reserve)
    assert _fill_rate(builder, 40, [0, 25], rate, 0, True, None) == expected > 36
    assert _fill_rate(builder, 40, [0, 25], 1e6, 38, False, None) == 38          # not under the codec's minimum
    # the chosen QP's real file over the rate (the search's estimate of the key pictures was short):
    # coarser until it fits, never past the codec's maximum
    size = {q: len(container.to_bytes(builder(q)([0, 25]))) for q in range(40, 50)}
    rate = (size[44] + size[43]) / 2 * 8 / 1000 * REFERENCE_FPS / 50
    said = []
    assert _fill_rate(builder, 40, [0, 25], rate, 0, False, said.append) == 44
    assert "40 -> 44" in said[0]
    assert _fill_rate(builder, 40, [0, 25], 1e-3, 0, False, None, max_qp=46) == 46


def test_the_encode_summary_names_the_key_pictures_codec_and_qp():
    """`encode`'s summary says which QP the key pictures took (under --rate the encoder chose it)."""
    from engine.analysis.encoder import EncodeResult
    from engine.codec.bitstream import KeyPicture
    from engine.codec.rate import rate_of
    bs = make_bitstream(40, gop=20, qp=37)
    kp = bs.gops[1].key_picture
    bs.gops[1] = replace(bs.gops[1], key_picture=KeyPicture(kp.codec, 42, kp.width, kp.height, kp.payload))
    first = EncodeResult(bitstream=bs, rate=rate_of(bs), encode_fps=1.0, seconds=40.0, undetected=0).lines()[0]
    assert "key pictures: 2 at frames 0, 20 (HEVC QP 37/42)" in first


def test_the_chain_is_sampled_where_keys_go_under_a_lambda():
    """A chained key's cost is sampled on three pictures CHAIN_SAMPLE_SPACING apart (about as far as the
    search places keys under a lambda); under a rate target, on the spread cost samples."""
    d = K.CHAIN_SAMPLE_SPACING
    assert K.chain_samples(100) == [50 - d, 50, 50 + d]
    assert K.chain_samples(100, dense=False) == K.cost_samples(100)
    for n in (2, 3, 9, 17, 1024):
        got = K.chain_samples(n)
        assert got == sorted(set(got)) and len(got) >= 2 and 0 <= got[0] and got[-1] < n


def test_the_count_search_starts_near_a_key_every_eight_frames_and_walks_down_when_fewer_do_better(monkeypatch):
    """The count search starts at a key about every COUNT_START_SPACING frames: where the best count lies
    above, no draft is spent on one to nine keys; where it lies below, it walks down to it."""
    frames, build, picture = _fake_clip(monkeypatch, best=-100, n=100)
    n = len(frames)
    start = 11                                           # int(100 / 8), odd
    score = K._score
    for lam in (1.0, 30.0, 3000.0, 1e6):
        def cost(c):
            keys = K.uniform_keys(c, n)
            return score(build(keys), None).sum() + lam * 8 * (100 * len(keys) + 50)
        want = 1 + int(np.argmin([cost(c) for c in range(1, n // K.MIN_SPACING + 1)]))
        keys, trials = K.choose_keys(frames, build, picture, lam=lam)
        counted = {len(t.keys) for t in trials if list(t.keys) == K.uniform_keys(len(t.keys), n)}
        assert len(keys) == want
        if want > start:
            assert min(counted) == start - 2             # one step down, found worse, then up
        else:
            assert min(counted) <= want
    assert len(K.choose_keys(frames, build, picture, lam=1.0)[0]) > start   # both sides were tried
    assert len(K.choose_keys(frames, build, picture, lam=1e6)[0]) < start


def test_placements_drawn_together_score_as_each_alone(monkeypatch):
    """``_score_many`` (the key moves' two places in one round of the pool) gives each placement the
    errors ``_score`` gives it alone: every frame on the draft grid from the worker that drew it, the
    frames off the grid and outside ``frames`` 0."""
    class Bs:
        def __init__(self, seed, n=23):
            self.seed, self.n_frames = seed, n

    class Pool:
        workers = 3

        def map(self, fn, jobs):
            return [fn(None, job) for job in reversed(jobs)][::-1]     # in order, as ForkPool.map yields
    drawn = []

    def draft(state, job):
        bs, idx = job
        drawn.append(tuple(idx))
        return np.array([1000.0 * bs.seed + i for i in idx])
    monkeypatch.setattr(K, "_draft_errors", draft)
    a, b = Bs(1), Bs(2)
    together = K._score_many([(a, range(4, 17)), (b, None)], Pool())
    alone = [K._score(a, Pool(), range(4, 17)), K._score(b, Pool())]
    for got, want in zip(together, alone):
        assert np.array_equal(got, want)
    assert together[0][4] == 1004 and together[0][5] == 0 and together[0][2] == 0 and together[0][16] == 1016
    assert together[1][22] == 2022 and together[1][21] == 0
    assert len(drawn) == 2 * (3 + 3)                   # each placement's grid split over the three workers
