"""Closed-loop refinement of the per-frame semantics: chosen for what the decoder will draw.

The landmark fit (engine.analysis.fit) places the body where MediaPipe's 2D points are; it never
looks at the pixels, so the decoder's warp draws the key picture's texture a few pixels off, and
most of the decoder's error lies on the body (``bench --regions``). Here the encoder, which has the
real frames, searches the semantics that make the decoder's frame match the real one, as a video
encoder searches motion vectors (analysis by synthesis):

* The decoder's own analytic warp (engine.synthesis.motion.analytic_motion, analytic_frame) is run
  with barycentrics recomputed from vertices that carry gradients
  (engine.synthesis.raster.barycentrics): for a fixed triangle assignment the frame is
  differentiable with respect to the frame's vertices, hence to the 31 semantics through the body
  model, and to the camera group through the background map. One implementation serves encoder
  and decoder; the key picture is the *decoded* one (closed loop).
* Loss: Charbonnier distance of the drawn frame to the real one over the whole frame (body, the
  band around it and the background it moves), plus priors that keep the pose a plausible,
  editable one: a trust region around the landmark fit per semantic group, temporal smoothness,
  and the studio's anatomical joint ranges (engine.codec.anatomy: never further outside them than
  the landmark fit), plus a bit-cost term on frame-to-frame changes.
* Quantisation in the loop: the refined values are snapped as the bitstream carries them, the real
  decoder draws each frame from both the landmark semantics and the refined ones, and a frame
  keeps the refined row only where its decoded frame is closer to the real frame (squared error;
  ``default`` draws and compares them at 192 px, ``slow`` at full size): the residual that is coded
  is the one whose decoded frame was scored.

Effort levels (``encode --effort``), like a video encoder's presets: ``fast`` is the landmark fit
alone; ``default`` refines at 128 px with a few iterations (its first steps, against stand-ins for the
key pictures, at 96); ``slow`` at full size with more, and
codes the key pictures at libvvenc's slow preset instead of medium.

The default effort takes its first steps before the key pictures are coded (``draft_rows``): against
stand-ins for them, the working frames blurred as a coded picture is (STAND_IN_BLUR), while the key
pictures' encoder runs on the other core; then a few steps against the decoded keys themselves
(``Effort.polish``), from where the first ones stopped. The encoder runs the first steps beside the
key pictures' chain; ``refine_bitstream`` runs them itself when it is given none, so that the result
does not depend on who ran them.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from typing import Callable

import numpy as np
import torch

from engine.analysis.keys import area_resize
from engine.codec.bitstream import Bitstream, GroupOfPictures
from engine.codec.semantics import per_dimension
from engine.errors import InputError


@dataclass(frozen=True)
class Effort:
    """How hard the encoder looks: ``side`` the square size the loss is computed at (0 = no
    closed loop), ``iters`` optimiser steps per frame batch, ``lr`` in quantization steps."""
    name: str
    side: int
    iters: int
    lr: float = 0.6
    raster_every: int = 4     # optimiser steps that share one triangle assignment
    score_side: int = 0       # the real decoder's size when it scores the rows (0: the bitstream's)
    key_preset: str = "medium"  # the key-picture encoder's preset (engine.codec.keypicture.PRESETS)
    # Steps against the decoded key pictures after ``iters`` against stand-ins for them (STAND_IN_BLUR),
    # at the learning rate ``polish_lr`` (0: all ``iters`` against the decoded keys, none before them).
    polish: int = 0
    polish_lr: float = 0.2
    draft_side: int = 0       # the square size of the steps against stand-ins (0: ``side``)


# Measured on ted_f (its first 58 inter frames, auto keys, ``RATE_WEIGHT`` 0, loaded 2-core machine):
# decoded PSNR 25.24 dB before; 26.50 at 128 px x 10 steps (37 s), 26.55 at 192 x 16 (124 s),
# 26.61 at 384 x 16 (195 s). Default takes the knee; slow spends the time. Default scores the rows
# with the real decoder at 192 px (2026-12-05, ted_c and ted_f, 100 frames, keys by content): decoded
# PSNR within 0.01 dB of scoring at 384, VMAF within 0.08, the closed loop 11.5 -> 8.4 s on ted_c. At
# 128 px it gave 0.6 s more and lost up to 0.13 VMAF against 192 (ted_c, ted_e); 7 optimiser steps
# instead of 10 lost 0.46 dB on ted_c (docs/BENCHMARKS.md, "Encode speed, session 6").
# The slow effort codes its key pictures with libvvenc's slow preset: ted_c's chain of 17 keys takes three
# times as long as medium for 2 % fewer bytes and 0.17 dB more; slow encodes of three TED clips and two
# people kept aside came out 1.9 to 6.3 % smaller and 0.05 to 0.12 dB better, in 0 to 23 % more time. The
# fast preset is not worth its loss for the fast effort: a chain 3.3 times as fast, but the whole encode
# only 9 % faster (the chain codes beside the key search), for 0.19 dB and 1.9 VMAF less at the same rate
# (docs/BENCHMARKS.md, "The slow effort's key pictures at libvvenc's slow preset").
# The default effort's first steps against stand-ins for the key pictures, then three against the decoded
# keys (2026-12-07, the same fast bitstreams of eight people; docs/BENCHMARKS.md "The closed loop's first
# steps beside the key pictures' chain"): against the working frames unblurred and no
# steps after, ted_c lost 0.29 dB and 1.5 VMAF (the refinement has to see the coded key's blur); blurred
# with sigma 1.5 px and three steps at a learning rate of 0.2 after, -0.06 to +0.10 dB, -0.3 to +1.0
# VMAF and 0 to 0.7 % fewer bytes (mean +0.03 dB, +0.31 VMAF). At the default rate of 0.6 the three
# steps after changed nothing: Adam's first steps are a whole rate long and overshot every time.
# The first steps at 96 px instead of 128 (the three against the decoded keys stay at 128; 2026-12-07, session 32,
# docs/BENCHMARKS.md "The closed loop's first steps at 96 px"): the five TED clips' default encodes keep their key
# counts and bytes within 0.3 %, PSNR -0.06 to +0.03 dB, VMAF -0.45 to +0.47, and encode 5.1 % faster (the first
# steps 2 to 5 s shorter, but they end only when the key pictures' chain has coded); six people kept aside
# -0.003 to +0.058 dB. At 80 px ted_c lost 0.07 dB; at 64 px all three clips tried lost 0.04 to 0.08 dB.
STAND_IN_BLUR = 1.5       # px at the working size: the Gaussian that stands in for the key pictures' coding
DRAFT_NICE = 10           # the first steps' workers' niceness beside the key pictures' encoder (draft_rows)
EFFORTS = {
    "fast": Effort("fast", 0, 0),
    "default": Effort("default", 128, 10, score_side=192, polish=3, draft_side=96),
    "slow": Effort("slow", 384, 24, key_preset="slow"),
}

# Trust region of each semantic group around the landmark fit (value units: rad, rad, m, frame
# fraction, pan fraction / log zoom): a step of this size costs as much as PRIOR_WEIGHT.
TRUST = {"pose": 0.15, "rot": 0.06, "trans": 0.05, "loc": 0.02, "camera": 0.01}
PRIOR_WEIGHT = 0.004
SMOOTH_WEIGHT = 0.002
# Per quantization step of change from the previous frame (a bit-cost proxy). On the same ted_f frames
# at the default effort (docs/BENCHMARKS.md, "Closed-loop encoder"): 0 -> 73.1 + 3.7 semantic bits per
# frame and 26.45 dB; 1e-3 -> 66.7 + 3.5 and 26.31 (the landmark fit alone: 77.6 + 3.7 and 25.25).
RATE_WEIGHT = 1e-3
ANATOMY_WEIGHT = 1000.0   # per rad^2 beyond the landmark fit's own violation of a joint range
# The per-frame semantics' budget (coded FSEM, camera group included, bits per frame; issue #14). When
# the refined rows would cost more, they are snapped with a stronger hold (HOLD_LADDER, the weakest
# that fits) before the decoder scores them; if the frame-by-frame choice between them and the
# landmark rows still costs more than the budget (or than the fit, when the fit alone is over it),
# the refined frames that bought the least decoded error per bit go back to their landmark rows
# (``_hold_budget``). When the landmark rows alone are over the budget and the rows chosen too, the
# loop runs again from the landmark rows held at FIT_HOLD, if that brings them under it (``_fit_within``).
MAX_SEMANTIC_BPF = 60.0
HOLD_LADDER = (0.0, 0.6, 0.9, 1.5)   # snapping holds tried in turn (at least the encoder's own per dimension)
FIT_HOLD = 0.6            # the landmark rows' hold when they and the rows chosen are over the budget
CHARBONNIER_EPS = 1e-3


def effort_of(name: str) -> Effort:
    if name not in EFFORTS:
        raise InputError(f"--effort must be one of {', '.join(EFFORTS)}, got {name!r}")
    return EFFORTS[name]


@dataclass
class RefineReport:
    frames: int = 0            # non-key frames looked at
    kept: int = 0              # frames whose refined row was kept (decoded error lower)
    mse_before: float = 0.0    # mean squared error of the decoded frames over those frames (0..255)
    mse_after: float = 0.0
    seconds: float = 0.0
    bpf_fit: float = 0.0       # coded per-frame semantic bits per frame: the landmark rows
    bpf: float = 0.0           # ... the rows written
    reverted_for_rate: int = 0  # refined frames given back to the landmark rows to hold MAX_SEMANTIC_BPF
    hold: float = 0.0          # the snapping hold the budget asked for (0: the encoder's own)
    fit_hold: float = 0.0      # the hold the landmark rows were snapped again with to fit the budget (0: none)
    drafted_before: bool = False  # the first steps (Effort.polish) came from ``draft_rows``, not run here

    def line(self) -> str:
        if not self.frames:
            return "closed loop: off"
        def psnr(m):
            return 10 * np.log10(255.0 ** 2 / max(m, 1e-9))
        rate = (f", the landmark rows held at {self.fit_hold:g}" if self.fit_hold else "") + (
            f", snapped with hold {self.hold:g}" if self.hold else "") + (
            f", {self.reverted_for_rate} given back for the {MAX_SEMANTIC_BPF:g}-bit budget" if self.reverted_for_rate else "")
        return (f"closed loop: {self.kept} of {self.frames} frames refined{rate}, decoded PSNR "
                f"{psnr(self.mse_before):.2f} -> {psnr(self.mse_after):.2f} dB, semantics "
                f"{self.bpf_fit:.1f} -> {self.bpf:.1f} bits/frame ({self.seconds:.1f} s)")


def _resize(frames: np.ndarray, side: int, device) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x side x side float 0..255 (area averaging, as the draft decoder)."""
    return torch.from_numpy(area_resize(frames, side)).permute(0, 3, 1, 2).to(device)


