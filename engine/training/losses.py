"""Training losses (DESIGN.md "Decoder", step 3; paper weights 20/10/1/100/20).

    L1 x20, VGG19 perceptual x10, adversarial x1 (+ feature matching), Gram texture x100, DISTS x20

The perceptual, texture and DISTS terms need ImageNet-pretrained backbones. They are used
only when those weights are already in the standard torch hub cache (nothing is downloaded):
``vgg19-dcbb9e9d.pth`` for perceptual + Gram, and DISTS's ``vgg16-397923af.pth`` plus the
``DISTS_pytorch`` package weights for DISTS. Otherwise :func:`loss_plan` substitutes
``20 x (1 - MS-SSIM)`` for the DISTS slot (structure at five scales, pretrained-free) and
drops perceptual and Gram, and says so: the plan's ``notes`` go into the training log.
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn as nn

PAPER_WEIGHTS = {"l1": 20.0, "perceptual": 10.0, "adversarial": 1.0, "texture": 100.0, "dists": 20.0}
VGG19_FILE = "vgg19-dcbb9e9d.pth"
VGG16_FILE = "vgg16-397923af.pth"


def hub_checkpoints() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def _dists_weights() -> Path | None:
    try:
        import DISTS_pytorch  # type: ignore
    except ImportError:
        return None
    p = Path(DISTS_pytorch.__file__).parent / "weights.pt"
    return p if p.exists() else None


def loss_plan(weights: dict | None = None, adversarial: float | None = None, l2: float = 0.0,
              psnr: float = 0.0, residual: float = 0.0) -> dict:
    """Which losses run, with which weights, and why (notes for the log).

    Not in the paper, for configs accepted on PSNR (the small CPU config):
    l2:   weight of a mean-squared-error term;
    residual: weight of an L1 penalty on the generator's RGB residual (a prior towards the analytic frame);
    psnr: weight of the mean over samples of 10 log10(MSE) (= minus the mean PSNR the acceptance
          test averages over frames): every sample counts by its relative error, so frames the
          analytic decoder already gets right (near the key frame) are not traded for hard ones.
    """
    w = dict(PAPER_WEIGHTS)
    w.update(weights or {})
    if adversarial is not None:
        w["adversarial"] = adversarial
    notes = []
    hub = hub_checkpoints()
    vgg19 = hub / VGG19_FILE
    plan = {"l1": w["l1"], "l2": float(l2), "psnr": float(psnr), "residual": float(residual),
            "adversarial": w["adversarial"],
            "feature_matching": 10.0 if w["adversarial"] > 0 else 0.0}
    if l2 > 0:
        notes.append(f"extra MSE term x{l2:g} (not in the paper): this config is accepted on PSNR")
    if residual > 0:
        notes.append(f"L1 penalty x{residual:g} on the generator's free RGB residual (not in the paper): changes "
                     f"must pay for themselves, no global colour drift")
    if psnr > 0:
        notes.append(f"extra per-sample log-MSE (PSNR) term x{psnr:g} (not in the paper): this config is "
                     f"accepted on mean PSNR over frames")
    if vgg19.exists():
        plan.update(perceptual=w["perceptual"], texture=w["texture"], vgg19=str(vgg19))
    else:
        plan.update(perceptual=0.0, texture=0.0)
        notes.append(f"VGG19 perceptual (x{w['perceptual']:g}) and Gram texture (x{w['texture']:g}) losses off: "
                     f"no ImageNet VGG19 weights at {vgg19}")
    if (hub / VGG16_FILE).exists() and _dists_weights() is not None:
        plan.update(dists=w["dists"], ms_ssim=0.0)
    else:
        plan.update(dists=0.0, ms_ssim=w["dists"])
        notes.append(f"DISTS (x{w['dists']:g}) off: no ImageNet VGG16 at {hub / VGG16_FILE} or no DISTS_pytorch "
                     f"weights; substitute 20 x (1 - MS-SSIM)")
    if w["adversarial"] <= 0:
        notes.append("adversarial and feature-matching losses off in this config")
    plan["notes"] = notes
    return plan


# ----------------------------------------------------------------------------- pixel / structure

def l1(pred, target):
    return (pred - target).abs().mean() / 255.0


def ms_ssim_loss(pred, target):
    """1 - MS-SSIM on 0..255 images (window shrunk for small crops, like engine.evaluation.metrics)."""
    from pytorch_msssim import ms_ssim, ssim
    side = min(pred.shape[-2:])
    win = 11
    while win > 3 and side <= (win - 1) * 16:
        win -= 2
    p, t = pred.clamp(0, 255).float(), target.float()
    if side <= (win - 1) * 16:
        return 1 - ssim(p, t, data_range=255, win_size=win)
    return 1 - ms_ssim(p, t, data_range=255, win_size=win)


# ----------------------------------------------------------------------------- pretrained feature losses

class VGGFeatures(nn.Module):
    """VGG19 relu1_1..relu5_1 from the torch hub cache (only constructed when the file is there)."""

    LAYERS = (1, 6, 11, 20, 29)

    def __init__(self, path):
        super().__init__()
        import torchvision  # noqa: F401  (only with pretrained weights present)
        from torchvision.models import vgg19
        net = vgg19()
        net.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        self.body = net.features[: max(self.LAYERS) + 1].eval()
        for p in self.body.parameters():
            p.requires_grad_(False)
        self.register_buffer("mean", torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1))

    def forward(self, x):
        x = (x / 255.0 - self.mean) / self.std
        out = []
        for i, m in enumerate(self.body):
            x = m(x)
            if i in self.LAYERS:
                out.append(x)
        return out


def gram(f):
    B, C, H, W = f.shape
    f = f.reshape(B, C, H * W)
    return f @ f.transpose(1, 2) / (C * H * W)


# ----------------------------------------------------------------------------- adversarial (LSGAN)

def d_loss(d_real, d_fake):
    loss = 0.0
    for (lr, _), (lf, _) in zip(d_real, d_fake):
        loss = loss + ((lr - 1) ** 2).mean() + (lf ** 2).mean()
    return loss / len(d_real)


def g_adv_loss(d_fake):
    return sum(((lf - 1) ** 2).mean() for lf, _ in d_fake) / len(d_fake)


def feature_matching(d_real, d_fake):
    loss = 0.0
    n = 0
    for (_, fr), (_, ff) in zip(d_real, d_fake):
        for a, b in zip(fr, ff):
            loss = loss + (a.detach() - b).abs().mean()
            n += 1
    return loss / max(n, 1)


class GeneratorLoss(nn.Module):
    """Weighted sum per :func:`loss_plan`; ``forward`` returns (total, dict of the terms)."""

    def __init__(self, plan: dict):
        super().__init__()
        self.plan = plan
        self.vgg = VGGFeatures(plan["vgg19"]) if plan.get("perceptual", 0) > 0 or plan.get("texture", 0) > 0 else None
        self.dists = None
        if plan.get("dists", 0) > 0:
            from DISTS_pytorch import DISTS  # type: ignore
            self.dists = DISTS().eval()
            for p in self.dists.parameters():
                p.requires_grad_(False)

    def forward(self, pred, target, d_real=None, d_fake=None, residual=None):
        p = self.plan
        terms = {"l1": l1(pred, target)}
        total = p["l1"] * terms["l1"]
        if residual is not None and p.get("residual", 0) > 0:
            terms["residual"] = residual.abs().mean()
            total = total + p["residual"] * terms["residual"]
        if p.get("psnr", 0) > 0:
            mse = ((pred - target) / 255.0).pow(2).flatten(1).mean(1)
            terms["psnr"] = (10 * torch.log10(mse + 1e-6)).mean()
            total = total + p["psnr"] * terms["psnr"]
        if p.get("l2", 0) > 0:
            terms["l2"] = ((pred - target) / 255.0).pow(2).mean()
            total = total + p["l2"] * terms["l2"]
        if p.get("ms_ssim", 0) > 0:
            terms["ms_ssim"] = ms_ssim_loss(pred, target)
            total = total + p["ms_ssim"] * terms["ms_ssim"]
        if self.vgg is not None:
            fp, ft = self.vgg(pred), self.vgg(target)
            if p["perceptual"] > 0:
                terms["perceptual"] = sum((a - b).abs().mean() for a, b in zip(fp, ft))
                total = total + p["perceptual"] * terms["perceptual"]
            if p["texture"] > 0:
                terms["texture"] = sum((gram(a) - gram(b)).abs().mean() for a, b in zip(fp, ft))
                total = total + p["texture"] * terms["texture"]
        if self.dists is not None:
            terms["dists"] = self.dists(pred / 255.0, target / 255.0, require_grad=True, batch_average=True)
            total = total + p["dists"] * terms["dists"]
        if d_fake is not None and p.get("adversarial", 0) > 0:
            terms["adversarial"] = g_adv_loss(d_fake)
            terms["feature_matching"] = feature_matching(d_real, d_fake)
            total = total + p["adversarial"] * terms["adversarial"] + p["feature_matching"] * terms["feature_matching"]
        return total, {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}

