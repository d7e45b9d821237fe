"""Where the analytic decoder's error lies, per TED clip: on the body, in a band around it, in
the background the body hid in the key frame (disocclusions), or in the rest of the frame.

    python main.py bench --regions [--data ../shared/data] [--max-frames N]

Each clip is encoded with a key picture every 20 frames at VVC key QP 42 (the operating point
of the x265 comparison in docs/BENCHMARKS.md) and decoded by the analytic decoder. Per region:
share of the frame area, share of the squared error, and PSNR inside it; PSNRs here are of the
squared error pooled over the clip (eval's mean of per-frame PSNRs is higher). It says which
part of the decoder to improve first.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from engine.errors import InputError

GOP, KEY_QP, BAND_PX = 20, 42, 16
REGIONS = ("body", "band", "disoccluded", "rest")


def region_masks(body: np.ndarray, hole: np.ndarray | None, band_px: int = BAND_PX) -> dict[str, np.ndarray]:
    """Disjoint H x W masks: the frame mesh, the background it hid in the key frame, a band of
    ``band_px`` around the mesh, the rest (they cover the frame exactly once)."""
    from scipy.ndimage import binary_dilation
    hole = np.zeros_like(body) if hole is None else hole & ~body
    band = binary_dilation(body, iterations=band_px) & ~body & ~hole
    return {"body": body, "band": band, "disoccluded": hole, "rest": ~(body | band | hole)}


def error_by_region(dec, frames: np.ndarray) -> dict[str, tuple[float, float]]:
    """{region: (pixels, summed squared error)} of decoder ``dec`` against ``frames`` (N x H x W x 3)."""
    acc = {k: [0.0, 0.0] for k in REGIONS}
    for g in dec.bs.gops:
        rows = g.frames
        fa = dec.analyse(g, rows)
        r, mo = fa.raster, fa.motion
        out = dec.render(fa).astype(np.float32)
        ref = frames[g.start:g.start + g.n_frames].astype(np.float32)
        err = ((out - ref) ** 2).mean(-1)
        body = r.mask.cpu().numpy()
        hole = None if mo.hole is None else mo.hole.cpu().numpy()
        for i in range(len(rows)):
            for k, m in region_masks(body[i], None if hole is None else hole[i]).items():
                acc[k][0] += float(m.sum())
                acc[k][1] += float(err[i][m].sum())
    return {k: (n, se) for k, (n, se) in acc.items()}


def run(args) -> dict:
    from engine.synthesis.decoder import Decoder
    from engine.analysis.encoder import encode_video
    data = Path(getattr(args, "data", None) or "../shared/data") / "ted"
    clips = sorted(p for p in data.glob("*") if p.suffix in (".mkv", ".mp4"))
    if not clips:
        raise InputError(f"no TED clips in {data}")
    lines = [f"Analytic decoder error by region (key every {GOP} frames, VVC key QP {KEY_QP}; band: {BAND_PX} px "
             "around the body)", "",
             "| clip | PSNR | " + " | ".join(f"{k}: area / error share / PSNR" for k in REGIONS) + " |",
             "|---|---|" + "---|" * len(REGIONS)]
    out = {}
    for path in clips:
        res = encode_video(path, key_qp=KEY_QP, gop=GOP, max_frames=getattr(args, "max_frames", None),
                                  keep_analysis=True)
        bs = res.bitstream
        acc = error_by_region(Decoder(bs, device=getattr(args, "device", None)), res.analysis.frames)
        n_all = sum(n for n, _ in acc.values())
        se_all = sum(se for _, se in acc.values())
        psnr = lambda se, n: 10 * np.log10(255.0 ** 2 * n / se) if se > 0 else float("inf")  # noqa: E731
        cells = [f"{100 * n / n_all:.1f} % / {100 * se / se_all:.1f} % / {psnr(se, n):.2f} dB" if n else "-"
                 for n, se in (acc[k] for k in REGIONS)]
        lines.append(f"| {path.stem} | {psnr(se_all, n_all):.2f} | " + " | ".join(cells) + " |")
        out[path.stem] = acc
        print(lines[-1], flush=True)
    print("\n".join(lines))
    return out
