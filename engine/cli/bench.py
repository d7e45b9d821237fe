"""``python main.py bench``: benchmarks, one flag per area; each prints a table for docs/BENCHMARKS.md."""
from __future__ import annotations

import importlib

# flag -> (module with run(args), help)
BENCHES = {
    "quant": ("engine.benchmarks.codec", "run_quant", "semantic rate vs joint-position error per quantization step"),
    "entropy": ("engine.benchmarks.codec", "run_entropy", "arithmetic-coder length vs adaptive empirical entropy"),
    "keypicture": ("engine.benchmarks.codec", "run_keypicture", "key-picture bytes and PSNR per codec and QP"),
    "encode": ("engine.benchmarks.encode", "run", "fit error, semantic rate, camera alignment, encode speed"),
    "raster": ("engine.synthesis.raster", "bench", "PyTorch rasterizer vs a pyrender/EGL id buffer"),
    "decode": ("engine.benchmarks.decode", "run", "decode frames per second and peak memory"),
    "learned": ("engine.benchmarks.learned", "run", "learned vs analytic decoder on held-out clips, learned speed"),
    "keys": ("engine.benchmarks.keys", "run", "key pictures chosen by content vs a fixed period, TED clips"),
    "effort": ("engine.benchmarks.effort", "run", "encode speed and quality per effort level, end to end, TED clips"),
    "closed-loop": ("engine.benchmarks.closed_loop", "run", "semantics refined against the decoder's frames, TED clips"),
    "regions": ("engine.benchmarks.error_regions", "run", "where the analytic decoder's error lies (body, band, disocclusions)"),
    "memory": ("engine.benchmarks.memory", "run", "an encode's peak memory, all its processes together, long clips"),
    "preview": ("app.bench_preview", "run", "studio edit-to-preview latency and scrubbing memory"),
    "edit": ("engine.benchmarks.edit", "run", "a large arm edit decoded: jumps between frames, invented pixels"),
}


def add_arguments(p):
    for flag, (_, _, help_text) in BENCHES.items():
        p.add_argument(f"--{flag}", action="store_true", help=help_text)
    p.add_argument("--data", default="../shared/data", help="folder of real clips (default ../shared/data)")
    p.add_argument("--max-frames", type=int, default=None, help="limit frames per clip")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--key-qp", type=int, default=None, help="--closed-loop, --keys: key-picture QP (default 42)")
    p.add_argument("--grids", default=None, metavar="DIR",
                   help="--learned: write DIR/grid_<clip>.png (key | target | analytic | learned)")
    p.add_argument("--file", default=None, help="--preview, --edit: bitstream to open (default assets/sample.ihvc)")
    p.add_argument("--edits", type=int, default=None, help="--preview: number of slider edits (default 30)")
    p.add_argument("--preview-decoders", default=None,
                   help="--preview: decoders to measure, comma-separated (default analytic,learned)")
    p.add_argument("--scrub-seconds", type=float, default=None, help="--preview: scrubbing time (default 60)")


def run(args) -> int:
    chosen = [f for f in BENCHES if getattr(args, f.replace("-", "_"))]
    if not chosen:
        print("choose at least one of: " + ", ".join(f"--{f}" for f in BENCHES))
        return 2
    for flag in chosen:
        module, func, _ = BENCHES[flag]
        getattr(importlib.import_module(module), func)(args)
    return 0
