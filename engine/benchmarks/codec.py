"""Codec-foundation benchmarks: ``python main.py bench --quant | --entropy | --keypicture``."""
from __future__ import annotations

import platform
import time
from pathlib import Path

import numpy as np

from ..entropy import adaptive_entropy_bits, encode_residuals, predict_residuals
from ..semantics import GROUPS, QuantSpec, quantize, snap


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


def clip_motion(data: Path, max_frames: int | None) -> list[tuple[str, np.ndarray]]:
    """Fitted semantics of the real TED clips when the encoder is available, else synthetic."""
    clips = sorted((data / "ted").glob("*.m*")) if data.exists() else []
    out = []
    try:
        from ..encoder import analyse_video   # noqa: WPS433 (optional until the encoder exists)
    except ImportError:
        analyse_video = None
    for clip in clips:
        if analyse_video is None:
            break
        values = analyse_video(clip, max_frames=max_frames)
        out.append((clip.name, values))
    if not out:
        out = [(f"synthetic #{s}", synthetic_motion(150, s)) for s in range(3)]
    return out


def run_quant(args) -> None:
    """Rate vs joint-position error as every step is scaled: pick the knee."""
    import torch

    from ..body_model import load_body_model
    from ..camera import to_world

    model = load_body_model("anny", device="cpu")
    clips = clip_motion(Path(args.data), args.max_frames)
    rng = np.random.default_rng(0)
    betas = torch.zeros(1, model.n_betas)
    key_pose = torch.as_tensor(rng.normal(0, 0.05, (14, 3)), dtype=torch.float32)

    def joints_mm(values: np.ndarray) -> np.ndarray:
        v = torch.as_tensor(values, dtype=torch.float32)
        pose = torch.cat([key_pose.expand(len(v), 14, 3), v[:, :21].reshape(-1, 7, 3)], 1)
        with torch.no_grad():
            out = model.forward(pose, betas.expand(len(v), -1))
            world = to_world(out.joints, v[:, 21:24], v[:, 24:27])
        return world.numpy() * 1000

    print(f"\n### Semantic quantization: rate vs joint error ({machine()})\n")
    print("`python main.py bench --quant` — scale applies to every default step; bits per frame of the")
    print("31 core semantics (camera group excluded, it moves no joint); joint error = mean / max 3D")
    print("distance (mm) of the 22 body-model joints between original and quantized semantics.\n")
    print("| scale | pose step (deg) | bits/frame | kbps @25 | mean err (mm) | max err (mm) |")
    print("|---|---|---|---|---|---|")
    for scale in (0.25, 0.5, 1.0, 1.5, 2.0, 4.0):
        spec = QuantSpec(*(s * scale for s in QuantSpec().as_tuple()))
        steps = spec.steps(False)
        bits, errs = [], []
        for _, values in clips:
            core = values[:, :31]
            bits.append(semantic_bits(core, steps))
            d = np.linalg.norm(joints_mm(core) - joints_mm(snap(core, steps)), axis=-1)
            errs.append(d)
        e = np.concatenate([x.reshape(-1) for x in errs])
        b = float(np.mean(bits))
        print(f"| {scale:g} | {np.degrees(spec.pose):.2f} | {b:.1f} | {b * 25 / 1000:.2f} | {e.mean():.1f} | {e.max():.1f} |")
    print(f"\nclips: {', '.join(name for name, _ in clips)}")


def run_entropy(args) -> None:
    clips = clip_motion(Path(args.data), args.max_frames)
    steps = QuantSpec().steps(True)
    print(f"\n### Arithmetic coder vs adaptive empirical entropy ({machine()})\n")
    print("`python main.py bench --entropy` — residuals from the previous decoded frame at the default steps.\n")
    print("| clip | frames | dims | coded bits/frame | adaptive entropy bits/frame | ratio | encode ms | decode ms |")
    print("|---|---|---|---|---|---|---|---|")
    from ..entropy import decode_residuals
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

    from ..keypicture import decode_key_picture, encode_key_picture
    from ..video import read_video

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
