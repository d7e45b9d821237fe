"""Coding of the key-reference pictures: VVC (as in the paper), HEVC or AV1.

VVC is encoded by libvvenc inside the static FFmpeg binary that imageio-ffmpeg
ships (PyAV's FFmpeg has no VVC encoder), driven as a subprocess with raw
frames through pipes; it is decoded in-process by PyAV's native VVC decoder.
HEVC (libx265) and AV1 (SVT-AV1) are encoded and decoded through PyAV.

All three code 4:2:0 (VVC at 10 bit, vvenc's only input format) with a fixed
QP, a single intra picture, and produce a raw elementary stream that is stored
in the bitstream byte for byte.

VVC key pictures may also be coded as one chain (``encode_key_chain``): the pictures of a clip's keys,
in order, as one low-delay VVC stream, each predicted from the ones before it, one access unit per
key (format flag ``container.FLAG_CHAINED``). Keys of one clip share their background and most of
the person, so a chain takes far fewer bytes than pictures coded alone (docs/BENCHMARKS.md, "Key
pictures coded as one chain").
"""
from __future__ import annotations

import functools
import os
import threading
from fractions import Fraction

import av
import numpy as np

from engine.codec.bitstream import CODEC_IDS, KeyPicture
from engine.codec.colour import rgb_to_yuv420_bytes, rgb_to_yuv420_frame, yuv420_frame_to_rgb
from engine.errors import IHVCError, InputError
from engine.workers import GATE, run

# QP range per codec (the user-facing scale of each codec).
QP_RANGE = {"vvc": (0, 63), "hevc": (0, 51), "av1": (0, 63)}
_MAX_SIDE = 4096
# How hard the key-picture encoder searches: libvvenc's and libx265's presets by name, SVT-AV1's by number.
# The encoder's effort picks one (engine.analysis.closed_loop.EFFORTS): a chain of ted_c's 17 keys at QP
# 37 took 3.6 s fast, 11.6 s medium, 34.6 s slow, for 11,806, 11,059 and 10,843 bytes at 33.28, 33.31
# and 33.48 dB (docs/BENCHMARKS.md, "The slow effort's key pictures at libvvenc's slow preset").
PRESETS = ("fast", "medium", "slow")
_SVT_PRESET = {"fast": "8", "medium": "6", "slow": "4"}
os.environ.setdefault("SVT_LOG", "1")   # SVT-AV1 prints its whole config on stderr otherwise


@functools.lru_cache(maxsize=1)
def ffmpeg_exe() -> str:
    """The imageio-ffmpeg static binary (libvvenc, libx265, SVT-AV1, libvmaf)."""
    import imageio_ffmpeg
    # The first call runs the binary once to check it (a subprocess of imageio-ffmpeg's own): under the
    # gate, like every subprocess of the engine, or a worker pool forking meanwhile keeps its pipe open
    # and the call never returns (engine.workers). An encode that reuses an analysis forks its key-search
    # pool at once, while the first key pictures start coding on threads.
    with GATE.shared():
        return imageio_ffmpeg.get_ffmpeg_exe()


