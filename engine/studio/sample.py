"""Build assets/sample.ihvc: the studio's demo bitstream (``python -m engine.studio.sample``).

Source: ``book.mkv`` of the ASL gesture clips in ``../shared/data/sample_source/asl_gestures/``
(intel-iot-devkit/sample-videos, CC BY 4.0; attribution and licence in ``assets/README``
and ``assets/LICENSE-CC-BY-4.0.txt``): a woman in an orange hoodie stands in an office and
signs "book", head to thighs in frame, both arms and hands moving, 109 frames at 30 fps.

The clip is centre-cropped to a square (480 x 480 of its 640 x 480) and resized to
384 x 384 (engine.codec.video.read_video), then encoded by the real encoder
(engine.analysis.encoder.encode_video: landmarks, body fit, camera) with a key picture
every 20 frames (VVC, QP 32). The key pictures keep the decoded original close to the
clip (her hands in front of her chest come from a key picture that saw them), so the
studio's "Original" pane looks like the video, and an arm edit on the first frame
(arms hanging at her sides) moves a visible arm: raising a shoulder lifts her sleeve
and hand away from the body.

    python -m engine.studio.sample [--source PATH] [--out assets/sample.ihvc] [--gop 20] [--qp 32]
"""
from __future__ import annotations

import argparse
from pathlib import Path

from engine.fileio import ASSETS

SOURCE = Path(__file__).resolve().parents[3] / "shared" / "data" / "sample_source" / "asl_gestures" / "book.mkv"
SIZE = 384
GOP = 20
QP = 32
ATTRIBUTION = ("ASL gesture clip 'book' from intel-iot-devkit/sample-videos (asl_gestures/, commit "
               "57978890822836f2b4743852f04f62fc511757e4), CC BY 4.0, cropped, resized and re-encoded")


def build(source=SOURCE, gop: int = GOP, qp: int = QP, progress=None):
    """Encode the sample clip; returns the Bitstream."""
    from engine.analysis.encoder import encode_video
    from engine.errors import InputError
    source = Path(source)
    if not source.exists():
        raise InputError(f"sample source not found: {source} (see ../shared/data/sample_source/README.md)")
    import inspect
    # One reference per frame (format version 1) where the encoder offers more: every reader opens it.
    extra = {"max_refs": 1} if "max_refs" in inspect.signature(encode_video).parameters else {}
    return encode_video(source, key_codec="vvc", key_qp=qp, gop=gop, size=SIZE, progress=progress,
                        **extra).bitstream


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.studio.sample", description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(SOURCE), help="the source clip (default: book.mkv of sample_source)")
    ap.add_argument("--out", default=str(ASSETS / "sample.ihvc"))
    ap.add_argument("--gop", type=int, default=GOP, help=f"a key picture every N frames (default {GOP})")
    ap.add_argument("--qp", type=int, default=QP, help=f"key-picture QP, VVC (default {QP})")
    args = ap.parse_args(argv)
    from engine.codec import container
    bs = build(args.source, args.gop, args.qp)
    n = container.write(bs, args.out)
    print(f"wrote {args.out}: {bs.n_frames} frames, {bs.width}x{bs.height}, {len(bs.gops)} key pictures, {n} bytes")
    print(f"attribution: {ATTRIBUTION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
