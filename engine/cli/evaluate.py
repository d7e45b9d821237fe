"""``python main.py eval VIDEO``: rate-distortion of IHVC against VVC, x265 and SVT-AV1.

Per clip (DESIGN.md "Evaluation", data README "Protocol"): IHVC at each key
QP plus the three low-delay anchors of engine/evaluation/anchors.py; every point is
counted entirely (IHVC: ``container.to_bytes`` of the whole bitstream) and
reported as bits per frame and kbps at 25 fps, with PSNR, SSIM, MS-SSIM and
VMAF on the decoded RGB frames against the clip's frames. Then BD-rate of
IHVC against each anchor per metric over the overlapping quality range (or
"no overlap"), and the anchors' quality at IHVC's bitrates. Writes
``<clip>_points.csv``, ``<clip>_bd.csv``, ``<clip>_matched.csv``,
``<clip>_lowest.csv`` (the best IHVC point at or below each anchor's lowest rate) and
``<clip>_rd.png`` (quality vs kbps, one panel per metric, in the manner of the
paper's Fig. 2). ``--all DIR`` evaluates every clip in DIR and writes
``all_bd.csv`` with BD-rates averaged over the clips.

IHVC runs the encoder's analysis once per clip (at the first key QP); the
other key QPs re-code only the key pictures, since the semantics do not
depend on the key QP. IHVC runs at every key-picture period of ``--gops`` (0: one
key picture for the clip; a shorter period spends rate on key pictures for
quality) and is decoded by each of ``--decoders`` (the shipped learned decoder and
the training-free analytic one), each its own curve. BD-rates and matched-rate
figures use, per metric, the Pareto front over periods and QPs (what an encoder
choosing its period per rate would reach).
"""
from __future__ import annotations

import csv
import math
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from engine.errors import InputError

METRICS = ("psnr", "ssim", "ms_ssim", "vmaf")
RATE_FPS = 25
VIDEO_EXT = (".mp4", ".mkv", ".mov", ".avi", ".webm")


def add_arguments(p):
    p.add_argument("video", nargs="?", help="clip to evaluate")
    p.add_argument("--key-qps", default="32,37,42,45,48", help="IHVC key-picture QPs (default 32,37,42,45,48)")
    p.add_argument("--max-frames", type=int, default=None, help="use the first N frames")
    p.add_argument("--out", default="eval_out", help="output folder (default eval_out)")
    p.add_argument("--all", dest="all_dir", default=None, help="evaluate every clip in this folder (recursively)")
    p.add_argument("--anchors", default="vvc,x265,svtav1", help="anchors to run (default vvc,x265,svtav1; 'none')")
    p.add_argument("--device", default=None, help="decoder device: cpu or cuda")
    p.add_argument("--no-vmaf", action="store_true", help="skip VMAF")
    p.add_argument("--decoders", default="learned,analytic",
                   help="IHVC decoders, each its own curve (default learned,analytic)")
    p.add_argument("--analytic", action="store_true", help="only the training-free analytic decoder")
    p.add_argument("--gops", default="0,20",
                   help="IHVC key-picture periods in frames, 0 = one key picture for the clip (default 0,20)")
    p.add_argument("--threads", type=int, default=1,
                   help="PyTorch threads for decoding and metrics (default 1: robust on a shared machine)")


@dataclass
class Point:
    codec: str
    qp: int
    n_bytes: int
    n_frames: int
    quality: dict = field(default_factory=dict)
    decoder: str = ""            # IHVC only: "learned" or "analytic"
    gop: int = 0                 # IHVC only: frames per key picture (0: one key picture for the clip)

    @property
    def curve(self) -> str:
        """The curve a point belongs to: an anchor, or IHVC with one decoder ("ihvc", "ihvc_analytic")."""
        return self.codec if self.codec != "ihvc" or self.decoder != "analytic" else "ihvc_analytic"

    @property
    def bits_per_frame(self) -> float:
        return self.n_bytes * 8 / self.n_frames

    @property
    def kbps(self) -> float:
        return self.bits_per_frame * RATE_FPS / 1000


# ----------------------------------------------------------------------------- BD-rate

def _curve(points: list[Point], metric: str):
    """(quality ascending, log rate) with duplicates and NaNs removed."""
    q = np.array([p.quality[metric] for p in points], float)
    r = np.log(np.array([p.kbps for p in points], float))
    ok = np.isfinite(q) & np.isfinite(r)
    q, r = q[ok], r[ok]
    order = np.argsort(q)
    q, r = q[order], r[order]
    keep = np.r_[True, np.diff(q) > 1e-9] if q.size else np.zeros(0, bool)
    return q[keep], r[keep]


