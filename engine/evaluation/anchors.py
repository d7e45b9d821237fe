"""Conventional low-delay anchors: VVC (libvvenc), HEVC (libx265), AV1 (SVT-AV1).

DESIGN.md "Evaluation": the anchors run on the same frames as IHVC through the
imageio-ffmpeg static binary, each in a low-delay configuration with one intra
picture at the start (like IHVC's single key picture) and a fixed QP:

* VVC, libvvenc: low-delay B (``PicReordering=0``, GOP 8, no decoding refresh,
  intra period longer than any clip), QPA off, preset "faster"; the paper's
  QPs 40/42/44/46 and beyond (vvenc accepts up to 63).
* HEVC, libx265: no B-frames, no lookahead, no scene cut, one keyframe,
  preset "veryfast"; QPs up to 51.
* AV1, SVT-AV1: low-delay prediction structure (``pred-struct=1``), CQP
  (``rc=0``), one keyframe, preset 10; QPs up to 63.

Each stream is written as a raw elementary stream (.266 / .hevc / OBU) and
its size counted entirely (parameter sets, headers, every frame). The stream
is then decoded back to RGB by the same binary, so quality is measured on what
a receiver would show. Input is RGB, converted to 4:2:0 (10 bit for vvenc)
by FFmpeg; the same conversion is undone on decoding.
"""
from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.errors import IHVCError, InputError
from engine.workers import run

# Default QP sweeps: a sensible number of points per codec, from the paper's
# VVC QPs down to the lowest rates each encoder reaches.
DEFAULT_QPS = {
    "vvc": (40, 44, 48, 53, 58, 63),
    "x265": (35, 41, 47, 51),
    "svtav1": (45, 52, 58, 63),
}
ANCHORS = tuple(DEFAULT_QPS)
_QP_MAX = {"vvc": 63, "x265": 51, "svtav1": 63}
_LABELS = {"vvc": "VVC (vvenc LDB)", "x265": "HEVC (x265 LDP)", "svtav1": "AV1 (SVT-AV1 LD)"}


@dataclass
class AnchorResult:
    codec: str
    qp: int
    n_bytes: int
    frames: np.ndarray          # decoded uint8 N x H x W x 3

    @property
    def label(self) -> str:
        return _LABELS[self.codec]


def _encoder_args(codec: str, qp: int, n: int) -> tuple[list[str], str, str]:
    """FFmpeg output arguments, muxer and file suffix for one anchor point."""
    gop = str(max(n, 1) + 1)
    if codec == "vvc":
        return (["-pix_fmt", "yuv420p10le", "-c:v", "libvvenc", "-preset", "faster", "-qp", str(qp), "-qpa", "0",
                 "-vvenc-params", f"picreordering=0:decodingrefreshtype=none:gopsize=8:intraperiod={max(n, 16) * 2}"],
                "vvc", ".266")
    if codec == "x265":
        return (["-pix_fmt", "yuv420p", "-c:v", "libx265", "-preset", "veryfast",
                 "-x265-params", f"qp={qp}:bframes=0:rc-lookahead=0:scenecut=0:keyint={gop}:min-keyint={gop}"
                                 ":frame-threads=1:log-level=error"],
                "hevc", ".hevc")
    if codec == "svtav1":
        return (["-pix_fmt", "yuv420p", "-c:v", "libsvtav1", "-preset", "10", "-g", gop,
                 "-svtav1-params", f"pred-struct=1:rc=0:qp={qp}:enable-tpl-la=0:scd=0"],
                "obu", ".obu")
    raise InputError(f"unknown anchor codec {codec!r}: choose from {', '.join(ANCHORS)}")


def encode_anchor(frames: np.ndarray, codec: str, qp: int, fps: int = 25, workdir=None) -> AnchorResult:
    """Encode uint8 N x H x W x 3 frames with one anchor at one QP; decode them back."""
    from engine.codec.colour import rgb_to_yuv420_bytes, yuv420_bytes_to_rgb
    from engine.codec.keypicture import ffmpeg_exe
    frames = np.asarray(frames)
    if frames.ndim != 4 or frames.shape[-1] != 3 or frames.dtype != np.uint8:
        raise InputError(f"anchor input must be uint8 N x H x W x 3, got {frames.dtype} {frames.shape}")
    if not 0 <= qp <= _QP_MAX.get(codec, 63):
        raise InputError(f"QP {qp} out of range 0..{_QP_MAX.get(codec, 63)} for {codec}")
    n, h, w, _ = frames.shape
    args, muxer, suffix = _encoder_args(codec, qp, n)
    with tempfile.TemporaryDirectory(prefix="ihvc_anchor_", dir=workdir) as tmp:
        out = Path(tmp) / f"stream{suffix}"
        # RGB <-> YUV in-process (engine.codec.colour), the same conversion as IHVC's key pictures get
        pix_fmt = args[args.index("-pix_fmt") + 1]
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", "-f", "rawvideo", "-pix_fmt", pix_fmt,
               "-s", f"{w}x{h}", "-r", str(fps), "-i", "-", *args, "-f", muxer, str(out)]
        res = run(cmd, input=rgb_to_yuv420_bytes(frames, pix_fmt))
        if res.returncode != 0 or not out.exists() or out.stat().st_size == 0:
            raise IHVCError(f"{codec} anchor encoder failed at QP {qp}: "
                            f"{res.stderr.decode(errors='replace').strip()[-200:]}")
        n_bytes = out.stat().st_size
        dec = run([ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-i", str(out),
                   "-f", "rawvideo", "-pix_fmt", pix_fmt, "-"])
    if dec.returncode != 0:
        raise IHVCError(f"{codec} anchor stream does not decode: {dec.stderr.decode(errors='replace').strip()[-200:]}")
    per = h * w * 3 // 2 * (2 if pix_fmt.endswith("10le") else 1)
    if len(dec.stdout) != n * per:
        raise IHVCError(f"{codec} anchor decoded {len(dec.stdout) // per} frames, expected {n}")
    return AnchorResult(codec=codec, qp=qp, n_bytes=n_bytes, frames=yuv420_bytes_to_rgb(dec.stdout, w, h, pix_fmt))


def run_anchors(frames: np.ndarray, qps: dict[str, tuple[int, ...]] | None = None, fps: int = 25,
                progress=None):
    """Yield AnchorResult for every (codec, QP) of the sweep (DEFAULT_QPS unless given)."""
    qps = DEFAULT_QPS if qps is None else qps
    for codec, points in qps.items():
        for qp in points:
            if progress is not None:
                progress(f"{codec} QP {qp}")
            yield encode_anchor(frames, codec, qp, fps)
