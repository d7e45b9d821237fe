"""Learned vs analytic decoding of the same bitstreams, on the validation clips nobody trained on.

    python main.py bench --learned [--data ../shared/data] [--grids /tmp/grids]
    python -m engine.benchmarks.learned [--data ../shared/data] [--checkpoint assets/generator.safetensors]

Clips: engine.training.train.VALIDATION (a TED speaker, a dancer, a tai chi clip of ../shared/data/more,
named before training, never trained on), found anywhere under ``--data``; their first CLIP_FRAMES
frames, encoded once by the real encoder (keys by content; cached with the training analysis,
engine/training/dataset.py), then decoded twice from that one bitstream: by the analytic decoder and
with the learned stage. PSNR, SSIM, MS-SSIM and VMAF over all frames (key frames included, identical
in both), and the learned decode speed (analysis + network, all frames) on the 384 x 384 clips.

Requirement (issue #15): the learned path higher on all four metrics on average, no clip lower by more
than 0.3 dB PSNR or 2 VMAF points, and at least 8 frames/s at 384 x 384.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError

PSNR_MARGIN_DB = 0.3
VMAF_MARGIN = 2.0
MIN_FPS_384 = 8.0
METRICS = ("psnr", "ssim", "msssim", "vmaf")


def _clips(data: Path):
    from engine.training.dataset import clip_spec, find_clips
    from engine.training.train import CLIP_FRAMES, VALIDATION
    found = {p.stem: p for p in find_clips(data) if p.stem in VALIDATION}
    missing = [v for v in VALIDATION if v not in found]
    if not found:
        raise InputError(f"none of the validation clips ({', '.join(VALIDATION)}) under {data}")
    if missing:
        print(f"note: validation clips not under {data}: {', '.join(missing)}")
    return [clip_spec(found[v], max_frames=CLIP_FRAMES) for v in VALIDATION if v in found]


def save_grid(path, dec, ref, ana, lrn, frames=None) -> None:
    """key | target | analytic | learned for three frames (1/4, 1/2 and 3/4 into the clip, or ``frames``)."""
    import cv2
    from engine.fileio import atomic_path
    n = len(ref)
    lines = []
    for i in frames or (n // 4, n // 2, (3 * n) // 4):
        g, _ = dec.bs.gop_of(i)
        lines.append(np.concatenate([dec.key_state(g).rgb, ref[i], ana[i], lrn[i]], 1))
    img = np.concatenate(lines, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


def verdict(rows: list[dict], fps384: list[float]) -> tuple[bool, list[str]]:
    """(met, reasons it is not) for the issue #15 requirement on per-clip rows."""
    why = []
    for m in METRICS:
        gain = float(np.mean([r[f"{m}_learned"] - r[f"{m}_analytic"] for r in rows]))
        if not gain > 0:
            why.append(f"mean {m} gain {gain:+.4g} is not positive")
    for r in rows:
        if r["psnr_learned"] - r["psnr_analytic"] < -PSNR_MARGIN_DB:
            why.append(f"{r['clip']}: PSNR {r['psnr_learned'] - r['psnr_analytic']:+.2f} dB")
        if r["vmaf_learned"] - r["vmaf_analytic"] < -VMAF_MARGIN:
            why.append(f"{r['clip']}: VMAF {r['vmaf_learned'] - r['vmaf_analytic']:+.1f}")
    if fps384 and min(fps384) < MIN_FPS_384:
        why.append(f"learned decode {min(fps384):.1f} frames/s at 384x384 (< {MIN_FPS_384:g})")
    return not why, why