class _Warp:
    """The decoder's analytic frame as a differentiable function of a GOP's per-frame semantics."""

    def __init__(self, dec, gop: GroupOfPictures):
        self.dec = dec
        self.st = dec.key_state(gop)
        key = gop.key
        t = lambda a: torch.as_tensor(np.asarray(a, float), dtype=dec.dtype, device=dec.device)  # noqa: E731
        self.key_pose = t(key.body_pose)                 # 21 x 3
        self.faces = dec.faces_oriented

    def __call__(self, rows: torch.Tensor, tri: torch.Tensor | None = None):
        """rows B x D (float tensor with gradients) -> (B x 3 x H x W frames (0..255), triangle ids).

        ``tri``: the triangle assignment of an earlier call to keep (B x H x W; rasterizing is the
        dearest step and the assignment changes little between optimiser steps); None rasterizes."""
        from engine.codec.semantics import N_INHERITED_JOINTS
        from engine.synthesis.camera import project
        from engine.synthesis.motion import analytic_frame, analytic_motion
        from engine.synthesis.raster import Raster, barycentrics, rasterize
        dec, st = self.dec, self.st
        B = rows.shape[0]
        pose = torch.cat([self.key_pose[:N_INHERITED_JOINTS].expand(B, -1, -1), rows[:, :21].reshape(B, 7, 3)], 1)
        betas = st.betas.expand(B, -1) if st.betas is not None else None
        if hasattr(dec.body, "posed_vertices"):
            verts = dec.body.posed_vertices(pose, betas)
        else:
            out = dec.body.forward(pose, betas)
            verts = out.vertices if hasattr(out, "vertices") else out[0]
        xy, d = project(verts, rows[:, 21:24], rows[:, 24:27], rows[:, 27:31], st.focal.expand(B, 2),
                        dec.width, dec.height)
        if tri is None:
            with torch.no_grad():
                tri = rasterize(xy.detach(), d.detach(), self.faces, dec.height, dec.width,
                                cull_backfaces=dec.cull).tri
        bary, depth = barycentrics(tri, xy, d, self.faces)
        # A kept triangle assignment may meet a triangle that has since turned edge-on (zero area):
        # its barycentrics are then not finite, and a NaN reaching grid_sample crashes its CPU kernel
        # (a segfault in bench --closed-loop on ted_c). (Clamping them all to a range instead cost
        # the recovery test most of its gain: kept assignments extrapolate far and usefully.)
        bary = torch.nan_to_num(bary, nan=1 / 3, posinf=2.0, neginf=-1.0)
        camera = rows[:, 31:34] if rows.shape[1] >= 34 else None
        mo = analytic_motion(Raster(tri=tri, bary=bary, depth=depth.detach()), self.faces, st.world, st.trans,
                             st.loc, st.focal, st.depth, camera=camera, tol=st.tol,
                             key_mask=st.person if dec.fill_disocclusions else None,
                             key_distance=st.person_distance if dec.fill_disocclusions else None)
        return analytic_frame(st.image, mo), tri


