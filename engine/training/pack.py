"""Training caches packed small enough to carry to a GPU machine, and unpacked there (issue #15).

A cached clip (engine/training/dataset.py) takes about 360 MB; a device machine here takes 64 MiB per
call. :func:`pack` writes a chosen subset of its frames to one ``.npz`` of about 0.2 MB a frame:

* frames, the analytic frame (``base``) and the key pictures as lossless WebP (exact: :func:`unpack`
  checks each frame's sum);
* the backward map as 1/16-pixel offsets from the identity, differenced along rows, lzma;
* flags as they are, the body-motion weight in 8 bits, the mesh image's mask and part id as they are,
  its normals in 1/15 and its depth in 1/100 body-model units (the network reads them as features,
  never as geometry), all lzma. Key-picture mesh images are not packed: the network does not read them.

:func:`unpack` rebuilds the cache layout with every array full-length (frames not packed stay zero) and an
``avail.json`` listing the packed frames, which :class:`engine.training.dataset.ClipData` honours.

    python -m engine.training.pack DEST [--every 3] [--validation-frames 16]   pack every cached clip
    python -m engine.training.pack --unpack DEST_CACHE FILE.npz ...              unpack (on the device)
"""
from __future__ import annotations

import argparse
import json
import lzma
import sys
from pathlib import Path

import numpy as np

from engine.errors import InputError

GRID_STEP = 16          # 1/16 pixel
NORMAL_STEP = 15
DEPTH_STEP = 100


def _identity(H: int, W: int) -> np.ndarray:
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    return np.stack([xx, yy], -1)


def _webp(a) -> np.ndarray:
    import cv2
    ok, buf = cv2.imencode(".webp", np.ascontiguousarray(a), [cv2.IMWRITE_WEBP_QUALITY, 101])   # 101: lossless
    assert ok
    return np.frombuffer(buf.tobytes(), np.uint8)


def _xz(a) -> np.ndarray:
    return np.frombuffer(lzma.compress(np.ascontiguousarray(a).tobytes(), preset=6), np.uint8)


def pack(folder, dest, frames) -> Path:
    """Pack the listed frames of the cache ``folder`` into ``dest`` (.npz)."""
    folder = Path(folder)
    meta = json.loads((folder / "meta.json").read_text())
    ld = lambda n: np.load(folder / n, mmap_mode="r")  # noqa: E731
    H, W = int(meta["height"]), int(meta["width"])
    keys = np.load(folder / "keys.npz")
    idx = sorted(int(i) for i in frames)
    out = {"meta": np.frombuffer(json.dumps(meta).encode(), np.uint8), "idx": np.array(idx, np.int64),
           "gops": keys["gops"]}
    for name in keys.files:
        if name.startswith("key_"):
            out[name] = _webp(keys[name])
    fr, ba, gr, fl, we, me = (ld(n) for n in ("frames.npy", "base.npy", "grid.npy", "flags.npy", "weight.npy", "mesh.npy"))
    ident = _identity(H, W)
    for i in idx:
        out[f"f{i}"], out[f"b{i}"] = _webp(fr[i]), _webp(ba[i])
        out[f"s{i}"] = np.array([int(np.asarray(fr[i], np.int64).sum()), int(np.asarray(ba[i], np.int64).sum())])
        d = np.round((np.asarray(gr[i], np.float32) - ident) * GRID_STEP).clip(-32768, 32767).astype(np.int16)
        out[f"g{i}"] = _xz(np.diff(d, axis=1, prepend=0).astype(np.int16))     # smooth: small differences
        out[f"l{i}"] = _xz(np.asarray(fl[i]))
        out[f"w{i}"] = _xz(np.round(np.asarray(we[i], np.float32) * 255).astype(np.uint8))
        m = np.asarray(me[i], np.float32)
        out[f"m{i}"] = _xz(np.concatenate([np.round(m[0:1]), np.round(m[1:4] * NORMAL_STEP),
                                           np.round(m[4:5] * DEPTH_STEP), np.round(m[5:6])]).astype(np.int8))
    dest = Path(dest)
    tmp = dest.with_name(dest.name + ".tmp.npz")
    np.savez(tmp, **out)
    tmp.replace(dest)
    return dest


