"""Quality metrics on decoded RGB frames (DESIGN.md, "Evaluation").

PSNR, SSIM and MS-SSIM are computed in-process on RGB (pytorch_msssim, data
range 255), per frame and averaged over the frames; VMAF (model vmaf_v0.6.1)
runs through the libvmaf filter of the imageio-ffmpeg binary, with both
sequences fed as raw frames so that frames are aligned strictly by index.
LPIPS and DISTS need ImageNet backbones; none can be downloaded here, so they
are reported as unavailable unless their weights are already in the standard
torch hub cache (see :func:`extra_metrics_status`).

Shapes: ``ref`` and ``dist`` are uint8 N x H x W x 3 (or one H x W x 3 frame).
"""
from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

from engine.errors import IHVCError, InputError
from engine.workers import run

_MSSSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _pair(ref, dist) -> tuple[np.ndarray, np.ndarray]:
    ref, dist = np.asarray(ref), np.asarray(dist)
    if ref.ndim == 3:
        ref, dist = ref[None], dist[None]
    if ref.shape != dist.shape or ref.ndim != 4 or ref.shape[-1] != 3:
        raise InputError(f"frames to compare must have equal shapes N x H x W x 3, got {ref.shape} and {dist.shape}")
    return ref, dist


def psnr_frames(ref, dist) -> np.ndarray:
    """Per-frame RGB PSNR in dB, (N,); identical frames give 100."""
    ref, dist = _pair(ref, dist)
    mse = ((ref.astype(np.float64) - dist.astype(np.float64)) ** 2).reshape(len(ref), -1).mean(1)
    with np.errstate(divide="ignore"):
        p = 10 * np.log10(255.0 ** 2 / mse)
    return np.minimum(p, 100.0)


def step_errors(ref, dist) -> np.ndarray:
    """Per step t -> t+1, how far the decoded change is from the source's: mean |(dist[t+1] - dist[t]) -
    (ref[t+1] - ref[t])| over pixels and channels (0..255), (N - 1,). A frame-by-frame metric does not see
    a jump between two frames each about as good as the other (a key picture's group giving way to the
    next one's, docs/BENCHMARKS.md "Pops at group boundaries"); this does."""
    ref, dist = _pair(ref, dist)
    out = np.zeros(max(0, len(ref) - 1))
    for t in range(len(out)):           # one step at a time: a clip's frames in float would not fit
        d = dist[t + 1].astype(np.int16) - dist[t] - (ref[t + 1].astype(np.int16) - ref[t])
        out[t] = float(np.abs(d).mean())
    return out


def boundary_steps(ref, dist, starts) -> tuple[float, float]:
    """The mean step error (``step_errors``) into the frames of ``starts`` (where a group begins; frame 0
    has no step into it) and into every other frame: (at a boundary, inside); nan where there is none."""
    e = step_errors(ref, dist)
    at = np.zeros(len(e), bool)
    at[[s - 1 for s in starts if 1 <= s <= len(e)]] = True
    return (float(e[at].mean()) if at.any() else float("nan"),
            float(e[~at].mean()) if (~at).any() else float("nan"))


def _torch(x: np.ndarray) -> torch.Tensor:
    x = np.ascontiguousarray(x)
    if not x.flags.writeable:
        x = x.copy()
    return torch.from_numpy(x).permute(0, 3, 1, 2).float()


def ssim_frames(ref, dist, batch: int = 16) -> np.ndarray:
    """Per-frame SSIM (Gaussian window 11, sigma 1.5, RGB averaged), (N,)."""
    from pytorch_msssim import ssim
    ref, dist = _pair(ref, dist)
    out = []
    with torch.no_grad():
        for i in range(0, len(ref), batch):
            out.append(ssim(_torch(ref[i:i + batch]), _torch(dist[i:i + batch]), data_range=255,
                            size_average=False).numpy())
    return np.concatenate(out).astype(float)


