"""``python main.py inspect FILE.ihvc [--json]``: header, section sizes, bits per frame, kbps."""
from __future__ import annotations

import json

from engine.codec.container import body_model_name, read, semantic_bits_by_group


def add_arguments(p):
    p.add_argument("file", help=".ihvc bitstream")
    p.add_argument("--json", action="store_true", help="print JSON (keys: frames, fps, bits_per_frame, kbps_at_25fps, ...)")


def summarize(bs) -> dict:
    """What inspect prints, as a dict: every byte of the file is counted in one part."""
    n = bs.n_frames
    key_bytes = sum(len(g.key_picture.payload) for g in bs.gops)
    total_bytes = sum(bs.sizes.values())
    sem_bytes = total_bytes - key_bytes   # headers, checksums, key and per-frame semantics
    bpf = {"key_picture": 8 * key_bytes / n, "semantics": 8 * sem_bytes / n, "total": 8 * total_bytes / n}
    groups = semantic_bits_by_group(bs)
    bpf["camera"] = groups.get("camera", 0.0) / n      # part of "semantics"
    bpf["per_group"] = {k: v / n for k, v in groups.items()}
    fps = float(bs.fps)
    return {
        "format_version": 1, "width": bs.width, "height": bs.height, "frames": n,
        "fps": fps, "fps_rational": f"{bs.fps.numerator}/{bs.fps.denominator}",
        "body_model": body_model_name(bs), "camera_group": bs.has_camera,
        "key_frames": bs.key_frames,
        "quantization": dict(zip(("pose", "rot", "trans", "loc", "camera"), bs.quant.as_tuple())),
        "key_pictures": [{"frame": g.start, "codec": g.key_picture.codec_name, "qp": g.key_picture.qp,
                          "bytes": len(g.key_picture.payload)} for g in bs.gops],
        "sections": dict(bs.sizes), "bytes": total_bytes, "bits_per_frame": bpf,
        "kbps_at_25fps": bpf["total"] * 25 / 1000, "kbps_at_file_fps": bpf["total"] * fps / 1000,
    }


def run(args) -> int:
    info = summarize(read(args.file))
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    b = info["bits_per_frame"]
    print(f"{args.file}: IHVC v{info['format_version']}, {info['width']}x{info['height']}, "
          f"{info['frames']} frames at {info['fps_rational']} fps ({info['fps']:.3g}), body model {info['body_model']}, "
          f"camera group {'yes' if info['camera_group'] else 'no'}")
    print("quantization steps: " + ", ".join(f"{k} {v:.4g}" for k, v in info["quantization"].items()))
    for kp in info["key_pictures"]:
        print(f"key picture at frame {kp['frame']}: {kp['codec']} QP {kp['qp']}, {kp['bytes']} bytes")
    print("sections: " + ", ".join(f"{k} {v} B" for k, v in info["sections"].items()) + f"; total {info['bytes']} B")
    print(f"bits per frame: key picture {b['key_picture']:.1f}, semantics {b['semantics']:.1f} "
          f"(of which camera {b['camera']:.1f}; headers and key semantics included), total {b['total']:.1f}")
    print("coded per-frame semantics by group, bits per frame: "
          + ", ".join(f"{k} {v:.1f}" for k, v in b["per_group"].items()))
    print(f"rate: {info['kbps_at_25fps']:.2f} kbps at 25 fps, {info['kbps_at_file_fps']:.2f} kbps at {info['fps']:.3g} fps")
    return 0
