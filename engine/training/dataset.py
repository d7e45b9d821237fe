"""Training pairs (key picture, target frame) from real clips, with the analytic decoder's inputs cached.

For each clip: encode it with the real encoder (engine.analysis.encoder.encode_video: analysis, body fit,
VVC key picture), decode the key picture, and run the analytic decoder's per-frame computation
(engine.synthesis.decoder.Decoder.analyse: frame raster, analytic flow, occlusion, mesh images). Everything is cached
on disk under ``~/.cache/ihvc/train/<clip>-<hash>/`` (IHVC_TRAIN_CACHE overrides), so the analysis
runs once per clip and parameter set:

    bitstream.ihvc   the encoded clip
    frames.npy       N x H x W x 3 uint8, the clip's frames at the working size (the targets)
    grid.npy         N x H x W x 2 float16, analytic backward map (key-frame pixels)
    flags.npy        N x H x W uint8, bit 0 visible in the key, bit 1 covered by the frame mesh,
                     bit 2 background disocclusion no key saw (Motion.hole less the other keys' background),
                     bit 3 filled by another reference
    base.npy         N x H x W x 3 uint8, the analytic decoder's frame (other keys' background, holes filled,
                     references fused; refiner.analytic_base):
                     exactly what ``Decoder`` without a refiner writes
    weight.npy       N x H x W float16, body-motion weight
    mesh.npy         N x 6 x H x W float16, frame mesh image (engine.synthesis.networks.MESH_CHANNELS)
    keys.npz         per GOP: start, key picture (H x W x 3 uint8), key mesh image (6 x H x W)
    meta.json        source, parameters, sizes (written last: its presence means complete)

A training sample is a crop (offsets and size multiples of 8) of one non-key frame with its whole key
frame; frames near their key frame are drawn more often; augmentation: horizontal flip (image, flow,
normals and left/right part labels together) and optionally a shared per-channel colour gain/offset on
key and target (off by default).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from engine.errors import InputError
from engine.synthesis.networks import N_PARTS, RefinerInputs

CACHE_VERSION = 2          # the encode (bitstream + frames); part of the folder name. 2: key-pinned fit
ANALYSIS_VERSION = 4       # the analysis arrays; recomputed from the stored bitstream when it changes
                           # 3: base with the other references fused, flag bit 3 (issue #15)
                           # 4: base with the background other keys saw; hole bit only where none did
TED_SIZE = 384
TAICHI_SIZE = 256
TAICHI_REGION = (0, 0, 256, 256)


def cache_root() -> Path:
    return Path(os.environ.get("IHVC_TRAIN_CACHE", Path.home() / ".cache" / "ihvc" / "train"))


@dataclass
class ClipSpec:
    path: Path
    size: int
    region: tuple | None = None
    max_frames: int | None = None
    key_qp: int = 37
    gop: int | None = None

    @property
    def name(self) -> str:
        return self.path.stem


def clip_spec(path, max_frames: int | None = None, key_qp: int = 37, gop: int | None = None) -> ClipSpec:
    """The working geometry of a clip of ../shared/data (taichi: the top 256 x 256 half)."""
    path = Path(path)
    if "taichi" in path.name:
        return ClipSpec(path, TAICHI_SIZE, TAICHI_REGION, max_frames, key_qp, gop)
    return ClipSpec(path, TED_SIZE, None, max_frames, key_qp, gop)


def find_clips(data_dir) -> list[Path]:
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError(f"no such data folder: {data_dir}")
    clips = sorted(p for p in data_dir.rglob("*") if p.suffix.lower() in (".mp4", ".mkv", ".avi", ".mov")
                   and p.is_file())
    if not clips:
        raise InputError(f"no video clips under {data_dir}")
    return clips


def _hash(spec: ClipSpec) -> str:
    st = spec.path.stat()
    key = json.dumps([CACHE_VERSION, str(spec.path.resolve()), st.st_size, int(st.st_mtime), spec.size,
                      spec.region, spec.max_frames, spec.key_qp, spec.gop])
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def _part_flip_map() -> np.ndarray:
    from engine.synthesis.body import JOINT_NAMES
    idx = {n: i for i, n in enumerate(JOINT_NAMES)}
    m = np.arange(N_PARTS)
    for n, i in idx.items():
        for a, b in (("left_", "right_"), ("right_", "left_")):
            if n.startswith(a) and n.replace(a, b, 1) in idx:
                m[i] = idx[n.replace(a, b, 1)]
    return m


def build_cache(spec: ClipSpec, log=print, device="cpu") -> Path:
    """Encode + analyse one clip into its cache folder (reused when present). Returns the folder.

    The encode (bitstream.ihvc, frames.npy) is kept across analysis versions: when the decoder's
    analytic path changes, only the analysis is recomputed from the stored bitstream.
    """
    import time
    out = cache_root() / f"{spec.name}-{_hash(spec)}"
    meta_path = out / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("analysis") == ANALYSIS_VERSION:
        return out
    failed = out.with_name(out.name + ".failed")
    if failed.exists():                  # e.g. no person detected: remembered, not re-analysed
        raise InputError(failed.read_text().strip())
    from engine.codec import container
    t0 = time.time()
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    try:
        if (out / "bitstream.ihvc").exists() and (out / "frames.npy").exists():
            shutil.copy2(out / "bitstream.ihvc", tmp / "bitstream.ihvc")
            shutil.copy2(out / "frames.npy", tmp / "frames.npy")
            bs = container.read(tmp / "bitstream.ihvc")
        else:
            from engine.analysis.encoder import encode_video
            res = encode_video(str(spec.path), key_codec="vvc", key_qp=spec.key_qp, gop=spec.gop,
                                       size=spec.size, max_frames=spec.max_frames, region=spec.region,
                                       keep_analysis=True)
            bs = res.bitstream
            container.write(bs, tmp / "bitstream.ihvc")
            np.save(tmp / "frames.npy", np.asarray(res.analysis.frames)[:bs.n_frames])
        frames = np.load(tmp / "frames.npy", mmap_mode="r")
        N = min(len(frames), bs.n_frames)
        _analyse_into(tmp, bs, N, device)
        meta = {"version": CACHE_VERSION, "analysis": ANALYSIS_VERSION, "source": str(spec.path), "size": spec.size,
                "region": spec.region, "max_frames": spec.max_frames, "key_qp": spec.key_qp, "gop": spec.gop,
                "n_frames": N, "height": bs.height, "width": bs.width, "gop_starts": [g.start for g in bs.gops],
                "seconds": round(time.time() - t0, 1)}
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        shutil.rmtree(out, ignore_errors=True)
        os.replace(tmp, out)
    except InputError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        failed.write_text(str(exc))
        raise
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    log(f"analysed {spec.name}: {N} frames {bs.width}x{bs.height} in {time.time() - t0:.0f} s -> {out}")
    return out


def _analyse_into(folder: Path, bs, N: int, device="cpu") -> None:
    """The analytic decoder's per-frame inputs of every non-key frame, into memory-mapped arrays."""
    from engine.synthesis.decoder import Decoder
    from engine.synthesis.refiner import analytic_base
    H, W = bs.height, bs.width
    dec = Decoder(bs, device=device)
    mm = np.lib.format.open_memmap
    grid = mm(folder / "grid.npy", "w+", np.float16, (N, H, W, 2))
    flags = mm(folder / "flags.npy", "w+", np.uint8, (N, H, W))
    weight = mm(folder / "weight.npy", "w+", np.float16, (N, H, W))
    mesh = mm(folder / "mesh.npy", "w+", np.float16, (N, 6, H, W))
    base = mm(folder / "base.npy", "w+", np.uint8, (N, H, W, 3))
    keys = {}
    gops = []
    for gop in bs.gops:
        if gop.start >= N or gop.key_frame >= N:
            break
        st = dec.key_state(gop)
        k = gop.key_frame                     # a key picture need not open its group (format 2)
        keys[f"key_{k}"] = st.rgb
        keys[f"mesh_{k}"] = st.mesh[0].numpy().astype(np.float16)
        base[k] = st.rgb
        gops.append((gop.start, min(gop.n_frames, N - gop.start), k))
        idx = [i for i in range(gop.start, min(gop.start + gop.n_frames, N)) if i != k]
        for c in range(0, len(idx), 4):
            chunk = idx[c:c + 4]
            rows = np.stack([gop.frames[i - gop.start] for i in chunk])
            fa = dec.analyse(gop, rows, chunk)   # the decoder's own inputs: no drift
            mo, mi = fa.motion, fa.mesh
            fused, hole, seen = analytic_base(fa)         # as LearnedRefiner.refine_decoder starts
            img = fused.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
            hole = hole.numpy() if hole is not None else np.zeros((len(chunk), H, W), bool)
            seen = seen.numpy() if seen is not None else np.zeros((len(chunk), H, W), bool)
            sl = np.asarray(chunk)                # not contiguous around a key inside its group
            grid[sl] = mo.grid.numpy()
            flags[sl] = (mo.visible.numpy().astype(np.uint8) | (mo.body.numpy().astype(np.uint8) << 1)
                         | (hole.astype(np.uint8) << 2) | (seen.astype(np.uint8) << 3))
            weight[sl] = mo.weight.numpy()
            mesh[sl] = mi.numpy()
            base[sl] = img.numpy()
    for a in (grid, flags, weight, mesh, base):
        a.flush()
    np.savez(folder / "keys.npz", gops=np.array(gops, np.int64).reshape(-1, 3), **keys)