class _Anatomy:
    """The studio's anatomical joint ranges (engine.codec.anatomy) as a penalty: how far (rad) each
    joint lies outside its ranges, beyond where the landmark fit already put it. The fit is not
    always inside them (ted_f: the left elbow bent 33 degrees backwards on every frame), and the pixels
    alone would happily bend it further; a refined pose may never be less plausible than the fit's."""

    def __init__(self, body_model: int, x0: torch.Tensor):
        from engine.codec.anatomy import range_axes
        joint, axis, lo, hi = range_axes(body_model)
        t = lambda a, dt=x0.dtype: torch.as_tensor(a, dtype=dt, device=x0.device)  # noqa: E731
        self.joint, self.axis, self.lo, self.hi = t(joint, torch.int64), t(axis), t(lo), t(hi)
        self.base = self.violation(x0).detach()

    def violation(self, rows: torch.Tensor) -> torch.Tensor:
        comp = (rows[:, :21].reshape(-1, 7, 3)[:, self.joint] * self.axis).sum(-1)       # B x R
        return torch.relu(self.lo - comp) + torch.relu(comp - self.hi)

    def __call__(self, rows: torch.Tensor) -> torch.Tensor:
        """The penalty of each row (B): squared radians beyond the fit's own violation."""
        return (torch.relu(self.violation(rows) - self.base) ** 2).sum(1)


