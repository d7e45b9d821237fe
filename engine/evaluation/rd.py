"""Rate-distortion arithmetic: points, Bjøntegaard delta rate, Pareto fronts, target checks, RD plots.

    Point(codec, qp, n_bytes, n_frames, quality)   one coded version of a clip, rate counted whole
    bd_rate(test, anchor, metric)                  BD-rate in % over the overlapping quality range
    pareto(points, metric)                         the best choice of period and QP for each rate
    lowest_rate_rows(points, name)                 IHVC at or below each anchor's lowest rate
    points_rows / read_points                      a clip's points as CSV rows, and back
    plot_rd(points, path)                          quality vs kbps at 25 fps, one panel per metric
"""
from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from engine.fileio import atomic_path

METRICS = ("psnr", "ssim", "ms_ssim", "vmaf")
RATE_FPS = 25
AUTO = -1                 # Point.gop of IHVC with key pictures chosen by content


def period_name(gop: int, n_frames: int = 0, rate_target: float = 0.0) -> str:
    """How an IHVC point placed its key pictures, in words."""
    if gop == AUTO and rate_target:
        return f"keys and QP for {rate_target:g} kbps"
    if gop == AUTO:
        return "keys by content"
    return f"key every {gop}" if gop else "one key"


@dataclass
class Point:
    codec: str
    qp: int
    n_bytes: int
    n_frames: int
    quality: dict = field(default_factory=dict)
    decoder: str = ""            # IHVC only: "learned" or "analytic"
    gop: int = 0                 # IHVC only: frames per key picture (0: one key picture, AUTO: by content)
    rate_target: float = 0.0     # IHVC only: the --rate target (kbps) its keys and key QP were chosen under

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
                             "ihvc_rate_target": best.rate_target if best else "",
                             "ihvc_kbps": best.kbps if best else math.nan,
                             "wins": bool(best) and q > low.quality.get(m, math.inf)})
    return rows



def points_rows(points: list[Point], name: str) -> list[dict]:
    """A clip's points as the rows of ``<clip>_points.csv``."""
    return [{"clip": name, "codec": p.codec, "decoder": p.decoder, "gop": p.gop, "qp": p.qp, "bytes": p.n_bytes,
             "frames": p.n_frames, "bits_per_frame": p.bits_per_frame, "kbps_at_25fps": p.kbps,
             **{m: p.quality.get(m, math.nan) for m in METRICS}, "rate_target": p.rate_target} for p in points]


def read_points(path: Path) -> dict[str, list[Point]]:
    """The points of a ``<clip>_points.csv`` (files written before rate targets existed read too), by clip."""
    out: dict[str, list[Point]] = {}
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            out.setdefault(r["clip"], []).append(Point(
                r["codec"], int(r["qp"]), int(r["bytes"]), int(r["frames"]),
                {m: float(r[m]) for m in METRICS if r.get(m, "") != ""}, r.get("decoder", ""), int(r.get("gop") or 0),
                float(r.get("rate_target") or 0.0)))
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
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

    fig, axes = plt.subplots(1, len(metrics_), figsize=(4.2 * len(metrics_), 3.6))
    axes = np.atleast_1d(axes)
    for ax, m in zip(axes, metrics_):
        for codec, gop, rated in dict.fromkeys((p.curve, p.gop, p.rate_target > 0) for p in points):
            ps = sorted((p for p in points if p.curve == codec and p.gop == gop and (p.rate_target > 0) == rated),
                        key=lambda p: p.kbps)
            label, color, marker = _STYLE.get(codec, (codec, None, "x"))
            if codec.startswith("ihvc"):
                label += ", " + ("keys and QP under a rate target" if rated else period_name(gop))
                marker = "P" if rated else {0: "o", AUTO: "*"}.get(gop, "v")
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
