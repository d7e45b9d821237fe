"""``python main.py overlay INPUT -o overlay.mp4``: draw the fitted body mesh over a video.

    python main.py overlay INPUT -o overlay.mp4 [--bitstream IN.ihvc] [--size 384] [--max-frames N]
        [--region x,y,w,h] [--body-model anny|smplx] [--body-model-path DIR] [--alpha 0.6] [--quiet]

Without ``--bitstream`` the video is analysed as the encoder does (landmarks, fit,
quantized semantics) and the mesh of those semantics is drawn; with it, the
semantics coded in that bitstream are drawn over INPUT (same size and region
options as its encode). Rendering is offscreen (pyrender, EGL). The video is an
x264 preview (CRF 18), written atomically.
"""
from __future__ import annotations

import sys
from pathlib import Path

from engine.errors import InputError


def add_arguments(p):
    p.add_argument("input", help="input video")
    p.add_argument("-o", "--output", required=True, help="output video (.mp4 or .mkv)")
    p.add_argument("--bitstream", default=None, help="draw the semantics of this .ihvc instead of fitting")
    p.add_argument("--size", type=int, default=384, help="working frame size (default 384)")
    p.add_argument("--max-frames", type=int, default=None, help="at most N frames")
    p.add_argument("--region", default=None, help="crop x,y,w,h of the input first (e.g. 0,0,256,256)")
    p.add_argument("--body-model", default="anny", choices=("anny", "smplx"))
    p.add_argument("--body-model-path", default=None, help="SMPL-X model folder")
    p.add_argument("--alpha", type=float, default=0.6, help="mesh opacity 0..1 (default 0.6)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def run(args) -> int:
    from engine.synthesis.body import body_model_for_id, load_body_model
    from engine.analysis.encoder import _parse_region
    from engine.synthesis.render import bitstream_overlay_frames
    from engine.codec.video import read_video, write_video
    out = Path(args.output)
    if out.suffix.lower() not in (".mp4", ".mkv", ".mov"):
        raise InputError(f"unsupported output format {out.suffix or '(none)'}: use .mp4 or .mkv")
    if not 0.0 <= args.alpha <= 1.0:
        raise InputError(f"--alpha must be within 0..1, got {args.alpha}")
    from engine.fileio import refuse_same_file, refuse_unwritable
    refuse_same_file(out, args.input, args.bitstream)
    refuse_unwritable(out)
    region = _parse_region(args.region)
    if args.bitstream:
        from engine.codec.container import read
        bs = read(args.bitstream)
        model = body_model_for_id(bs.body_model, args.body_model_path)
        clip = read_video(args.input, size=bs.width, max_frames=min(args.max_frames or bs.n_frames, bs.n_frames),
                          region=region)
        if clip.frames.shape[1:3] != (bs.height, bs.width):
            raise InputError(f"{args.input} does not match the bitstream's {bs.width}x{bs.height} frames")
        frames, fps = clip.frames, clip.fps
    else:
        from engine.analysis.encoder import encode_video
        res = encode_video(args.input, size=args.size, max_frames=args.max_frames, region=region,
                                       camera=False, body_model=args.body_model,
                                       body_model_path=args.body_model_path, keep_analysis=True)
        bs = res.bitstream
        model = load_body_model(args.body_model, args.body_model_path)
        frames, fps = res.analysis.frames, bs.fps
    it = bitstream_overlay_frames(bs, frames, model, alpha=args.alpha)
    if not args.quiet and sys.stderr.isatty():
        from tqdm import tqdm
        it = tqdm(it, total=min(len(frames), bs.n_frames), desc="overlay", unit="frame", leave=False, file=sys.stderr)
    n = write_video(out, it, fps, crf=18)
    if not args.quiet:
        print(f"wrote {out} ({n} frames)")
    return 0