def optimise_rows(warp: Callable, rows: np.ndarray, targets: torch.Tensor,
                  steps: np.ndarray, effort: Effort, anchor_prev: np.ndarray | None = None,
                  body_model: int = 1, runs: list | None = None, start: np.ndarray | None = None) -> np.ndarray:
    """Refine B frames' semantics ``rows`` (B x D, float) so that the frames of
    ``warp(rows, tri) -> (frames, tri)`` (as :class:`_Warp`) match ``targets`` (B x 3 x H x W, 0..255);
    returns the refined rows (float, not yet snapped). ``start``: where the steps start (B x D; default
    ``rows``); the priors still hold the rows near ``rows``, the landmark fit.

    ``runs``: the rows as runs of consecutive frames, each ``(start, stop, anchor)`` (``anchor`` the
    already decided row before the run's first frame, or None), optimised side by side but each as if
    alone: its own loss decides when its rows are best and when a non-finite frame stops it. Default:
    one run of all B rows anchored on ``anchor_prev``. (Batching a group's two runs, the frames after
    its key and those before it, in one call: an optimiser step on five rows costs little more than
    on two or three.) ``body_model``: the bitstream's body model id (its joints' anatomical ranges)."""
    dev = targets.device
    dtype = targets.dtype
    B, D = rows.shape
    runs = [(0, B, anchor_prev)] if runs is None else runs
    x0 = torch.as_tensor(rows, dtype=dtype, device=dev)
    step = torch.as_tensor(steps[:D], dtype=dtype, device=dev)
    tol = torch.as_tensor(per_dimension(TRUST, D), dtype=dtype, device=dev)
    anatomy = _Anatomy(body_model, x0)
    # Each row's predecessor for the smoothness and rate terms: the row before it in its run, or the
    # run's anchor (rows B.. of ``cat([x, anchors])``); a run's first row without an anchor has none.
    prev_at = torch.arange(-1, B - 1, device=dev)
    has_prev = torch.ones(B, dtype=dtype, device=dev)
    run_of = torch.zeros(B, dtype=torch.int64, device=dev)
    anchors = []
    for c, (lo, hi, anchor) in enumerate(runs):
        run_of[lo:hi] = c
        if anchor is None:
            has_prev[lo] = 0.0
            prev_at[lo] = lo
        else:
            prev_at[lo] = B + len(anchors)
            anchors.append(torch.as_tensor(anchor, dtype=dtype, device=dev))
    anchors = torch.stack(anchors) if anchors else x0[:0]
    u = torch.zeros_like(x0)                                # change in quantization steps
    if start is not None:
        u += (torch.as_tensor(start, dtype=dtype, device=dev) - x0) / step
    u.requires_grad_(True)
    opt = torch.optim.Adam([u], lr=effort.lr)
    best_u = torch.zeros_like(x0)
    best_loss = torch.full((len(runs),), float("inf"), dtype=torch.float64)
    alive = torch.ones(len(runs), dtype=torch.bool)
    tri = None
    for i in range(effort.iters):
        opt.zero_grad(set_to_none=True)
        x = x0 + u * step
        out, tri = warp(x, tri if i % effort.raster_every else None)
        diff = (out - targets) / 255.0
        loss = torch.sqrt(diff * diff + CHARBONNIER_EPS ** 2).sum(1).mean((1, 2))         # per row
        loss = loss + PRIOR_WEIGHT * (((x - x0) / tol) ** 2).sum(1)
        delta = (x - torch.cat([x, anchors], 0)[prev_at]) * has_prev[:, None]
        loss = loss + SMOOTH_WEIGHT * ((delta / tol) ** 2).sum(1)
        # Residuals are coded from the previous frame: a change of a few steps costs bits.
        loss = loss + RATE_WEIGHT * torch.sqrt((delta / step) ** 2 + 0.25).sum(1) * has_prev
        loss = loss + ANATOMY_WEIGHT * anatomy(x)
        per_run = torch.zeros(len(runs), dtype=loss.dtype, device=dev).index_add(0, run_of, loss)
        value = per_run.detach().double().cpu()
        alive &= torch.isfinite(value)        # a run that turns non-finite keeps its best finite rows
        better = alive & (value < best_loss)
        best_loss = torch.where(better, value, best_loss)
        rows_better = better.to(dev)[run_of]
        best_u[rows_better] = u.detach()[rows_better]
        if i == effort.iters - 1 or not bool(alive.any()):
            break                       # a step from here would never be scored
        per_run.masked_fill(~alive.to(dev), 0.0).sum().backward()
        alive = _runs_finite(u.grad, run_of, alive)
        if not bool(alive.any()):
            break
        dead = (~alive).to(dev)[run_of]
        u.grad[dead] = 0.0
        opt.step()
        with torch.no_grad():           # stopped runs stay at their best rows
            u[dead] = best_u[dead]
    return (x0 + best_u * step).cpu().numpy().astype(np.float64)


def _runs_finite(grad: torch.Tensor, run_of: torch.Tensor, alive: torch.Tensor) -> torch.Tensor:
    """``alive`` with the runs whose rows have a non-finite gradient stopped."""
    bad = (~torch.isfinite(grad).all(1)).cpu()
    out = alive.clone()
    out[run_of.cpu()[bad].unique()] = False
    return out


@dataclass
class Drafted:
    """The closed loop's first steps (``draft_rows``): each group's rows after ``Effort.iters`` steps
    against stand-ins for its key picture, and what they were refined from."""
    rows: list[np.ndarray]       # per group, n_frames x D (the frames not refined as they were)
    basis: list[tuple]           # per group (start, key offset, rows it started from, frames refined)

    def fits(self, bs: Bitstream, todo: list[list[int]]) -> bool:
        """Whether these were made from ``bs``'s groups and rows, for the frames ``todo`` (per group)."""
        return len(self.basis) == len(bs.gops) and all(
            (g.start, g.key_offset) == (start, off) and list(idx) == list(was) and
            np.array_equal(np.asarray(g.frames, float), rows)
            for g, idx, (start, off, rows, was) in zip(bs.gops, todo, self.basis))


def stand_in_pictures(frames: np.ndarray, sigma: float = STAND_IN_BLUR) -> Callable:
    """gop -> a stand-in for its decoded key picture: the working frame, blurred as coding blurs it."""
    import cv2
    return lambda gop: cv2.GaussianBlur(frames[gop.key_frame], (0, 0), sigma)


# Key states each of the loop's decoders keeps (0.6 to 1 MB each at 128 and 192 px): a clip's groups all,
# up to this many. With the decoder's default of six, the scoring decoder's states computed before the
# workers fork were mostly gone by then, and the workers made them again: ted_c's loop in one process
# computed 100 key states for its 17 groups' 51.
KEY_STATES_KEPT = 32


def _decoders(bs: Bitstream, effort: Effort, body_model, device, frames: np.ndarray):
    """(side, the decoder at the loss's size, the real decoder at the scoring size, the decoder of the
    stand-in keys at the first steps' size (``Effort.draft_side``) or None)."""
    from engine.synthesis.decoder import Decoder
    longest = max(bs.width, bs.height)

    def square(n: int):
        """A decoder's ``size`` for a square side of n px (None: the bitstream's own)."""
        return None if n == longest else (n, n)
    side = min(effort.side, longest)
    score_side = min(effort.score_side or longest, longest)
    draft_side = min(effort.draft_side or side, longest)
    kept = min(len(bs.gops), KEY_STATES_KEPT)
    small = Decoder(bs, device=device, body_model=body_model, size=square(side), cache_gops=kept)
    scorer = small if score_side == side else Decoder(bs, device=device, body_model=small.body,
                                                      size=square(score_side), cache_gops=kept)
    stand = Decoder(bs, device=device, body_model=small.body, size=square(draft_side), cache_gops=kept,
                    pictures=stand_in_pictures(frames)) if effort.polish else None
    return side, small, scorer, stand