def bd_rate(test: list[Point], anchor: list[Point], metric: str) -> tuple[float, float, float, str]:
    """Bjøntegaard delta rate (%) of ``test`` vs ``anchor`` (negative = test saves bits).

    Log-rate as a piecewise-cubic (PCHIP) function of quality, integrated over the
    overlapping quality interval. Returns (bd %, lo, hi, note); bd is NaN when the
    curves do not overlap or have fewer than two points.
    """
    from scipy.interpolate import PchipInterpolator
    qa, ra = _curve(anchor, metric)
    qt, rt = _curve(test, metric)
    if qa.size < 2 or qt.size < 2:
        return math.nan, math.nan, math.nan, "fewer than two points"
    lo, hi = max(qa[0], qt[0]), min(qa[-1], qt[-1])
    if hi <= lo:
        return math.nan, lo, hi, (f"no overlap: {metric} {qt[0]:.3f}..{qt[-1]:.3f} (IHVC) vs "
                                  f"{qa[0]:.3f}..{qa[-1]:.3f} (anchor)")
    fa, ft = PchipInterpolator(qa, ra), PchipInterpolator(qt, rt)
    diff = (ft.integrate(lo, hi) - fa.integrate(lo, hi)) / (hi - lo)
    full = lo <= min(qa[0], qt[0]) + 1e-12 and hi >= max(qa[-1], qt[-1]) - 1e-12
    note = "" if full else f"partial overlap {lo:.3f}..{hi:.3f}"
    if (hi - lo) < 0.1 * max(qa[-1] - qa[0], qt[-1] - qt[0]):
        note = f"small overlap {lo:.3f}..{hi:.3f} (under 10 % of the quality range): unreliable"
    return float((math.exp(diff) - 1) * 100), float(lo), float(hi), note


def quality_at_rate(points: list[Point], metric: str, kbps: float) -> float:
    """Quality of a curve at a bitrate (linear in log rate); NaN outside its rate range."""
    r = np.log(np.array([p.kbps for p in points], float))
    q = np.array([p.quality[metric] for p in points], float)
    order = np.argsort(r)
    r, q = r[order], q[order]
    x = math.log(kbps)
    if r.size < 2 or x < r[0] - 1e-9 or x > r[-1] + 1e-9:
        return math.nan
    return float(np.interp(x, r, q))


# ----------------------------------------------------------------------------- IHVC

def default_ihvc_encoder(frames: np.ndarray, fps, key_qp: int, path=None, region=None, gop: int = 0):
    """engine.analysis.encoder.encode_video of the clip at ``path`` at one key QP -> Bitstream.

    The encoder reads the clip itself; it is asked for the same frames (count, size, region)
    as ``frames``, and the result is checked against them.
    """
    from engine.analysis.encoder import encode_video
    if path is None:
        raise InputError("the IHVC encoder needs the clip's path")
    bs, _ = encode_video(path, key_codec="vvc", key_qp=key_qp, size=int(frames.shape[1]),
                         max_frames=len(frames), region=region, gop=gop or None)
    if (bs.n_frames, bs.height, bs.width) != frames.shape[:3]:
        raise InputError(f"encoder read {bs.n_frames} frames {bs.width}x{bs.height}, evaluation has "
                         f"{len(frames)} frames {frames.shape[2]}x{frames.shape[1]}")
    return bs


