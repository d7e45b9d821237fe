"""``python main.py bench --encode``: fit error, semantic rate, camera alignment, encode speed.

Clips: every TED clip in DATA/ted and the first four TaiChi clips in DATA/taichi
(their real top 256x256 half, upscaled to the 384x384 working size; at most 200
frames each unless --max-frames says otherwise, to keep the run short on 2 CPUs).

Per clip (default quantization, camera group on, one key frame per clip):
  * fit error: pixel distance at 384x384 between the projected fitted (and
    quantized) model keypoints and the landmarks they were fitted to, for nose,
    shoulders, elbows, wrists and hips ("fused": MediaPipe pose landmarks with
    the face-mesh nose; targets TED mean <= 4 px, p90 <= 8 px), and against the
    MediaPipe pose landmarks alone ("pose");
  * semantic bits per frame: the coded per-frame semantics incl. camera
    (FSEM section; target <= 60), and the camera's share;
  * camera alignment: mean absolute background difference to the key frame
    (0..255) with no compensation and after warping the key frame by the coded
    camera group;
  * encode fps: the whole encode_video call (reading, landmarks, fit, camera,
    key picture, serialisation) / frames, wall clock (target >= 8 at 384x384),
    and frames per CPU-second of this process (what an otherwise idle core
    gives; the wall figure drops when other jobs share the 2 cores).
Overlay PNGs of two clips (key frame, middle, last) go to /tmp/overlay_<clip>.png.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

TAICHI_REGION = (0, 0, 256, 256)
TAICHI_DEFAULT_FRAMES = 200


def _clips(data: Path):
    ted = sorted(p for p in (data / "ted").glob("*") if p.suffix in (".mkv", ".mp4"))
    taichi = sorted((data / "taichi").glob("taichi_*.mp4"))[:4]
    return [(p, None) for p in ted] + [(p, TAICHI_REGION) for p in taichi]


def _overlay_png(bs, frames, model, path):
    import cv2

    from engine.synthesis.render import bitstream_overlay_frames
    idx = sorted({0, bs.n_frames // 2, bs.n_frames - 1})
    tiles = [img for i, img in enumerate(bitstream_overlay_frames(bs, frames, model, alpha=0.55)) if i in idx]
    cv2.imwrite(str(path), cv2.cvtColor(np.concatenate(tiles, 1), cv2.COLOR_RGB2BGR))


def run(args) -> int:
    from engine.analysis.fit import fit_errors
    from engine.analysis.camera_motion import alignment_error
    from engine.analysis.encoder import encode_video
    data = Path(args.data)
    if not (data / "ted").is_dir():
        print(f"no clips under {data} (expected {data}/ted and {data}/taichi)")
        return 2
    rows = []
    overlays = 0
    for path, region in _clips(data):
        mf = args.max_frames if args.max_frames else (TAICHI_DEFAULT_FRAMES if region else None)
        c0 = time.process_time()
        s = encode_video(path, max_frames=mf, region=region, device=args.device, keep_analysis=True)
        bs, an = s.bitstream, s.analysis
        cpu = time.process_time() - c0
        lm, model, frames = an.landmarks, an.model, an.frames
        fit = an.fits[0]
        sem = bs.semantics()
        fused = fit_errors(model, fit, lm, semantics=sem) if bs.n_frames == fit.n_frames else np.zeros(0)
        pose = fit_errors(model, fit, lm, semantics=sem, targets="pose")
        cam = sem[:, 31:34]
        raw, comp = alignment_error(frames, cam, lm.masks)
        r = s.rate
        rows.append({
            "clip": path.stem + (" (top)" if region else ""), "frames": bs.n_frames,
            "fused": (fused.mean(), np.percentile(fused, 90)), "pose": (pose.mean(), np.percentile(pose, 90)),
            "sem": r.semantics_bpf + r.camera_bpf, "cam_bits": r.camera_bpf, "total": r.total_bpf,
            "align": (raw, comp), "fps": s.encode_fps, "cpu_fps": bs.n_frames / cpu, "undet": s.undetected,
            "t": s.timings, "ted": region is None,
        })
        if overlays < 2 and (overlays == 0 or region is not None):
            out = Path(f"/tmp/overlay_{path.stem}.png")
            _overlay_png(bs, frames, model, out)
            overlays += 1
            print(f"overlay: {out}")
    print()
    print("| clip | frames | fit err mean / p90 px (fused) | fit err mean / p90 px (pose) | semantic bits/frame (camera) "
          "| total bits/frame | bg diff none -> compensated | encode fps (wall) | frames per CPU-second | no person |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['clip']} | {r['frames']} | {r['fused'][0]:.2f} / {r['fused'][1]:.2f} | {r['pose'][0]:.2f} / "
              f"{r['pose'][1]:.2f} | {r['sem']:.1f} ({r['cam_bits']:.1f}) | {r['total']:.0f} | "
              f"{r['align'][0]:.2f} -> {r['align'][1]:.2f} | {r['fps']:.1f} | {r['cpu_fps']:.1f} | {r['undet']} |")
    for group in ("TED", "TaiChi"):
        sel = [r for r in rows if r["ted"] == (group == "TED")]
        if sel:
            print(f"| **{group} mean** | {sum(r['frames'] for r in sel)} | "
                  f"{np.mean([r['fused'][0] for r in sel]):.2f} / {np.mean([r['fused'][1] for r in sel]):.2f} | "
                  f"{np.mean([r['pose'][0] for r in sel]):.2f} / {np.mean([r['pose'][1] for r in sel]):.2f} | "
                  f"{np.mean([r['sem'] for r in sel]):.1f} ({np.mean([r['cam_bits'] for r in sel]):.1f}) | "
                  f"{np.mean([r['total'] for r in sel]):.0f} | "
                  f"{np.mean([r['align'][0] for r in sel]):.2f} -> {np.mean([r['align'][1] for r in sel]):.2f} | "
                  f"{np.mean([r['fps'] for r in sel]):.1f} | {np.mean([r['cpu_fps'] for r in sel]):.1f} | "
                  f"{sum(r['undet'] for r in sel)} |")
    print()
    print("stage seconds per clip: " + "; ".join(
        f"{r['clip']}: " + ", ".join(f"{k} {v:.1f}" for k, v in r["t"].items()) for r in rows))
    return 0
