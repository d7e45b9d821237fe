"""Training loop of the learned refiner (``python main.py train``).

Single process, or several under ``torchrun`` (WORLD_SIZE set): DistributedDataParallel
with the gloo backend on CPU and NCCL on CUDA; every rank draws its own random batches
(seeded by rank), rank 0 validates, logs and writes checkpoints.

Out folder (``--out``):
    train.csv            step, seconds, losses, validation PSNR learned / analytic
    train.log            what ran: clips, split, loss plan (and its substitutes), config
    last.safetensors/.json   resumable state (generator, discriminator, Adam moments, step)
    best.safetensors/.json   the generator with the best held-out validation PSNR (what ships)
    samples/step_NNNNNN.png  key | target | analytic | learned for two validation frames

Validation: on the held-out clip (ted_e by default), a fixed set of whole frames is decoded by
the analytic path (``warp(key, grid)``) and by the network; mean PSNR of both, rounded to 8 bits
as the decoder writes them. ``best`` is only written while the network beats the analytic path.
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
from engine.training.losses import GeneratorLoss, d_loss, loss_plan
from engine.synthesis.networks import CONFIGS, Generator, MultiScaleDiscriminator, n_params, warp_px

DEFAULTS = {
    "small": dict(batch=4, crop=160, adversarial=0.0, psnr=1.0, residual=5.0, val_every=200, ckpt_every=200, log_every=10,
                  ema=0.998, ted_share=0.5),
    "full": dict(batch=8, crop=256, adversarial=1.0, val_every=1000, ckpt_every=1000, log_every=50, ema=0.999,
                 ted_share=0.5),
}
HOLDOUT_VAL = "ted_e"                       # the held-out TED clip (validation + benchmark)
HOLDOUT_TEST = ("taichi_13", "taichi_16")   # taichi clips never trained on (benchmark only); taichi_14 has
                                            # no person MediaPipe detects, so it cannot be encoded at all


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


@torch.no_grad()
def validate(gen: Generator, clip: ClipData, frames: list[int], device) -> dict:
    gen.eval()
    pl, pa, rows = [], [], []
    ctx_cache = {}
    for i in frames:
        inp, tgt = clip.sample(i)
        inp = inp.to(device)
        s = clip.key_of(i)
        if s not in ctx_cache:
            ctx_cache[s] = gen.encode_key(inp.key, inp.key_mesh)
        out, aux = gen(inp, ctx_cache[s])
        ana = inp.base if inp.base is not None else warp_px(inp.key, inp.grid, tuple(inp.key.shape[-2:]))
        out, ana = to_u8(out).cpu(), to_u8(ana).cpu()
        pl.append(psnr(out, tgt))
        pa.append(psnr(ana, tgt))
        rows.append((i, inp.key.cpu(), tgt, ana, out))
    gen.train()
    return {"psnr_learned": float(np.mean(pl)), "psnr_analytic": float(np.mean(pa)),
            "gain_db": float(np.mean(pl) - np.mean(pa)), "per_frame": [round(a - b, 3) for a, b in zip(pl, pa)],
            "rows": rows}


def save_grid(path, rows) -> None:
    """rows: (index, key, target, analytic, learned) 1 x 3 x H x W -> PNG, one row per frame."""
    import cv2
    lines = []
    for _, *imgs in rows:
        h, w = imgs[1].shape[-2:]
        tiles = [Fn.interpolate(t.float(), size=(h, w), mode="area") if t.shape[-2:] != (h, w) else t for t in imgs]
        lines.append(torch.cat([t[0] for t in tiles], 2))
    img = torch.cat(lines, 1).permute(1, 2, 0).clamp(0, 255).byte().numpy()
    with atomic_path(path) as tmp:
        cv2.imwrite(str(tmp), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))


# ----------------------------------------------------------------------------- the loop

def prepare_data(data_dir, log, val_name=HOLDOUT_VAL, test_names=HOLDOUT_TEST, taichi_frames: int = 96,
                 build: bool = True):
    """(train ClipData list, validation ClipData or None). Builds the caches (encode + analysis) when asked."""
    clips = find_clips(data_dir)
    train, val = [], None
    for p in clips:
        if any(p.stem.startswith(t) for t in test_names):
            continue
        spec = clip_spec(p, max_frames=taichi_frames if "taichi" in p.name else None)
        try:
            folder = build_cache(spec, log=log) if build else None
        except InputError as exc:
            log(f"skipped {p.name}: {exc}")
            continue
        if folder is None:
            continue
        cd = ClipData(folder)
        if p.stem.startswith(val_name):
            val = cd
        elif cd.inter:
            train.append(cd)
    return train, val


def train(data_dir, config: str = "small", device: str | None = None, resume: bool = False, out_dir="out/train",
          steps: int | None = None, log_fn=print, threads: int | None = None, seed: int = 0,
          taichi_frames: int = 96, export_to: str | None = None, time_limit: float | None = None, clips=None,
          init: str | None = None, blend: bool = True, **overrides) -> dict:
    if clips is None:
        find_clips(data_dir)        # a missing or empty data folder fails before any output is written
    rank, world, dev = dist_setup(device)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    out = Path(out_dir)
    main = rank == 0
    opts = dict(DEFAULTS[config if isinstance(config, str) else "small"])
    opts.update({k: v for k, v in overrides.items() if v is not None})
    steps = int(steps or (20000 if config == "small" else 200000))
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
    if clips is not None:          # prepared cache folders (tests, custom splits): (train folders, val folder)
        train_clips = [ClipData(f) for f in clips[0]]
        val_clip = ClipData(clips[1]) if clips[1] else None
    else:
        if main:
            train_clips, val_clip = prepare_data(data_dir, log, taichi_frames=taichi_frames)
        barrier(world)
        if not main:
            train_clips, val_clip = prepare_data(data_dir, lambda m: None, taichi_frames=taichi_frames)
    log(f"train clips: {', '.join(f'{c.name}({len(c.inter)})' for c in train_clips)}; validation: "
        f"{val_clip.name if val_clip else 'none'}; never trained on: {', '.join(HOLDOUT_TEST)}")

    netcfg = config if blend else {**(CONFIGS[config] if isinstance(config, str) else config), "blend": False}
    gen = Generator(netcfg).to(dev)
    ema = Generator(netcfg).to(dev).eval()          # exponential moving average: what is validated and shipped
    ema.load_state_dict(gen.state_dict())
    for p in ema.parameters():
        p.requires_grad_(False)
    ema_decay = float(opts.get("ema", 0.998))
    plan = loss_plan(adversarial=opts["adversarial"], l2=opts.get("l2", 0.0), psnr=opts.get("psnr", 0.0),
                     residual=opts.get("residual", 0.0))
    disc = MultiScaleDiscriminator(config).to(dev) if plan["adversarial"] > 0 else None
    crit = GeneratorLoss(plan).to(dev)
    opt_g = torch.optim.Adam(gen.parameters(), lr=opts.get("lr", 2e-4), betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=opts.get("lr", 2e-4), betas=(0.5, 0.999)) if disc else None
    log(f"config {config if isinstance(config, str) else gen.cfg}: generator {n_params(gen):,} parameters"
        + (f", discriminator {n_params(disc):,}" if disc else "") + f"; {json.dumps(opts)}; world {world}, {dev}")
    log("losses: " + ", ".join(f"{k} x{v:g}" for k, v in plan.items() if isinstance(v, float) and v > 0))
    for n in plan["notes"]:
        log("note: " + n)

    step, best = 0, -1e9
    last = out / "last.safetensors"
    if resume and last.exists():
        meta = ckpt.load_training(last, gen, disc, opt_g, opt_d, ema)
        step, best = int(meta.get("step", 0)), float(meta.get("best_gain_db", -1e9))
        log(f"resumed from {last} at step {step}")
    elif resume:
        log(f"--resume: no {last}, starting from scratch")
    if init and not (resume and last.exists()):
        # fine-tuning: the generator starts from trained weights (same config), optimizers and
        # discriminator from scratch
        net, meta0 = ckpt.load_generator(init, device="cpu")
        same = lambda c: {k: v for k, v in c.items() if k != "blend"}       # noqa: E731 (a head switch, same weights)
        if same(net.cfg) != same(gen.cfg):
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
                          ted_share=opts.get("ted_share", 0.5))
    vframes = validation_frames(val_clip, 12) if val_clip else []
    csv_path = out / "train.csv"
    fields = ["step", "seconds", "loss", "l1", "l2", "psnr", "residual", "ms_ssim", "perceptual", "texture", "dists", "adversarial",
              "feature_matching", "d_loss", "val_psnr_learned", "val_psnr_analytic", "val_gain_db"]
    if main and not csv_path.exists():
        with open(csv_path, "w", newline="") as f:
            csv.writer(f).writerow(fields)
    t0 = time.time()
    result = {"step": step, "best_gain_db": best}

    def checkpoint_meta():
        return {"step": step, "best_gain_db": best, "train_clips": [c.name for c in train_clips],
                "validation_clip": val_clip.name if val_clip else None, "loss_plan": {k: v for k, v in plan.items()
                                                                                    if k != "vgg19"}}

    def do_validation():
        nonlocal best
        v = validate(ema, val_clip, vframes, dev)
        pick = [v["rows"][len(v["rows"]) // 3], v["rows"][(2 * len(v["rows"])) // 3]]
        save_grid(out / "samples" / f"step_{step:06d}.png", pick)
        log(f"step {step}: validation {val_clip.name} PSNR learned {v['psnr_learned']:.3f} dB, analytic "
            f"{v['psnr_analytic']:.3f} dB, gain {v['gain_db']:+.3f} dB (worst frame {min(v['per_frame']):+.2f})")
        if v["gain_db"] > best:
            best = v["gain_db"]
            if best > 0:
                ckpt.save(out / "best.safetensors", ema, dict(checkpoint_meta(), validation={
                    k: v[k] for k in ("psnr_learned", "psnr_analytic", "gain_db", "per_frame")}, validation_frames=vframes))
                log(f"step {step}: new best ({best:+.3f} dB) -> {out / 'best.safetensors'}")
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
            terms_d = float(ld)
            for p in disc.parameters():
                p.requires_grad_(False)
            d_fake = disc(pred, inp.mesh)             # the bare module: no DDP hooks on frozen weights
            with torch.no_grad():
                d_real = disc(tgt, inp.mesh)
        loss, terms = crit(pred, tgt, d_real, d_fake, residual=aux["residual"])
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
                   **{k: round(v, 5) for k, v in terms.items()}}
            if terms_d is not None:
                row["d_loss"] = round(terms_d, 5)
        if main and val_clip is not None and (step % opts["val_every"] == 0 or step == steps):
            v = do_validation()
            row = row or {"step": step, "seconds": round(time.time() - t0, 1)}
            row.update(val_psnr_learned=round(v["psnr_learned"], 4), val_psnr_analytic=round(v["psnr_analytic"], 4),
                       val_gain_db=round(v["gain_db"], 4))
        if row:
            with open(csv_path, "a", newline="") as f:
                csv.writer(f).writerow([row.get(k, "") for k in fields])
            if step % (opts["log_every"] * 10) == 0:
                log(f"step {step}: loss {float(loss.detach()):.4f} ({', '.join(f'{k} {v:.4f}' for k, v in terms.items())}), "
                    f"{(time.time() - t0) / max(step - result['step'], 1):.2f} s/step")
        if main and step % opts["ckpt_every"] == 0:
            ckpt.save_training(last, gen, disc, opt_g, opt_d, checkpoint_meta(), ema)
        barrier(world) if step % opts["val_every"] == 0 else None
    if main:
        ckpt.save_training(last, gen, disc, opt_g, opt_d, checkpoint_meta(), ema)
        log(f"done: step {step}, {time.time() - t0:.0f} s, best validation gain {best:+.3f} dB")
        if export_to:
            export(out / "best.safetensors", export_to, log)
    barrier(world)
    if world > 1:
        torch.distributed.destroy_process_group()
    result.update(step=step, best_gain_db=best, seconds=time.time() - t0)
    if logf:
        logf.close()
    return result


def export(best, dest, log=print) -> bool:
    """Copy the best generator (weights only) to ``dest`` (e.g. assets/generator.safetensors) when it exists."""
    best = Path(best)
    if not best.exists():
        log(f"no {best}: the network never beat the analytic decoder on validation; nothing exported")
        return False
    net, meta = ckpt.load_generator(best)
    meta = {k: v for k, v in meta.items() if k not in ("optim_g", "optim_d", "sha256", "tensors", "dtype")}
    ckpt.save(dest, net, meta)
    log(f"exported {best} -> {dest}")
    return True
