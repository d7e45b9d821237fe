"""Train the learned stage on a borrowed GPU machine from packed caches (issue #15).

Here (the development machine), after the caches exist (``python main.py train`` or ``bench --learned``):

    python -m engine.training.pack .gpu/packed --every 3      # about 0.2 MB a frame; split over calls of 64 MiB

There (the files carried with the working tree; see docs/BENCHMARKS.md, "GPU training"):

    python3 scripts/device_train.py prep 'PACKED_GLOB'           unpack, 30 steps of the full config (checks the stack)
    python3 scripts/device_train.py train SECONDS 'PACKED_GLOB' [RUN,RUN...]
                                         unpack what is missing, train the runs side by side on the one GPU,
                                         then tar each run's log, csv, best and last EMA generator to $OUT

Each run is :func:`engine.training.train.train` on the same clips (validation: ``VALIDATION``) with its
own config and loss weights (:data:`RUNS`).
"""
import glob
import json
import os
import subprocess
import sys
import tarfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CACHE = Path(os.environ.get("GPU_CACHE", "/tmp/ihvc_cache"))
COMMON = dict(batch=8, val_every=300, ckpt_every=300, log_every=50)
RUNS = {   # name: (network config, overrides of engine.training.train.DEFAULTS)
    "small_t0": ("small", dict(COMMON, crop=160, weights={"trust": 0.0})),
    "small_t05": ("small", dict(COMMON, crop=160, weights={"trust": 0.05})),
    "full": ("full", dict(COMMON, crop=256, ema=0.995)),
    "full_t05": ("full", dict(COMMON, crop=256, ema=0.995, weights={"trust": 0.05})),
}


def unpack_all(pattern: str) -> None:
    from engine.training.pack import unpack
    CACHE.mkdir(parents=True, exist_ok=True)
    t = time.time()
    for f in sorted(glob.glob(pattern)):
        if not (CACHE / Path(f).stem / "meta.json").exists():
            unpack(f, CACHE)
    print(f"unpacked in {time.time() - t:.1f} s: {sorted(p.name for p in CACHE.iterdir())}", flush=True)


def folders():
    from engine.training.train import VALIDATION
    fs = sorted(p for p in CACHE.iterdir() if (p / "meta.json").exists())
    return [str(p) for p in fs if p.name not in VALIDATION], [str(p) for p in fs if p.name in VALIDATION]


def one_run(name: str, seconds: float) -> None:
    from engine.training.train import export_last, train
    cfg, overrides = RUNS[name]
    out = Path("/tmp/runs") / name
    res = train(None, config=cfg, device=os.environ.get("DEV", "cuda"), out_dir=str(out), steps=10 ** 6,
                time_limit=seconds, clips=folders(), seed=1, threads=int(os.environ.get("THREADS", "3")), **overrides)
    export_last(out / "last.safetensors", out / "last_ema.safetensors", "EMA generator at the last step (GPU run)")
    print(name, json.dumps(res), flush=True)


def main() -> None:
    mode = sys.argv[1]
    if mode == "one":
        return one_run(sys.argv[2], float(sys.argv[3]))
    import torch
    print("torch", torch.__version__, "cuda", torch.cuda.is_available(), flush=True)
    if mode == "prep":
        unpack_all(sys.argv[2])
        from engine.training.train import train
        t = time.time()
        res = train(None, config="full", device=os.environ.get("DEV", "cuda"), out_dir="/tmp/runs/smoke", steps=30,
                    clips=folders(), val_every=30, log_every=10, ckpt_every=30, batch=8, crop=256)
        print("smoke", res, f"{time.time() - t:.1f} s", flush=True)
        return
    seconds, pattern = float(sys.argv[2]), sys.argv[3]
    names = sys.argv[4].split(",") if len(sys.argv) > 4 else list(RUNS)
    unpack_all(pattern)
    procs = {n: subprocess.Popen([sys.executable, __file__, "one", n, str(seconds)], stdout=open(f"/tmp/{n}.out", "w"),
                                 stderr=subprocess.STDOUT) for n in names}
    for n, p in procs.items():
        print(n, "exit", p.wait(), flush=True)
    out = Path(os.environ.get("OUT", "/tmp/out"))
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(out / "runs.tar.gz", "w:gz") as tar:      # one file: the machine returns at most 8
        for n in names:
            tar.add(f"/tmp/{n}.out", arcname=f"{n}/stdout.txt")
            d = Path("/tmp/runs") / n
            for f in ("train.csv", "train.log", "best.safetensors", "best.json", "last_ema.safetensors", "last_ema.json"):
                if (d / f).exists():
                    tar.add(d / f, arcname=f"{n}/{f}")
            for s in sorted((d / "samples").glob("*.png"))[-1:]:
                tar.add(s, arcname=f"{n}/{s.name}")
    print("tar", (out / "runs.tar.gz").stat().st_size, "bytes", flush=True)


if __name__ == "__main__":
    main()