def _check_frames(bs: Bitstream, frames: np.ndarray) -> None:
    if frames.shape[0] != bs.n_frames or frames.shape[1:3] != (bs.height, bs.width):
        raise InputError(f"closed loop: {frames.shape[0]} frames of {frames.shape[2]}x{frames.shape[1]} do not "
                         f"match the bitstream's {bs.n_frames} of {bs.width}x{bs.height}")


def draft_rows(bs: Bitstream, frames: np.ndarray, effort: Effort | str = "default", *, body_model=None,
               device=None, batch: int = 8, frozen: np.ndarray | None = None,
               while_drafting: Callable[[], None] | None = None,
               progress: Callable[[int, int], None] | None = None) -> Drafted | None:
    """The closed loop's first steps, against stand-ins for the key pictures (``stand_in_pictures``):
    they need none of them coded, so the encoder runs them while the key pictures code. ``bs``: the
    groups and rows as they will be coded (its key pictures are not read); ``while_drafting()`` is
    called once the worker processes have forked and before the steps start (the encoder starts the key
    pictures' encoder there: a fork waits for a running subprocess, engine.workers). None for an effort
    without such steps (``Effort.polish`` 0). Pass the result to ``refine_bitstream``."""
    from engine.workers import ForkPool, cpu_workers
    effort = effort_of(effort) if isinstance(effort, str) else effort
    if effort.side <= 0 or effort.iters <= 0 or not effort.polish:
        if while_drafting is not None:
            while_drafting()
        return None
    _check_frames(bs, frames)
    side, _, _, stand = _decoders(bs, effort, body_model, device, frames)
    state = _LoopState(bs, frames, None, None, side, bs.quant.steps(bs.has_camera), effort, batch, stand)
    todo, jobs = _jobs(bs, frozen)
    # Each group's steps draw from its own key only: the workers make its state, each once (made here
    # first, they would hold up the key pictures' encoder, which starts after the fork).
    # The workers yield to what ``while_drafting`` starts: the key pictures' encoder, which the rest of the
    # closed loop waits for, should finish first, and the steps take whatever core it leaves.
    with ForkPool(state, cpu_workers(len(jobs)), device=stand.device, nice=DRAFT_NICE) as pool:
        if while_drafting is not None:
            while_drafting()
        return _drafted(bs, todo, jobs, pool.map(_draft_group, jobs), progress)


def _drafted(bs: Bitstream, todo, jobs, outs, progress) -> Drafted:
    rows = [np.asarray(g.frames, float).copy() for g in bs.gops]
    done, total = 0, sum(map(len, todo))
    for (gi, orders), got in zip(jobs, outs):
        for order, r in zip(orders, got):
            rows[gi][order] = r
            done += len(order)
        if progress is not None:
            progress(done, total)
    return Drafted(rows, [(g.start, g.key_offset, np.asarray(g.frames, float).copy(), list(idx))
                          for g, idx in zip(bs.gops, todo)])


def _jobs(bs: Bitstream, frozen: np.ndarray | None) -> tuple[list, list]:
    """Per group, the frames to refine (all but the key and the frozen ones), and the jobs: per group
    with any, its chains outwards from the key (after it, before it), the longest first."""
    todo = [[j for j in range(g.n_frames) if j != g.key_offset and not (frozen is not None and frozen[g.start + j])]
            for g in bs.gops]
    # Outwards from each key, in batches, so that each batch's smoothness anchors on decided rows: the
    # frames after a key and those before it are two independent chains, refined side by side in one
    # optimiser (``_refine_group``). The groups run in forked processes (engine.workers).
    jobs = [(gi, orders) for gi, (gop, idx) in enumerate(zip(bs.gops, todo))
            if (orders := [o for o in ([j for j in idx if j > gop.key_offset],
                                       [j for j in reversed(idx) if j < gop.key_offset]) if o])]
    jobs.sort(key=lambda job: -max(map(len, job[1])))      # longest first: the workers finish together
    return todo, jobs


