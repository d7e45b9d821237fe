"""``python main.py inspect FILE.ihvc [--json]``: header, section sizes, bits per frame, kbps.

The figures are engine.codec.rate's (the same as encode's summary and the studio's panel).
"""
from __future__ import annotations

import json

from engine.codec.container import read
from engine.codec.rate import rate_of, summarize


def add_arguments(p):
    p.add_argument("file", help=".ihvc bitstream")
    p.add_argument("--json", action="store_true", help="print JSON (keys: frames, fps, bits_per_frame, kbps_at_25fps, ...)")


def run(args) -> int:
    bs = read(args.file)
    info = summarize(bs)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    r = rate_of(bs)
    print(f"{args.file}: IHVC v{info['format_version']}, {info['width']}x{info['height']}, "
          f"{info['frames']} frames at {info['fps_rational']} fps ({info['fps']:.3g}), body model {info['body_model']}, "
          f"camera group {'yes' if info['camera_group'] else 'no'}")
    print("quantization steps: " + ", ".join(f"{k} {v:.4g}" for k, v in info["quantization"].items()))
    if info["max_references"] > 1:
        print(f"references: each frame draws from up to {info['max_references']} key pictures")
    for kp in info["key_pictures"]:
        first, last = kp["group"]
        refs = f"; also draws from the keys at frames {', '.join(map(str, kp['references']))}" if kp["references"] else ""
        print(f"key picture at frame {kp['frame']} (frames {first} to {last}): {kp['codec']} QP {kp['qp']}, "
              f"{kp['bytes']} bytes{refs}")
    if info["key_pictures_chained"]:
        print("the key pictures are one chain: each is predicted from the ones before it (the first alone)")
    elif info["key_pictures_shared_bytes"]:
        print(f"the key pictures' first {info['key_pictures_shared_bytes']} bytes (the codec's parameter sets) "
              "are the same in all of them: stored once, in the sequence header")
    print("sections: " + ", ".join(f"{k} {v} B" for k, v in info["sections"].items()) + f"; total {info['bytes']} B")
    print(f"bits per frame: total {r.total_bpf:.1f} = key pictures {r.key_picture_bpf:.1f} + semantics "
          f"{r.semantics_bpf:.1f} + camera {r.camera_bpf:.1f} + key semantics {r.key_semantics_bpf:.1f} "
          f"+ headers {r.header_bpf:.1f}")
    print("coded per-frame semantics by group, bits per frame: "
          + ", ".join(f"{k} {v:.1f}" for k, v in r.per_group_bpf.items()))
    print("rate: " + r.rate_text())
    return 0

