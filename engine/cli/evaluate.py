"""``python main.py eval VIDEO``: rate-distortion of IHVC against VVC, x265 and SVT-AV1.

Per clip (DESIGN.md "Evaluation", data README "Protocol"): IHVC at each key
QP plus the three low-delay anchors of engine/evaluation/anchors.py (scoring in engine/evaluation/scoring.py); every point is
counted entirely (IHVC: ``container.to_bytes`` of the whole bitstream) and
reported as bits per frame and kbps at 25 fps, with PSNR, SSIM, MS-SSIM and
VMAF on the decoded RGB frames against the clip's frames. Then BD-rate of
IHVC against each anchor per metric over the overlapping quality range (or
"no overlap"), and the anchors' quality at IHVC's bitrates. Writes
``<clip>_points.csv``, ``<clip>_bd.csv``, ``<clip>_matched.csv``,
``<clip>_lowest.csv`` (the best IHVC point at or below each anchor's lowest rate) and
``<clip>_rd.png`` (quality vs kbps, one panel per metric, in the manner of the
paper's Fig. 2). ``--all DIR`` evaluates every clip in DIR and writes
``all_bd.csv`` with BD-rates averaged over the clips.

IHVC runs the encoder's analysis once per clip (at the first key QP); the
other key QPs re-code only the key pictures, since the semantics do not
depend on the key QP. IHVC runs at every key-picture period of ``--gops`` (0: one
key picture for the clip; a shorter period spends rate on key pictures for
quality) and is decoded by each of ``--decoders`` (the shipped learned decoder and
the training-free analytic one), each its own curve. BD-rates and matched-rate
figures use, per metric, the Pareto front over periods and QPs (what an encoder
choosing its period per rate would reach). ``--rates 4.5,9`` adds IHVC points with
keys by content under each rate target, the encoder choosing the key QP too
(``encode --rate R --key-qp auto``). ``--merge DIR [DIR ...]`` puts the points of
earlier runs together (their ``*_points.csv``) and writes the per-clip and mean
tables and plots again, as one run with all of those points would.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Callable

from engine.errors import InputError
from engine.evaluation.rd import AUTO, write_csv
from engine.evaluation.scoring import evaluate_clip, mean_bd_rows

VIDEO_EXT = (".mp4", ".mkv", ".mov", ".avi", ".webm")


def add_arguments(p):
    p.add_argument("video", nargs="?", help="clip to evaluate")
    p.add_argument("--key-qps", default="32,37,42,45,48", help="IHVC key-picture QPs (default 32,37,42,45,48)")
    p.add_argument("--max-frames", type=int, default=None, help="use the first N frames")
    p.add_argument("--out", default="eval_out", help="output folder (default eval_out)")
    p.add_argument("--all", dest="all_dir", default=None, help="evaluate every clip in this folder (recursively)")
    p.add_argument("--anchors", default="vvc,x265,svtav1", help="anchors to run (default vvc,x265,svtav1; 'none')")
    p.add_argument("--device", default=None, help="decoder device: cpu or cuda")
    p.add_argument("--no-vmaf", action="store_true", help="skip VMAF")
    p.add_argument("--decoders", default="learned,analytic",
                   help="IHVC decoders, each its own curve (default learned,analytic)")
    p.add_argument("--analytic", action="store_true", help="only the training-free analytic decoder")
    p.add_argument("--gops", default="auto,20",
                   help="IHVC key-picture periods in frames, 0 = one key picture for the clip, auto = key "
                        "pictures chosen by content, none = only --rates (default auto,20)")
    p.add_argument("--rates", default="",
                   help="also IHVC with keys and key QP chosen by the encoder under each of these rate targets "
                        "(kbps at 25 fps, comma-separated; encode --rate R --key-qp auto)")
    p.add_argument("--merge", nargs="+", metavar="DIR", default=None,
                   help="no coding: put together the *_points.csv of earlier runs in these folders and write "
                        "the tables and plots to --out")
    p.add_argument("--threads", type=int, default=1,
                   help="PyTorch threads for decoding and metrics (default 1: robust on a shared machine)")


# ----------------------------------------------------------------------------- CLI

def _region(path: Path):
    return (0, 0, 256, 256) if "256x512" in path.name else None   # taichi: the top half is the frame


def _load(path: Path, max_frames):
    from engine.codec.video import read_video
    return read_video(path, max_frames=max_frames, region=_region(path))


def _parse_qps(text: str) -> list[int]:
    try:
        qps = [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise InputError(f"--key-qps must be comma-separated integers, got {text!r}") from None
    if not qps:
        raise InputError("--key-qps is empty")
    return qps


def run(args, encoder: Callable | None = None, anchor_qps: dict | None = None) -> int:
    import torch
    if args.threads < 1:
        raise InputError("--threads must be at least 1")
    from engine.fileio import refuse_unwritable_folder
    refuse_unwritable_folder(args.out, "--out", "all_bd.csv")       # before the hours an evaluation takes
    prev = torch.get_num_threads()
    torch.set_num_threads(args.threads)
    try:
        return _run(args, encoder, anchor_qps)
    finally:
        torch.set_num_threads(prev)


def _parse_rates(text: str) -> tuple[float, ...]:
    try:
        rates = tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise InputError(f"--rates must be comma-separated kbps figures, got {text!r}") from None
    if any(not 0 < r < 1e6 for r in rates):
        raise InputError(f"--rates must be positive kbps figures, got {text!r}")
    return rates


def _merge(dirs: list[str], out: Path, with_vmaf: bool) -> int:
    """``eval --merge``: the points of earlier runs, one set per clip, summarised as one run."""
    from engine.evaluation.rd import METRICS, read_points
    from engine.evaluation.scoring import summarise_clip
    points: dict = {}
    for d in dirs:
        files = sorted(Path(d).glob("*_points.csv")) if Path(d).is_dir() else []
        if not files:
            raise InputError(f"--merge: no *_points.csv in {d}")
        for f in files:
            try:
                for clip, ps in read_points(f).items():
                    points.setdefault(clip, []).extend(ps)
            except (KeyError, ValueError) as e:
                raise InputError(f"--merge: {f} is not an eval points file ({e})") from None
    all_bd, anchor_names = [], set()
    for clip, ps in sorted(points.items()):
        names = tuple(dict.fromkeys(p.codec for p in ps if p.codec != "ihvc"))
        anchor_names.update(names)
        used = [m for m in METRICS if (with_vmaf or m != "vmaf") and all(m in p.quality for p in ps)]
        print(f"{clip}: {len(ps)} points", flush=True)
        all_bd.extend(summarise_clip(ps, clip, out, names, used, ps[0].n_frames,
                                     log=lambda s: print(s, flush=True))["bd"])
    _write_mean(all_bd, tuple(sorted(anchor_names)), out)
    print(f"results in {out}", file=sys.stderr)
    return 0


def _write_mean(all_bd: list[dict], anchor_names, out: Path) -> None:
    rows = mean_bd_rows(all_bd, anchor_names)
    for r in rows:
        v = r["mean_bd_rate_percent"]
        print(f"mean BD-rate {r['ihvc']} vs {r['anchor']:6s} ({r['metric']:7s}): "
              + (f"{v:+.1f} %" if r["clips_with_overlap"] else "n/a")
              + f" over {r['clips_with_overlap']}/{r['clips']} clips")
    out.mkdir(parents=True, exist_ok=True)
    write_csv(out / "all_bd.csv", rows)


def _run(args, encoder: Callable | None = None, anchor_qps: dict | None = None) -> int:
    if args.merge:
        return _merge(args.merge, Path(args.out), not args.no_vmaf)
    key_qps = _parse_qps(args.key_qps)
    rates = _parse_rates(args.rates)
    anchor_names = tuple(a for a in args.anchors.split(",") if a and a != "none")
    from engine.evaluation import anchors
    for a in anchor_names:
        if a not in anchors.ANCHORS:
            raise InputError(f"unknown anchor {a!r}: choose from {', '.join(anchors.ANCHORS)}")
    if args.max_frames is not None and args.max_frames < 2:
        raise InputError("--max-frames must be at least 2")
    decoders = ("analytic",) if args.analytic else tuple(d for d in args.decoders.split(",") if d)
    for d in decoders:
        if d not in ("learned", "analytic"):
            raise InputError(f"unknown decoder {d!r}: learned or analytic")
    try:
        gops = () if args.gops.strip() == "none" else tuple(
            AUTO if g.strip() == "auto" else int(g) for g in args.gops.split(",") if g.strip())
    except ValueError:
        raise InputError(f"--gops must be integers, got {args.gops!r}") from None
    if any(g < 0 and g != AUTO for g in gops):
        raise InputError(f"--gops must be frame counts >= 0 or auto, got {args.gops!r}")
    if not gops and not rates:
        raise InputError("--gops none leaves nothing to code: give --rates too")
    out = Path(args.out)
    if args.all_dir:
        root = Path(args.all_dir)
        if not root.is_dir():
            raise InputError(f"--all needs a folder: {root}")
        clips = sorted(p for p in root.rglob("*") if p.suffix.lower() in VIDEO_EXT)
        if not clips:
            raise InputError(f"no video clips in {root}")
    else:
        if not args.video:
            raise InputError("give a VIDEO or --all DIR")
        clips = [Path(args.video)]
    all_bd = []
    t0 = time.perf_counter()
    for clip in clips:
        clip_t = time.perf_counter()
        v = _load(clip, args.max_frames)
        print(f"{clip.name}: {len(v.frames)} frames {v.frames.shape[2]}x{v.frames.shape[1]}", flush=True)
        res = evaluate_clip(v.frames, v.fps, clip.stem, out, key_qps, anchor_names, anchor_qps, encoder,
                            args.device, not args.no_vmaf, log=lambda s: print(s, flush=True), path=clip,
                            region=_region(clip), decoders=decoders, gops=gops, rates=rates)
        all_bd.extend(res["bd"])
        print(f"  {clip.name} done in {time.perf_counter() - clip_t:.0f} s", flush=True)
    if args.all_dir:
        _write_mean(all_bd, anchor_names, out)
    print(f"results in {out} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0