def refine_bitstream(bs: Bitstream, frames: np.ndarray, effort: Effort | str = "default", *, body_model=None,
                     device=None, hold=None, batch: int = 8, frozen: np.ndarray | None = None,
                     max_bpf: float | None = MAX_SEMANTIC_BPF, drafted: Drafted | None = None,
                     progress: Callable[[int, int], None] | None = None) -> tuple[Bitstream, RefineReport]:
    """``bs`` with each frame's semantics refined against ``frames`` (N x H x W x 3 uint8, the
    working frames the bitstream was coded from), see the module docstring. Key pictures, key
    semantics and group structure are unchanged; ``frozen`` (N bools) frames keep their rows (the
    encoder freezes frames with no person, which hold the last state, and that state). ``max_bpf``:
    the per-frame semantics' budget (None: none; see :data:`MAX_SEMANTIC_BPF`). ``drafted``: the first
    steps, run before (``draft_rows``, the same ``bs`` rows, ``frozen`` and effort); they are run here
    when not given or made from other rows, with the same result. Returns the new bitstream and a report."""
    effort = effort_of(effort) if isinstance(effort, str) else effort
    report = RefineReport()
    if effort.side <= 0 or effort.iters <= 0:
        return bs, report
    _check_frames(bs, frames)
    t0 = time.perf_counter()
    side, small, scorer, stand = _decoders(bs, effort, body_model, device, frames)
    from engine.analysis.encoder import hold_vector
    steps = bs.quant.steps(bs.has_camera)
    hold = hold_vector(hold, len(steps))
    bpf_fit = _bpf(bs)
    state = _LoopState(bs, frames, small, scorer, side, steps, effort, batch, stand)
    out, report = _loop(state, hold, frozen, max_bpf, progress, drafted)
    if max_bpf is not None and report.bpf > max_bpf:
        # The landmark rows alone cost more than the budget, and so did the rows chosen from them: the
        # loop runs again from those rows held harder, when that brings them under it (``_fit_within``).
        # Only then: held rows are a worse start and a worse fallback. dance_tiktok_5 (fit 62.8 bits per
        # frame, format version 4) held first: 35.3 bits per frame and 0.18 dB, 0.9 VMAF less than
        # refined from its own rows (41.4 bits).
        held, fit_hold = _fit_within(bs, steps, hold, max_bpf, frozen)
        if fit_hold:
            out, report = _loop(replace(state, bs=held), hold, frozen, max_bpf, progress)
            report.fit_hold = fit_hold
    report.bpf_fit = bpf_fit
    report.seconds = time.perf_counter() - t0
    return out, report


def _loop(state: _LoopState, hold: np.ndarray, frozen: np.ndarray | None, max_bpf: float | None,
          progress, drafted: Drafted | None = None) -> tuple[Bitstream, RefineReport]:
    """One pass of the closed loop over ``state.bs``: every frame's rows refined (from ``drafted``, the
    first steps, when the effort has them), then chosen."""
    from engine.workers import ForkPool, cpu_workers
    bs = state.bs
    todo, jobs = _jobs(bs, frozen)
    total = sum(len(idx) for idx in todo)
    if not state.effort.polish:
        drafted = None
    elif drafted is not None and not drafted.fits(bs, todo):
        drafted = None                   # made from other rows (``_fit_within``'s): the first steps run here
    draft_here = bool(state.effort.polish) and drafted is None
    # The scoring decoder draws from the other keys too: its key states are made here, once, and the
    # workers inherit them. Each group's steps draw from its own key only: the worker that takes the group
    # makes that state (the loss's decoder, the stand-ins').
    for gi in sorted({k for gi, _ in jobs for k in (gi, *bs.gops[gi].refs)}):
        state.scorer.key_state(bs.gops[gi])
    refined_all = [np.asarray(g.frames, float).copy() for g in bs.gops]
    done = 0
    with ForkPool(state, cpu_workers(len(jobs)), device=state.small.device) as pool:
        if draft_here:
            drafted = _drafted(bs, todo, jobs, pool.map(_draft_group, jobs), None)
        starts = [None if drafted is None else [drafted.rows[gi][order] for order in orders] for gi, orders in jobs]
        for (gi, orders), outs in zip(jobs, pool.map(_refine_group, [job + (st,) for job, st in zip(jobs, starts)])):
            for order, rows in zip(orders, outs):
                refined_all[gi][order] = rows
                done += len(order)
            if progress is not None:
                progress(done, total)
        work = [(gop, idx, np.asarray(gop.frames, float), refined_all[gi])
                for gi, (gop, idx) in enumerate(zip(bs.gops, todo))]
        report = RefineReport(drafted_before=bool(state.effort.polish) and not draft_here)
        return _choose_rows(bs, work, state.steps, hold, max_bpf, report, pool, state.batch)


def _fit_within(bs: Bitstream, steps: np.ndarray, hold: np.ndarray, max_bpf: float,
                frozen: np.ndarray | None) -> tuple[Bitstream, float]:
    """When the landmark rows alone cost more than ``max_bpf``, neither the closed loop's choice between
    them and the refined rows nor giving refined frames back can bring the file under it (ted_f at key
    QP 37: the fit 66.8 bits per frame, the closed loop 62.7). Returns ``bs`` with its landmark rows
    snapped again with FIT_HOLD, and that hold, when that brings them within the budget; else ``bs`` as
    it is and 0. Key rows and frozen frames keep their values.

    Measured (100 frames, default effort; docs/BENCHMARKS.md "Encode speed, session 7"): ted_f 62.7 ->
    58.2 bits per frame for -0.035 dB and -0.17 VMAF, ted_c 52.5 -> 48.6 for +0.05 dB and +0.48 VMAF.
    Holding harder costs too much where people move: dance_tiktok_1 (fit 82.6 bits, 73.8 at FIT_HOLD)
    held at 1.5 lost 0.43 dB and 1.9 VMAF and was still over the budget, so it stays as it was."""
    from engine.analysis.encoder import snap_outwards
    hv = np.maximum(hold, FIT_HOLD)
    gops = []
    for g in bs.gops:
        rows = np.asarray(g.frames, float)
        held = snap_outwards(rows, g.key_offset, steps, hv)
        held[g.key_offset] = rows[g.key_offset]
        if frozen is not None:
            keep = frozen[g.start:g.start + g.n_frames]
            held[keep] = rows[keep]
        gops.append(replace(g, frames=held))
    out = replace(bs, gops=gops, sizes={})
    return (out, FIT_HOLD) if _bpf(out) <= max_bpf else (bs, 0.0)


