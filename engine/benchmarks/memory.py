"""``python main.py bench --memory``: what a default encode needs in memory, all its processes together.

The encoder forks worker processes (the key search's drafts, the closed loop) and runs the chain's
encoders beside them; they share pages, so no one process's resident size says what must fit. This
runs ``python main.py encode`` on the long tai chi clips of --data (taichi_04: its first --max-frames
frames, default 100, and whole; taichi_03 whole, then taichi_03 there, back and there again, 3,070 frames
written losslessly to a temporary file: longer than a part, ``encoder.ENCODE_PART``), samples the summed
PSS (proportional set size: a shared page split between the processes sharing it) of the encoder's
process tree every 0.2 s, and prints the peak beside the encoder's own estimate
(``engine.analysis.encoder.memory_estimate``, what it refuses a clip by; for a clip encoded in parts, that
of its longest part). Linux only (/proc). Run it on an otherwise idle machine.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from engine.errors import InputError

INTERVAL = 0.2
CLIPS = (("taichi_04", "max"), ("taichi_04", None), ("taichi_03", None), ("taichi_03", "there and back"))


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            for t in os.listdir(f"/proc/{p}/task"):
                with open(f"/proc/{p}/task/{t}/children") as f:
                    todo += [int(c) for c in f.read().split()]
        except OSError:
            pass
    return out


def _pss(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def tree_peak(cmd: list[str], interval: float = INTERVAL) -> tuple[int, float, int]:
    """Run ``cmd``; (the peak of its process tree's summed PSS in bytes, seconds, exit status). A sampler: a
    peak shorter than ``interval`` can be missed."""
    if not Path("/proc/self/smaps_rollup").exists():
        raise InputError("bench --memory needs Linux's /proc/<pid>/smaps_rollup")
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)   # an unread pipe could fill
    peak = 0
    while proc.poll() is None:
        peak = max(peak, sum(_pss(p) for p in _tree(proc.pid)))
        time.sleep(interval)
    return peak, time.perf_counter() - t0, proc.returncode


def _there_and_back(src: Path, out: Path) -> None:
    """``src``'s frames forwards, backwards and forwards again (no frame twice in a row), losslessly to ``out``."""
    import numpy as np
    from engine.codec.video import read_video, write_video
    f = read_video(src).frames
    write_video(out, (f[i] for i in np.r_[0:len(f), len(f) - 2:-1:-1, 1:len(f)]), 25)


def run(args) -> int:
    from engine.analysis.encoder import memory_estimate, part_lengths
    from engine.codec.video import frame_count
    from engine.training.dataset import find_clips
    found = {p.stem[:9]: p for p in find_clips(args.data) if p.stem.startswith(("taichi_03", "taichi_04"))}
    if not found:
        raise InputError(f"no taichi_03 or taichi_04 clip under {args.data}")
    main = Path(__file__).resolve().parents[2] / "main.py"
    print("| clip | frames | peak, all processes (GB) | the encoder's estimate (GB) | seconds |")
    print("|---|---|---|---|---|")
    for name, limit in CLIPS:
        if name not in found:
            continue
        with tempfile.TemporaryDirectory() as tmp:
            clip, label = found[name], name
            if limit == "there and back":
                clip, label = Path(tmp) / "there_and_back.mkv", f"{name} there and back"
                _there_and_back(found[name], clip)
            n = frame_count(clip) or 0
            extra = []
            if limit == "max":
                n = min(n, args.max_frames or 100)
                extra = ["--max-frames", str(n)]
            peak, secs, rc = tree_peak([sys.executable, str(main), "encode", str(clip), "-o",
                                        str(Path(tmp) / "out.ihvc"), "--quiet", *extra])
        status = "" if rc == 0 else f" (exit {rc})"
        lengths = part_lengths(n)
        parts = f" ({len(lengths)} parts)" if len(lengths) > 1 else ""
        estimate = memory_estimate(max(lengths), 384, len(lengths))
        print(f"| {label}{parts} | {n} | {peak / 1e9:.2f} | {estimate / 1e9:.2f} | {secs:.0f}{status} |", flush=True)
    return 0
