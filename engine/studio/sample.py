"""Build assets/sample.ihvc: the studio's demo bitstream (``python -m engine.studio.sample``).

Source: ``book.mkv`` of the ASL gesture clips in ``../shared/data/sample_source/asl_gestures/``
(intel-iot-devkit/sample-videos, CC BY 4.0; attribution and licence in ``assets/README``
and ``assets/LICENSE-CC-BY-4.0.txt``): a woman in an orange hoodie stands in an office and
signs "book", head to thighs in frame, both arms and hands moving, 109 frames at 30 fps.

The clip is centre-cropped to a square (480 x 480 of its 640 x 480) and resized to
384 x 384 (engine.codec.video.read_video), then encoded by the real encoder
(engine.analysis.encoder.encode_video: landmarks, body fit, camera) with key pictures chosen by
content (VVC, QP 32, coded as one chain, at the rate a key every 20 frames coded alone takes; each frame drawing from up to 4 key pictures); ``--gop 20``
puts one every 20 frames instead, each frame drawing from its own. The key pictures keep the decoded original
close to the clip (her hands in front of her chest come from a key picture that saw them), so
the studio's "Original" pane looks like the video, and an arm edit on the first frame (arms
hanging at her sides) moves a visible arm: raising a shoulder lifts her sleeve and hand away
from the body.

    python -m engine.studio.sample [--source PATH] [--out assets/sample.ihvc] [--gop N] [--qp 32]
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


def build(source=SOURCE, gop: int | None = None, qp: int = QP, progress=None):
    """Encode the sample clip; returns the Bitstream. ``gop``: a key picture every N frames, each
    frame drawing from its own; None: keys by content under the rate a key every GOP frames takes."""
    from engine.analysis.encoder import encode_video
    from engine.codec.rate import rate_of
    from engine.errors import InputError
    source = Path(source)
    if not source.exists():
        raise InputError(f"sample source not found: {source} (see ../shared/data/sample_source/README.md)")
    if gop is not None:
        if gop < 1:
            raise InputError(f"--gop must be at least 1, got {gop}")
        return encode_video(source, key_codec="vvc", key_qp=qp, gop=gop, size=SIZE, progress=progress,
                            max_refs=1).bitstream
    one = encode_video(source, key_codec="vvc", key_qp=qp, keys="one", size=SIZE, progress=progress,
                       keep_analysis=True)
    # The rate a key every GOP frames takes with each key picture coded alone (the sample's rate before the
    # keys were chained): the chain spends it on more keys.
    fixed = encode_video(source, key_codec="vvc", key_qp=qp, gop=GOP, size=SIZE, max_refs=1, chain=False).bitstream
    return encode_video(source, key_codec="vvc", key_qp=qp, size=SIZE, rate_kbps=rate_of(fixed).kbps_at_25fps,
                        analysis=one.analysis).bitstream


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m engine.studio.sample", description=__doc__.splitlines()[0])
    ap.add_argument("--source", default=str(SOURCE), help="the source clip (default: book.mkv of sample_source)")
    ap.add_argument("--out", default=str(ASSETS / "sample.ihvc"))
    ap.add_argument("--gop", type=int, default=None,
                    help=f"a key picture every N frames (default: keys by content at the rate of one every {GOP})")
    ap.add_argument("--qp", type=int, default=QP, help=f"key-picture QP, VVC (default {QP})")
    args = ap.parse_args(argv)
    import sys

    from engine.codec import container
    from engine.errors import IHVCError
    try:
        bs = build(args.source, args.gop, args.qp)
        n = container.write(bs, args.out)
    except IHVCError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: {bs.n_frames} frames, {bs.width}x{bs.height}, {len(bs.gops)} key pictures at frames "
          + ", ".join(str(k) for k in bs.key_frames) + f", {n} bytes")
    print(f"attribution: {ATTRIBUTION}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