def ms_ssim_frames(ref, dist, batch: int = 16) -> np.ndarray:
    """Per-frame MS-SSIM, (N,): five scales, window 11 from 161 px a side.

    Smaller frames (tests) use the largest odd window that fits the five scales (at least 3);
    below 33 px a side there is no MS-SSIM and SSIM is returned instead.
    """
    from pytorch_msssim import ms_ssim
    ref, dist = _pair(ref, dist)
    side = min(ref.shape[1:3])
    win = 11
    while win > 3 and side <= (win - 1) * 16:
        win -= 2
    if side <= (win - 1) * 16:
        return ssim_frames(ref, dist, batch)
    w = list(_MSSSIM_WEIGHTS)
    out = []
    with torch.no_grad():
        for i in range(0, len(ref), batch):
            out.append(ms_ssim(_torch(ref[i:i + batch]), _torch(dist[i:i + batch]), data_range=255,
                               size_average=False, weights=w, win_size=win).numpy())
    return np.concatenate(out).astype(float)


def vmaf(ref, dist, threads: int | None = None) -> float:
    """Mean VMAF (vmaf_v0.6.1) of ``dist`` against ``ref``, frames aligned by index.

    Both sequences go to FFmpeg's libvmaf as raw RGB (converted to 4:2:0 there, as VMAF expects).
    """
    from engine.codec.keypicture import ffmpeg_exe
    ref, dist = _pair(ref, dist)
    n, h, w, _ = ref.shape
    threads = threads or min(4, os.cpu_count() or 1)
    with tempfile.TemporaryDirectory(prefix="ihvc_vmaf_") as tmp:
        tmp = Path(tmp)
        (tmp / "ref.rgb").write_bytes(np.ascontiguousarray(ref).tobytes())
        (tmp / "dist.rgb").write_bytes(np.ascontiguousarray(dist).tobytes())
        log = tmp / "vmaf.json"
        raw = ["-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{w}x{h}", "-r", "25"]
        graph = (f"[0:v]format=yuv420p,setpts=N/25/TB[d];[1:v]format=yuv420p,setpts=N/25/TB[r];"
                 f"[d][r]libvmaf=log_fmt=json:log_path={log.as_posix()}:n_threads={threads}:shortest=1")
        cmd = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", *raw, "-i", str(tmp / "dist.rgb"),
               *raw, "-i", str(tmp / "ref.rgb"), "-lavfi", graph, "-f", "null", "-"]
        res = run(cmd)
        if res.returncode != 0 or not log.exists():
            raise IHVCError(f"VMAF failed: {res.stderr.decode(errors='replace').strip()[-200:]}")
        data = json.loads(log.read_text())
    frames = data.get("frames", [])
    if len(frames) != n:
        raise IHVCError(f"VMAF scored {len(frames)} frames, expected {n}")
    return float(np.mean([f["metrics"]["vmaf"] for f in frames]))


def extra_metrics_status() -> dict[str, str]:
    """LPIPS / DISTS availability: name -> "available" or "unavailable (reason)".

    Both need ImageNet backbone weights (AlexNet/VGG16) in the torch hub cache; nothing is downloaded.
    """
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    have = {p.name for p in hub.glob("*.pth")} if hub.exists() else set()
    out = {}
    lpips_ok = any(n.startswith("alexnet") or n.startswith("vgg16") for n in have)
    try:
        import lpips  # noqa: F401
        lpips_pkg = True
    except ImportError:
        lpips_pkg = False
    out["lpips"] = ("available" if lpips_ok and lpips_pkg else
                    "unavailable (" + ("no lpips package" if not lpips_pkg else "no AlexNet/VGG weights in " + str(hub)) + ")")
    out["dists"] = "unavailable (no DISTS weights and no VGG16 ImageNet weights in " + str(hub) + ")" \
        if not any(n.startswith("vgg16") for n in have) else "unavailable (DISTS head weights not shipped)"
    return out


def evaluate(ref, dist, with_vmaf: bool = True) -> dict[str, float]:
    """All metrics, averaged over frames: psnr, ssim, ms_ssim, vmaf (nan when with_vmaf is False)."""
    ref, dist = _pair(ref, dist)
    return {
        "psnr": float(psnr_frames(ref, dist).mean()),
        "ssim": float(ssim_frames(ref, dist).mean()),
        "ms_ssim": float(ms_ssim_frames(ref, dist).mean()),
        "vmaf": vmaf(ref, dist) if with_vmaf else float("nan"),
    }