def unpack(src, root) -> Path:
    """Rebuild a cache folder under ``root`` from a packed file; returns the folder."""
    import cv2
    path = Path(src)
    if not path.is_file():
        raise InputError(f"no such file: {path}")
    try:
        src = np.load(path, allow_pickle=False)
        meta = json.loads(src["meta"].tobytes())
    except Exception as exc:                  # noqa: BLE001  (numpy, zip, json: any of them means "not ours")
        raise InputError(f"{path.name}: not a packed training clip ({exc.__class__.__name__})") from None
    N, H, W = int(meta["n_frames"]), int(meta["height"]), int(meta["width"])
    folder = Path(root) / Path(meta["source"]).stem
    folder.mkdir(parents=True, exist_ok=True)
    mm = np.lib.format.open_memmap
    fr = mm(folder / "frames.npy", "w+", np.uint8, (N, H, W, 3))
    ba = mm(folder / "base.npy", "w+", np.uint8, (N, H, W, 3))
    gr = mm(folder / "grid.npy", "w+", np.float16, (N, H, W, 2))
    fl = mm(folder / "flags.npy", "w+", np.uint8, (N, H, W))
    we = mm(folder / "weight.npy", "w+", np.float16, (N, H, W))
    me = mm(folder / "mesh.npy", "w+", np.float16, (N, 6, H, W))
    ident = _identity(H, W)
    img = lambda b: cv2.imdecode(b, cv2.IMREAD_UNCHANGED)  # noqa: E731
    unxz = lambda b, dt, shape: np.frombuffer(lzma.decompress(b.tobytes()), dt).reshape(shape)  # noqa: E731
    idx = [int(i) for i in src["idx"]]
    for i in idx:
        fr[i], ba[i] = img(src[f"f{i}"]), img(src[f"b{i}"])
        if [int(fr[i].astype(np.int64).sum()), int(ba[i].astype(np.int64).sum())] != [int(v) for v in src[f"s{i}"]]:
            raise ValueError(f"{folder.name}: frame {i} did not survive packing")
        d = np.cumsum(unxz(src[f"g{i}"], np.int16, (H, W, 2)).astype(np.int32), axis=1)
        gr[i] = (ident + d / GRID_STEP).astype(np.float16)
        fl[i] = unxz(src[f"l{i}"], np.uint8, (H, W))
        we[i] = (unxz(src[f"w{i}"], np.uint8, (H, W)) / 255.0).astype(np.float16)
        q = unxz(src[f"m{i}"], np.int8, (6, H, W)).astype(np.float32)
        me[i] = np.stack([q[0], q[1] / NORMAL_STEP, q[2] / NORMAL_STEP, q[3] / NORMAL_STEP, q[4] / DEPTH_STEP,
                          q[5]]).astype(np.float16)
    keys = {"gops": src["gops"]}
    for name in src.files:
        if name.startswith("key_"):
            keys[name] = img(src[name])
            keys["mesh_" + name[4:]] = np.zeros((6, H, W), np.float16)
    np.savez(folder / "keys.npz", **keys)
    for a in (fr, ba, gr, fl, we, me):
        a.flush()
    (folder / "avail.json").write_text(json.dumps(idx))
    (folder / "meta.json").write_text(json.dumps(meta))        # last: its presence means complete
    return folder


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("dest", help="folder for the packed files (with --unpack: the cache folder to fill)")
    p.add_argument("files", nargs="*", help="--unpack: packed files")
    p.add_argument("--unpack", action="store_true")
    p.add_argument("--every", type=int, default=3, help="training clips: every Nth non-key frame")
    p.add_argument("--validation-frames", type=int, default=16, help="validation clips: this many whole frames")
    a = p.parse_args(argv)
    try:
        return _run(a)
    except (InputError, OSError, ValueError, KeyError) as exc:     # a missing, truncated or foreign file
        print(f"error: {exc}", file=sys.stderr)
        return 2


def _run(a) -> int:
    if a.unpack:
        if not a.files:
            raise InputError("--unpack: name the packed files")
        for f in a.files:
            print(unpack(f, a.dest))
        return 0
    from engine.training.dataset import ClipData, cache_root, validation_frames
    from engine.training.train import VALIDATION
    if not cache_root().is_dir():
        raise InputError(f"no training caches under {cache_root()} (python main.py train or bench --learned makes them)")
    dest = Path(a.dest)
    dest.mkdir(parents=True, exist_ok=True)
    for folder in sorted(cache_root().iterdir()):
        if not (folder / "meta.json").exists():
            continue
        cd = ClipData(folder)
        idx = validation_frames(cd, a.validation_frames) if cd.name in VALIDATION else cd.inter[::a.every]
        f = pack(folder, dest / f"{cd.name}.npz", idx)
        print(f"{cd.name}: {len(idx)} frames, {f.stat().st_size / 1e6:.1f} MB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
