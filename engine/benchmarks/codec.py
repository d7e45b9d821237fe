"""Codec-foundation benchmarks: ``python main.py bench --quant | --entropy | --keypicture``."""
from __future__ import annotations

import functools
import platform
import time
from pathlib import Path

import numpy as np

from engine.codec.entropy import adaptive_entropy_bits, encode_residuals, predict_residuals
from engine.codec.semantics import GROUPS, QuantSpec, quantize, snap


def machine() -> str:
    import os
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} cores, {time.strftime('%Y-%m-%d')}"


def synthetic_motion(n: int = 150, seed: int = 0) -> np.ndarray:
    """Smooth synthetic upper-body motion (N, 34): head/arm swings, slow turns, small drifts."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None] / 25.0
    base = np.r_[np.zeros(21), [0.0, 0.0, 0.0], [0.0, 0.2, 3.0], [0.5, 0.55, 0.7, 0.8], np.zeros(3)]
    amp = np.r_[np.full(21, 0.25), np.full(3, 0.08), np.full(3, 0.03), np.full(4, 0.015), np.full(3, 0.01)]
    freq = rng.uniform(0.1, 0.8, 34)          # Hz: gestures, not jitter
    walk = np.cumsum(rng.normal(0, 1, (n, 34)), 0) * amp * 0.02
    return base + amp * np.sin(2 * np.pi * freq * t + rng.uniform(0, 6, 34)) + walk


def semantic_bits(values: np.ndarray, steps: np.ndarray) -> float:
    """Bits per frame of the coded residuals (inter prediction from the previous decoded frame)."""
    q = quantize(values, steps)
    return 8 * len(encode_residuals(predict_residuals(q, q[0]))) / len(values)


@functools.lru_cache(maxsize=4)
def clip_analysis(data: str, max_frames: int | None) -> tuple:
    """(name, float semantics N x 34 before quantization, key body_pose 21 x 3, betas, focal) per TED clip.

    The encoder's own fit (engine.analysis.encoder.encode_video) of every clip in DATA/ted; synthetic
    motion (no key pose) when the clips are absent. Cached for the process: --quant and
    --entropy share one analysis.
    """
    clips = sorted((Path(data) / "ted").glob("*.m*")) if Path(data).exists() else []
    out = []
    if clips:
        from engine.analysis.encoder import encode_video
        for clip in clips:
            an = encode_video(clip, max_frames=max_frames, camera=True, keep_analysis=True).analysis
            fit = an.fits[0]
            values = np.concatenate([fit.semantics(), an.camera[0]], 1)
            out.append((clip.name, values, fit.body_pose[0].copy(), np.asarray(fit.betas, float),
                        np.asarray(fit.focal, float)))
    else:
        out = [(f"synthetic #{s}", synthetic_motion(150, s), None, None, None) for s in range(3)]
    return tuple(out)


def clip_motion(data: Path, max_frames: int | None) -> list[tuple[str, np.ndarray]]:
    """Fitted (unquantized) semantics of the real TED clips, else synthetic motion."""
    return [(a[0], a[1]) for a in clip_analysis(str(data), max_frames)]


def run_quant(args) -> None:
    """Rate vs joint-position error as every step is scaled: pick the knee."""
    import torch

    from engine.synthesis.body import load_body_model
    from engine.synthesis.camera import project, to_world
    from engine.analysis.encoder import sticky_snap

    model = load_body_model("anny", device="cpu")
    clips = clip_analysis(str(args.data), args.max_frames)
    size = 384

    def joints(values: np.ndarray, key_pose, betas, focal):
        """3D joints (mm, world) and 2D joints (px at 384 x 384, through box and crop camera)."""
        v = torch.as_tensor(values, dtype=torch.float32)
        if key_pose is None:
            key_pose = np.zeros((21, 3))
        kp = torch.as_tensor(np.asarray(key_pose)[:14], dtype=torch.float32)
        pose = torch.cat([kp.expand(len(v), 14, 3), v[:, :21].reshape(-1, 7, 3)], 1)
        b = None if betas is None else torch.as_tensor(betas, dtype=torch.float32)[None].expand(len(v), -1)
        f = torch.as_tensor(focal if focal is not None else (2.0, 2.0), dtype=torch.float32)[None].expand(len(v), 2)
        with torch.no_grad():
            j = model.forward(pose, b).joints
            world = to_world(j, v[:, 21:24], v[:, 24:27])
            xy, _ = project(j, v[:, 21:24], v[:, 24:27], v[:, 27:31], f, size, size)
        return world.numpy() * 1000, xy.numpy()

    print(f"\n### Semantic quantization: rate vs joint error ({machine()})\n")
    print("`python main.py bench --quant` — the encoder's fitted semantics of every TED clip (before")
    print("quantization) coded at every default step times `scale`, with the encoder's rate-aware snapping")
    print("(hold 0.3 step). Bits per frame of the 31 core semantics (camera group excluded: it moves no joint);")
    print("3D error: distance (mm) of the body model's 22 joints, original vs coded semantics; 2D error:")
    print("the same joints projected through box and crop camera (px at 384 x 384).\n")
    print("| scale | pose step (deg) | loc step (px) | bits/frame | kbps @25 | 3D mean (mm) | 3D p99 (mm) | "
          "2D mean (px) | 2D p99 (px) |")
    print("|---|---|---|---|---|---|---|---|---|")
    for scale in (0.25, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0):
        spec = QuantSpec(*(s * scale for s in QuantSpec().as_tuple()))
        steps = spec.steps(False)
        bits, e3, e2 = [], [], []
        for _, values, key_pose, betas, focal in clips:
            core = values[:, :31]
            coded = sticky_snap(core, steps)
            q = quantize(coded, steps)
            bits.append(8 * len(encode_residuals(predict_residuals(q, q[0]))) / len(core))
            w0, p0 = joints(core, key_pose, betas, focal)
            w1, p1 = joints(coded, key_pose, betas, focal)
            e3.append(np.linalg.norm(w0 - w1, axis=-1).reshape(-1))
            e2.append(np.linalg.norm(p0 - p1, axis=-1).reshape(-1))
        e3, e2 = np.concatenate(e3), np.concatenate(e2)
        b = float(np.mean(bits))
        print(f"| {scale:g} | {np.degrees(spec.pose):.2f} | {spec.loc * size:.2f} | {b:.1f} | {b * 25 / 1000:.2f} | "
              f"{e3.mean():.1f} | {np.percentile(e3, 99):.1f} | {e2.mean():.2f} | {np.percentile(e2, 99):.2f} |")
    print(f"\nclips: {', '.join(c[0] for c in clips)}")


def run_entropy(args) -> None:
    clips = clip_motion(Path(args.data), args.max_frames)
    if not clips[0][0].startswith("synthetic"):
        clips += [(f"synthetic #{s}", synthetic_motion(150, s)) for s in range(2)]
    steps = QuantSpec().steps(True)
    print(f"\n### Arithmetic coder vs adaptive empirical entropy ({machine()})\n")
    print("`python main.py bench --entropy` — residuals from the previous decoded frame at the default steps.\n")
    print("| clip | frames | dims | coded bits/frame | adaptive entropy bits/frame | ratio | encode ms | decode ms |")
    print("|---|---|---|---|---|---|---|---|")
    from engine.codec.entropy import decode_residuals
    for name, values in clips:
        d = values.shape[1]
        q = quantize(values, steps[:d])
        r = predict_residuals(q, q[0])
        t0 = time.perf_counter()
        data = encode_residuals(r)
        t1 = time.perf_counter()
        back = decode_residuals(data, *r.shape)
        t2 = time.perf_counter()
        assert (back == r).all()
        h = adaptive_entropy_bits(r)
        n = len(values)
        print(f"| {name} | {n} | {d} | {8 * len(data) / n:.1f} | {h / n:.1f} | {8 * len(data) / h:.3f} | "
              f"{1000 * (t1 - t0):.1f} | {1000 * (t2 - t1):.1f} |")
    print("\nPer group bits/frame at the default steps (each group coded alone):")
    for name, values in clips:
        parts = []
        for g, sl in GROUPS.items():
            if sl.stop <= values.shape[1]:
                parts.append(f"{g} {semantic_bits(values[:, sl], steps[sl]):.1f}")
        print(f"- {name}: " + ", ".join(parts))


def run_keypicture(args) -> None:

    from engine.codec.keypicture import decode_key_picture, encode_key_picture
    from engine.codec.video import read_video

    data = Path(args.data)
    clips = sorted((data / "ted").glob("*.m*"))
    if not clips:
        print(f"no TED clips under {data}; skipping the key-picture table")
        return
    print(f"\n### Key picture: bytes and PSNR per codec and QP ({machine()})\n")
    print("`python main.py bench --keypicture` — first frame of each TED clip at 384x384, RGB PSNR.\n")
    print("| clip | codec | QP | bytes | bits | PSNR (dB) | encode s |")
    print("|---|---|---|---|---|---|---|")
    for clip in clips:
        rgb = read_video(clip, size=384, max_frames=1).frames[0]
        for codec in ("vvc", "hevc", "av1"):
            for qp in (27, 32, 37, 42):
                t = time.perf_counter()
                kp = encode_key_picture(rgb, codec, qp)
                dt = time.perf_counter() - t
                dec = decode_key_picture(kp)
                mse = np.mean((dec.astype(float) - rgb) ** 2)
                psnr = 10 * np.log10(255 ** 2 / mse)
                print(f"| {clip.name} | {codec} | {qp} | {len(kp.payload)} | {8 * len(kp.payload)} | {psnr:.2f} | {dt:.2f} |")
