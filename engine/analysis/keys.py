"""Key pictures chosen by content (DESIGN.md "Data flow", encode): where, and how many.

The encoder has the real frames, so it can measure what the decoder it ships will make of them (a
draft decode at DRAFT_SIDE px). It chooses how many key pictures to send:

* under a lambda (``lam``, squared error per bit, the rate-distortion trade-off of a video
  encoder; the default follows the key-picture QP as HEVC's mode decision does), or
* under a rate target (``rate_kbps`` at 25 fps, everything counted): as many keys as fit.

Then each key moves to the nearby frame whose picture serves its frames best (the draft decoder's
error over the frames that change), so a key lands where the pose shows what its neighbours need.

Every frame draws from the key pictures near it in time (``reference_lists``), those before it and
the next one after it, so a key helps the frames on both sides.

    keys, trace = choose_keys(frames, build, rate_kbps=5.0)        # build(keys) -> Bitstream
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as Fn

from engine.codec import container
from engine.codec.bitstream import Bitstream, reference_lists
from engine.codec.rate import budget_bytes

DRAFT_SIDE = 128          # the draft decode that scores key placements (about 10x cheaper than 384)
DRAFT_STRIDE = 2          # ... on every second frame (neighbouring frames say nearly the same)
MIN_SPACING = 4           # frames between two keys at least
COUNT_START_SPACING = 8   # choose_keys' count search starts at a key about every this many frames
ONE_KEY_CANDIDATES = 6    # frames tried for a clip's one key (choose_keys ``count=1``), before moving it
# The default lambda: HEVC's at the key QP, scaled to this distortion (squared error of R, G and B
# averaged, all pixels) and to what a key buys (a whole stretch of frames). Chosen on ted_e only (the
# one clip kept for it): see docs/BENCHMARKS.md "Key pictures chosen by content".
LAMBDA_SCALE = 32.0


def hevc_lambda(qp: int) -> float:
    """HM's mode-decision lambda for a QP (squared error per bit): the default trade-off."""
    return 0.57 * 2.0 ** ((qp - 12) / 3.0)


