"""``python main.py bench --closed-loop``: semantics refined against the decoder's frames, on the TED clips.

Per clip (every TED clip under --data, ../shared/data/more included), one landmark analysis, then at key
QP 42 (``--key-qp``) two bitstreams with the landmark fit alone (``--effort fast``):
  one     one key picture for the clip
  auto    key pictures chosen by content (the default)
and each of them again after the closed loop (``--effort default``, engine.analysis.closed_loop) on the
*same* key pictures. Every bitstream is decoded by the analytic decoder and scored on every frame: PSNR,
SSIM, MS-SSIM, VMAF, PSNR on the body and in a 16 px band around it (engine.benchmarks.error_regions),
the body's share of the squared error, and the per-frame semantic bits (camera group included); for the
refined semantics, how much further (degrees, at worst) any joint lies outside its anatomical range
(engine.codec.anatomy) than in the landmark fit, and the studio's jump warnings against the landmark
semantics (engine.studio.plausibility: steps larger than the clip's own).
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

KEY_QP = 42


def _score(bs, frames, device) -> dict:
    from engine.benchmarks.error_regions import error_by_region
    from engine.codec.rate import rate_of, with_sizes
    from engine.evaluation.metrics import evaluate
    from engine.synthesis.decoder import Decoder
    dec = Decoder(bs, device=device)
    out = dec.decode_all()
    q = evaluate(frames, out)
    acc = error_by_region(dec, frames)
    psnr = lambda se, n: 10 * np.log10(255.0 ** 2 * n / se) if se > 0 else float("inf")  # noqa: E731
    se_all = sum(se for _, se in acc.values())
    band = acc["band"]
    r = rate_of(with_sizes(bs))
    return {**q, "body_psnr": psnr(acc["body"][1], acc["body"][0]), "band_psnr": psnr(band[1], band[0]),
            "body_share": acc["body"][1] / se_all, "sem_bpf": r.semantics_bpf + r.camera_bpf,
            "kbps": r.kbps_at_25fps}


def _range_excess(fit: np.ndarray, refined: np.ndarray, body_model: int) -> float:
    """Degrees: the most any joint of ``refined`` lies further outside its anatomical range than in ``fit``."""
    from engine.codec.anatomy import range_axes
    joint, axis, lo, hi = range_axes(body_model)

    def violation(sem):
        comp = np.einsum("nrc,rc->nr", sem[:, :21].reshape(-1, 7, 3)[:, joint], axis)
        return np.maximum(lo - comp, 0) + np.maximum(comp - hi, 0)
    return float(np.degrees(max(0.0, (violation(refined) - violation(fit)).max())))


def run(args) -> int:
    import torch

    from engine.analysis.closed_loop import refine_bitstream
    from engine.analysis.encoder import encode_video
    from engine.benchmarks.keys import _clips
    from engine.codec.semantics import semantic_names
    from engine.errors import InputError
    from engine.studio.plausibility import check
    torch.set_num_threads(1)
    clips = _clips(Path(args.data))
    if not clips:
        raise InputError(f"no TED clips under {args.data}")
    mf, device = getattr(args, "max_frames", None), getattr(args, "device", None)
    qp = getattr(args, "key_qp", None) or KEY_QP
    head = ("| clip | keys | effort | sem bits/frame | PSNR | SSIM | MS-SSIM | VMAF | body PSNR | band PSNR "
            "| body share of error | encode s | out of range beyond the fit (deg) / jump warnings |")
    lines = [head, "|" + "---|" * 13]
    rows = []
    print(f"key QP {qp}", flush=True)
    print(head, flush=True)
    for path in clips:
        t = time.perf_counter()
        one = encode_video(path, key_qp=qp, keys="one", max_frames=mf, keep_analysis=True, effort="fast")
        t_fast_one = time.perf_counter() - t
        frames = one.analysis.frames
        t = time.perf_counter()
        auto = encode_video(path, key_qp=qp, max_frames=mf, analysis=one.analysis, effort="fast")
        t_fast_auto = t_fast_one - one.timings.get("keys", 0.0) + (time.perf_counter() - t)
        for name, res, t_fast in (("one", one, t_fast_one), ("auto", auto, t_fast_auto)):
            bs = res.bitstream
            t = time.perf_counter()
            refined, report = refine_bitstream(bs, frames, "default", body_model=one.analysis.model, device=device)
            t_loop = time.perf_counter() - t
            warn = check(bs.semantics(), refined.semantics(), semantic_names(bs.has_camera), bs.body_model)
            excess = _range_excess(bs.semantics(), refined.semantics(), bs.body_model)
            for effort, b, secs in (("fast", bs, t_fast), ("default", refined, t_fast + t_loop)):
                s = _score(b, frames, device)
                s.update(clip=path.stem, keys=name, effort=effort, seconds=secs, frames=len(frames),
                         warnings=f"{excess:.1f} / {sum(w.kind == 'jump' for w in warn)}"
                         if effort == "default" else "")
                rows.append(s)
                line = (f"| {path.stem} | {name} | {effort} | {s['sem_bpf']:.1f} | {s['psnr']:.2f} | {s['ssim']:.4f} "
                        f"| {s['ms_ssim']:.4f} | {s.get('vmaf', float('nan')):.1f} | {s['body_psnr']:.2f} "
                        f"| {s['band_psnr']:.2f} | {100 * s['body_share']:.1f} % | {secs:.0f} | {s['warnings']} |")
                lines.append(line)
                print(line, flush=True)
    for name in ("one", "auto"):
        for effort in ("fast", "default"):
            sel = [r for r in rows if r["keys"] == name and r["effort"] == effort]
            if not sel:
                continue
            m = {k: float(np.mean([r[k] for r in sel])) for k in ("sem_bpf", "psnr", "ssim", "ms_ssim", "vmaf",
                                                                  "body_psnr", "band_psnr", "body_share")}
            fps = sum(r["frames"] for r in sel) / sum(r["seconds"] for r in sel)
            lines.append(f"| **mean** | {name} | {effort} | {m['sem_bpf']:.1f} | {m['psnr']:.2f} | {m['ssim']:.4f} "
                         f"| {m['ms_ssim']:.4f} | {m['vmaf']:.1f} | {m['body_psnr']:.2f} | {m['band_psnr']:.2f} "
                         f"| {100 * m['body_share']:.1f} % | {fps:.2f} frames/s | |")
    print("\n".join(lines))
    return 0