def _check(rgb: np.ndarray, codec: str, qp: int, preset: str) -> np.ndarray:
    if codec not in CODEC_IDS:
        raise InputError(f"unknown key-picture codec {codec!r}: choose vvc, hevc or av1")
    if preset not in PRESETS:
        raise InputError(f"unknown key-picture preset {preset!r}: choose {', '.join(PRESETS)}")
    lo, hi = QP_RANGE[codec]
    if not lo <= qp <= hi:
        raise InputError(f"QP {qp} out of range {lo}..{hi} for {codec}")
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise InputError(f"key picture must be uint8 H x W x 3, got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    if not (16 <= h <= _MAX_SIDE and 16 <= w <= _MAX_SIDE) or h % 2 or w % 2:
        raise InputError(f"key picture size {w}x{h} unsupported (even sides, 16..{_MAX_SIDE})")
    return np.ascontiguousarray(rgb)


def _encode_vvc(rgb: np.ndarray, qp: int, preset: str) -> bytes:
    # RGB -> YUV here (engine.codec.colour), so that every codec gets the same conversion. One thread:
    # on a single 384 x 384 picture libvvenc's second thread only spins (1.74 s of CPU for 0.90 s of
    # wall time, against 0.89 and 0.89 with one; the same bytes). The encode's wall time did not change
    # (bench --effort, 2026-12-05): half the CPU time is left to the user's other programs.
    # The all-intra configuration (-g 1) and no access unit delimiter, HRD or VUI: vvenc's default
    # random-access configuration writes the reference picture lists of a 32-picture GOP into the SPS
    # (159 of a 700-byte picture at QP 52), which a lone intra picture never uses. Measured on 14
    # pictures of 7 clips at QP 32 to 57 (docs/BENCHMARKS.md, "Key pictures in vvenc's all-intra
    # configuration"): BD-rate -17 % on PSNR, -21 % on SSIM, -23 % on MS-SSIM, 14 % faster. (The
    # decoder ignores the VUI: engine.codec.colour converts with its own fixed matrix and range.)
    return _vvenc([rgb], qp, 1, "", preset=preset)


def _vvenc(pictures: list[np.ndarray], qp: int, intra_period: int, params: str, threads: int = 1,
           preset: str = "medium") -> bytes:
    """libvvenc on ``pictures`` (one size), no perceptual QP adaptation -> the elementary stream."""
    h, w = pictures[0].shape[:2]
    cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-f", "rawvideo", "-pix_fmt", "yuv420p10le",
           "-s", f"{w}x{h}", "-i", "-", "-frames:v", str(len(pictures)), "-c:v", "libvvenc", "-qp", str(qp),
           "-preset", preset, "-qpa", "0", "-threads", str(threads), "-g", str(intra_period),
           "-vvenc-params", "AccessUnitDelimiter=0:HrdParametersPresent=0:VuiParametersPresent=0" + params,
           "-f", "vvc", "-"]
    res = run(cmd, input=b"".join(rgb_to_yuv420_bytes(p, "yuv420p10le") for p in pictures))
    if res.returncode != 0 or not res.stdout:
        raise IHVCError(f"VVC encoder failed: {res.stderr.decode(errors='replace').strip()[-200:]}")
    return res.stdout


def _encode_pyav(rgb: np.ndarray, codec: str, qp: int, preset: str) -> bytes:
    h, w = rgb.shape[:2]
    if codec == "hevc":
        ctx = av.CodecContext.create("libx265", "w")
        ctx.options = {"x265-params": f"qp={qp}:keyint=1:info=0:log-level=error", "preset": preset}
    else:
        ctx = av.CodecContext.create("libsvtav1", "w")
        ctx.options = {"qp": str(qp), "preset": _SVT_PRESET[preset], "svtav1-params": "rc=0"}
    ctx.width, ctx.height, ctx.pix_fmt = w, h, "yuv420p"
    ctx.time_base = Fraction(1, 25)
    frame = rgb_to_yuv420_frame(rgb, "yuv420p")
    frame.pts = 0
    packets = list(ctx.encode(frame)) + list(ctx.encode(None))
    data = b"".join(bytes(p) for p in packets)
    if not data:
        raise IHVCError(f"{codec} encoder produced no data")
    if codec == "hevc" and ctx.extradata:   # parameter sets may travel out of band
        if not data.startswith(bytes(ctx.extradata)):
            data = bytes(ctx.extradata) + data
    return data


# A low-delay configuration: no picture reordering (each key is coded after the ones before it, as the
# decoder receives them), no refresh pictures (an intra picture only at the start), and one GOP entry for
# every picture after it: a B picture predicted from the four before it in both lists, at the chain's QP.
# (The GOP entry's fields, in vvenc's order: type, POC, QP offset, QP offset model offset and scale, Cb and
# Cr QP offsets, QP factor, six deblocking offsets, temporal id, then per list: active refs, refs, deltas.)
# vvenc's own low-delay configuration (GOPSize=8) codes the pictures of a GOP at a cascade of QPs, made for
# neighbouring frames (ted_c's keys at QP 42 came out at 32.1, 27.6, 27.1 and 27.0 dB); keys are far apart
# and each serves a stretch of frames. On the keys of
# two TED clips (4 and 5 pictures, QP 34 to 56) the flat chain's BD-rate against pictures coded alone was
# -34 and -39 % on PSNR, -45 and -42 % on SSIM; vvenc's cascade -23 and -34, -40 and -39.
_CHAIN_PARAMS = ("GOPSize=1:PicReordering=0:DecodingRefreshType=0:"
                 "Frame1=B 1 0 0 0 0 0 1.0 0 0 0 0 0 0 0 2 4 1 2 3 4 2 4 1 2 3 4")
