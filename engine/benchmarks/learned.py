"""Learned vs analytic decoding of the same bitstreams, on clips the network never trained on.

    python -m engine.benchmarks.learned [--data ../shared/data] [--checkpoint assets/generator.safetensors]
    python main.py bench --learned          (once engine/cli/bench.py lists it)

Clips: the held-out TED clip (ted_e: validation during training, so mildly selected-on) and the taichi
clips never used in training (engine.training.train.HOLDOUT_TEST). Each is encoded once by the real
encoder (cached with the training analysis, engine/training/dataset.py), then decoded twice: by the
analytic path and by the learned refiner. PSNR, SSIM, MS-SSIM and VMAF over all frames (key
frames included, identical in both), and the learned decode speed (analysis + network) at 384 x 384.
Further decodes scale the generator's blend towards its 1/4-resolution warp (``Generator.blend_strength``,
0 = off; the rest of the network unchanged): the PSNR kept at 0 says how much of the gain is that blur,
the sweep how PSNR trades against sharpness (VMAF).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError

PASS_MARGIN_DB = 0.3
BLEND_SWEEP = (0.0, 0.25, 0.5)      # blend strengths decoded besides the shipped 1.0


def _clips(data: Path, max_frames_taichi: int):
    from engine.training.dataset import clip_spec, find_clips
    from engine.training.train import HOLDOUT_TEST, HOLDOUT_VAL
    out = []
    for p in find_clips(data):
        if p.stem.startswith(HOLDOUT_VAL):
            out.append(clip_spec(p))
        elif any(p.stem.startswith(t) for t in HOLDOUT_TEST):
            out.append(clip_spec(p, max_frames=max_frames_taichi))
    return out


def _save_grid(path, dec, ref, ana, lrn) -> None:
    """key | target | analytic | learned for two frames (1/3 and 2/3 into the clip)."""
    import cv2
    from engine.fileio import atomic_path
    n = len(ref)
    lines = []
    for i in (n // 3, (2 * n) // 3):
        g, _ = dec.bs.gop_of(i)
        lines.append(np.concatenate([dec.key_state(g).rgb, ref[i], ana[i], lrn[i]], 1))
    img = np.concatenate(lines, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


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
    for spec in _clips(data, getattr(args, "taichi_frames", 96)):
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
        sweep = {}
        for strength in BLEND_SWEEP:                # the same network and key caches, blend scaled
            refiner.net.blend_strength = strength
            try:
                d = dec_l.decode_all(range(n))
            finally:
                refiner.net.blend_strength = 1.0
            sweep[strength] = {"psnr": float(psnr_frames(r, d).mean()), "msssim": float(ms_ssim_frames(r, d).mean()),
                               "vmaf": vmaf(r, d)}
        pa, pl = psnr_frames(r, ana), psnr_frames(r, lrn)
        row = {"clip": spec.name, "frames": n, "size": f"{bs.width}x{bs.height}",
               "psnr_analytic": float(pa.mean()), "psnr_learned": float(pl.mean()),
               "ssim_analytic": float(ssim_frames(r, ana).mean()), "ssim_learned": float(ssim_frames(r, lrn).mean()),
               "msssim_analytic": float(ms_ssim_frames(r, ana).mean()),
               "msssim_learned": float(ms_ssim_frames(r, lrn).mean()),
               "fps_analytic": n / t_ana, "fps_learned": n / t_lrn,
               "vmaf_analytic": vmaf(r, ana), "vmaf_learned": vmaf(r, lrn), "blend_sweep": sweep}
        row["gain_db"] = row["psnr_learned"] - row["psnr_analytic"]
        rows.append(row)
        grid_dir = getattr(args, "grids", None)
        if grid_dir:
            _save_grid(Path(grid_dir) / f"grid_{spec.name}.png", dec, r, ana, lrn)
        print(f"{spec.name}: PSNR analytic {row['psnr_analytic']:.3f} learned {row['psnr_learned']:.3f} "
              f"({row['gain_db']:+.3f} dB), learned {row['fps_learned']:.1f} fps", flush=True)
    mean_gain = float(np.mean([r["gain_db"] for r in rows]))
    worst = min(r["gain_db"] for r in rows)
    fps384 = [r["fps_learned"] for r in rows if r["size"] == "384x384"]
    ok = mean_gain > 0 and worst >= -PASS_MARGIN_DB and (not fps384 or min(fps384) >= 4.0)
    lines = [f"Learned vs analytic decoding ({Path(ckpt).name}, {torch.get_num_threads()} CPU threads, "
             f"device {device})", "",
             "| clip | frames | size | PSNR analytic | PSNR learned | gain dB | SSIM analytic | SSIM learned "
             "| MS-SSIM analytic | MS-SSIM learned | VMAF analytic | VMAF learned | fps analytic | fps learned |",
             "| --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['clip']} | {r['frames']} | {r['size']} | {r['psnr_analytic']:.3f} | {r['psnr_learned']:.3f} "
                     f"| {r['gain_db']:+.3f} | {r['ssim_analytic']:.4f} | {r['ssim_learned']:.4f} "
                     f"| {r['msssim_analytic']:.4f} | {r['msssim_learned']:.4f} | {r['vmaf_analytic']:.1f} "
                     f"| {r['vmaf_learned']:.1f} | {r['fps_analytic']:.1f} | {r['fps_learned']:.1f} |")
    lines += ["", f"Mean gain {mean_gain:+.3f} dB, worst clip {worst:+.3f} dB; requirement (mean > 0, no clip below "
              f"-{PASS_MARGIN_DB} dB, >= 4 fps at 384x384): {'met' if ok else 'NOT met'}.", "",
              "Blend strength (0 = off, 1 = shipped): PSNR dB / MS-SSIM / VMAF", "",
              "| clip | analytic | " + " | ".join(f"x{s:g}" for s in (*BLEND_SWEEP, 1.0)) + " |",
              "| --- | " + " | ".join("---:" for _ in range(len(BLEND_SWEEP) + 2)) + " |"]
    for r in rows:
        cells = [(r["psnr_analytic"], r["msssim_analytic"], r["vmaf_analytic"])]
        cells += [(r["blend_sweep"][s]["psnr"], r["blend_sweep"][s]["msssim"], r["blend_sweep"][s]["vmaf"])
                  for s in BLEND_SWEEP]
        cells.append((r["psnr_learned"], r["msssim_learned"], r["vmaf_learned"]))
        lines.append(f"| {r['clip']} | " + " | ".join(f"{p:.3f} / {m:.4f} / {v:.1f}" for p, m, v in cells) + " |")
    print("\n".join(lines))
    return {"rows": rows, "mean_gain_db": mean_gain, "worst_gain_db": worst, "ok": ok, "table": "\n".join(lines)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default="../shared/data")
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--max-frames", type=int, default=None)
    p.add_argument("--taichi-frames", type=int, default=96)
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--grids", default=None, metavar="DIR", help="write DIR/grid_<clip>.png (key|target|analytic|learned)")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    return 0 if run(args)["ok"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
