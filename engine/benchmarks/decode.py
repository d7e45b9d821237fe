"""``python main.py bench --decode``: decoder speed and memory at 384 x 384 on a TED clip.

Encodes ``ted/ted_a_384.mkv`` from the data folder with engine.analysis.encoder when it
is available; otherwise builds a bitstream from the clip's first frame (VVC key
picture, QP 37) and smooth synthetic semantics, which costs the decoder exactly
the same work. Then measures, per device: first-frame latency (key picture
decode + key mesh + key raster), batched ``decode_all`` frames/s, single-frame
``decode_frame`` frames/s (the studio's preview path, semantics override),
and peak memory (process max RSS from ``resource.getrusage``, Python heap
peak from ``tracemalloc``, CUDA peak allocation on GPU), each in a fresh process.
With the encoder, a second bitstream has a key picture every 20 frames, each frame drawing from up to
4 of them (format version 2: the other keys fill body and background the frame's own key did not see),
measured the same way.
The CPU time per frame of ``decode_all`` (process time, all threads) says what a
free machine would do when the wall-clock figure is disturbed by other load. On CPU it runs with
one thread and with PyTorch's default; on a busy shared machine one thread is
often the faster (OpenMP barriers stall when cores are oversubscribed).
Prints a markdown table.
"""
from __future__ import annotations

import resource
import time
import tracemalloc
from fractions import Fraction
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError

CLIP = Path("ted") / "ted_a_384.mkv"


def _synthetic_bitstream(frames: np.ndarray, fps) -> "Bitstream":  # noqa: F821
    from engine.codec.bitstream import BODY_MODEL_IDS, Bitstream, GroupOfPictures
    from engine.codec.keypicture import encode_key_picture
    from engine.codec.semantics import KeySemantics, QuantSpec, snap
    n, h, w, _ = frames.shape
    bs = Bitstream(width=w, height=h, fps=Fraction(fps), quant=QuantSpec(), body_model=BODY_MODEL_IDS["anny"],
                   has_camera=True)
    t = np.arange(n)[:, None]
    rows = np.zeros((n, 34))
    rows[:, 21:24] = (0.05, 0.0, 0.0)
    rows[:, 24:27] = (0.0, 0.25, 4.0)                   # upper body fills a 384 crop
    rows[:, 27:31] = (0.5, 0.62, 0.9, 0.9)
    rng = np.random.default_rng(0)
    rows[:, :21] += 0.25 * np.sin(2 * np.pi * t * rng.uniform(0.01, 0.04, 21) + rng.uniform(0, 6, 21))
    rows[:, 27:29] += 0.01 * np.sin(2 * np.pi * t / 60)
    rows[:, 31:33] = 0.01 * np.sin(2 * np.pi * t / 80)
    rows = snap(rows, bs.steps)
    pose = np.zeros((21, 3))
    pose[14:] = rows[0, :21].reshape(7, 3)
    key = KeySemantics(body_pose=pose, betas=np.zeros(6), rot=rows[0, 21:24], trans=rows[0, 24:27],
                       loc=rows[0, 27:31], focal=np.array([5.0, 5.0]))
    bs.gops.append(GroupOfPictures(0, encode_key_picture(frames[0], "vvc", 37), key, rows))
    return bs


def _bitstream(frames, fps, path):
    try:
        from engine.evaluation.scoring import default_ihvc_encoder
        return default_ihvc_encoder(frames, fps, 37, path=path), "engine.analysis.encoder (VVC key QP 37)"
    except ImportError:
        return _synthetic_bitstream(frames, fps), "synthetic semantics (engine.analysis.encoder not available)"


def _multi_reference(frames, fps, path):
    """A key picture every 20 frames, each frame drawing from up to 4 (None without the encoder)."""
    try:
        from engine.analysis.encoder import with_references
        from engine.evaluation.scoring import default_ihvc_encoder
    except ImportError:
        return None
    return with_references(default_ihvc_encoder(frames, fps, 37, path=path, gop=20), 4)