def ihvc_points(frames: np.ndarray, fps, key_qps: list[int], encoder: Callable | None = None,
                device=None, with_vmaf: bool = True, log=print, path=None,
                region=None, decoders=("learned", "analytic"), gops=(0,), scorer=None) -> list[Point]:
    """IHVC at each key-picture period and key QP, decoded by each decoder: (Point, decoded frames).

    The analysis runs once per period (at the first QP); the other QPs re-code only the key
    pictures, since the semantics do not depend on the key QP. "learned" is skipped (said)
    when no weights are shipped. encoder(frames, fps, key_qp, path=..., region=..., gop=...) ->
    Bitstream (default: engine.analysis.encoder). With a ``scorer`` the points are handed to it (and come
    out of its ``close``); without one they are returned.
    """
    from dataclasses import replace

    from engine.codec import container
    from engine.synthesis.decoder import open_decoder
    from engine.codec.keypicture import encode_key_picture
    encoder = encoder or default_ihvc_encoder
    own = scorer is None
    sc = Scorer(frames, with_vmaf) if own else scorer
    for gop in gops:
        t = time.perf_counter()
        base = encoder(frames, fps, key_qps[0], path=path, region=region, gop=gop)
        log(f"  IHVC analysis + encode (key every {gop or len(frames)} frames): {time.perf_counter() - t:.1f} s")
        for qp in key_qps:
            if qp == key_qps[0]:
                bs = base
            else:
                gps = [replace(g, key_picture=encode_key_picture(frames[g.start], g.key_picture.codec_name, qp))
                       for g in base.gops]
                bs = replace(base, gops=gps, sizes={})
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

                def done(quality, qp=qp, n_bytes=n_bytes, got=got, gop=gop):
                    p = Point("ihvc", qp, n_bytes, len(frames), quality, decoder=got, gop=gop)
                    log(f"  ihvc {got:8s} key every {gop or len(frames):3d}, QP {qp:2d}: {p.kbps:7.2f} kbps  "
                        + _fmt(p.quality))
                    return p
                sc.submit(dec, done)
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


def pareto(points: list[Point], metric: str) -> list[Point]:
    """The points no other point beats at an equal or lower rate (the best choice of period and QP
    for each rate, what an encoder would pick), by rate."""
    ps = sorted((p for p in points if math.isfinite(p.quality.get(metric, math.nan))), key=lambda p: p.kbps)
    front, best = [], -math.inf
    for p in ps:
        if p.quality[metric] > best:
            front.append(p)
            best = p.quality[metric]
    return front


def _fmt(q: dict) -> str:
    return "  ".join(f"{m} {q[m]:.4f}" for m in METRICS if m in q)


# ----------------------------------------------------------------------------- one clip

def evaluate_clip(frames: np.ndarray, fps, name: str, out_dir: Path, key_qps: list[int],
                  anchor_names=("vvc", "x265", "svtav1"), anchor_qps: dict | None = None,
                  encoder: Callable | None = None, device=None, with_vmaf: bool = True, log=print,
                  path=None, region=None, decoders=("learned", "analytic"), gops=(0,)) -> dict:
    """Evaluate one clip; writes the CSVs and the plot; returns {"points", "bd", "matched"}."""
    from engine.evaluation import anchors
    sc = Scorer(frames, with_vmaf)
    ihvc_points(frames, fps, key_qps, encoder, device, with_vmaf, log, path, region, decoders, gops, scorer=sc)
    qps = {a: (anchor_qps or anchors.DEFAULT_QPS)[a] for a in anchor_names}
    for res in anchors.run_anchors(frames, qps, RATE_FPS):
        def done(quality, res=res):
            p = Point(res.codec, res.qp, res.n_bytes, len(frames), quality)
            log(f"  {res.codec:6s} QP {res.qp:2d}: {p.kbps:7.2f} kbps  " + _fmt(p.quality))
            return p
        sc.submit(res.frames, done)
    points = sc.close()
    used = [m for m in METRICS if with_vmaf or m != "vmaf"]
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
                                    "kbps": p.kbps, "metric": m, "ihvc_quality": p.quality[m], "anchor": a,
                                    "anchor_at_same_rate": qa,
                                    "delta": p.quality[m] - qa if math.isfinite(qa) else math.nan,
                                    "on_front": any(p is q for q in ihvc)})
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_csv(out_dir / f"{name}_points.csv",
               [{"clip": name, "codec": p.codec, "decoder": p.decoder, "gop": p.gop, "qp": p.qp, "bytes": p.n_bytes, "frames": p.n_frames,
                 "bits_per_frame": p.bits_per_frame, "kbps_at_25fps": p.kbps,
                 **{m: p.quality.get(m, math.nan) for m in METRICS}} for p in points])
    _write_csv(out_dir / f"{name}_bd.csv", bd_rows)
    _write_csv(out_dir / f"{name}_matched.csv", matched)
    lowest = lowest_rate_rows(points, name, used)
    _write_csv(out_dir / f"{name}_lowest.csv", lowest)
    plot_rd(points, out_dir / f"{name}_rd.png", title=name, metrics_=used)
    for r in matched:
        if r["on_front"] and math.isfinite(r["anchor_at_same_rate"]):
            log(f"  at {r['kbps']:.2f} kbps ({r['metric']}): {r['ihvc']} (key every {r['ihvc_gop'] or len(frames)}, "
                f"QP {r['ihvc_key_qp']}) {r['ihvc_quality']:.4f} vs {r['anchor']} {r['anchor_at_same_rate']:.4f}")
    for r in bd_rows:
        v = r["bd_rate_percent"]
        log(f"  BD-rate {r['ihvc']} vs {r['anchor']:6s} ({r['metric']:7s}): "
            + (f"{v:+.1f} %" if math.isfinite(v) else "n/a") + (f"  [{r['note']}]" if r["note"] else ""))
    for r in lowest:
        if r["metric"] == "psnr":
            continue
        where = (f"key every {r['ihvc_gop'] or len(frames)}, QP {r['ihvc_key_qp']}, {r['ihvc_kbps']:.2f} kbps"
                 if math.isfinite(r["ihvc_kbps"]) else "no IHVC point at or below that rate")
        log(f"  at {r['anchor']}'s lowest rate (QP {r['anchor_qp']}, {r['anchor_kbps']:.2f} kbps) {r['metric']}: "
            f"{r['ihvc']} {r['ihvc_quality']:.4f} ({where}) vs {r['anchor_quality']:.4f}: "
            + ("higher" if r["wins"] else "not higher"))
    return {"points": points, "bd": bd_rows, "matched": matched, "lowest": lowest}


