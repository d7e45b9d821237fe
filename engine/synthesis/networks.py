"""The learned stage: a gated refiner that regenerates only where the analytic warp fails
(DESIGN.md "Decoder", step 2; issue #15).

The analytic decoder (engine/synthesis/motion.py, engine/synthesis/decoder.py) gives, per frame, the
frame drawn from its own key picture and, where that key did not see the body, from the other
references (``base``). :class:`Generator` reads that frame together with where it is likely wrong
(the own key's visibility, the body coverage, background disocclusions, the pixels other references
filled, the frame mesh image) and the key picture's features warped by the analytic flow, and predicts

* ``confidence`` (B x 1 x H x W, 0..1): how far the analytic pixel can be trusted, and
* ``generated`` (B x 3 x H x W): what to draw where it cannot (a residual on ``base``).

The frame is ``confidence * base + (1 - confidence) * generated``. Confidence is 1 (the analytic
pixel, exactly) outside :func:`suspect` (disocclusions, body pixels the own key did not see, a band
around the body's outline) and where another reference filled the pixel (the decoder overwrites those
with the references' colour); at decoding (``Generator.eval()``) pixels whose confidence is at least
:data:`PASS_THROUGH` are the analytic pixels exactly too. There is no blend toward a down-scaled image (the old blend head, which made
the previous learned decoder's PSNR gain mostly blur, is gone).

An untrained network reproduces ``base`` exactly (zero-initialised residual head).

:class:`MultiScaleDiscriminator`: PatchGAN discriminators at several scales, returning their
intermediate features for the feature-matching loss (training only).

Tensor conventions (``RefinerInputs``):
  key      1|B x 3 x Hk x Wk   key picture, float 0..255 (whole key frame)
  key_mesh 1|B x 6 x Hk x Wk   key mesh image (see MESH_CHANNELS); unused by this network, kept for callers
  grid     B x H x W x 2       analytic backward map, key-frame pixel coords (x, y) (engine.synthesis.motion)
  visible, body  B x H x W     bool; weight B x H x W float (engine.synthesis.motion.Motion)
  mesh     B x 6 x H x W       frame mesh image
  hole     B x H x W bool      background the person hid in the key (filled analytically), or None
  base     B x 3 x H x W       the analytic decoder's frame, references fused (0..255), or None (= warp)
  refseen  B x H x W bool      pixels another reference filled (the decoder keeps them), or None
H x W may be a crop of the frame (offsets multiples of 8); ``grid`` still points into the whole key.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as Fn

N_PARTS = 22                       # engine.synthesis.body.JOINT_NAMES
# Mesh image channels: covered mask, normal x/y/z (world = camera axes), depth relative to the
# body's distance (body-model units), part id (0..21, -1 off the body).
MESH_CHANNELS = ("mask", "nx", "ny", "nz", "depth", "part")
MESH_FEATURES = 5 + N_PARTS        # after one-hot expansion of the part id
PASS_THROUGH = 0.9                 # at decoding, confidence >= this keeps the analytic pixel exactly
N_GUIDE = 3 + 4 + 4                # base RGB, 4 masks (visible, body, hole, refseen), mesh normals + depth

CONFIGS = {
    # CPU budget: >= 8 frames/s at 384 x 384 on this 2-core CPU with the analytic part (one thread).
    "small": dict(ch1=8, ch2=12, ch4=24, key_ch=16, blocks=2, conf_bias=0.0, disc_ch=32, disc_layers=3,
                  disc_scales=2),
    # GPU: wider and deeper at 1/4.
    "full": dict(ch1=16, ch2=32, ch4=64, key_ch=32, blocks=6, conf_bias=0.0, disc_ch=64, disc_layers=4,
                 disc_scales=3),
}


def config(name_or_dict) -> dict:
    if isinstance(name_or_dict, dict):
        base = dict(CONFIGS["small"])
        base.update(name_or_dict)
        return base
    if name_or_dict not in CONFIGS:
        raise ValueError(f"unknown network config {name_or_dict!r} (choose {', '.join(CONFIGS)})")
    return dict(CONFIGS[name_or_dict])


@dataclass
class RefinerInputs:
    key: torch.Tensor
    key_mesh: torch.Tensor
    grid: torch.Tensor
    visible: torch.Tensor
    body: torch.Tensor
    weight: torch.Tensor
    mesh: torch.Tensor
    hole: torch.Tensor | None = None      # B x H x W bool: background disocclusion (Motion.hole)
    base: torch.Tensor | None = None      # B x 3 x H x W: the analytic decoder's frame (holes filled, references fused)
    refseen: torch.Tensor | None = None   # B x H x W bool: pixels another reference filled

    def to(self, device) -> "RefinerInputs":
        return RefinerInputs(*(None if getattr(self, f) is None else getattr(self, f).to(device)
                               for f in self.__dataclass_fields__))


# ----------------------------------------------------------------------------- helpers

def act(x):
    return Fn.leaky_relu(x, 0.2)


def warp_px(image: torch.Tensor, grid: torch.Tensor, key_hw: tuple[int, int]) -> torch.Tensor:
    """Backward-warp ``image`` (1|B x C x h x w, a possibly down-scaled whole key frame of size key_hw)
    with ``grid`` (B x H x W x 2) in *full-resolution key pixels*; bilinear, borders replicated."""
    Hk, Wk = key_hw
    scale = torch.tensor([2.0 / Wk, 2.0 / Hk], device=grid.device, dtype=grid.dtype)
    g = (grid * scale - 1.0).to(image.dtype)
    if image.shape[0] != grid.shape[0]:
        image = image.expand(grid.shape[0], -1, -1, -1)
    return Fn.grid_sample(image, g, mode="bilinear", padding_mode="border", align_corners=False)


def pool(x: torch.Tensor, s: int) -> torch.Tensor:
    return Fn.avg_pool2d(x, s) if s > 1 else x


def grid_down(grid: torch.Tensor, s: int) -> torch.Tensor:
    """B x H x W x 2 -> B x H/s x W/s x 2 (the mean of a block of pixel centres is the block's centre)."""
    if s == 1:
        return grid
    return Fn.avg_pool2d(grid.permute(0, 3, 1, 2), s).permute(0, 2, 3, 1)


def part_onehot(mesh: torch.Tensor, s: int) -> torch.Tensor:
    """The part id of a B x 6 x H x W mesh image at each s x s block's centre, one-hot: B x N_PARTS x H/s x W/s."""
    part = mesh[:, 5, s // 2::s, s // 2::s].round().long()
    return Fn.one_hot((part + 1).clamp(0, N_PARTS), N_PARTS + 1).permute(0, 3, 1, 2)[:, 1:].to(mesh.dtype)


def conv(cin, cout, k=3, stride=1, zero=False):
    c = nn.Conv2d(cin, cout, k, stride, k // 2)
    if zero:
        nn.init.zeros_(c.weight)
        nn.init.zeros_(c.bias)
    return c


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.c1 = conv(ch, ch)
        self.c2 = conv(ch, ch)

    def forward(self, x):
        return x + self.c2(act(self.c1(act(x))))


def guide(inp: RefinerInputs, base: torch.Tensor) -> torch.Tensor:
    """The full-resolution evidence of where the analytic frame may be wrong: B x N_GUIDE x H x W."""
    f = lambda m: (torch.zeros_like(inp.visible) if m is None else m)[:, None].to(base.dtype)  # noqa: E731
    return torch.cat([base / 127.5 - 1.0, f(inp.visible), f(inp.body), f(inp.hole), f(inp.refseen),
                      inp.mesh[:, 1:5].to(base.dtype)], 1)


SUSPECT_BAND = 8                   # pixels either side of the body's outline (hair, clothes, torn limbs)


def suspect(inp: RefinerInputs, band: int = SUSPECT_BAND) -> torch.Tensor:
    """B x H x W bool: where the analytic warp can fail, the only pixels the network may change:
    background disocclusions, body pixels the own key did not see, and a band of ``band`` pixels
    either side of the body's outline (hair and clothes outside the body mesh, limbs torn by a bad
    fit). Everywhere else the warp of a surface the key saw (or the background moved by the camera
    group) is what the bitstream says, and the analytic pixel passes through."""
    body = inp.body[:, None].float()
    k = 2 * band + 1
    dilate = lambda x: Fn.max_pool2d(Fn.max_pool2d(x, (1, k), 1, (0, band)), (k, 1), 1, (band, 0))  # noqa: E731
    grown = dilate(body)                          # separable: a k x k square, 2k comparisons a pixel
    shrunk = -dilate(-body)
    out = (grown > shrunk)[:, 0] | (inp.body & ~inp.visible)
    if inp.hole is not None:
        out = out | inp.hole
    return out


# ----------------------------------------------------------------------------- the generator

class Generator(nn.Module):
    """Gated refiner: per-pixel confidence in the analytic frame, and what to draw where it is low.

    Most of the work runs at 1/4 resolution (the key picture's warped features, the part labels, the
    evidence pooled), a little at 1/2, and one small 3 x 3 layer at full resolution reads the evidence
    itself, so that the confidence follows the masks' edges pixel for pixel (CPU budget, CONFIGS)."""

    def __init__(self, cfg="small"):
        super().__init__()
        cfg = config(cfg)
        self.cfg = cfg
        c1, c2, c4, ck = cfg["ch1"], cfg["ch2"], cfg["ch4"], cfg["key_ch"]
        # key picture encoder at 1/4 (once per key picture), warped to the frame by the analytic flow
        self.k1 = conv(3, ck, stride=2)
        self.k2 = conv(ck, ck, stride=2)
        self.e2 = conv(N_GUIDE, c2)                        # on the evidence pooled to 1/2
        self.e4 = conv(c2, c4, stride=2)
        self.m4 = conv(c4 + ck + N_PARTS + N_GUIDE, c4, k=1)
        self.blocks = nn.ModuleList([ResBlock(c4) for _ in range(cfg["blocks"])])
        self.d2 = conv(c4 + c2, c2, k=1)
        self.d1 = conv(c2 + N_GUIDE, c1, k=1)
        self.head = conv(c1, 4)                            # 3 x residual RGB on base, 1 x confidence logit
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)                     # untrained: residual 0 (= analytic) ...
        with torch.no_grad():
            self.head.bias[3] = float(cfg["conf_bias"])     # ... and confident

    # -- per key picture ----------------------------------------------------------------------
    def encode_key(self, key: torch.Tensor, key_mesh: torch.Tensor | None = None) -> dict:
        """Everything that depends only on the key picture (cache it per key)."""
        x = key / 127.5 - 1.0
        return {"key": key, "key_hw": tuple(key.shape[-2:]), "k4": act(self.k2(act(self.k1(x))))}

    # -- per frame -----------------------------------------------------------------------------
    def forward(self, inp: RefinerInputs, key_ctx: dict | None = None):
        """(frame B x 3 x H x W float, aux dict: confidence, generated, base)."""
        ctx = key_ctx if key_ctx is not None else self.encode_key(inp.key)
        key_hw = ctx["key_hw"]
        B, H, W, _ = inp.grid.shape
        if H % 4 or W % 4:
            raise ValueError(f"the learned stage needs frame sides that are multiples of 4, got {W}x{H}")
        base = inp.base if inp.base is not None else warp_px(ctx["key"], inp.grid, key_hw)
        base = base.to(ctx["k4"].dtype)
        g = guide(inp, base)
        g2 = Fn.avg_pool2d(g, 2)
        h2 = act(self.e2(g2))
        h4 = act(self.e4(h2))
        kw = warp_px(ctx["k4"], grid_down(inp.grid, 4), key_hw)
        h4 = act(self.m4(torch.cat([h4, kw, part_onehot(inp.mesh, 4).to(h4.dtype), Fn.avg_pool2d(g2, 2)], 1)))
        for blk in self.blocks:
            h4 = blk(h4)
        u2 = Fn.interpolate(h4, size=h2.shape[-2:], mode="bilinear", align_corners=False)
        h2 = act(self.d2(torch.cat([u2, h2], 1)))
        u1 = Fn.interpolate(h2, size=(H, W), mode="bilinear", align_corners=False)
        out = self.head(act(self.d1(torch.cat([u1, g], 1))))
        change = 127.5 * out[:, :3]                       # generated = base + change
        conf = torch.sigmoid(out[:, 3:])
        keep = ~suspect(inp)[:, None]                     # where the warp cannot fail: analytic, always
        if inp.refseen is not None:                       # the decoder keeps the references' pixels
            keep = keep | inp.refseen[:, None]
        conf = torch.where(keep, torch.ones_like(conf), conf)
        if not self.training:
            conf = torch.where(conf >= PASS_THROUGH, torch.ones_like(conf), conf)
        rgb = base + (1.0 - conf) * change                # = conf * base + (1 - conf) * generated, exact where conf = 1
        return rgb, {"confidence": conf, "generated": base + change, "base": base}


# ----------------------------------------------------------------------------- discriminator

class PatchDiscriminator(nn.Module):
    def __init__(self, cin: int, ch: int, layers: int):
        super().__init__()
        mods = []
        c = cin
        for i in range(layers):
            co = ch * min(2 ** i, 8)
            mods.append(nn.Conv2d(c, co, 4, 2 if i < layers - 1 else 1, 1))
            c = co
        self.body = nn.ModuleList(mods)
        self.out = nn.Conv2d(c, 1, 4, 1, 1)

    def forward(self, x):
        feats = []
        for m in self.body:
            x = act(m(x))
            feats.append(x)
        return self.out(x), feats


class MultiScaleDiscriminator(nn.Module):
    """PatchGAN discriminators on the image (and the frame mesh image as condition) at several scales."""

    def __init__(self, cfg="small"):
        super().__init__()
        cfg = config(cfg)
        cin = 3 + 5
        self.nets = nn.ModuleList([PatchDiscriminator(cin, cfg["disc_ch"], cfg["disc_layers"])
                                   for _ in range(cfg["disc_scales"])])

    def forward(self, rgb: torch.Tensor, mesh: torch.Tensor):
        """rgb B x 3 x H x W (0..255), mesh B x 6 x H x W -> list of (logits, features) per scale."""
        x = torch.cat([rgb / 127.5 - 1.0, mesh[:, :5]], 1)
        outs = []
        for i, net in enumerate(self.nets):
            if i:
                x = Fn.avg_pool2d(x, 3, 2, 1, count_include_pad=False)
            outs.append(net(x))
        return outs


def n_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())
