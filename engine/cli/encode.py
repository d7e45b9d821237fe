"""``python main.py encode INPUT -o OUT.ihvc``: encode a video of one person.

    python main.py encode INPUT -o OUT.ihvc [--key-codec vvc|hevc|av1] [--key-qp 37|auto (auto with --rate)]
        [--keys auto|one] [--rate KBPS | --lambda L] [--gop N] [--refs 4]
        [--size 384] [--max-frames N] [--region x,y,w,h] [--no-camera]
        [--body-model anny|smplx] [--body-model-path DIR] [--device cpu|cuda] [--quiet]

The output is written atomically (a failed or interrupted encode leaves nothing);
a summary (frames, bits per frame by part, kbps at 25 fps, fit error, speed) is
printed at the end. Taichi clips: ``--region 0,0,256,256`` keeps their real top half.
"""
from __future__ import annotations

import sys
from pathlib import Path

from engine.errors import InputError


def add_arguments(p):
    p.add_argument("input", help="input video (anything FFmpeg reads)")
    p.add_argument("-o", "--output", required=True, help="output bitstream (.ihvc)")
    p.add_argument("--key-codec", default="vvc", choices=("vvc", "hevc", "av1"), help="key-picture codec (default vvc)")
    p.add_argument("--key-qp", default=None,
                   help="key-picture QP (default 37, or auto with --rate); auto: with --rate, the encoder chooses it "
                        "with the keys so that the file meets the rate")
    p.add_argument("--keys", default="auto", choices=("auto", "one"),
                   help="auto (default): key pictures where the decoder needs them, by rate-distortion; one: a "
                        "single key, at the frame the decoder draws the clip best from (for each part of a clip "
                        "longer than 1,024 frames, which is encoded part by part)")
    p.add_argument("--rate", type=float, default=None, metavar="KBPS",
                   help="with --keys auto: total rate target in kbps at 25 fps (default: a lambda from the key QP)")
    p.add_argument("--lambda", dest="lam", type=float, default=None, metavar="L",
                   help="with --keys auto: squared error a key must save per bit (default: HEVC's lambda at the key QP)")
    p.add_argument("--gop", type=int, default=None, help="a key picture every N frames instead (a fixed period)")
    p.add_argument("--refs", type=int, default=4,
                   help="key pictures one frame may draw from (default 4; 1: each frame its own key only)")
    p.add_argument("--no-chain", action="store_true",
                   help="code each key picture alone (default with VVC: the keys are one chain, each predicted "
                        "from the ones before it, for far fewer bytes)")
    p.add_argument("--size", type=int, default=384, help="working frame size, square (default 384)")
    p.add_argument("--max-frames", type=int, default=None, help="encode at most N frames")
    p.add_argument("--region", default=None, help="crop x,y,w,h of the input first (e.g. 0,0,256,256)")
    p.add_argument("--no-camera", action="store_true", help="do not code the background camera motion")
    p.add_argument("--body-model", default="anny", choices=("anny", "smplx"), help="body model (default anny)")
    p.add_argument("--body-model-path", default=None, help="SMPL-X model folder (with SMPLX_NEUTRAL.npz)")
    p.add_argument("--effort", default="default", choices=("fast", "default", "slow"),
                   help="fast: semantics from the landmark fit alone; default: then refined against the frames "
                        "the decoder draws (at half size); slow: refined at full size, and the key pictures at "
                        "the VVC encoder's slow preset, longer")
    p.add_argument("--device", default=None, help="fit on cpu or cuda (default: cuda when present)")
    p.add_argument("--quiet", action="store_true", help="no progress bar and no summary")


def run(args) -> int:
    from engine.codec.container import write
    from engine.analysis.encoder import encode_video
    out = Path(args.output)
    if out.suffix.lower() != ".ihvc":
        raise InputError(f"output must be an .ihvc file, got {out.name}")
    if out.exists() and out.is_dir():
        raise InputError(f"output is a folder: {out}")
    from engine.fileio import refuse_same_file, refuse_unwritable
    refuse_same_file(out, args.input)
    refuse_unwritable(out)
    progress = None
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm
        bars = {}

        def progress(stage, done, total):
            b = bars.get(stage)
            if b is None:
                unit = {"landmarks": "frame", "fit": "%", "closed loop": "frame",
                        "closed loop, first steps": "frame"}.get(stage.split(": ")[-1], "gop")
                b = bars[stage] = tqdm(total=total, desc=stage, unit=unit, leave=False, file=sys.stderr)
            b.n = done
            b.refresh()
            if done >= total:
                b.close()
    key_qp = args.key_qp
    if key_qp is None:
        # Under a rate target the key QP follows the rate: at 37 one key picture alone is over 5 kbps on
        # three TED clips of five (docs/BENCHMARKS.md). --key-qp N still fixes it.
        from engine.analysis.encoder import DEFAULT_KEY_QP
        key_qp = "auto" if args.rate is not None and args.gop is None and args.keys == "auto" else DEFAULT_KEY_QP
    res = encode_video(
        args.input, key_codec=args.key_codec, key_qp=key_qp, gop=args.gop, size=args.size,
        max_frames=args.max_frames, region=args.region, camera=not args.no_camera, progress=progress,
        body_model=args.body_model, body_model_path=args.body_model_path, device=args.device, keys=args.keys,
        rate_kbps=args.rate, lam=args.lam, max_refs=args.refs, effort=args.effort,
        chain=False if args.no_chain else None)
    n = write(res.bitstream, out)
    if not args.quiet:
        print(f"wrote {out} ({n} bytes)")
        for line in res.lines():
            print(line)
    for line in res.warnings:
        print(f"warning: {line}", file=sys.stderr)
    missed = rate_missed(args.rate, res.rate)
    if missed:
        print(missed, file=sys.stderr)
    return 0


def rate_missed(target: float | None, rate) -> str | None:
    """A one-line note when the file is over the --rate target by more than 2 % (one key picture at the
    coarsest QP tried, or the semantics alone, can be over a very low target; the closed loop may add a
    little after the key pictures are chosen), else None."""
    from engine.codec.rate import REFERENCE_FPS
    if target is None or rate.kbps_at_25fps <= 1.02 * target:
        return None
    sem = (rate.semantics_bpf + rate.camera_bpf) * REFERENCE_FPS / 1000
    return (f"note: the rate target {target:g} kbps was not reached: {rate.kbps_at_25fps:.2f} kbps at 25 fps "
            f"(the per-frame semantics alone take {sem:.2f})")