def _choose_rows(bs, work, steps, hold, max_bpf, report, pool, batch):
    """Quantisation and rate in the loop: which rows each frame keeps (see ``refine_bitstream``)."""
    from engine.analysis.encoder import snap_outwards
    # The landmark rows' own range violations, once per group (each hold below is checked against them).
    anatomy = [_Anatomy(bs.body_model, torch.as_tensor(rows, dtype=torch.float64)) if idx else None
               for _, idx, rows, _ in work]

    def snapped_rows(h: float) -> list[np.ndarray]:
        """Each group's refined rows as the bitstream would carry them, every dimension holding its
        value through changes under 0.5 + max(its hold, h) steps."""
        hv = np.maximum(hold, h)
        slack = float(((0.5 + hv[:21]) * steps[:21]).max())        # rad: what snapping may move a joint
        out = []
        for (gop, idx, rows, refined), anat in zip(work, anatomy):
            if not idx:
                out.append(rows)
                continue
            snapped = snap_outwards(refined, gop.key_offset, steps, hv)
            snapped[gop.key_offset] = rows[gop.key_offset]
            # A frame whose snapped joints lie further out of range than the fit's by more than the
            # snapping itself can move them (0.5 + hold steps) keeps its fit. (With no slack, a joint
            # the prior holds at its range edge reverts on every other frame, and the alternation
            # costs 8 bits per frame on ted_f.)
            with torch.no_grad():
                worse = (anat.violation(torch.as_tensor(snapped, dtype=torch.float64)) > anat.base + slack).any(1)
            snapped[worse.numpy()] = rows[worse.numpy()]
            out.append(snapped)
        return out

    # Rate in the loop: when the rows the decoder chose would cost more than the budget, the refined
    # rows are snapped with a stronger hold (fewer one-step changes: on ted_f with one key, 61.9 ->
    # 45.9 bits per frame for -0.15 dB of the closed loop's +0.67) and scored again, the weakest hold
    # that fits. The landmark rows' decoded errors are computed once.
    report.bpf_fit = _bpf(bs)
    budget = None if max_bpf is None else max(max_bpf, report.bpf_fit)
    ladder = HOLD_LADDER if max_bpf is not None else HOLD_LADDER[:1]
    fit_err: dict = {}
    for n, h in enumerate(ladder):
        candidate = snapped_rows(h)
        last = n == len(ladder) - 1
        if not last and _bpf(_with_rows(bs, candidate)) > budget:
            continue                             # over budget before any frame is scored
        scored = _decode_errors(pool, work, candidate, fit_err, batch)
        gops, gains_all = [], []                 # gains: (decoded squared-error gain, group, frame)
        frames_n = kept_n = 0
        before_sum = after_sum = 0.0
        for gi, ((gop, idx, rows, _), snapped) in enumerate(zip(work, candidate)):
            if not idx:
                gops.append(gop)
                continue
            chosen, kept, before, after, gains = _score(rows, snapped, idx, fit_err[gi], scored[gi])
            frames_n += len(idx)
            kept_n += kept
            before_sum += before
            after_sum += after
            gains_all += [(g, gi, j) for j, g in gains.items()]
            gops.append(replace(gop, frames=chosen))
        out = replace(bs, gops=gops, sizes={})
        report.hold, report.bpf = h, _bpf(out)
        if budget is None or report.bpf <= budget:
            break
    report.frames, report.kept, report.mse_before, report.mse_after = frames_n, kept_n, before_sum, after_sum
    if budget is not None and report.bpf > budget:
        out, back = _hold_budget(bs, out, gains_all, budget)
        report.reverted_for_rate = len(back)
        report.kept -= len(back)
        report.mse_after += sum(g for g, _, _ in back)
        report.bpf = _bpf(out)
    report.mse_before /= max(report.frames, 1)
    report.mse_after /= max(report.frames, 1)
    return out, report


def _with_rows(bs: Bitstream, rows: list[np.ndarray]) -> Bitstream:
    return replace(bs, gops=[replace(g, frames=r) for g, r in zip(bs.gops, rows)], sizes={})


def _bpf(bs: Bitstream) -> float:
    """Coded per-frame semantics (camera group included), bits per frame: what the budget counts."""
    from engine.codec.rate import rate_of
    r = rate_of(replace(bs, sizes={}))
    return r.semantics_bpf + r.camera_bpf


def _hold_budget(fit: Bitstream, refined: Bitstream, gains: list, budget: float):
    """``refined`` with refined frames given back to their landmark rows until the per-frame semantics
    fit ``budget``: first those that bought the least decoded error per bit they added (the frame's own
    row and the one coded from it, by the coder's ideal code lengths), then, last, those that saved
    bits. The coder is adaptive, so a set of rows' cost is only known by coding it: a bisection on how
    many go back (about eight in-memory codings). Returns (bitstream, the (gain, group, frame) given back)."""
    from engine.codec.container import frame_bits
    b_ref, b_fit = frame_bits(refined), frame_bits(fit)

    def added(gi: int, j: int) -> float:
        g = refined.gops[gi]
        nxt = j + 1 if j > g.key_offset else j - 1            # the frame predicted from this one
        js = [j] + ([nxt] if 0 <= nxt < g.n_frames else [])
        return float(sum(b_ref[gi][k] - b_fit[gi][k] for k in js))

    cost = {(gi, j): added(gi, j) for _, gi, j in gains}
    order = sorted(gains, key=lambda t: (cost[t[1:]] <= 0, t[0] / max(cost[t[1:]], 1e-9) if cost[t[1:]] > 0 else t[0]))

    def with_back(k: int) -> Bitstream:
        gops = list(refined.gops)
        for _, gi, j in order[:k]:
            rows = np.array(gops[gi].frames, float)
            rows[j] = fit.gops[gi].frames[j]
            gops[gi] = replace(gops[gi], frames=rows)
        return replace(refined, gops=gops, sizes={})

    lo, hi = 0, len(order)                      # hi: every refined frame back, the fit's own rate
    while lo < hi:
        mid = (lo + hi) // 2
        if _bpf(with_back(mid)) <= budget:
            hi = mid
        else:
            lo = mid + 1
    return with_back(lo), order[:lo]