class ClipData:
    """A cached clip (memory-mapped)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self.meta = json.loads((self.folder / "meta.json").read_text())
        self.name = Path(self.meta["source"]).stem
        ld = lambda n: np.load(self.folder / n, mmap_mode="r")  # noqa: E731
        self.frames, self.grid, self.flags = ld("frames.npy"), ld("grid.npy"), ld("flags.npy")
        self.weight, self.mesh = ld("weight.npy"), ld("mesh.npy")
        self.base = ld("base.npy") if (self.folder / "base.npy").exists() else None
        k = np.load(self.folder / "keys.npz")
        self.gops = [tuple(int(v) for v in g) for g in k["gops"]]       # (first frame, frames, key frame)
        self.starts = [g[2] for g in self.gops]                          # the key frames
        self.keys = {s: (k[f"key_{s}"], k[f"mesh_{s}"].astype(np.float32)) for s in self.starts}
        self.n = int(self.meta["n_frames"])
        self.H, self.W = int(self.meta["height"]), int(self.meta["width"])
        self._key = np.full(self.n, -1, np.int64)
        for first, n, key in self.gops:
            self._key[first:first + n] = key
        self.inter = [i for i in range(self.n) if self._key[i] >= 0 and i not in self.starts]
        avail = self.folder / "avail.json"            # a packed subset (engine/training/pack.py)
        if avail.exists():
            have = set(json.loads(avail.read_text()))
            self.inter = [i for i in self.inter if i in have]

    def key_of(self, i: int) -> int:
        """The key frame of frame i's group of pictures."""
        return int(self._key[i])

    def sample(self, i: int, crop: tuple[int, int, int, int] | None = None, flip: bool = False,
               gain: np.ndarray | None = None) -> tuple[RefinerInputs, torch.Tensor]:
        """(inputs, target 1 x 3 x h x w float 0..255) for frame i; crop = (y, x, h, w)."""
        s = self.key_of(i)
        key, kmesh = self.keys[s]
        y, x, h, w = crop or (0, 0, self.H, self.W)
        key = torch.from_numpy(np.ascontiguousarray(key)).permute(2, 0, 1)[None].float()
        kmesh = torch.from_numpy(np.ascontiguousarray(kmesh))[None].float()
        target = torch.from_numpy(np.array(self.frames[i])).permute(2, 0, 1)[None].float()
        grid = torch.from_numpy(np.asarray(self.grid[i], np.float32))[None]
        flags = torch.from_numpy(np.array(self.flags[i]))[None]
        weight = torch.from_numpy(np.asarray(self.weight[i], np.float32))[None]
        mesh = torch.from_numpy(np.asarray(self.mesh[i], np.float32))[None]
        base = (torch.from_numpy(np.array(self.base[i])).permute(2, 0, 1)[None].float()
                if self.base is not None else None)
        if flip:
            fm = torch.from_numpy(_part_flip_map())
            key, kmesh, target = key.flip(-1), kmesh.flip(-1), target.flip(-1)
            base = base.flip(-1) if base is not None else None
            grid, flags, weight, mesh = grid.flip(2), flags.flip(2), weight.flip(2), mesh.flip(-1)
            grid = torch.stack([self.W - grid[..., 0], grid[..., 1]], -1)
            for m in (kmesh, mesh):
                m[:, 1] = -m[:, 1]
                p = m[:, 5].round().long()
                m[:, 5] = torch.where(p >= 0, fm[p.clamp(min=0)].float(), m[:, 5])
        if gain is not None:
            g = torch.as_tensor(gain[0], dtype=torch.float32).view(1, 3, 1, 1)
            o = torch.as_tensor(gain[1], dtype=torch.float32).view(1, 3, 1, 1)
            key = (key * g + o).clamp(0, 255)
            target = (target * g + o).clamp(0, 255)
            base = (base * g + o).clamp(0, 255) if base is not None else None
        sl = (slice(None), slice(y, y + h), slice(x, x + w))
        inp = RefinerInputs(key=key, key_mesh=kmesh, grid=grid[sl].contiguous(), visible=(flags[sl] & 1) > 0,
                            body=(flags[sl] & 2) > 0, weight=weight[sl].contiguous(),
                            mesh=mesh[:, :, y:y + h, x:x + w].contiguous(),
                            hole=(flags[sl] & 4) > 0 if base is not None else None,
                            base=base[:, :, y:y + h, x:x + w].contiguous() if base is not None else None,
                            refseen=(flags[sl] & 8) > 0)
        return inp, target[:, :, y:y + h, x:x + w].contiguous()