_CHAIN_INTRA_PERIOD = 1 << 16           # frames; longer than any segment (CHAIN_SEGMENT)


def _split_access_units(data: bytes, n: int) -> list[bytes]:
    """A VVC elementary stream of ``n`` pictures -> its ``n`` access units (FFmpeg's parser), joined
    they are ``data`` byte for byte."""
    ctx = av.CodecContext.create("vvc", "r")
    units = [bytes(p) for p in ctx.parse(data) + ctx.parse(None)]
    if len(units) != n or b"".join(units) != data:
        raise IHVCError(f"VVC chain of {n} key pictures split into {len(units)} access units")
    return units


# A chain restarts (a new intra picture with its parameter sets) every CHAIN_SEGMENT keys, so that a decoder
# needs at most that many pictures before a key to decode it and keeps at most a few segments: a one-hour
# talk has thousands of keys (442 kB each at 384 x 384 decoded). A restart costs about four later keys'
# bytes (ted_c's 17 keys at QP 37: the intra picture 2,641 B, the others 494 on average); a 100-frame clip
# has at most 25 keys, one segment.
CHAIN_SEGMENT = 32


def chain_segments(kps: list[KeyPicture]) -> list[range]:
    """The chain segments of a chained file's keys, in order: each from a key whose payload holds a VVC
    sequence parameter set (a segment's first, intra) to the next such key."""
    opens = [j for j, kp in enumerate(kps) if j == 0 or _opens_sequence(kp.payload)]
    return [range(a, b) for a, b in zip(opens, opens[1:] + [len(kps)])]


def _opens_sequence(payload: bytes) -> bool:
    """Whether a VVC access unit holds a sequence parameter set (NAL unit type 15): a chain segment's first."""
    at = payload.find(b"\x00\x00\x01")
    while 0 <= at and at + 4 < len(payload):
        if (payload[at + 4] >> 3) & 0x1F == 15:
            return True
        at = payload.find(b"\x00\x00\x01", at + 3)
    return False


def encode_key_chain(pictures, codec: str = "vvc", qp: int = 37, preset: str = "medium",
                     threads: int | None = None) -> list[KeyPicture]:
    """Code RGB pictures (each uint8 H x W x 3, one size) as one chain: low-delay VVC in which each picture
    is predicted from the ones before it, every picture at ``qp``. Returns one KeyPicture per picture, its
    payload the picture's access unit; the first of every CHAIN_SEGMENT is intra, with the parameter sets,
    and only its segment up to a picture decodes that picture (``decode_key_chain``, ``chain_segments``).
    Segments are coded side by side. ``threads``: libvvenc's threads a segment (default: two at the medium
    and faster presets, one at slow); the bytes are the same."""
    if codec != "vvc":
        raise InputError(f"chained key pictures are VVC only, not {codec}")
    pics = [_check(p, codec, qp, preset) for p in pictures]
    if not pics:
        return []
    if any(p.shape != pics[0].shape for p in pics):
        raise InputError("the pictures of a key chain must all have one size")
    parts = [pics[a:a + CHAIN_SEGMENT] for a in range(0, len(pics), CHAIN_SEGMENT)]
    if len(parts) == 1:
        return _encode_segment(parts[0], codec, qp, preset, threads)
    from concurrent.futures import ThreadPoolExecutor
    with ThreadPoolExecutor(2) as pool:
        return [kp for seg in pool.map(lambda part: _encode_segment(part, codec, qp, preset, threads), parts)
                for kp in seg]