@dataclass
class _LoopState:
    """What the closed loop's worker processes inherit (engine.workers.ForkPool)."""
    bs: Bitstream
    frames: np.ndarray
    small: object                # the decoder at the loss's size
    scorer: object               # the real decoder at the scoring size (``Effort.score_side``)
    side: int
    steps: np.ndarray
    effort: Effort
    batch: int
    stand: object = None         # the decoder of the stand-in keys at the loss's size (``Effort.polish``)


def _draft_group(state: _LoopState, job) -> list[np.ndarray]:
    """The first steps (``draft_rows``) of one group's chains, against its stand-in key."""
    gi, orders = job
    return _chains(state, state.stand, state.effort, gi, orders, None)


def _refine_group(state: _LoopState, job) -> list[np.ndarray]:
    """One group's chains, refined against its decoded key: ``Effort.polish`` steps from the first
    steps' rows ``start`` (one array per chain), or, without them, all ``Effort.iters``."""
    gi, orders, start = job
    effort = state.effort if start is None else replace(state.effort, iters=state.effort.polish,
                                                        lr=state.effort.polish_lr)
    return _chains(state, state.small, effort, gi, orders, start)


def _chains(state: _LoopState, dec, effort: Effort, gi: int, orders: list, start: list | None) -> list[np.ndarray]:
    """One group's chains of frames (each outwards from its key, in order) -> each chain's refined rows,
    drawn by ``dec`` from the group's key. A chain is refined batch by batch, each batch anchored on the
    row before it; the chains' batches share one optimiser call (``optimise_rows``'s runs: each still as
    if alone). ``start``: per chain, the rows the steps start from (default: the group's rows)."""
    bs, gop = state.bs, state.bs.gops[gi]
    warp = _Warp(dec, gop)
    rows = np.asarray(gop.frames, float)
    outs = [rows[order].copy() for order in orders]
    targets = [_resize(state.frames[[gop.start + j for j in order]], dec.height, dec.device)
               for order in orders]
    anchors = [rows[gop.key_offset]] * len(orders)
    for a in range(0, max(len(o) for o in orders), state.batch):
        sl = slice(a, a + state.batch)
        live = [c for c, order in enumerate(orders) if len(order) > a]
        runs, at = [], 0
        for c in live:
            n = len(outs[c][sl])
            runs.append((at, at + n, anchors[c]))
            at += n
        got = optimise_rows(warp, np.concatenate([outs[c][sl] for c in live]),
                            torch.cat([targets[c][sl] for c in live]), state.steps, effort,
                            body_model=bs.body_model, runs=runs,
                            start=None if start is None else np.concatenate([start[c][sl] for c in live]))
        for c, (lo, hi, _) in zip(live, runs):
            outs[c][sl] = got[lo:hi]
            anchors[c] = got[hi - 1]
    return outs


def _frame_errors(state: _LoopState, job) -> list[float]:
    """The real decoder's frames ``js`` of group ``gi`` drawn from ``rows`` (one per frame) -> their mean
    squared errors against the working frames (at the scorer's size)."""
    gi, js, rows = job
    dec, gop = state.scorer, state.bs.gops[gi]
    at = [gop.start + j for j in js]
    drawn = dec.render(dec.analyse(gop, rows, at)).astype(np.float32)
    # The working frames at the scorer's size, made for each batch: kept for the whole clip they would cost
    # 0.44 MB a frame (at 192 px) for as long as the loop runs.
    target = state.frames[at].astype(np.float32) if (dec.height, dec.width) == state.frames.shape[1:3] else (
        area_resize(state.frames[at], dec.height))
    return [float(((drawn[k] - target[k]) ** 2).mean()) for k in range(len(js))]


def _decode_errors(pool, work, candidate, fit_err: dict, batch: int) -> list[dict]:
    """Per group, {frame: decoded mse} of the candidate rows that differ from the landmark rows; the landmark
    rows' own errors go into ``fit_err`` (per group, computed once across the calls). Batches of
    ``batch`` frames run on the pool's workers."""
    jobs, kinds = [], []
    for gi, ((gop, idx, rows, _), snapped) in enumerate(zip(work, candidate)):
        known = fit_err.setdefault(gi, {})
        for which, sel in (("fit", [j for j in idx if j not in known]),
                           ("new", [j for j in idx if not np.array_equal(snapped[j], rows[j])])):
            src = rows if which == "fit" else snapped
            for a in range(0, len(sel), batch):
                js = sel[a:a + batch]
                jobs.append((gi, js, src[js]))
                kinds.append(which)
    out = [{} for _ in work]
    for (gi, js, _), which, errs in zip(jobs, kinds, pool.map(_frame_errors, jobs)):
        (fit_err[gi] if which == "fit" else out[gi]).update(zip(js, errs))
    return out


def _score(rows: np.ndarray, snapped: np.ndarray, idx: list[int], known: dict, new: dict):
    """Each frame of ``idx`` keeps the rows whose decoded frame is closer to the real one: ``known`` the
    landmark rows' decoded errors by frame, ``new`` the snapped rows' (frames where they differ). Returns
    (rows, kept, sum mse before, sum mse after, {frame in the group: mse gain} of the kept rows)."""
    ea = {j: known[j] for j in idx}
    chosen = rows.copy()
    gains = {j: ea[j] - e for j, e in new.items() if e < ea[j]}
    for j in gains:
        chosen[j] = snapped[j]
    before = sum(ea.values())
    return chosen, len(gains), before, before - sum(gains.values()), gains
