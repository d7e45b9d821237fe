"""``python main.py decode IN.ihvc -o OUT.mp4``: decode a bitstream into a video (and/or PNGs).

    python main.py decode IN.ihvc -o OUT.mp4 [--device cpu|cuda] [--frames A:B] [--png-dir DIR]
                                             [--crf N | --lossless] [--learned | --checkpoint W.safetensors]
                                             [--body-model-path DIR]

The training-free analytic decoder is the default: on people it never trained on, the shipped
learned decoder (assets/generator.safetensors) scores lower VMAF (docs/BENCHMARKS.md "Learned
decoder"), so it is used only when asked for (``--learned`` or ``--checkpoint``); a fallback from it
is always said on stderr.

By default the video is H.264 yuv420p at CRF 18 (high quality, opens in every common
player; ``--crf`` trades size for quality). ``--lossless`` writes what the decoder
produced bit-exactly, for measurement: FFV1 in .mkv, or x264 RGB (gbrp) QP 0 in .mp4
(engine.codec.video.write_video); ``eval`` measures on the decoded frames themselves. Every output is written
atomically: an interrupted or failed decode leaves no partial file.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from engine.errors import InputError


def add_arguments(p):
    p.add_argument("input", help=".ihvc bitstream")
    p.add_argument("-o", "--output", default=None, help="output video (.mp4 or .mkv)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--frames", default=None, help="frame range A:B (Python slice, B excluded), e.g. 0:50")
    p.add_argument("--png-dir", default=None, help="also write every frame as DIR/frame_000000.png")
    p.add_argument("--crf", type=int, default=None,
                   help="H.264 quality, 0 (best) to 51 (smallest) (default 18: high quality, plays everywhere)")
    p.add_argument("--lossless", action="store_true",
                   help="bit-exact frames for measurement: FFV1 in .mkv, x264 RGB (gbrp) QP 0 in .mp4; "
                        "few players open these")
    p.add_argument("--threads", type=int, default=None,
                   help="PyTorch CPU threads (default: 1 when the machine is already busy, else PyTorch's choice)")
    p.add_argument("--learned", action="store_true", help="the shipped learned decoder instead of the analytic one")
    p.add_argument("--analytic", action="store_true", help="the training-free analytic decoder (the default)")
    p.add_argument("--checkpoint", default=None,
                   help="learned decoder weights (.safetensors with its .json; implies --learned)")
    p.add_argument("--body-model-path", default=None, help="SMPL-X model folder, for bitstreams coded with SMPL-X")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def parse_frames(text: str | None, n: int) -> range:
    """'A:B' (either side optional, negatives count from the end) -> range within 0..n."""
    if text is None:
        return range(n)
    parts = text.split(":")
    if len(parts) != 2:
        raise InputError(f"--frames must look like A:B, got {text!r}")
    try:
        a = int(parts[0]) if parts[0].strip() else None
        b = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise InputError(f"--frames must look like A:B with integers, got {text!r}") from None
    r = range(n)[slice(a, b)]
    if len(r) == 0:
        raise InputError(f"--frames {text} selects no frame of the {n} in the bitstream")
    return r


def busy_machine() -> bool:
    """Is the 1-minute load average already at the number of cores (other work running)?"""
    import os
    try:
        return os.getloadavg()[0] >= (os.cpu_count() or 1) - 0.5
    except OSError:
        return False


def run(args) -> int:
    from engine.codec.container import read
    if args.output is None and args.png_dir is None:
        raise InputError("nothing to write: give -o OUT.mp4 and/or --png-dir DIR")
    if args.output is not None and Path(args.output).suffix.lower() not in (".mp4", ".mkv", ".mov"):
        raise InputError(f"unsupported output format {Path(args.output).suffix or '(none)'}: use .mp4 or .mkv")
    if args.crf is not None and not 0 <= args.crf <= 51:
        raise InputError(f"--crf {args.crf} out of range 0..51")
    if args.crf is not None and args.lossless:
        raise InputError("give --crf or --lossless, not both")
    from engine.fileio import refuse_same_file, refuse_unwritable, refuse_unwritable_folder
    if args.output is not None:
        refuse_same_file(args.output, args.input)
        refuse_unwritable(args.output)
    if args.png_dir is not None:
        refuse_unwritable_folder(args.png_dir, "--png-dir", "frame_000000.png")
    bs = read(args.input)            # a bad file is refused before torch and the body model load
    import torch

    from engine.synthesis.decoder import open_decoder
    if args.threads is not None:
        if args.threads < 1:
            raise InputError("--threads must be at least 1")
        torch.set_num_threads(args.threads)
    elif busy_machine():
        torch.set_num_threads(1)     # OpenMP threads stall badly on oversubscribed cores
    frames = parse_frames(args.frames, bs.n_frames)
    if args.analytic and (args.learned or args.checkpoint):
        raise InputError("--analytic and --learned/--checkpoint contradict each other")
    dec = open_decoder(bs, device=args.device, analytic=not (args.learned or args.checkpoint), checkpoint=args.checkpoint,
                       body_model_path=args.body_model_path, say=lambda s: print(f"note: {s}", file=sys.stderr))
    kind = "analytic" if dec.refiner is None else "learned"
    bar = None
    if not args.quiet:
        from tqdm import tqdm
        bar = tqdm(total=len(frames), unit="frame", desc="decode", file=sys.stderr)
    png_dir = Path(args.png_dir) if args.png_dir else None
    if png_dir is not None:
        png_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()

    def frames_iter():
        import cv2

        from engine.fileio import atomic_path
        for i, rgb in dec.iter_frames(frames):
            if png_dir is not None:
                with atomic_path(png_dir / f"frame_{i:06d}.png") as tmp:
                    if not cv2.imwrite(str(tmp), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)):
                        raise InputError(f"cannot write {png_dir}")
            if bar is not None:
                bar.update(1)
            yield rgb

    try:
        if args.output is not None:
            from engine.codec.video import PLAYABLE_CRF, write_video
            crf = None if args.lossless else (PLAYABLE_CRF if args.crf is None else args.crf)
            n = write_video(args.output, frames_iter(), bs.fps, crf=crf)
        else:
            n = sum(1 for _ in frames_iter())
    finally:
        if bar is not None:
            bar.close()
    dt = time.perf_counter() - t0
    if args.output is not None:
        fmt = ("lossless " + ("FFV1" if Path(args.output).suffix.lower() == ".mkv" else "x264 RGB (gbrp) QP 0")
               if args.lossless else f"H.264 yuv420p CRF {crf}")
        outputs = [f"{args.output} ({fmt})"]
    else:
        outputs = []
    where = ", ".join(outputs + ([str(png_dir)] if png_dir is not None else []))
    print(f"decoded {n} frames ({bs.width}x{bs.height}) in {dt:.1f} s ({n / max(dt, 1e-9):.1f} frames/s) "
          f"({kind} decoder) on {dec.device.type}" + (f", {torch.get_num_threads()} threads" if dec.device.type == "cpu" else "")
          + f" -> {where}", file=sys.stderr)
    return 0
