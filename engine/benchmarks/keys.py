"""``python main.py bench --keys``: key pictures chosen by content against a fixed period, on the TED clips.

Per clip (every TED clip under --data, ../shared/data/more included): one analysis (landmarks and fit),
then at key QP 42 (``--key-qp``)
  fixed-20     a key picture every 20 frames, one reference per frame (what the project had)
  fixed-20+r   the same key pictures, each frame drawing from up to 4 (format 2: the decoder alone)
  auto@fixed   keys chosen by content under a rate target equal to fixed-20's rate
  auto@5       keys chosen by content under 5 kbps at 25 fps (the issue's one-key budget)
each decoded by the analytic decoder and scored (PSNR, SSIM, MS-SSIM, VMAF) on every frame. The fixed
period is encoded the way ``encode --gop 20`` does it (one fit per group).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

KEY_QP = 42
GOP = 20


def _clips(data: Path) -> list[Path]:
    return sorted(p for p in data.rglob("ted*") if p.suffix in (".mp4", ".mkv"))


def _score(bs, frames, device) -> dict:
    from engine.codec.rate import rate_of
    from engine.evaluation.metrics import evaluate
    from engine.synthesis.decoder import Decoder
    t = time.perf_counter()
    dec = Decoder(bs, device=device).decode_all()
    fps = len(dec) / (time.perf_counter() - t)
    q = evaluate(frames, dec)
    return {"kbps": rate_of(bs).kbps_at_25fps, "keys": len(bs.gops), "decode_fps": fps, **q}


def run(args) -> int:
    import torch

    from engine.analysis.encoder import encode_video, with_references
    from engine.errors import InputError
    torch.set_num_threads(1)
    data = Path(args.data)
    clips = _clips(data)
    if not clips:
        raise InputError(f"no TED clips under {data}")
    qp = getattr(args, "key_qp", None) or KEY_QP
    rows = []
    for path in clips:
        t0 = time.perf_counter()
        mf = args.max_frames
        fixed = encode_video(path, key_qp=qp, gop=GOP, max_frames=mf, max_refs=1)
        one = encode_video(path, key_qp=qp, keys="one", max_frames=mf, keep_analysis=True)
        frames = one.analysis.frames
        res = {"fixed-20": fixed.bitstream}
        res["fixed-20+r"] = with_references(fixed.bitstream, 4)
        rate = _score(fixed.bitstream, frames, args.device)["kbps"]
        res["auto@fixed"] = encode_video(path, key_qp=qp, rate_kbps=rate, max_frames=mf,
                                         analysis=one.analysis).bitstream
        res["auto@5"] = encode_video(path, key_qp=qp, rate_kbps=5.0, max_frames=mf,
                                     analysis=one.analysis).bitstream
        for name, bs in res.items():
            r = _score(bs, frames, args.device)
            rows.append({"clip": path.stem, "run": name, **r,
                         "key_frames": " ".join(str(g.key_frame) for g in bs.gops)})
            print(f"{path.stem} {name:11s} {r['kbps']:6.2f} kbps  keys {r['keys']:2d}  PSNR {r['psnr']:.2f}  "
                  f"SSIM {r['ssim']:.4f}  MS-SSIM {r['ms_ssim']:.4f}  VMAF {r['vmaf']:.1f}  "
                  f"({r['decode_fps']:.1f} fps)", flush=True)
        print(f"  {path.stem}: {time.perf_counter() - t0:.0f} s", flush=True)
    print("\n| clip | run | kbps (25 fps) | keys | PSNR | SSIM | MS-SSIM | VMAF | key frames |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['clip']} | {r['run']} | {r['kbps']:.2f} | {r['keys']} | {r['psnr']:.2f} | {r['ssim']:.4f} | "
              f"{r['ms_ssim']:.4f} | {r['vmaf']:.1f} | {r['key_frames']} |")
    for name in dict.fromkeys(r["run"] for r in rows):
        sel = [r for r in rows if r["run"] == name]
        print(f"| **mean** | {name} | {np.mean([r['kbps'] for r in sel]):.2f} | "
              f"{np.mean([r['keys'] for r in sel]):.1f} | {np.mean([r['psnr'] for r in sel]):.2f} | "
              f"{np.mean([r['ssim'] for r in sel]):.4f} | {np.mean([r['ms_ssim'] for r in sel]):.4f} | "
              f"{np.mean([r['vmaf'] for r in sel]):.1f} | |")
    return 0