def _encode_segment(pics: list[np.ndarray], codec: str, qp: int, preset: str,
                    threads: int | None = None) -> list[KeyPicture]:
    if len(pics) == 1:
        return [encode_key_picture(pics[0], codec, qp, preset)]
    h, w = pics[0].shape[:2]
    # Two pictures at a time (vvenc's frame parallelism, two threads, whatever the machine): the same bytes
    # as one after the other, 12 to 20 % faster (17 keys of ted_c at QP 32, 42, 52: 8.5 -> 7.5, 5.7 -> 4.8,
    # 3.6 -> 2.9 s), though its threads wait busily (QP 37: 8.6 s user and 3.9 s system for 6.4 s of wall
    # time; one thread 7.2 s for 7.3). It overlaps only the group boundaries' drafts, and the whole encode
    # was still faster with it (ted_c 32.2 -> 31.4 s, ted_a 29.0 -> 27.9; docs/BENCHMARKS.md, session 13).
    # The slow preset codes one picture at a time on one thread: with two threads libvvenc 1.15 wrote nothing
    # at all for 14 or more of ted_a's keys (exit status 0, an empty stream), and gave the same bytes as one
    # thread, no faster (13 keys: 14.0 s against 14.3).
    # Should the fast or slow preset still fail so on other pictures, the chain is coded at medium, which has
    # coded every chain so far: a valid file rather than a long encode lost at its end.
    def code(preset):
        n = 1 if preset == "slow" else (threads or 2)
        return _vvenc(pics, qp, _CHAIN_INTRA_PERIOD, ":" + _CHAIN_PARAMS + f":MaxParallelFrames={n}", threads=n,
                      preset=preset)
    try:
        data = code(preset)
    except IHVCError:
        if preset == "medium":
            raise
        data = code("medium")
    return [KeyPicture(codec=CODEC_IDS[codec], qp=qp, width=w, height=h, payload=u)
            for u in _split_access_units(data, len(pics))]


def encode_key_picture(rgb: np.ndarray, codec: str = "vvc", qp: int = 37, preset: str = "medium") -> KeyPicture:
    """Intra-code one RGB picture (uint8 H x W x 3, even sides) at a fixed QP, the encoder searching as
    hard as ``preset`` (PRESETS) says."""
    rgb = _check(rgb, codec, qp, preset)
    data = _encode_vvc(rgb, qp, preset) if codec == "vvc" else _encode_pyav(rgb, codec, qp, preset)
    h, w = rgb.shape[:2]
    return KeyPicture(codec=CODEC_IDS[codec], qp=qp, width=w, height=h, payload=data)


class PictureCoder:
    """Key pictures of one clip's frames, coded on a small thread pool, each (frame, QP) once.

    The VVC encoder is a subprocess of about half a second per 384 x 384 picture and works on one
    core, so pictures asked for early (``submit``) code while Python works on the other core, and
    several code at once; ``get`` waits for one. On this 2-core machine the nine pictures of a
    100-frame encode with keys by content took 6.8 s one after the other.

        with PictureCoder(frames, "vvc", 37) as coder:
            coder.submit([0, 40]); ...; kp = coder.get(40); coarse = coder.get(40, qp=47)
    """

    def __init__(self, frames: np.ndarray, codec: str = "vvc", qp: int = 37, workers: int | None = None,
                 preset: str = "medium"):
        from concurrent.futures import ThreadPoolExecutor
        self.frames, self.codec, self.qp, self.preset = frames, codec, int(qp), preset
        # ``pool`` takes other work that waits on a subprocess or native code too (the encoder's camera
        # motion).
        self.workers = max(1, workers or min(4, os.cpu_count() or 1))
        self.pool = ThreadPoolExecutor(self.workers, thread_name_prefix="key-picture")
        self._jobs: dict = {}
        self._turns = threading.Condition()
        self._running = 0
        self._limit = self.workers

    def limit(self, n: int | None) -> None:
        """At most ``n`` pictures coding at once from now on (None: as many as the pool has threads). The
        encoder asks for one while its fit works on the other core: two encoders beside the fit slowed it
        by a sixth."""
        with self._turns:
            self._limit = self.workers if n is None else max(1, int(n))
            self._turns.notify_all()

    def _code(self, k, qp: int, threads: int | None = None):
        """Frame k's picture at ``qp``; k a tuple of frames: their chain (``encode_key_chain``, on
        ``threads``)."""
        with self._turns:
            self._turns.wait_for(lambda: self._running < self._limit)
            self._running += 1
        try:
            if isinstance(k, tuple):
                return encode_key_chain([self.frames[i] for i in k], self.codec, qp, self.preset, threads)
            return encode_key_picture(self.frames[k], self.codec, qp, self.preset)
        finally:
            with self._turns:
                self._running -= 1
                self._turns.notify_all()

    def submit(self, frames, qp: int | None = None) -> None:
        """Start coding the pictures of these frame indices (those not already started) at ``qp``
        (default: the coder's)."""
        qp = self.qp if qp is None else int(qp)
        for k in frames:
            if (int(k), qp) not in self._jobs:
                self._jobs[int(k), qp] = self.pool.submit(self._code, int(k), qp)

    def get(self, k: int, qp: int | None = None) -> KeyPicture:
        """The coded picture of frame ``k`` at ``qp`` (started now if it was not)."""
        qp = self.qp if qp is None else int(qp)
        self.submit([k], qp)
        return self._jobs[int(k), qp].result()

    def submit_chain(self, frames, qp: int | None = None, threads: int | None = None) -> None:
        """Start coding the chain of these frames' pictures (``encode_key_chain``, on ``threads``) at ``qp``."""
        qp = self.qp if qp is None else int(qp)
        key = (tuple(int(k) for k in frames), qp)
        if key not in self._jobs:
            self._jobs[key] = self.pool.submit(self._code, key[0], qp, threads)

    def chain(self, frames, qp: int | None = None) -> list[KeyPicture]:
        """The chain of these frames' pictures at ``qp`` (started now if it was not), one per frame."""
        qp = self.qp if qp is None else int(qp)
        self.submit_chain(frames, qp)
        return self._jobs[tuple(int(k) for k in frames), qp].result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