def _peak_rss_mib() -> float:
    """Peak resident memory of this process image (VmHWM; ru_maxrss would also count what the
    parent held before exec)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _sync(dev) -> None:
    if str(dev).startswith("cuda"):
        torch.cuda.synchronize()


def _measure(ihvc_path: str, frames_path: str, dev: str, threads: int) -> tuple:
    """One measurement in a fresh process (so that peak RSS is the decoder's alone)."""
    import sys
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
    from engine.codec.container import read
    from engine.synthesis.decoder import Decoder
    from engine.evaluation.metrics import psnr_frames
    torch.set_num_threads(threads)
    bs = read(ihvc_path)
    if dev == "cuda":
        torch.cuda.reset_peak_memory_stats()
    rss0 = _peak_rss_mib()
    t = time.perf_counter()
    dec = Decoder(bs, device=dev)                      # loads the body model
    t_model = time.perf_counter() - t
    t = time.perf_counter()
    dec.decode_frame(1)
    _sync(dev)
    t_first = time.perf_counter() - t
    t, c = time.perf_counter(), time.process_time()
    video = dec.decode_all()
    _sync(dev)
    fps_all = len(video) / (time.perf_counter() - t)
    cpu_ms = (time.process_time() - c) / len(video) * 1e3
    sem = bs.semantics()
    k = min(30, len(sem) - 1)
    t = time.perf_counter()
    for i in range(1, k + 1):
        row = sem[i].copy()
        row[27] += 0.002 * i                           # an edit: the studio's preview path
        dec.decode_frame(i, semantics=row)
    _sync(dev)
    fps_one = k / (time.perf_counter() - t)
    rss = _peak_rss_mib()
    # Python-heap peak on a separate short pass: tracemalloc slows every allocation down.
    tracemalloc.start()
    dec.decode_all(range(1, min(9, len(sem))))
    _, py_peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    gpu = torch.cuda.max_memory_allocated() / 2 ** 20 if dev == "cuda" else float("nan")
    psnr = float(psnr_frames(np.load(frames_path), video).mean())
    return (dev, threads, len(video), t_model, t_first * 1e3, fps_all, fps_one, rss0, rss,
            py_peak / 2 ** 20, gpu, psnr, cpu_ms)


def run(args) -> int:
    import multiprocessing as mp
    import tempfile

    from engine.codec.container import write
    from engine.codec.video import read_video
    path = Path(args.data) / CLIP
    if not path.exists():
        raise InputError(f"decode benchmark needs {path} (pass --data)")
    clip = read_video(path, max_frames=args.max_frames or 150)
    frames = clip.frames
    bs, source = _bitstream(frames, clip.fps, path)
    multi = _multi_reference(frames, clip.fps, path)
    devices = [args.device] if args.device else (["cpu", "cuda"] if torch.cuda.is_available() else ["cpu"])
    default_threads = torch.get_num_threads()
    names = ["one key"] + (["key every 20, 4 refs"] if multi is not None else [])
    runs = [(name, dev, th) for name in names for dev in devices
            for th in (sorted({1, default_threads}) if dev == "cpu" else [default_threads])]
    rows = []
    with tempfile.TemporaryDirectory(prefix="ihvc_bench_") as tmp:
        files = {"one key": str(Path(tmp) / "clip.ihvc"), "key every 20, 4 refs": str(Path(tmp) / "multi.ihvc")}
        fr = str(Path(tmp) / "frames.npy")
        write(bs, files["one key"])
        if multi is not None:
            write(multi, files["key every 20, 4 refs"])
        np.save(fr, frames)
        ctx = mp.get_context("spawn")
        for name, dev, threads in runs:
            with ctx.Pool(1) as pool:
                rows.append((name,) + pool.apply(_measure, (files[name], fr, dev, threads)))
    print(f"\nDecode benchmark: {path.name}, {frames.shape[2]}x{frames.shape[1]}, bitstream from {source}; "
          f"each row in a fresh process\n")
    print("| bitstream | device | threads | frames | body model load (s) | first frame (ms) | decode_all (frames/s) "
          "| decode_all CPU time (ms/frame) "
          "| decode_frame (frames/s) | RSS after imports / peak (MiB) | Python heap peak (MiB) | CUDA peak (MiB) "
          "| PSNR vs clip (dB) |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for name, *r in rows:
        print(f"| {name} | {r[0]} | {r[1]} | {r[2]} | {r[3]:.1f} | {r[4]:.0f} | {r[5]:.1f} | {r[12]:.1f} | {r[6]:.1f} | "
              f"{r[7]:.0f} / {r[8]:.0f} | {r[9]:.1f} | " + ("-" if np.isnan(r[10]) else f"{r[10]:.0f}")
              + f" | {r[11]:.2f} |")
    return 0
