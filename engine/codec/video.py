"""Video I/O through PyAV: reading any clip FFmpeg reads, writing lossless or preview video.

Working frames are square: ``read_video`` optionally crops a region (taichi
clips keep only their top 256x256 half), then centre-crops to a square and
resizes to ``size`` x ``size`` (area filter) so that every stage sees the
same geometry.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterable, Iterator

import av
import numpy as np

from engine.codec.colour import yuv420_frame_to_rgb
from engine.errors import InputError
from engine.fileio import atomic_path

MAX_SIDE = 8192          # refuse absurd frame sizes before allocating anything
PLAYABLE_CRF = 18        # the default export (decode, the studio): H.264 4:2:0, visually lossless, plays anywhere
PLAYABLE_TEXT = f"H.264 yuv420p CRF {PLAYABLE_CRF}"
MAX_WORKING_SIZE = 2048


@dataclass
class VideoClip:
    frames: np.ndarray       # uint8 N x H x W x 3 (RGB)
    fps: Fraction


def _square_resize(rgb: np.ndarray, size: int | None, region=None) -> np.ndarray:
    if region is not None:
        x, y, w, h = region
        if x + w > rgb.shape[1] or y + h > rgb.shape[0]:
            raise InputError(f"region {x},{y},{w},{h} (x,y,w,h) reaches outside the {rgb.shape[1]}x{rgb.shape[0]} "
                             f"picture")
        rgb = rgb[y:y + h, x:x + w]
    h, w = rgb.shape[:2]
    s = min(h, w)
    y0, x0 = (h - s) // 2, (w - s) // 2
    rgb = rgb[y0:y0 + s, x0:x0 + s]
    if size is not None and s != size:
        import cv2
        interp = cv2.INTER_AREA if s > size else cv2.INTER_CUBIC
        rgb = cv2.resize(rgb, (size, size), interpolation=interp)
    return np.ascontiguousarray(rgb)


def _open(path):
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"is a folder, not a video: {path}")
    try:
        container = av.open(str(path))
    except (av.error.FFmpegError, ValueError, OSError) as exc:
        raise InputError(f"not a readable video: {path} ({exc.__class__.__name__})") from None
    if not container.streams.video:
        container.close()
        raise InputError(f"no video stream in {path}")
    stream = container.streams.video[0]
    cc = stream.codec_context
    if cc.width and cc.height and (cc.width > MAX_SIDE or cc.height > MAX_SIDE):
        container.close()
        raise InputError(f"video too large ({cc.width}x{cc.height}, at most {MAX_SIDE} px a side): {path}")
    return container, stream


def video_fps(path) -> Fraction:
    container, stream = _open(path)
    with container:
        rate = stream.average_rate or stream.guessed_rate or Fraction(25)
    return Fraction(rate)


def as_shown(rgb: np.ndarray, frame: av.VideoFrame, sar: Fraction | None = None) -> np.ndarray:
    """The picture as players show it: ``--region`` and the working square are taken from what the user
    sees, and a person read squeezed or sideways is fitted and coded so.
    - Non-square pixels (``sar``, the stream's sample aspect ratio: DV, broadcast, some screen recorders)
      are stretched to square ones along the width, as FFmpeg's players do. A ratio beyond 1/4..4 is taken
      for a damaged header and ignored.
    - Phones store a portrait video's pictures sideways with a display rotation (in degrees
      counter-clockwise, a multiple of 90): the picture is turned upright."""
    if sar and sar != 1 and Fraction(1, 4) <= sar <= 4:
        import cv2
        h, w = rgb.shape[:2]
        wide = max(1, round(w * sar))
        rgb = cv2.resize(rgb, (wide, h), interpolation=cv2.INTER_AREA if wide < w else cv2.INTER_CUBIC)
    k = round((frame.rotation or 0) / 90) % 4
    return np.rot90(rgb, k) if k else rgb


def iter_video(path, size: int | None = None, max_frames: int | None = None, region=None) -> Iterator[np.ndarray]:
    """Yield RGB uint8 frames (size x size when size is given)."""
    if size is not None and not 16 <= size <= MAX_WORKING_SIZE:
        raise InputError(f"working size {size} out of range 16..{MAX_WORKING_SIZE}")
    container, stream = _open(path)
    sar = stream.sample_aspect_ratio
    n = 0
    with container:
        try:
            for frame in container.decode(stream):
                if max_frames is not None and n >= max_frames:
                    break
                yield _square_resize(as_shown(yuv420_frame_to_rgb(frame), frame, sar), size, region)
                n += 1
        except av.error.FFmpegError as exc:
            if n == 0:
                raise InputError(f"cannot decode video {path}: {exc}") from None
            # A damaged tail: keep what decoded, as players do.


def frame_count(path) -> int | None:
    """How many frames the container says the video has (its frame count, else duration x rate), without
    decoding; None when it says neither. An estimate: a damaged file may decode fewer."""
    container, stream = _open(path)
    with container:
        if stream.frames:
            return int(stream.frames)
        rate = stream.average_rate or stream.guessed_rate
        if stream.duration and stream.time_base and rate:
            return int(round(float(stream.duration * stream.time_base * rate)))
        if container.duration and rate:
            return int(round(container.duration / av.time_base * float(rate)))
    return None


def read_video(path, size: int | None = None, max_frames: int | None = None, region=None) -> VideoClip:
    fps = video_fps(path)
    expect = frame_count(path) or 0
    if max_frames is not None:
        expect = min(expect, max_frames)
    frames = _fill(iter_video(path, size, max_frames, region), expect, path)
    if frames is None:
        raise InputError(f"video has no frames: {path}")
    return VideoClip(frames, fps)


def read_parts(path, lengths: list[int], size: int | None = None, max_frames: int | None = None,
               region=None) -> Iterator[tuple[int, VideoClip]]:
    """The clip as consecutive parts, each read when the one before has been taken: (first frame, part).
    Parts are ``lengths`` long (the last one shorter if the video ends sooner); frames past them (a
    container that counted too few) come in parts as long as the longest. One decode of the file, and at
    most one part in memory besides what the caller keeps."""
    fps = video_fps(path)
    frames_in = iter_video(path, size, max_frames, region)
    start, k, longest = 0, 0, max(lengths)
    while True:
        n = lengths[k] if k < len(lengths) else longest
        part = _fill(itertools.islice(frames_in, n), n, path)
        if part is None:
            if start == 0:
                raise InputError(f"video has no frames: {path}")
            return
        yield start, VideoClip(part, fps)
        del part
        start, k = start + n, k + 1


def _fill(frames_in: Iterable[np.ndarray], expect: int, path) -> np.ndarray | None:
    r"""The frames into one array sized from the ``expect``\ ed count (None if there are none): a list of frames
    stacked at the end would hold them twice at the peak."""
    from engine.workers import available_memory
    frames, n = None, 0
    for rgb in frames_in:
        if frames is None or n == len(frames):
            rows = max(expect, n + n // 2, 16)
            if frames is None and (avail := available_memory()) is not None:
                rows = min(rows, max(16, avail // rgb.nbytes))      # a header that claims absurd lengths
            try:
                more = np.empty((rows,) + rgb.shape, np.uint8)       # untouched rows cost no memory
            except MemoryError:
                raise InputError(f"not enough memory to read {path}: {n} frames of {rgb.shape[1]}x{rgb.shape[0]} "
                                 f"read, more to come (try --max-frames or a smaller --size)") from None
            if frames is not None:
                more[:n] = frames[:n]
            frames = more
        frames[n] = rgb
        n += 1
    return frames[:n] if n else None


def write_video(path, frames: Iterable[np.ndarray], fps, crf: int | None = None) -> int:
    """Write RGB frames; returns the frame count. Written to a temporary name, then renamed.

    Without ``crf`` lossless, so what is measured is what the decoder produced: .mp4 -> x264
    (RGB 4:4:4, gbrp) at QP 0, .mkv -> FFV1; few players open these. ``crf`` writes x264 4:2:0
    (yuv420p, High profile, any container), which every common player opens: ``PLAYABLE_CRF`` is
    what ``decode`` and the studio's export write by default.
    """
    path = Path(path)
    ext = path.suffix.lower()
    if ext not in (".mp4", ".mkv", ".mov"):
        raise InputError(f"unsupported output format {ext or '(none)'}: use .mp4 or .mkv")
    # The container accepts any rate with 31-bit terms in 1/1000..1000 fps, but the mp4 muxer and
    # x264 refuse time bases with huge terms (e.g. 2147483647/2147483646): give them the nearest
    # rate with a denominator up to 1001000 (exact for every usual rate, 30000/1001 included).
    fps = Fraction(fps).limit_denominator(1_001_000)
    n = 0
    with atomic_path(path) as tmp:
        with av.open(str(tmp), "w", format="matroska" if ext == ".mkv" else "mp4") as out:
            stream = None
            for rgb in frames:
                if stream is None:
                    h, w = rgb.shape[:2]
                    if crf is not None:
                        stream = out.add_stream("libx264", rate=Fraction(fps))
                        stream.pix_fmt = "yuv420p"
                        stream.options = {"crf": str(crf), "preset": "medium", "profile": "high"}
                        w, h = w - w % 2, h - h % 2
                    elif ext == ".mkv":
                        stream = out.add_stream("ffv1", rate=Fraction(fps))
                        stream.pix_fmt = "bgr0"
                    else:
                        # x264's RGB 4:4:4 mode at QP 0: bit-exact, no colour conversion.
                        stream = out.add_stream("libx264rgb", rate=Fraction(fps))
                        stream.pix_fmt = "rgb24"
                        stream.options = {"qp": "0", "preset": "medium"}
                    stream.width, stream.height = w, h
                frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(rgb[:stream.height, :stream.width]), format="rgb24")
                for packet in stream.encode(frame):
                    out.mux(packet)
                n += 1
            if stream is None:
                raise InputError("nothing to write: no frames")
            for packet in stream.encode():
                out.mux(packet)
    return n