def collate(samples) -> tuple[RefinerInputs, torch.Tensor]:
    """Stack samples of the same clip and key frame (the key stays 1 x ...)."""
    inps, tgts = zip(*samples)
    same_key = all(s.key is inps[0].key or torch.equal(s.key, inps[0].key) for s in inps)
    cat = lambda f: torch.cat([getattr(s, f) for s in inps], 0)  # noqa: E731
    return RefinerInputs(key=inps[0].key if same_key else cat("key"),
                         key_mesh=inps[0].key_mesh if same_key else cat("key_mesh"),
                         grid=cat("grid"), visible=cat("visible"), body=cat("body"), weight=cat("weight"),
                         mesh=cat("mesh"), hole=cat("hole") if inps[0].hole is not None else None,
                         base=cat("base") if inps[0].base is not None else None,
                         refseen=cat("refseen") if inps[0].refseen is not None else None), torch.cat(tgts, 0)


class PairSampler:
    """Random training batches: one clip and one key per batch, ``batch`` crops of its frames."""

    def __init__(self, clips: list[ClipData], crop: int = 160, batch: int = 4, seed: int = 0,
                 flip: bool = True, colour: float = 0.0, ted_share: float | None = 0.5, near_key: float = 10.0):
        if not clips:
            raise InputError("no training clips")
        self.clips = clips
        self.crop = crop
        self.batch = batch
        self.rng = np.random.default_rng(seed)
        self.flip = flip
        self.colour = colour
        # frames near their key frame are drawn more often (weight 1 / (1 + distance / near_key)): there
        # the analytic decoder is already good and a refiner must learn to leave it alone
        self.near_key = near_key
        # clip probabilities: TED (the paper's domain, upper body) gets ``ted_share`` of the batches
        ted = np.array(["ted" in c.name.lower() for c in clips])
        p = np.ones(len(clips))
        if ted_share is not None and ted.any() and (~ted).any():
            p[ted] = ted_share / ted.sum()
            p[~ted] = (1 - ted_share) / (~ted).sum()
        self.p = p / p.sum()

    def next(self) -> tuple[RefinerInputs, torch.Tensor]:
        rng = self.rng
        clip = self.clips[rng.choice(len(self.clips), p=self.p)]
        start = clip.starts[rng.integers(len(clip.starts))]
        cand = [i for i in clip.inter if clip.key_of(i) == start] or clip.inter
        flip = bool(self.flip and rng.random() < 0.5)
        gain = None
        if self.colour > 0:
            gain = (1 + rng.uniform(-self.colour, self.colour, 3), rng.uniform(-100 * self.colour, 100 * self.colour, 3))
        c = min(self.crop, clip.H, clip.W) // 8 * 8
        samples = []
        cand = np.asarray(cand)
        if self.near_key:
            w = 1.0 / (1.0 + np.abs(cand - np.array([clip.key_of(int(i)) for i in cand])) / self.near_key)
            pw = w / w.sum()
        else:
            pw = None
        for _ in range(self.batch):
            i = int(cand[rng.choice(len(cand), p=pw)])
            # crops centred on the body more often than not: the background is cheap to get right
            body = np.asarray(clip.flags[i, ::8, ::8]) & 2
            if body.any() and rng.random() < 0.7:
                ys, xs = np.nonzero(body)
                k = rng.integers(len(ys))
                cy, cx = ys[k] * 8, xs[k] * 8
            else:
                cy, cx = rng.integers(clip.H), rng.integers(clip.W)
            y = int(np.clip(cy - c // 2, 0, clip.H - c)) // 8 * 8
            x = int(np.clip(cx - c // 2, 0, clip.W - c)) // 8 * 8
            samples.append(clip.sample(i, (y, x, c, c), flip, gain))
        return collate(samples)


def validation_frames(clip: ClipData, n: int = 12) -> list[int]:
    """Up to n non-key frames spread over the clip."""
    if not clip.inter:
        return []
    pick = np.linspace(0, len(clip.inter) - 1, min(n, len(clip.inter))).round().astype(int)
    return sorted({clip.inter[k] for k in pick})


# ----------------------------------------------------------------------------- synthetic (tests)

def synthetic_batch(batch: int = 2, size: int = 32, seed: int = 0) -> tuple[RefinerInputs, torch.Tensor]:
    """A tiny batch where the analytic flow is off by a known shift: a refiner can learn it."""
    g = torch.Generator().manual_seed(seed)
    from engine.synthesis.motion import identity_grid, warp
    H = W = size
    yy, xx = torch.meshgrid(torch.arange(H), torch.arange(W), indexing="ij")
    key = (127 + 100 * torch.sin(xx / 3.0) * torch.cos(yy / 4.0))[None, None].expand(1, 3, H, W).clone()
    key[:, 1] *= 0.8
    key += torch.rand(1, 3, H, W, generator=g) * 20
    ident = identity_grid(H, W).expand(batch, -1, -1, -1)
    true_grid = ident + torch.tensor([1.5, -1.0])
    target = warp(key, true_grid)
    mesh = torch.zeros(batch, 6, H, W)
    mesh[:, 0, H // 4:3 * H // 4, W // 4:3 * W // 4] = 1
    mesh[:, 3] = mesh[:, 0]
    mesh[:, 5] = torch.where(mesh[:, 0] > 0, torch.tensor(3.0), torch.tensor(-1.0))
    inp = RefinerInputs(key=key, key_mesh=mesh[:1].clone(), grid=ident.clone(), visible=torch.ones(batch, H, W, dtype=torch.bool),
                        body=mesh[:, 0] > 0, weight=torch.ones(batch, H, W), mesh=mesh)
    return inp, target