def group_starts(key_frames: list[int], n_frames: int) -> list[int]:
    """First frame of each key's group: every frame belongs to its nearest key (ties to the earlier)."""
    return [0] + [(a + b) // 2 + 1 for a, b in zip(key_frames, key_frames[1:])]


def best_group_starts(key_frames: list[int], after: np.ndarray, before: np.ndarray) -> list[int]:
    """First frame of each key's group, the frames between two keys split where they are drawn best.

    after[i], before[i]: the error of frame i drawn from the key before it, and from the key after it
    (only the frames strictly between two keys are read). Groups are contiguous, so between keys a and b
    one split s does it: frames a+1..s-1 go with a, s..b-1 with b; the s with the least summed error, of
    equal ones the nearest the midpoint (``group_starts``). A frame's decoding depends on its own key, its
    references and its own row, none of which depends on where the other frames go, so the per-stretch
    choices are exact."""
    starts = [0]
    for a, b, mid in zip(key_frames, key_frames[1:], group_starts(key_frames, len(after))[1:]):
        starts.append(min(range(a + 1, b + 1), key=lambda s: (float(after[a + 1:s].sum() + before[s:b].sum()),
                                                              abs(s - mid))))
    return starts


MAX_QP_OFFSET = 3          # key_qp_offsets: at most this far from the encoder's key QP


def key_qp_offsets(starts: list[int], n_frames: int) -> list[int]:
    """Per key, a QP offset from its group's length: round(-3 log2(n_j / mean n)), within MAX_QP_OFFSET.

    A key picture's coding error is carried into every frame its group draws from it, so the file's error
    is about sum_j n_j D_j(R_j); at the least of it for a given rate, n_j dD_j/dR_j is the same for every
    key, and with the codecs' lambda doubling every 3 QPs (``hevc_lambda``) that is QP_j = QP - 3 log2(n_j /
    mean n): a key serving twice the frames three QPs finer. Derived, not tuned: BD-rate against one QP
    for all keys on the same keys, boundaries and rows (docs/BENCHMARKS.md "Key QP by group length"):
    ted_e -2.8 % PSNR, -1.7 % VMAF; ted_c -0.8, -0.5; dance_tiktok_1 -0.3, +0.1."""
    n = np.diff(list(starts) + [n_frames]).astype(float)
    off = np.round(-3.0 * np.log2(n / n.mean()))
    return [int(v) for v in np.clip(off, -MAX_QP_OFFSET, MAX_QP_OFFSET)]


def choose_group_starts(frames: np.ndarray, build: Callable, keys: list[int], *, body_model=None,
                        device="cpu", log: Callable[[str], None] | None = None, pool=None) -> list[int]:
    """Where each key's group begins, chosen by the draft decoder instead of at the midpoints.

    build(starts) -> the Bitstream with the keys at ``keys`` and groups beginning at ``starts`` (pictures
    need not be coded: the draft takes the frames themselves). Two draft decodes of the frames between two
    keys, once drawn from the key before it, once from the key after it; then :func:`best_group_starts`.
    A frame nearer one key in time may still look more like the other's pose (measured after the closed
    loop, docs/BENCHMARKS.md "Group boundaries chosen by the decoder": +0.07 to +0.23 dB, every metric up
    on four clips). ``pool``: the ``search_pool`` of ``frames`` to decode on (default: one of its own)."""
    N = frames.shape[0]
    if len(keys) < 2:
        return group_starts(keys, N)
    from engine.synthesis.decoder import DecodeCache
    if pool is None:
        with search_pool(frames, body_model, device, DecodeCache()) as own:
            return choose_group_starts(frames, build, keys, log=log, pool=own)
    between = [i for a, b in zip(keys, keys[1:]) for i in range(a + 1, b)]
    # Every second frame is decoded (the key search's grid, _score) and the others interpolated: on ted_e
    # and dance_tiktok_1 the boundaries of decoding every frame, within one frame, in half the drafts
    # (the key stage of a 100-frame encode takes 0.6 to 0.8 s more than with the midpoints, bench --effort).
    scored = [i for i in between if i % DRAFT_STRIDE == 0]
    after, before = (_score(build(st), pool, scored) for st in
                     ([0] + list(keys[1:]), [0] + [a + 1 for a in keys[:-1]]))
    for a, b in zip(keys, keys[1:]):
        # Per stretch, anchored at the keys (the draft draws a key's own frame exactly: no error).
        xs = [i for i in scored if a < i < b]
        inner = np.arange(a + 1, b)
        after[inner] = np.interp(inner, [a] + xs, np.r_[0.0, after[xs]])
        before[inner] = np.interp(inner, xs + [b], np.r_[before[xs], 0.0])
    starts = best_group_starts(keys, after, before)
    mid = group_starts(keys, N)
    if log is not None and starts != mid:
        log(f"group boundaries {mid[1:]} -> {starts[1:]} (the draft decoder's choice between neighbouring keys)")
    return starts


def uniform_keys(count: int, n_frames: int) -> list[int]:
    """``count`` keys at the centres of equal stretches of the clip (each key serves both sides)."""
    return sorted({min(n_frames - 1, int((j + 0.5) * n_frames / count)) for j in range(count)})


def cost_samples(n_frames: int) -> list[int]:
    """The frames whose coded pictures tell ``choose_keys`` what a key costs on a clip (an encoder may
    start coding them early)."""
    return uniform_keys(3, n_frames)


# What a chained key after the first costs depends on how far the key before it is. ted_c's 17 keys at QP 37
# (about 6 frames apart) cost 0.20 of one coded alone; the chain of the three cost samples (33 frames apart)
# said 0.39, three pictures 8 frames apart 0.23 (docs/BENCHMARKS.md, "The chain's cost sampled where the
# keys go"). Under a lambda the search places keys 6 to 11 frames apart on the TED clips: there the chain
# is sampled that close. Under a rate target the keys are far apart, and the spread samples stay.
CHAIN_SAMPLE_SPACING = 8


def chain_samples(n_frames: int, dense: bool = True) -> list[int]:
    """The frames whose chain tells what a chained key after the first costs against one coded alone:
    three CHAIN_SAMPLE_SPACING apart in the middle of the clip (``dense``), else the cost samples."""
    if not dense:
        return cost_samples(n_frames)
    mid, d = n_frames // 2, CHAIN_SAMPLE_SPACING
    return sorted({max(0, min(n_frames - 1, mid + i * d)) for i in (-1, 0, 1)})


@dataclass
class KeyTrial:
    keys: tuple[int, ...]
    bytes: int | None         # the file's estimated size; None for a move (judged by its error alone)
    sse: float                # squared error of the draft decode, scaled to the full frame size
    kept: bool


RESIZE_CHUNK = 32                  # frames converted at a time by ``area_resize``


def area_resize(frames: np.ndarray, side: int) -> np.ndarray:
    """N x H x W x 3 uint8 -> N x side x side x 3 float32 (area averaging: the draft decoder's and the closed
    loop's targets). A few frames at a time: the whole clip at once would hold it in float at full size,
    1.8 MB a frame at 384 x 384 (a 380-frame clip's encode peaked 0.7 to 1.0 GB higher for it)."""
    out = np.empty((len(frames), side, side, 3), np.float32)
    for a in range(0, len(frames), RESIZE_CHUNK):
        t = torch.as_tensor(frames[a:a + RESIZE_CHUNK]).permute(0, 3, 1, 2).float()
        out[a:a + RESIZE_CHUNK] = Fn.interpolate(t, size=(side, side), mode="area").permute(0, 2, 3, 1).numpy()
    return out


@dataclass
class _SearchState:
    """What the key search's worker processes inherit (engine.workers.ForkPool)."""
    originals: np.ndarray          # N x H x W x 3 uint8: the frames, the draft decoder's key pictures and targets
    side: int
    body_model: object
    device: object
    cache: object                  # a DecodeCache (each worker fills its own copy) or None
    # The targets at the draft's size, by frame, made on first use in each worker (a worker is always
    # asked for the same frames, ``_score``): 0.2 MB a frame, 50 MB a worker for 1,024 frames on two.
    targets: dict = field(default_factory=dict)


def search_pool(frames: np.ndarray, body_model, device, cache=None):
    """The worker processes a key search decodes its drafts on (engine.workers.ForkPool; ``choose_key_qp``
    shares one between its searches): every worker draws the same frames each time, so the frames its copy
    of ``cache`` holds are the ones it will be asked for again."""
    from engine.workers import ForkPool, cpu_workers
    side = min(DRAFT_SIDE, *frames.shape[1:3])
    state = _SearchState(frames, side, body_model, device, cache)
    return ForkPool(state, cpu_workers(), device=device)


def _draft_errors(state: _SearchState, job) -> np.ndarray:
    """Squared error of the draft decode of frames ``idx`` of ``bs`` (summed over pixels, mean over channels)."""
    from engine.synthesis.decoder import Decoder
    bs, idx = job
    dec = Decoder(bs, device=state.device, body_model=state.body_model, size=(state.side, state.side),
                  pictures=lambda g: state.originals[g.key_frame], cache=state.cache)
    out = dec.decode_all(idx).astype(np.float32)
    new = [i for i in idx if i not in state.targets]
    if new:
        # Made again for each draft they took 1.4 of the 14 s of ted_c's key search in one process.
        state.targets.update(zip(new, area_resize(state.originals[new], state.side)))
    return ((out - np.stack([state.targets[i] for i in idx])) ** 2).mean(-1).sum((1, 2))


def _score(bs: Bitstream, pool, frames=None) -> np.ndarray:
    """Squared error (summed over pixels, mean over channels) of the draft decode of ``frames`` (default
    all) that fall on the DRAFT_STRIDE grid (0 elsewhere), the key pictures taken from the frames
    themselves (not yet coded), on ``pool`` (``search_pool``): the k-th frame of the grid on worker k mod W."""
    return _score_many([(bs, frames)], pool)[0]


def _score_many(items: list, pool) -> list[np.ndarray]:
    """:func:`_score` of several (bitstream, frames) at once, in one round of the pool: the two places a
    key may move to are drawn side by side (each alone left a worker idle while the other finished, and
    the main process priced the next between them: the key moves kept the two cores 70 to 80 % busy)."""
    jobs, where = [], []
    for n, (bs, frames) in enumerate(items):
        idx = [i for i in (range(bs.n_frames) if frames is None else frames) if i % DRAFT_STRIDE == 0]
        for w in range(pool.workers):
            part = [i for i in idx if (i // DRAFT_STRIDE) % pool.workers == w]
            if part:
                jobs.append((bs, part))
                where.append(n)
    out = [np.zeros(bs.n_frames) for bs, _ in items]
    for n, (_, part), e in zip(where, jobs, pool.map(_draft_errors, jobs)):
        out[n][part] = e
    return out


def affected_frames(keys: list[int], new: int, n_frames: int, max_refs: int) -> range:
    """The frames whose decoding changes when the key at ``new`` (in ``keys``) is added or moved: those of
    its own group, of the group before it (cut anew) and of every group that lists it as a reference."""
    m = keys.index(new)
    starts = group_starts(keys, n_frames) + [n_frames]
    refs = reference_lists(len(keys), max_refs)
    groups = [g for g in range(len(keys)) if g in (m - 1, m) or m in refs[g]]
    return range(starts[min(groups)], starts[max(groups) + 1])


def placeholder_payloads(samples: list[bytes]) -> Callable[[int], bytes]:
    """Stand-ins for key pictures not yet coded, from a few coded ones (``samples``): frame -> bytes as
    long as their mean, beginning with what they all begin with (the codec's parameter sets, which format
    version 3 stores once, container.shared_prefix), the rest different for every frame (so that the
    file shares no more of them than of real pictures)."""
    shared = container.shared_prefix(samples)
    rest = max(int(np.mean([len(p) for p in samples])) - len(shared), 1)

    def payload(k: int) -> bytes:
        tag = int(k).to_bytes(8, "little", signed=True)      # frames differ in their first bytes
        return shared + (tag * (rest // 8 + 1))[:rest]
    return payload


def chain_stand_in(placeholder: Callable[[int], bytes], ratio: float) -> Callable[[int, bool], bytes]:
    """Stand-ins for the key pictures of a chain not yet coded (keypicture.encode_key_chain): (frame, first)
    -> bytes. The first key's is ``placeholder``'s (a picture coded alone); each after it ``ratio`` times
    as long, its bytes its own (a chain's later pictures repeat no parameter sets)."""
    def payload(k: int, first: bool) -> bytes:
        alone = placeholder(k)
        if first:
            return alone
        n = max(1, round(ratio * len(alone)))
        tag = (int(k) + (1 << 62)).to_bytes(8, "little")      # frames differ in their first bytes
        return (tag * (n // 8 + 1))[:n]
    return payload


def choose_keys(frames: np.ndarray, build: Callable, picture: Callable, *, rate_kbps: float | None = None,
                lam: float | None = None, key_qp: int = 37, max_refs: int = 4, body_model=None, device="cpu",
                log: Callable[[str], None] | None = None, reuse: bool = True,
                cache=None, pool=None, count: int | None = None) -> tuple[list[int], list[KeyTrial]]:
    """Key positions for ``frames`` (N x H x W x 3 uint8) by rate-distortion.

    build(keys, placeholder=None) -> the Bitstream with key pictures at ``keys`` (sorted); with
    ``placeholder`` (frame -> payload bytes, :func:`placeholder_payloads`) the pictures are not coded (the
    file counts those bytes and the draft decoder takes the frames themselves). picture(k) -> the coded KeyPicture of frame k: the
    search codes a few to learn what a key costs here.

    1. How many: under ``rate_kbps`` (total at 25 fps) as many evenly spread keys as fit; under ``lam``
       (squared error per bit, default ``hevc_lambda(key_qp)`` x LAMBDA_SCALE) the count of evenly spread
       keys with the least D + lam R (D the draft decoder's squared error, R the file's bits), found
       by trying every second count, then the best one's neighbours.
    2. Where: each key moves to the nearby frame (a quarter, then an eighth of the spacing either way)
       that the draft decoder finds best for the frames it serves.
    ``count``: that many keys instead of step 1 (``encode --keys one``: 1). One key is first tried at the
    centres of ONE_KEY_CANDIDATES equal stretches of the clip, then moved as in step 2 from the best.
    Returns (keys, trials): every placement scored, with its estimated bytes and draft error.
    ``reuse``: the draft decoders share a DecodeCache (what a trial leaves unchanged is not computed again;
    the same keys either way). ``cache``: a DecodeCache to share with other searches of the same frames
    (``choose_key_qp``), instead of a new one. ``pool``: the ``search_pool`` to decode the drafts on
    (default: one of its own, with ``cache``).
    """
    from engine.synthesis.decoder import DecodeCache
    if pool is None:
        if cache is None:
            cache = DecodeCache() if reuse else None
        with search_pool(frames, body_model, device, cache) as own:
            return choose_keys(frames, build, picture, rate_kbps=rate_kbps, lam=lam, key_qp=key_qp,
                               max_refs=max_refs, log=log, pool=own, count=count)
    N, H, W = frames.shape[:3]
    side = pool.state.side
    scale = (H * W) / float(side * side)
    budget = None if rate_kbps is None else budget_bytes(rate_kbps, N)
    lam = hevc_lambda(key_qp) * LAMBDA_SCALE if lam is None else float(lam)
    say = log or (lambda s: None)
    # What a key picture costs on this clip: the mean of a few coded ones, spread over it.
    stand_in = placeholder_payloads([picture(k).payload for k in cost_samples(N)])
    trials: list[KeyTrial] = []

    def evaluate(keys):
        bs = build(keys, placeholder=stand_in)
        size = len(container.to_bytes(bs))
        err = _score(bs, pool) * scale
        trials.append(KeyTrial(tuple(keys), size, float(err.sum()), False))
        return size, err

    def moves(keys, old, cands):
        """[(placement, its draft error)] for each (placement, the frame a key moved to) of ``cands``: ``old``
        (the error of ``keys``) redrawn where the move changes the decode, the placements together in one
        round of the pool. Not priced: a move keeps the count, and is judged by its error alone."""
        built = [(cand, build(cand, placeholder=stand_in), list(affected_frames(cand, moved, N, max_refs)))
                 for cand, moved in cands]
        out = []
        for (cand, _, changed), e in zip(built, _score_many([(bs, changed) for _, bs, changed in built], pool)):
            err = old.copy()
            err[changed] = e[changed] * scale
            trials.append(KeyTrial(tuple(cand), None, float(err.sum()), False))
            out.append((cand, err))
        return out

    # 1. how many
    spacing = None
    if count is not None:
        if count == 1:
            # Which frame: with one key every frame is drawn from it, and its pose decides what the others
            # can show (arms crossed over the chest hide what every other frame shows).
            spacing = N / min(ONE_KEY_CANDIDATES, N)
            tried = [(evaluate([k]), [k]) for k in uniform_keys(min(ONE_KEY_CANDIDATES, N), N)]
            (size, err), keys = min(tried, key=lambda t: float(t[0][1].sum()))
            say(f"one key: frame {keys[0]}, squared error {err.sum():.4g} (of {len(tried)} frames tried)")
        else:
            keys = uniform_keys(count, N)
            size, err = evaluate(keys)
    elif budget is not None:             # as many as fit: only sizes to compute
        count = 1
        while count < N // MIN_SPACING and len(container.to_bytes(
                build(uniform_keys(count + 1, N), placeholder=stand_in))) <= budget:
            count += 1
        keys = uniform_keys(count, N)
        size, err = evaluate(keys)
        if size > budget:
            say(f"one key picture already takes about {size} B, over the {budget:.0f} B budget")
    else:                                # the count with the least D + lambda R
        tried = {}

        def trial(count):
            if count not in tried:
                keys_c = uniform_keys(count, N)
                size_c, err_c = evaluate(keys_c)
                tried[count] = (float(err_c.sum()) + lam * 8 * size_c, count, keys_c, size_c, err_c)
                say(f"{count} keys: about {size_c} B, squared error {err_c.sum():.4g}, D + lambda R "
                    f"{tried[count][0]:.4g}")
            return tried[count]
        # Every second count, to four past the best, then the best one's two neighbours. A chain makes
        # later keys cheap, so the best count is often past 15, and trying every count (to three past the
        # best) was about 40 % of the key stage; it also stopped at the first bump of a bumpy curve. On 14
        # clips (docs/BENCHMARKS.md "The key count in steps of two"): the same count on 10, a lower D +
        # lambda R on 3 (ubc_2: 4 keys at 4.12e9 -> 21 at 1.83e9), 1 % higher on one (ubc_1, an even count
        # missed); 15 or 16 drafts instead of 23 to 25 on the dancers.
        # The scan starts at a key about every COUNT_START_SPACING frames and first walks down while fewer
        # keys do better: on 11 clips of people (TED, dancers, fashion; 100 frames) the best count was 12 to
        # 25 and D + lambda R fell all the way from one key to 9 (docs/BENCHMARKS.md "Encode speed again"),
        # so the drafts of 1 to 9 keys were spent on counts 1.01 to 6.3 times the best. Where the cost falls
        # all the way down to the start (11 keys for 100 frames), the search takes the old path from there
        # (the same files on those eleven, 4 drafts fewer each; more on longer clips); where it does not, it
        # walks down as long as fewer keys do better.
        top = N // MIN_SPACING
        count = max(1, min(top, int(N / COUNT_START_SPACING)))
        count -= 1 - count % 2                     # odd: a count the scan from one would have tried
        down = count
        while down - 2 >= 1 and trial(down - 2)[0] < trial(down)[0]:
            down -= 2
        best = trial(down)                         # each step down was better: the best so far
        while count + 2 <= top and count < best[1] + 4:
            count += 2
            best = min(best, trial(count), key=lambda t: t[0])
        for c in (best[1] - 1, best[1] + 1):
            if 1 <= c <= top:
                best = min(best, trial(c), key=lambda t: t[0])
        _, _, keys, size, err = best
    # 2. where
    spacing = spacing or N / len(keys)
    for j in range(len(keys)):
        for step in sorted({max(1, int(spacing / 4)), max(1, int(spacing / 8))}, reverse=True):
            lo = keys[j - 1] + MIN_SPACING if j else 0
            hi = keys[j + 1] - MIN_SPACING if j + 1 < len(keys) else N - 1
            best = None
            for cand, err_c in moves(keys, err, [(keys[:j] + [c] + keys[j + 1:], c)
                                                 for c in (keys[j] - step, keys[j] + step) if lo <= c <= hi]):
                if err_c.sum() < (err if best is None else best[1]).sum():
                    best = (cand, err_c)
            if best is not None:
                say(f"key {keys[j]} -> {best[0][j]}: squared error {err.sum():.4g} -> {best[1].sum():.4g}")
                keys, err = best
    # The real pictures: when they cost more than estimated, drop the key serving the fewest frames.
    while budget is not None and len(keys) > 1 and len(container.to_bytes(build(keys))) > budget:
        starts = group_starts(keys, N) + [N]
        j = int(np.argmin(np.diff(starts)))
        say(f"coded, the file is over budget: key {keys[j]} dropped")
        keys = keys[:j] + keys[j + 1:]
    if not any(t.keys == tuple(keys) for t in trials):
        evaluate(keys)                           # a key was dropped: the draft error of what is kept
    for t in trials:
        t.kept = t.keys == tuple(keys)
    return keys, trials


# Key-picture QPs tried under a rate target, as steps above the encoder's key QP (``choose_key_qp``).
QP_STEPS = (0, 5, 10, 15, 20)
# How much a key picture's own coding error counts against the draft warp's in ``choose_key_qp``: a
# perceptual weight. Counted once, the squared error took the coarsest QP that added a key, and a coarse
# key's blur costs SSIM and VMAF far more than its squared error says (ted_c at 11 kbps: QP 57, VMAF 8.0;
# counted three times: QP 52, VMAF 20.4). 3 with ``finer_key_qp`` against 1: ted_c's BD-rates against VVC
# better on all four metrics, the 5 kbps TED mean VMAF 13.1 -> 18.9; 2 was worse than 1 on MS-SSIM and
# VMAF (docs/BENCHMARKS.md, "The key QP under a rate target, filled").
KEY_ERROR_WEIGHT = 3.0


def choose_key_qp(frames: np.ndarray, build: Callable, picture: Callable, qps, *, rate_kbps: float,
                  max_refs: int = 4, body_model=None, device="cpu",
                  log: Callable[[str], None] | None = None,
                  samples: Callable[[int], np.ndarray] | None = None) -> tuple[int, list[int]]:
    """Under a rate target, the key pictures' QP as well as their places: a few coarse keys can beat one
    fine one (eval, 2026-12-04, 100 TED frames: ted_a 25.8 dB at 4.4 kbps with keys by content at
    QP 48, against 22.3 dB at 3.7 kbps with one key at QP 42).

    For each QP of ``qps`` (ascending) ``choose_keys`` places as many keys as the rate allows; the
    placement's expected error is the draft decoder's (which warps the frames themselves) plus what
    coding costs a key picture at that QP (the mean squared error of the search's sample pictures, at
    the draft's size, weighted by KEY_ERROR_WEIGHT: the warp carries a key's coding error into every frame
    it serves). The QP with the least expected error among those whose file fits wins. Every QP is tried: the error is not
    monotone in the QP (it rises while the key count stays, and falls when one more key fits), and a QP
    that keeps the count costs little (the draft decodes are in the shared DecodeCache).
    build(qp) and picture(qp) -> ``choose_keys``'s build and picture for that QP. samples(qp) -> the
    decoded pictures of ``cost_samples`` as the file will hold them (default: each coded alone, picture(qp);
    a chain's later ones are predicted from the first). Returns (qp, keys).
    """
    from engine.synthesis.decoder import DecodeCache
    with search_pool(frames, body_model, device, DecodeCache()) as pool:
        return _choose_key_qp(frames, build, picture, qps, rate_kbps, max_refs, log, pool, samples)


def _choose_key_qp(frames, build, picture, qps, rate_kbps, max_refs, log, pool, samples=None):
    from engine.codec.keypicture import decode_key_picture
    N, H, W = frames.shape[:3]
    side = pool.state.side
    budget = budget_bytes(rate_kbps, N)
    scored = len(range(0, N, DRAFT_STRIDE))
    say = log or (lambda s: None)
    best = None                                  # (expected mse, qp, keys)
    for qp in qps:
        keys, trials = choose_keys(frames, build(qp), picture(qp), rate_kbps=rate_kbps, key_qp=qp,
                                   max_refs=max_refs, log=log, pool=pool)
        sse = next(t.sse for t in trials if t.kept)
        at = cost_samples(N)
        coded = samples(qp) if samples is not None else np.stack([decode_key_picture(picture(qp)(k)) for k in at])
        key_mse = float(((area_resize(coded, side) - area_resize(frames[at], side)) ** 2).mean())
        warp = sse / (scored * H * W)
        expected = warp + KEY_ERROR_WEIGHT * key_mse
        fits = len(container.to_bytes(build(qp)(keys))) <= budget
        say(f"key QP {qp}: {len(keys)} keys, expected squared error {expected:.1f} (warp "
            f"{warp:.1f} + key picture {key_mse:.1f}){'' if fits else ', over the rate'}")
        if fits and (best is None or expected < best[0]):
            best = (expected, qp, keys)
    if best is None:                             # nothing fits: the coarsest tried, its one key
        return qp, keys
    return best[1], best[2]


def finer_key_qp(size: Callable[[int], int], qp: int, budget: float, *, min_qp: int = 0,
                 steps: int = QP_STEPS[1] - 1) -> int:
    """The finest QP, at most ``steps`` below ``qp`` (and not below ``min_qp``), whose file still fits
    ``budget`` bytes, for keys already placed: ``size(q)`` -> the file's bytes with the key pictures coded
    at q. ``choose_key_qp`` tries QPs five apart, so the file it chooses can leave a good part of the rate
    unused (ted_c at 18 kbps: 16.2). A finer key picture only lowers the error of the frames it serves.
    The size falls as the QP rises, so the first QP that does not fit ends the search."""
    best = qp
    for q in range(qp - 1, max(min_qp, qp - steps) - 1, -1):
        if size(q) > budget:
            break
        best = q
    return best