_DECODERS = {"vvc": "vvc", "hevc": "hevc", "av1": "libdav1d"}


def _decode(decoder: str, packets, w: int, h: int, what: str) -> list:
    """FFmpeg's ``decoder`` on ``packets`` (a function of the context that yields them) -> the decoded
    frames; every failure one IHVCError naming ``what``."""
    ctx = av.CodecContext.create(decoder, "r")
    # A corrupt payload may declare a far larger picture than the header: FFmpeg would allocate for it
    # before the size checks. Bound it (with room for the codecs' padded coded sizes).
    ctx.options = {"max_pixels": str((w + 64) * (h + 64))}
    frames = []
    try:
        for packet in packets(ctx):
            frames.extend(ctx.decode(packet))
        frames.extend(ctx.decode(None))
    except (av.error.FFmpegError, ValueError) as exc:
        if "max_pixels" in str(exc):
            raise IHVCError(f"{what}: larger than the {w}x{h} the header says") from None
        raise IHVCError(f"{what} does not decode: {exc}") from None
    return frames


def decode_key_picture(kp: KeyPicture) -> np.ndarray:
    """KeyPicture -> RGB uint8 H x W x 3. Raises IHVCError if the payload does not decode."""
    name = kp.codec_name
    if name not in _DECODERS:
        raise IHVCError(f"unknown key-picture codec id {kp.codec}")
    # parse(None) flushes the parser: a single picture is otherwise held back.
    frames = _decode(_DECODERS[name], lambda ctx: ctx.parse(kp.payload) + ctx.parse(None), kp.width, kp.height,
                     f"key picture ({name})")
    if not frames:
        raise IHVCError(f"key picture ({name}) does not decode: no picture in payload")
    rgb = yuv420_frame_to_rgb(frames[0])
    if rgb.shape[:2] != (kp.height, kp.width):
        raise IHVCError(f"key picture decodes to {rgb.shape[1]}x{rgb.shape[0]}, header says {kp.width}x{kp.height}")
    return rgb


def decode_key_chain(kps: list[KeyPicture]) -> list[np.ndarray]:
    """A chain's KeyPictures (``encode_key_chain``, in order) -> their RGB pictures. Raises IHVCError if
    the chain does not decode to one picture per key of the size its headers say."""
    if not kps:
        return []
    if any(kp.codec_name != "vvc" for kp in kps):
        raise IHVCError("chained key pictures must all be VVC")
    frames = _decode("vvc", lambda ctx: (av.Packet(kp.payload) for kp in kps),      # one access unit per key
                     kps[0].width, kps[0].height, "chained key pictures")
    if len(frames) != len(kps):
        raise IHVCError(f"chained key pictures decode to {len(frames)} pictures, not {len(kps)}")
    out = [yuv420_frame_to_rgb(f) for f in frames]
    for rgb, kp in zip(out, kps):
        if rgb.shape[:2] != (kp.height, kp.width):
            raise IHVCError(f"a chained key picture decodes to {rgb.shape[1]}x{rgb.shape[0]}, "
                            f"its header says {kp.width}x{kp.height}")
    return out
