"""Scoring IHVC and the anchors on one clip: encode, decode, measure, compare (``python main.py eval``).

Per clip (DESIGN.md "Evaluation", data README "Protocol"): IHVC at each key QP plus the three
low-delay anchors of engine/evaluation/anchors.py; every point is counted entirely (IHVC:
``container.to_bytes`` of the whole bitstream) and reported as bits per frame and kbps at 25 fps,
with PSNR, SSIM, MS-SSIM and VMAF on the decoded RGB frames against the clip's frames.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import InputError
from engine.evaluation.rd import (AUTO, METRICS, RATE_FPS, Point, period_name, bd_rate, lowest_rate_rows, pareto, plot_rd,
                                  points_rows, quality_at_rate, write_csv)


_ANALYSIS: dict = {}      # (path, frames, size, region) -> the one-fit analysis, reused across key QPs


def default_ihvc_encoder(frames: np.ndarray, fps, key_qp: int, path=None, region=None, gop: int = 0,
                         rate: float | None = None):
    """engine.analysis.encoder.encode_video of the clip at ``path`` at one key QP -> Bitstream.

    gop: frames per key picture; 0 one key picture; AUTO key pictures chosen by content (the analysis
    is done once per clip and reused for every QP, each placing its own keys). ``rate`` (kbps, with
    AUTO): keys and key QP chosen under that rate target (``encode --rate R --key-qp auto``; ``key_qp``
    is then ignored). The encoder reads the
    clip itself; it is asked for the same frames (count, size, region) as ``frames``, and the result
    is checked against them.
    """
    from engine.analysis.encoder import encode_video
    if path is None:
        raise InputError("the IHVC encoder needs the clip's path")
    kw = dict(key_codec="vvc", key_qp=key_qp, size=int(frames.shape[1]), max_frames=len(frames), region=region)
    if gop == AUTO:
        key = (str(path), len(frames), int(frames.shape[1]), region)
        if key not in _ANALYSIS:
            _ANALYSIS.clear()                 # one clip at a time: the analysis holds its frames
            _ANALYSIS[key] = encode_video(path, keys="one", keep_analysis=True, effort="fast", **kw).analysis
        if rate:
            kw.update(key_qp="auto", rate_kbps=rate)
        bs = encode_video(path, keys="auto", analysis=_ANALYSIS[key], **kw).bitstream
    else:
        bs = encode_video(path, keys="one", gop=gop or None, **kw).bitstream
    if (bs.n_frames, bs.height, bs.width) != frames.shape[:3]:
        raise InputError(f"encoder read {bs.n_frames} frames {bs.width}x{bs.height}, evaluation has "
                         f"{len(frames)} frames {frames.shape[2]}x{frames.shape[1]}")
    return bs


def ihvc_points(frames: np.ndarray, fps, key_qps: list[int], encoder: Callable | None = None,
                device=None, with_vmaf: bool = True, log=print, path=None,
                region=None, decoders=("learned", "analytic"), gops=(0,), scorer=None, rates=()) -> list[Point]:
    """IHVC at each key-picture period and key QP, decoded by each decoder: (Point, decoded frames).
    Then, per kbps figure of ``rates``, keys by content with the key QP chosen by the encoder under that
    rate target (encoder(..., gop=AUTO, rate=R)); the point's QP is the one it chose.

    The analysis runs once per period (at the first QP); the other QPs re-code only the key
    pictures, since the semantics do not depend on the key QP; with AUTO keys every QP places its
    own keys (the trade-off follows the QP) from one analysis. "learned" is skipped (said)
    when no weights are shipped. encoder(frames, fps, key_qp, path=..., region=..., gop=...) ->
    Bitstream (default: engine.analysis.encoder). With a ``scorer`` the points are handed to it (and come
    out of its ``close``); without one they are returned.
    """
    from dataclasses import replace

    from engine.codec import container
    from engine.synthesis.decoder import open_decoder
    from engine.codec.keypicture import encode_key_chain, encode_key_picture
    encoder = encoder or default_ihvc_encoder
    own = scorer is None
    sc = Scorer(frames, with_vmaf) if own else scorer

    def score(bs, qp, gop, rate=0.0):
        n_bytes = len(container.to_bytes(bs))
        for kind in decoders:
            decoder = open_decoder(bs, device=device, analytic=kind == "analytic",
                                   say=lambda s: log(f"  note: {s}"))
            got = "analytic" if decoder.refiner is None else "learned"
            if got != kind:
                continue                  # no learned weights: the note above said so
            dec = decoder.decode_all()
            if dec.shape != frames.shape:
                raise InputError(f"decoded IHVC video {dec.shape} does not match the clip {frames.shape}")

            def done(quality, got=got):
                p = Point("ihvc", qp, n_bytes, len(frames), quality, decoder=got, gop=gop, rate_target=rate)
                log(f"  ihvc {got:8s} {period_name(gop, len(frames), rate):15s} QP {qp:2d}: {p.kbps:7.2f} kbps  "
                    + fmt(p.quality))
                return p
            sc.submit(dec, done)

    for gop in gops:
        t = time.perf_counter()
        base = encoder(frames, fps, key_qps[0], path=path, region=region, gop=gop)
        log(f"  IHVC analysis + encode ({period_name(gop, len(frames))}): {time.perf_counter() - t:.1f} s")
        for qp in key_qps:
            if qp == key_qps[0]:
                bs = base
            elif gop == AUTO:
                bs = encoder(frames, fps, qp, path=path, region=region, gop=gop)
            else:
                codec = base.gops[0].key_picture.codec_name
                kps = encode_key_chain([frames[g.key_frame] for g in base.gops], codec, qp) if base.chained else [
                    encode_key_picture(frames[g.key_frame], codec, qp) for g in base.gops]
                gps = [replace(g, key_picture=kp) for g, kp in zip(base.gops, kps)]
                bs = replace(base, gops=gps, sizes={})
            score(bs, qp, gop)
    for rate in rates:
        t = time.perf_counter()
        bs = encoder(frames, fps, key_qps[0], path=path, region=region, gop=AUTO, rate=rate)
        log(f"  IHVC encode ({period_name(AUTO, len(frames), rate)}): {time.perf_counter() - t:.1f} s")
        score(bs, bs.gops[0].key_picture.qp, AUTO, rate)
    return sc.close() if own else []


class Scorer:
    """Scores decoded videos on one worker thread while the next point is coded and decoded.

    The metrics (VMAF above all) cost about as much as decoding, and the two overlap well on
    two cores. ``submit(decoded, done)`` queues one video (at most two wait, to bound memory);
    ``done(quality) -> Point`` runs in submission order; ``close()`` returns the Points in order.
    """

    def __init__(self, frames: np.ndarray, with_vmaf: bool):
        from concurrent.futures import ThreadPoolExecutor
        self.frames, self.with_vmaf = frames, with_vmaf
        self.pool = ThreadPoolExecutor(1, thread_name_prefix="ihvc-metrics")
        self.pending: list = []
        self.points: list[Point] = []

    def submit(self, decoded: np.ndarray, done: Callable[[dict], Point]) -> None:
        from engine.evaluation import metrics
        while len(self.pending) >= 2:
            self._finish_one()
        self.pending.append((self.pool.submit(metrics.evaluate, self.frames, decoded, self.with_vmaf), done))

    def _finish_one(self) -> None:
        fut, done = self.pending.pop(0)
        self.points.append(done(fut.result()))

    def close(self) -> list[Point]:
        try:
            while self.pending:
                self._finish_one()
        finally:
            self.pool.shutdown(wait=True, cancel_futures=True)
        return self.points


def fmt(q: dict) -> str:
    return "  ".join(f"{m} {q[m]:.4f}" for m in METRICS if m in q)



def evaluate_clip(frames: np.ndarray, fps, name: str, out_dir: Path, key_qps: list[int],
                  anchor_names=("vvc", "x265", "svtav1"), anchor_qps: dict | None = None,
                  encoder: Callable | None = None, device=None, with_vmaf: bool = True, log=print,
                  path=None, region=None, decoders=("learned", "analytic"), gops=(0,), rates=()) -> dict:
    """Evaluate one clip; writes the CSVs and the plot; returns {"points", "bd", "matched", "lowest"}."""
    from engine.evaluation import anchors
    sc = Scorer(frames, with_vmaf)
    ihvc_points(frames, fps, key_qps, encoder, device, with_vmaf, log, path, region, decoders, gops, scorer=sc,
                rates=rates)
    qps = {a: (anchor_qps or anchors.DEFAULT_QPS)[a] for a in anchor_names}
    for res in anchors.run_anchors(frames, qps, RATE_FPS):
        def done(quality, res=res):
            p = Point(res.codec, res.qp, res.n_bytes, len(frames), quality)
            log(f"  {res.codec:6s} QP {res.qp:2d}: {p.kbps:7.2f} kbps  " + fmt(p.quality))
            return p
        sc.submit(res.frames, done)
    points = sc.close()
    return summarise_clip(points, name, out_dir, anchor_names, [m for m in METRICS if with_vmaf or m != "vmaf"],
                          len(frames), log)


def summarise_clip(points: list[Point], name: str, out_dir: Path, anchor_names, used, n_frames: int,
                   log=print) -> dict:
    """One clip's points -> BD-rates against each anchor (Pareto front of IHVC per metric), the anchors at
    IHVC's rates, the lowest-rate checks; writes the CSVs and the plot; returns {"points", "bd", "matched",
    "lowest"}. ``eval`` calls it per clip, ``eval --merge`` on the points of earlier runs put together."""
    bd_rows, matched = [], []
    for curve in dict.fromkeys(p.curve for p in points if p.codec == "ihvc"):
        # per metric, the curve is the Pareto front over key periods and QPs
        ihvc_all = [p for p in points if p.curve == curve]
        fronts = {m: pareto(ihvc_all, m) for m in used}
        for a in anchor_names:
            ap = [p for p in points if p.codec == a]
            for m in used:
                ihvc = fronts[m]
                bd, lo, hi, note = bd_rate(ihvc, ap, m)
                bd_rows.append({"clip": name, "ihvc": curve, "anchor": a, "metric": m, "bd_rate_percent": bd,
                                "overlap_lo": lo, "overlap_hi": hi, "note": note})
                for p in ihvc_all:
                    qa = quality_at_rate(ap, m, p.kbps)
                    matched.append({"clip": name, "ihvc": curve, "ihvc_gop": p.gop, "ihvc_key_qp": p.qp,
                                    "ihvc_rate_target": p.rate_target,
                                    "kbps": p.kbps, "metric": m, "ihvc_quality": p.quality[m], "anchor": a,
                                    "anchor_at_same_rate": qa,
                                    "delta": p.quality[m] - qa if math.isfinite(qa) else math.nan,
                                    "on_front": any(p is q for q in ihvc)})
    out_dir.mkdir(parents=True, exist_ok=True)
    write_csv(out_dir / f"{name}_points.csv", points_rows(points, name))
    write_csv(out_dir / f"{name}_bd.csv", bd_rows)
    write_csv(out_dir / f"{name}_matched.csv", matched)
    lowest = lowest_rate_rows(points, name, used)
    write_csv(out_dir / f"{name}_lowest.csv", lowest)
    plot_rd(points, out_dir / f"{name}_rd.png", title=name, metrics_=used)
    for r in matched:
        if r["on_front"] and math.isfinite(r["anchor_at_same_rate"]):
            log(f"  at {r['kbps']:.2f} kbps ({r['metric']}): {r['ihvc']} "
                f"({period_name(r['ihvc_gop'], n_frames, r['ihvc_rate_target'])}, "
                f"QP {r['ihvc_key_qp']}) {r['ihvc_quality']:.4f} vs {r['anchor']} {r['anchor_at_same_rate']:.4f}")
    for r in bd_rows:
        v = r["bd_rate_percent"]
        log(f"  BD-rate {r['ihvc']} vs {r['anchor']:6s} ({r['metric']:7s}): "
            + (f"{v:+.1f} %" if math.isfinite(v) else "n/a") + (f"  [{r['note']}]" if r["note"] else ""))
    for r in lowest:
        if r["metric"] == "psnr":
            continue
        where = (f"{period_name(r['ihvc_gop'], n_frames, r['ihvc_rate_target'])}, QP {r['ihvc_key_qp']}, "
                 f"{r['ihvc_kbps']:.2f} kbps"
                 if math.isfinite(r["ihvc_kbps"]) else "no IHVC point at or below that rate")
        log(f"  at {r['anchor']}'s lowest rate (QP {r['anchor_qp']}, {r['anchor_kbps']:.2f} kbps) {r['metric']}: "
            f"{r['ihvc']} {r['ihvc_quality']:.4f} ({where}) vs {r['anchor_quality']:.4f}: "
            + ("higher" if r["wins"] else "not higher"))
    return {"points": points, "bd": bd_rows, "matched": matched, "lowest": lowest}



def mean_bd_rows(all_bd: list[dict], anchor_names) -> list[dict]:
    """BD-rates averaged over clips, per IHVC curve, anchor and metric (clips without overlap left out)."""
    rows = []
    for curve in dict.fromkeys(r["ihvc"] for r in all_bd):
        for a in anchor_names:
            for m in METRICS:
                vals = [r["bd_rate_percent"] for r in all_bd
                        if r["ihvc"] == curve and r["anchor"] == a and r["metric"] == m]
                fin = [v for v in vals if math.isfinite(v)]
                if vals:
                    rows.append({"ihvc": curve, "anchor": a, "metric": m,
                                 "mean_bd_rate_percent": float(np.mean(fin)) if fin else math.nan,
                                 "clips_with_overlap": len(fin), "clips": len(vals)})
    return rows
