"""``python main.py bench --effort``: what each encoder effort level costs and buys, end to end.

Per TED clip (every TED clip under --data, ../shared/data/more included; the first --max-frames frames,
default 100), the real ``encode_video`` call at each effort level (fast, then default) with the default
settings otherwise (key pictures chosen by content, key QP 37): its wall seconds and frames per second,
where the time went (landmarks, fit, key stage, of it the closed loop's first steps beside the key
pictures' encoder, the rest of the closed loop), then the analytic decoder's frames
scored against the working frames (PSNR, SSIM, MS-SSIM, VMAF), the rate, and the step error into the
first frame of a group and into the others (``metrics.boundary_steps``: a key's group giving way to the
next key's shows as a jump no frame-by-frame metric sees). Wall-clock figures: run it
on an otherwise idle machine, and say so when it was not.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

EFFORTS = ("fast", "default")
DEFAULT_FRAMES = 100
# "draft": the closed loop's first steps, which run inside the key stage, beside the key pictures' encoder
# (engine.analysis.closed_loop.draft_rows): part of "keys", not of "closed_loop".
STAGES = ("landmarks", "fit", "keys", "draft", "closed_loop")


def measure(path, effort: str, max_frames: int, device=None) -> dict:
    """One clip encoded end to end at one effort level, decoded and scored."""
    from engine.analysis.encoder import encode_video
    from engine.evaluation.metrics import boundary_steps, evaluate
    from engine.synthesis.decoder import Decoder
    res = encode_video(path, max_frames=max_frames, effort=effort, device=device, keep_analysis=True)
    frames = res.analysis.frames
    out = Decoder(res.bitstream, device=device, body_model=res.analysis.model).decode_all()
    r = res.rate
    at, inside = boundary_steps(frames, out, [g.start for g in res.bitstream.gops])
    return {**evaluate(frames, out), "step_at": at, "step_inside": inside,
            "seconds": res.seconds, "frames": len(frames), "fps": res.encode_fps,
            "keys": len(res.bitstream.gops), "kbps": r.kbps_at_25fps, "sem_bpf": r.semantics_bpf + r.camera_bpf,
            **{"t_" + s: res.timings.get(s, 0.0) for s in STAGES}}


def run(args) -> int:
    from engine.benchmarks.keys import _clips
    from engine.errors import InputError
    clips = _clips(Path(args.data))
    if not clips:
        raise InputError(f"no TED clips under {args.data}")
    mf = getattr(args, "max_frames", None) or DEFAULT_FRAMES
    device = getattr(args, "device", None)
    head = ("| clip | effort | encode s | frames/s | landmarks / fit / keys (of it first steps) / closed loop s | keys | kbps "
            "| sem bits/frame | PSNR | SSIM | MS-SSIM | VMAF | step error at / off a boundary |")
    lines = [head, "|" + "---|" * 13]
    print(head, flush=True)
    rows = []
    for path in clips:
        for effort in EFFORTS:
            s = measure(path, effort, mf, device)
            s.update(clip=path.stem, effort=effort)
            rows.append(s)
            line = (f"| {path.stem} | {effort} | {s['seconds']:.1f} | {s['fps']:.2f} | " + _stages(s)
                    + f" | {s['keys']} | {s['kbps']:.2f} | {s['sem_bpf']:.1f} | {s['psnr']:.2f} | {s['ssim']:.4f} "
                    f"| {s['ms_ssim']:.4f} | {s.get('vmaf', float('nan')):.1f} "
                    f"| {s['step_at']:.2f} / {s['step_inside']:.2f} |")
            lines.append(line)
            print(line, flush=True)
    for effort in EFFORTS:
        sel = [r for r in rows if r["effort"] == effort]
        m = {k: float(np.nanmean([r[k] for r in sel])) for k in ("kbps", "sem_bpf", "psnr", "ssim", "ms_ssim", "vmaf",
                                                                 "step_at", "step_inside", *("t_" + s for s in STAGES))}
        secs = sum(r["seconds"] for r in sel)
        lines.append(f"| **all** | {effort} | {secs:.1f} | {sum(r['frames'] for r in sel) / secs:.2f} | " + _stages(m)
                     + f" | | {m['kbps']:.2f} | {m['sem_bpf']:.1f} | {m['psnr']:.2f} | {m['ssim']:.4f} "
                     f"| {m['ms_ssim']:.4f} | {m['vmaf']:.1f} | {m['step_at']:.2f} / {m['step_inside']:.2f} |")
    print("\n".join(lines))
    return 0


def _stages(s: dict) -> str:
    """landmarks / fit / keys (first steps) / closed loop, in seconds."""
    t = {k: s["t_" + k] for k in STAGES}
    return f"{t['landmarks']:.1f} / {t['fit']:.1f} / {t['keys']:.1f} ({t['draft']:.1f}) / {t['closed_loop']:.1f}"