def lowest_rate_rows(points: list[Point], name: str, metrics_=METRICS) -> list[dict]:
    """The issue's target check: for each anchor's lowest-rate point and each IHVC curve, the best
    IHVC point (any key period and QP) at the same or a lower rate, per metric. ``wins`` is True
    when IHVC's quality is higher; no IHVC point at or below that rate gives NaN and False."""
    rows = []
    for a in dict.fromkeys(p.codec for p in points if p.codec != "ihvc"):
        low = min((p for p in points if p.codec == a), key=lambda p: p.kbps)
        for curve in dict.fromkeys(p.curve for p in points if p.codec == "ihvc"):
            below = [p for p in points if p.curve == curve and p.kbps <= low.kbps]
            for m in metrics_:
                best = max(below, key=lambda p: p.quality.get(m, -math.inf), default=None)
                q = best.quality.get(m, math.nan) if best else math.nan
                rows.append({"clip": name, "anchor": a, "anchor_qp": low.qp, "anchor_kbps": low.kbps, "ihvc": curve,
                             "metric": m, "anchor_quality": low.quality.get(m, math.nan), "ihvc_quality": q,
                             "ihvc_gop": best.gop if best else "", "ihvc_key_qp": best.qp if best else "",
                             "ihvc_kbps": best.kbps if best else math.nan,
                             "wins": bool(best) and q > low.quality.get(m, math.inf)})
    return rows


def _write_csv(path: Path, rows: list[dict]) -> None:
    from engine.fileio import atomic_path
    with atomic_path(path) as tmp:
        with open(tmp, "w", newline="") as f:
            if rows:
                w = csv.DictWriter(f, fieldnames=list(rows[0].keys()))
                w.writeheader()
                w.writerows(rows)


_STYLE = {"ihvc": ("IHVC learned", "tab:red", "o"), "ihvc_analytic": ("IHVC analytic", "tab:orange", "o"), "vvc": ("VVC (vvenc LDB)", "tab:blue", "s"),
          "x265": ("HEVC (x265 LDP)", "tab:green", "^"), "svtav1": ("AV1 (SVT-AV1 LD)", "tab:purple", "D")}
_YLABEL = {"psnr": "PSNR (dB)", "ssim": "SSIM", "ms_ssim": "MS-SSIM", "vmaf": "VMAF"}