def run(args) -> dict:
    from engine.codec import container
    from engine.synthesis.decoder import Decoder
    from engine.training.dataset import ClipData, build_cache
    from engine.synthesis.refiner import DEFAULT_CHECKPOINT, load_refiner
    from engine.evaluation.metrics import ms_ssim_frames, psnr_frames, ssim_frames, vmaf
    data = Path(getattr(args, "data", None) or "../shared/data")
    if not data.exists():
        raise InputError(f"no such data folder: {data}")
    ckpt = getattr(args, "checkpoint", None) or DEFAULT_CHECKPOINT
    device = getattr(args, "device", None) or "cpu"
    refiner = load_refiner(ckpt, device=device, body_model="anny")
    if refiner is None:
        raise InputError(f"no generator checkpoint at {ckpt}")
    max_frames = getattr(args, "max_frames", None)
    rows = []
    for spec in _clips(data):
        try:
            folder = build_cache(spec)
        except InputError as exc:
            print(f"{spec.name}: skipped ({exc})")
            continue
        clip = ClipData(folder)
        bs = container.read(folder / "bitstream.ihvc")
        ref = np.asarray(clip.frames)
        n = min(len(ref), bs.n_frames, max_frames or 10 ** 9)
        dec = Decoder(bs, device=device)
        dec_l = Decoder(bs, device=device, refiner=refiner)
        dec_l.decode_all(range(min(3, n)))                                                  # warm-up
        t = time.perf_counter()
        ana = dec.decode_all(range(n))
        t_ana = time.perf_counter() - t
        t = time.perf_counter()
        lrn = dec_l.decode_all(range(n))
        t_lrn = time.perf_counter() - t
        r = ref[:n]
        row = {"clip": spec.name, "frames": n, "size": f"{bs.width}x{bs.height}", "keys": len(bs.gops),
               "fps_analytic": n / t_ana, "fps_learned": n / t_lrn,
               "changed_pixels": float((ana != lrn).any(-1).mean())}
        for m, fn in (("psnr", psnr_frames), ("ssim", ssim_frames), ("msssim", ms_ssim_frames)):
            row[f"{m}_analytic"] = float(fn(r, ana).mean())
            row[f"{m}_learned"] = float(fn(r, lrn).mean())
        row["vmaf_analytic"], row["vmaf_learned"] = vmaf(r, ana), vmaf(r, lrn)
        rows.append(row)
        grid_dir = getattr(args, "grids", None)
        if grid_dir:
            save_grid(Path(grid_dir) / f"grid_{spec.name}.png", dec, r, ana, lrn)
        print(f"{spec.name}: PSNR {row['psnr_analytic']:.3f} -> {row['psnr_learned']:.3f}, MS-SSIM "
              f"{row['msssim_analytic']:.4f} -> {row['msssim_learned']:.4f}, VMAF {row['vmaf_analytic']:.2f} -> "
              f"{row['vmaf_learned']:.2f}; learned {row['fps_learned']:.1f} frames/s", flush=True)
    if not rows:
        raise InputError("no validation clip could be encoded")
    fps384 = [r["fps_learned"] for r in rows if r["size"] == "384x384"]
    ok, why = verdict(rows, fps384)
    lines = [f"Learned vs analytic decoding, same bitstreams ({Path(ckpt).name}, {torch.get_num_threads()} CPU "
             f"threads, device {device})", "",
             "| clip | frames | size | keys | PSNR analytic / learned | SSIM | MS-SSIM | VMAF | pixels changed "
             "| frames/s analytic / learned |",
             "| --- | ---: | --- | ---: | --- | --- | --- | --- | ---: | --- |"]
    for r in rows:
        lines.append(f"| {r['clip']} | {r['frames']} | {r['size']} | {r['keys']} | {r['psnr_analytic']:.3f} / "
                     f"{r['psnr_learned']:.3f} | {r['ssim_analytic']:.4f} / {r['ssim_learned']:.4f} "
                     f"| {r['msssim_analytic']:.4f} / {r['msssim_learned']:.4f} | {r['vmaf_analytic']:.2f} / "
                     f"{r['vmaf_learned']:.2f} | {100 * r['changed_pixels']:.1f} % | {r['fps_analytic']:.1f} / "
                     f"{r['fps_learned']:.1f} |")
    mean = {m: (float(np.mean([r[f'{m}_analytic'] for r in rows])), float(np.mean([r[f'{m}_learned'] for r in rows])))
            for m in METRICS}
    lines.append("| mean | | | | " + " | ".join(f"{a:.4f} / {b:.4f}" for a, b in mean.values()) + " | | |")
    lines += ["", f"Requirement (mean higher on all four, no clip below -{PSNR_MARGIN_DB} dB PSNR or -{VMAF_MARGIN:g} "
              f"VMAF, >= {MIN_FPS_384:g} frames/s at 384x384): " + ("met." if ok else "NOT met: " + "; ".join(why) + ".")]
    print("\n".join(lines))
    return {"rows": rows, "mean": mean, "ok": ok, "why": why, "table": "\n".join(lines)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--grids", default=None, metavar="DIR", help="write DIR/grid_<clip>.png (key|target|analytic|learned)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    try:
        return 0 if run(args)["ok"] else 1
    except InputError as exc:
        print(f"error: {exc}")
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
