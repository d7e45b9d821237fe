"""The closed-loop encoder (engine.analysis.closed_loop): semantics chosen for what the decoder draws."""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from engine.analysis.closed_loop import EFFORTS, HOLD_LADDER, Effort, effort_of, refine_bitstream
from engine.codec.semantics import snap
from engine.errors import InputError
from engine.synthesis.raster import barycentrics, rasterize
from tests.factories import make_bitstream


def _mesh():
    """Two triangles of a quad, counter-clockwise on screen, at different depths."""
    xy = torch.tensor([[[10.0, 10.0], [40.0, 12.0], [38.0, 44.0], [8.0, 40.0]]], dtype=torch.float64)
    d = torch.tensor([[5.0, 5.5, 6.0, 5.2]], dtype=torch.float64)
    faces = torch.tensor([[0, 2, 1], [0, 3, 2]])
    return xy, d, faces


def test_barycentrics_are_the_rasterizers_and_differentiable():
    xy, d, faces = _mesh()
    r = rasterize(xy, d, faces, 48, 48)
    assert int(r.mask.sum()) > 500
    bary, depth = barycentrics(r.tri, xy, d, faces)
    assert torch.equal(bary, r.bary) and torch.equal(depth, r.depth)       # one implementation, bit for bit
    # Gradient with respect to the vertices, for the fixed triangle assignment, against central differences.
    w = torch.rand(1, 48, 48, 3, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x = xy.clone().requires_grad_()
    (barycentrics(r.tri, x, d, faces)[0] * w).sum().backward()
    eps = 1e-6
    for v, c in ((1, 0), (2, 1), (3, 0)):
        plus, minus = xy.clone(), xy.clone()
        plus[0, v, c] += eps
        minus[0, v, c] -= eps
        num = ((barycentrics(r.tri, plus, d, faces)[0] - barycentrics(r.tri, minus, d, faces)[0]) * w).sum() / (2 * eps)
        assert float(x.grad[0, v, c]) == pytest.approx(float(num), rel=1e-5, abs=1e-6)


def test_effort_names():
    assert effort_of("fast").side == 0 and effort_of("default").side > 0
    assert EFFORTS["slow"].side >= EFFORTS["default"].side and EFFORTS["slow"].iters >= EFFORTS["default"].iters
    with pytest.raises(InputError, match="--effort"):
        effort_of("fastest")


@pytest.fixture(scope="module")
def truth():
    """A decodable bitstream and the frames its decoder draws: the 'real' frames of the test."""
    from engine.synthesis.decoder import Decoder
    bs = make_bitstream(n_frames=6, camera=False, size=96, seed=3)
    frames = Decoder(bs, device="cpu").decode_all()
    return bs, frames


def _mse(bs, frames):
    from engine.synthesis.decoder import Decoder
    out = Decoder(bs, device="cpu").decode_all().astype(np.float64)
    return ((out - frames) ** 2).mean((1, 2, 3))


@pytest.mark.parametrize("score_side", [0, 48])
def test_closed_loop_finds_the_semantics_that_drew_the_frames(truth, score_side):
    """score_side 48: the rows are scored by the real decoder at half the frames' size (the default
    effort's economy); the full-size decode must still come as close."""
    bs, frames = truth
    gop = bs.gops[0]
    wrong = gop.frames.copy()
    wrong[1:, 27] += 0.04                       # the box 4 px to the right of where the body was drawn
    wrong[1:, 15:18] += 0.12                    # a shoulder turned by 0.12 rad
    wrong = snap(wrong, bs.steps)
    off = replace(bs, gops=[replace(gop, frames=wrong)])
    before = _mse(off, frames)
    effort = Effort("test", side=96, iters=25, lr=0.8, score_side=score_side)
    fixed, report = refine_bitstream(off, frames, effort)
    after = _mse(fixed, frames)
    g = fixed.gops[0]
    # Decoded frames come much closer to the real ones. (The semantics need not return to the
    # drawn ones: the box and the translation can move the body alike.)
    assert after[1:].mean() < 0.1 * before[1:].mean()
    assert report.kept >= 1 and report.mse_after < report.mse_before
    # What the bitstream carries: values on the grid; the key frame, its semantics and picture untouched.
    assert np.allclose(g.frames, snap(g.frames, bs.steps))
    assert np.array_equal(g.frames[0], wrong[0])
    assert g.key_picture.payload == gop.key_picture.payload and g.key is gop.key
    # The pose stays one the studio calls plausible: no joint pushed out of its range.
    from engine.codec.semantics import semantic_names
    from engine.studio.plausibility import check
    assert not [w for w in check(wrong, g.frames, semantic_names(False)) if w.kind == "range"]
    # A frame keeps the refined row only where its decoded frame is closer (scored after snapping,
    # at the size it was scored at).
    if not score_side:
        assert np.all(after[1:] <= before[1:] + 1e-9)


def test_closed_loop_holds_the_semantic_rate_budget(truth):
    """Refined rows that cost more bits than the budget allows go back to the landmark rows, those that
    bought the least decoded error first; every frame still decodes no worse than the fit's."""
    bs, frames = truth
    gop = bs.gops[0]
    still = np.repeat(gop.frames[:1], gop.n_frames, 0)     # a fit that saw no motion: nearly free to code
    off = replace(bs, gops=[replace(gop, frames=still)])
    effort = Effort("test", side=96, iters=25, lr=0.8)
    free, r_free = refine_bitstream(off, frames, effort, max_bpf=None)
    assert r_free.bpf > r_free.bpf_fit and r_free.reverted_for_rate == 0    # refining costs bits here
    # a budget a stronger hold meets: the rows are snapped with it, none given back
    mid, r_mid = refine_bitstream(off, frames, effort, max_bpf=r_free.bpf - 1)
    assert r_mid.hold > 0 and r_mid.bpf <= max(r_free.bpf - 1, r_mid.bpf_fit) + 1e-9
    assert r_mid.mse_after < r_mid.mse_before
    # a budget nothing but the fit meets: the strongest hold, then frames given back down to the fit's rate
    capped, r_cap = refine_bitstream(off, frames, effort, max_bpf=0.0)
    assert r_cap.hold == HOLD_LADDER[-1]
    assert r_cap.bpf <= r_cap.bpf_fit + 1e-9 and r_cap.reverted_for_rate >= 1
    assert r_free.mse_after < r_cap.mse_after <= r_cap.mse_before          # the bits were bought back with error
    before, after = _mse(off, frames), _mse(capped, frames)
    assert np.all(after[1:] <= before[1:] + 1e-9)
    assert "given back" in r_cap.line() and "bits/frame" in r_cap.line()
    # a budget the refined rows meet changes nothing
    same, r_same = refine_bitstream(off, frames, effort, max_bpf=r_free.bpf + 1)
    assert r_same.reverted_for_rate == 0 and np.array_equal(same.gops[0].frames, free.gops[0].frames)


def test_closed_loop_gives_the_same_rows_on_one_or_two_processes(monkeypatch):
    """Each group's frames after and before its key are independent chains: they run on worker processes
    (engine.workers), each on one PyTorch thread, and the bitstream written is the same as in one process."""
    from engine.synthesis.decoder import Decoder
    bs = make_bitstream(n_frames=8, gop=4, camera=False, size=64, seed=5)
    frames = Decoder(bs, device="cpu").decode_all()
    off = replace(bs, gops=[replace(g, frames=snap(g.frames + np.r_[0, 0.03, 0.05, 0.04][:g.n_frames, None]
                                                   * (np.arange(g.frames.shape[1]) == 27), bs.steps))
                            for g in bs.gops])
    effort = Effort("test", side=64, iters=6, lr=0.8)
    out = {}
    for workers in ("1", "2"):
        monkeypatch.setenv("IHVC_WORKERS", workers)
        done = []
        got, report = refine_bitstream(off, frames, effort, progress=lambda d, t: done.append((d, t)))
        out[workers] = ([g.frames for g in got.gops], report.kept, report.mse_after)
        assert done[-1] == (6, 6)                                    # every non-key frame, once
    assert report.kept >= 1 and report.mse_after < report.mse_before
    assert all(np.array_equal(a, b) for a, b in zip(out["1"][0], out["2"][0])) and out["1"][1:] == out["2"][1:]


def test_fast_effort_and_bad_frames(truth):
    bs, frames = truth
    same, report = refine_bitstream(bs, frames, "fast")
    assert same is bs and report.frames == 0
    with pytest.raises(InputError, match="do not match"):
        refine_bitstream(bs, frames[:3], "default")


def test_closed_loop_keeps_joints_in_their_anatomical_range(monkeypatch):
    """A stand-in warp whose pixels match only with the left elbow bent sideways 0.4 rad past its
    range: with the range term off the optimiser follows the pixels out of the range; with it on the
    elbow stays where the studio calls it plausible (no further out than where it started)."""
    from engine.analysis import closed_loop
    from engine.analysis.closed_loop import optimise_rows
    from engine.codec.anatomy import range_axes
    from engine.codec.semantics import QuantSpec
    joint, axis, lo, hi = range_axes()
    r = int(np.flatnonzero(joint == 3)[-1])                  # the left elbow's sideways bend
    ax = torch.as_tensor(axis[r], dtype=torch.float32)
    want = float(hi[r]) + 0.4

    def warp(rows, tri=None):
        comp = rows[:, 9:12] @ ax                             # B: the bend the rows ask for
        return (128 + 100 * torch.tanh(comp - want))[:, None, None, None].expand(-1, 3, 8, 8), None
    rows = np.zeros((3, 31))
    rows[:, 9:12] = axis[r] * (hi[r] - 0.03)                  # just inside the range
    rows[:, 26] = 5.0
    target = torch.full((3, 3, 8, 8), 128.0)
    effort = Effort("test", side=8, iters=60, lr=2.0)
    steps = QuantSpec().steps(False)
    monkeypatch.setattr(closed_loop, "ANATOMY_WEIGHT", 0.0)
    free = optimise_rows(warp, rows, target, steps, effort) @ np.r_[np.zeros(9), axis[r], np.zeros(19)]
    monkeypatch.undo()                                        # the shipped weight
    held = optimise_rows(warp, rows, target, steps, effort) @ np.r_[np.zeros(9), axis[r], np.zeros(19)]
    assert free.min() > hi[r] + 0.05                          # the pixels pull the elbow out...
    assert held.max() < hi[r] + 0.01                          # ...the range holds it


def test_a_warp_that_turns_non_finite_keeps_the_best_finite_rows():
    """An optimiser step that leads to a non-finite frame (a degenerate triangle under a kept
    assignment) must not reach grid_sample or the bitstream: the best finite rows are returned."""
    from engine.analysis.closed_loop import optimise_rows
    from engine.codec.semantics import QuantSpec
    calls = []

    def warp(rows, tri=None):
        calls.append(1)
        out = (rows[:, 26:27] * 10.0)[:, :, None, None].expand(-1, 3, 4, 4)
        return (out if len(calls) < 4 else out * float("nan")), None
    rows = np.zeros((2, 31))
    rows[:, 26] = 5.0
    out = optimise_rows(warp, rows, torch.full((2, 3, 4, 4), 60.0), QuantSpec().steps(False),
                        Effort("test", side=4, iters=10, lr=1.0))
    assert np.isfinite(out).all() and len(calls) == 4
    assert (out[:, 26] > 5.0).all()             # it did move towards the target before the NaN


def test_runs_refined_side_by_side_come_out_as_each_alone():
    """A group's two chains (after its key, before it) share one optimiser call: each must come out as
    it would alone (its own anchor, its own best iteration), and one that turns non-finite must not
    stop the other. The stand-in warp draws each row on its own, as the real one does up to float
    rounding."""
    from engine.analysis.closed_loop import optimise_rows
    from engine.codec.semantics import QuantSpec
    steps = QuantSpec().steps(False)
    effort = Effort("test", side=4, iters=12, lr=0.7)
    gen = np.random.default_rng(3)
    w = torch.as_tensor(gen.normal(size=(31, 3)), dtype=torch.float32)
    poison = [0.0]                   # when set: rows from the fourth on draw NaN once dimension 0 exceeds it

    def warp(rows, tri=None):
        out = torch.tanh(rows @ w / 3.0) * 100 + 128                     # B x 3
        late = torch.arange(len(rows))[:, None] >= 3
        bad = late & (rows[:, :1] > poison[0]) if poison[0] else torch.zeros_like(late)
        out = torch.where(bad, torch.full_like(out, float("nan")), out)
        return out[:, :, None, None].expand(-1, -1, 4, 4), None
    rows = gen.normal(scale=0.2, size=(5, 31))
    targets = torch.as_tensor(gen.uniform(60, 200, size=(5, 3, 4, 4)), dtype=torch.float32)
    a1, a2 = gen.normal(scale=0.2, size=31), gen.normal(scale=0.2, size=31)
    alone = np.concatenate([optimise_rows(warp, rows[:3], targets[:3], steps, effort, a1),
                            optimise_rows(warp, rows[3:], targets[3:], steps, effort, a2)])
    together = optimise_rows(warp, rows, targets, steps, effort, runs=[(0, 3, a1), (3, 5, a2)])
    assert np.abs(alone - rows).max() > 0.05                 # they moved...
    np.testing.assert_allclose(together, alone, atol=1e-5)   # ...and the same way
    # Without an anchor, a run's first row has no smoothness term: not the same as anchoring it.
    free = optimise_rows(warp, rows, targets, steps, effort, runs=[(0, 3, None), (3, 5, a2)])
    assert np.abs(free[:3] - alone[:3]).max() > 1e-4
    np.testing.assert_allclose(free[3:], alone[3:], atol=1e-5)
    # The second run walks into NaN frames: it keeps its best finite rows, the first run goes on.
    rows[3:, 0] = 0.0
    targets[3:] = 255.0
    w[0] = 8.0                                         # dimension 0 pulls the second run upwards
    poison[0] = 0.05
    first_alone = optimise_rows(warp, rows[:3], targets[:3], steps, effort, a1)
    together = optimise_rows(warp, rows, targets, steps, effort, runs=[(0, 3, a1), (3, 5, a2)])
    np.testing.assert_allclose(together[:3], first_alone, atol=1e-5)
    assert np.isfinite(together).all() and (together[3:, 0] <= 0.05).all() and together[3:, 0].max() > 0.02


def test_landmark_rows_over_the_budget_are_held_when_that_fits(truth):
    """A fit whose rows alone cost more than the budget: the loop runs from the rows as fitted, and only
    when the rows it chose are over the budget too, again from the rows held at FIT_HOLD (when that
    brings them under it; else they are left as they are)."""
    from engine.analysis.closed_loop import FIT_HOLD, _bpf, _fit_within
    from engine.analysis.encoder import hold_vector
    bs, frames = truth
    gop = bs.gops[0]
    jitter = gop.frames.copy()
    jitter[1::2, :6] += bs.steps[:6]            # one step up and down every frame: dear to code
    jitter = snap(jitter, bs.steps)
    off = replace(bs, gops=[replace(gop, frames=jitter)])
    steps, hold = bs.steps, hold_vector(None, len(bs.steps))
    held, h = _fit_within(off, steps, hold, _bpf(off) - 1e-6, None)
    assert h == FIT_HOLD and _bpf(held) < _bpf(off)
    assert np.array_equal(held.gops[0].frames[gop.key_offset], jitter[gop.key_offset])
    assert np.abs(held.gops[0].frames - jitter).max() <= (0.5 + FIT_HOLD) * steps.max() + 1e-9
    frozen = np.zeros(bs.n_frames, bool)
    frozen[3] = True
    kept, _ = _fit_within(off, steps, hold, _bpf(off) - 1e-6, frozen)
    assert np.array_equal(kept.gops[0].frames[3], jitter[3])
    same, h0 = _fit_within(off, steps, hold, _bpf(held) - 1.0, None)       # out of its reach: untouched
    assert h0 == 0.0 and same is off
    effort = Effort("test", side=96, iters=6, lr=0.8)
    # Through the closed loop. A budget the rows chosen from the fit as it is meet: no hold.
    first, r1 = refine_bitstream(off, frames, effort, max_bpf=_bpf(off))
    assert r1.fit_hold == 0.0 and r1.bpf_fit == _bpf(off)
    assert _bpf(held) < r1.bpf, "the test needs rows the loop chooses that cost more than the held fit"
    again, r2 = refine_bitstream(off, frames, effort, max_bpf=r1.bpf + 1e-9)
    assert r2.fit_hold == 0.0 and np.array_equal(again.gops[0].frames, first.gops[0].frames)
    # A budget only the held fit meets: the loop runs again from it, and the file ends within the budget.
    budget = _bpf(held) + 1e-9
    out, report = refine_bitstream(off, frames, effort, max_bpf=budget)
    assert report.fit_hold == FIT_HOLD and report.bpf <= budget and report.bpf_fit == _bpf(off)
    assert "landmark rows held" in report.line()


def _shifted(bs):
    """``bs`` with its first group's rows after the key moved off the truth (the box 4 px right, a shoulder turned)."""
    gop = bs.gops[0]
    wrong = gop.frames.copy()
    wrong[1:, 27] += 0.04
    wrong[1:, 15:18] += 0.12
    return replace(bs, gops=[replace(gop, frames=snap(wrong, bs.steps))])


def test_the_first_steps_run_before_the_keys_are_coded_give_the_same_file_as_run_in_the_loop(truth):
    """The default effort's first steps are against stand-ins for the key pictures (the working frames,
    blurred), so the encoder runs them while the keys code (``draft_rows``); ``refine_bitstream`` runs
    them itself when not given them, or given ones made from other rows, with the same result."""
    from engine.analysis.closed_loop import draft_rows
    from engine.codec.container import to_bytes
    bs, frames = truth
    off = _shifted(bs)
    effort = Effort("test", side=96, iters=8, lr=0.8, polish=2)
    started = []
    drafted = draft_rows(off, frames, effort, while_drafting=lambda: started.append(True))
    assert started == [True]
    assert not np.array_equal(drafted.rows[0][1:], off.gops[0].frames[1:])      # the first steps moved the rows
    given, r_given = refine_bitstream(off, frames, effort, drafted=drafted)
    here, r_here = refine_bitstream(off, frames, effort)
    assert r_given.drafted_before and not r_here.drafted_before
    assert to_bytes(given) == to_bytes(here)
    assert _mse(given, frames)[1:].mean() < 0.5 * _mse(off, frames)[1:].mean()
    # First steps made from other rows are not used: the loop runs its own.
    other = draft_rows(bs, frames, effort)
    again, r_again = refine_bitstream(off, frames, effort, drafted=other)
    assert not r_again.drafted_before and to_bytes(again) == to_bytes(here)
    # An effort without them runs no first steps, but still starts what waits for them.
    assert draft_rows(off, frames, replace(effort, polish=0), while_drafting=lambda: started.append(1)) is None
    assert started == [True, 1]


def test_the_first_steps_at_a_smaller_size_draw_smaller_and_give_the_same_file_whoever_runs_them(truth):
    """``Effort.draft_side``: the first steps (against stand-ins) at their own size, the steps after them at
    the loss's. The stand-ins' decoder is that size, the first steps land elsewhere than at the full loss
    size, and the file is the same whether the encoder ran them beside its key pictures or the loop did."""
    from engine.analysis.closed_loop import _decoders, draft_rows
    from engine.codec.container import to_bytes
    bs, frames = truth
    off = _shifted(bs)
    effort = Effort("test", side=96, iters=8, lr=0.8, polish=2, draft_side=64)
    _, small, _, stand = _decoders(off, effort, None, "cpu", frames)
    assert (small.height, small.width, stand.height, stand.width) == (96, 96, 64, 64)
    drafted = draft_rows(off, frames, effort)
    full = draft_rows(off, frames, replace(effort, draft_side=0))
    assert not np.array_equal(drafted.rows[0][1:], full.rows[0][1:])
    given, r_given = refine_bitstream(off, frames, effort, drafted=drafted)
    here, r_here = refine_bitstream(off, frames, effort)
    assert r_given.drafted_before and to_bytes(given) == to_bytes(here)
    assert _mse(given, frames)[1:].mean() < 0.5 * _mse(off, frames)[1:].mean()


def test_the_loop_makes_each_key_state_once(monkeypatch):
    """Eight groups, more than a decoder keeps by default: each of the loop's decoders makes each group's key
    state once (they were made again in the workers, ted_c: 100 for 51)."""
    import engine.synthesis.decoder as decoder
    from engine.analysis.encoder import with_references
    monkeypatch.setenv("IHVC_WORKERS", "1")
    bs = with_references(make_bitstream(n_frames=16, gop=2, camera=False, size=48, seed=5), 4)
    frames = decoder.Decoder(bs, device="cpu").decode_all()
    made = []
    new = decoder.Decoder._new_key_state
    monkeypatch.setattr(decoder.Decoder, "_new_key_state", lambda self, gop: made.append((id(self), gop.start))
                        or new(self, gop))
    effort = Effort("test", side=48, iters=2, polish=1, score_side=32)
    refine_bitstream(bs, frames, effort)
    assert len(bs.gops) == 8 and len(set(made)) == len(made)          # none made twice by one decoder
    assert len({d for d, _ in made}) == 3                              # stand-ins, the loss's, the scorer's