def plot_rd(points: list[Point], path: Path, title: str = "", metrics_=METRICS) -> None:
    """Quality vs kbps at 25 fps, one panel per metric, one curve per codec (paper Fig. 2 style)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from engine.fileio import atomic_path
    fig, axes = plt.subplots(1, len(metrics_), figsize=(4.2 * len(metrics_), 3.6))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, metrics_):
        for codec, gop in dict.fromkeys((p.curve, p.gop) for p in points):
            ps = sorted((p for p in points if p.curve == codec and p.gop == gop), key=lambda p: p.kbps)
            label, color, marker = _STYLE.get(codec, (codec, None, "x"))
            if codec.startswith("ihvc"):
                label += f", key every {gop}" if gop else ", one key"
                marker = "o" if not gop else "v"
            ax.plot([p.kbps for p in ps], [p.quality.get(m, math.nan) for p in ps], marker=marker,
                    color=color, label=label, lw=1.5, ms=5)
        ax.set_xlabel("kbps (25 fps)")
        ax.set_ylabel(_YLABEL.get(m, m))
        ax.grid(True, alpha=0.3)
    axes[0].legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ----------------------------------------------------------------------------- CLI

def _region(path: Path):
    return (0, 0, 256, 256) if "256x512" in path.name else None   # taichi: the top half is the frame


def _load(path: Path, max_frames):
    from engine.codec.video import read_video
    return read_video(path, max_frames=max_frames, region=_region(path))


def _parse_qps(text: str) -> list[int]:
    try:
        qps = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--key-qps must be comma-separated integers, got {text!r}") from None
    if not qps:
        raise InputError("--key-qps is empty")
    return qps


def run(args, encoder: Callable | None = None, anchor_qps: dict | None = None) -> int:
    import torch
    if args.threads < 1:
        raise InputError("--threads must be at least 1")
    prev = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, encoder, anchor_qps)
    finally:
        torch.set_num_threads(prev)


def _run(args, encoder: Callable | None = None, anchor_qps: dict | None = None) -> int:
    key_qps = _parse_qps(args.key_qps)
    anchor_names = tuple(a for a in args.anchors.split(",") if a and a != "none")
    from engine.evaluation import anchors
    for a in anchor_names:
        if a not in anchors.ANCHORS:
            raise InputError(f"unknown anchor {a!r}: choose from {', '.join(anchors.ANCHORS)}")
    if args.max_frames is not None and args.max_frames < 2:
        raise InputError("--max-frames must be at least 2")
    decoders = ("analytic",) if args.analytic else tuple(d for d in args.decoders.split(",") if d)
    for d in decoders:
        if d not in ("learned", "analytic"):
            raise InputError(f"unknown decoder {d!r}: learned or analytic")
    try:
        gops = tuple(int(g) for g in args.gops.split(",") if g.strip())
    except ValueError:
        raise InputError(f"--gops must be integers, got {args.gops!r}") from None
    if not gops or any(g < 0 for g in gops):
        raise InputError(f"--gops must be frame counts >= 0, got {args.gops!r}")
    out = Path(args.out)
    if args.all_dir:
        root = Path(args.all_dir)
        if not root.is_dir():
            raise InputError(f"--all needs a folder: {root}")
        clips = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXT)
        if not clips:
            raise InputError(f"no video clips in {root}")
    else:
        if not args.video:
            raise InputError("give a VIDEO or --all DIR")
        clips = [Path(args.video)]
    all_bd = []
    t0 = time.perf_counter()
    for clip in clips:
        clip_t = time.perf_counter()
        v = _load(clip, args.max_frames)
        print(f"{clip.name}: {len(v.frames)} frames {v.frames.shape[2]}x{v.frames.shape[1]}", flush=True)
        res = evaluate_clip(v.frames, v.fps, clip.stem, out, key_qps, anchor_names, anchor_qps, encoder,
                            args.device, not args.no_vmaf, log=lambda s: print(s, flush=True), path=clip,
                            region=_region(clip), decoders=decoders, gops=gops)
        all_bd.extend(res["bd"])
        print(f"  {clip.name} done in {time.perf_counter() - clip_t:.0f} s", flush=True)
    if args.all_dir:
        rows = []
        for curve in dict.fromkeys(r["ihvc"] for r in all_bd):
            for a in anchor_names:
                for m in METRICS:
                    vals = [r["bd_rate_percent"] for r in all_bd
                            if r["ihvc"] == curve and r["anchor"] == a and r["metric"] == m]
                    fin = [v for v in vals if math.isfinite(v)]
                    if not vals:
                        continue
                    rows.append({"ihvc": curve, "anchor": a, "metric": m,
                                 "mean_bd_rate_percent": float(np.mean(fin)) if fin else math.nan,
                                 "clips_with_overlap": len(fin), "clips": len(vals)})
                    print(f"mean BD-rate {curve} vs {a:6s} ({m:7s}): "
                          + (f"{rows[-1]['mean_bd_rate_percent']:+.1f} %" if fin else "n/a")
                          + f" over {len(fin)}/{len(vals)} clips")
        _write_csv(out / "all_bd.csv", rows)
    print(f"results in {out} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0
