"""Learned motion refinement and generator (DESIGN.md "Decoder", steps 2 and 3; paper eqs. 3-5).

Everything here works in *frame* coordinates and refines the analytic decoder
(engine/synthesis/motion.py), so that an untrained network reproduces it exactly:

* :class:`MotionNet` (eqs. 3-4), at 1/4 resolution: from the key picture and the
  key mesh image (both warped to the frame by the analytic flow), the frame mesh
  image (normals, body-centred depth, part labels), the analytic flow and its
  occlusion, it predicts a flow *correction* (zero-initialised head) and an
  occlusion map whose logit starts at the analytic visibility.
* :class:`Generator` (eq. 5): a key-picture encoder (computed once per key
  frame, :meth:`Generator.encode_key`), backward warping of the key features
  with the refined flow, occlusion weighting of the warped features, and a
  SPADE decoder conditioned on the frame mesh image that also fills occluded
  regions. Its output is a residual on the key picture warped with the refined
  flow; the residual head is zero-initialised.
* :class:`MultiScaleDiscriminator`: PatchGAN discriminators at several scales,
  returning their intermediate features for the feature-matching loss.

SPADE here is normalisation-free (``x * (1 + gamma(mesh)) + beta(mesh)``):
training runs on crops and decoding on whole frames, and crop statistics would
differ from frame statistics under instance or batch normalisation.

Tensor conventions (``RefinerInputs``):
  key      1|B x 3 x Hk x Wk   key picture, float 0..255 (whole key frame)
  key_mesh 1|B x 6 x Hk x Wk   key mesh image (see MESH_CHANNELS)
  grid     B x H x W x 2       analytic backward map, key-frame pixel coords (x, y) (engine.synthesis.motion)
  visible, body  B x H x W     bool; weight B x H x W float (engine.synthesis.motion.Motion)
  mesh     B x 6 x H x W       frame mesh image
  hole     B x H x W bool      optional: background the person hid in the key (filled analytically)
  base     B x 3 x H x W       optional with hole: the analytic decoder's frame, holes filled (0..255)
H x W may be a crop of the frame (offsets multiples of 8); ``grid`` still points into the whole key.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as Fn

N_PARTS = 22                       # engine.synthesis.body.JOINT_NAMES
# Mesh image channels: covered mask, normal x/y/z (world = camera axes), depth relative to the
# body's distance (body-model units), part id (0..21, -1 off the body).
MESH_CHANNELS = ("mask", "nx", "ny", "nz", "depth", "part")
MESH_FEATURES = 5 + N_PARTS        # after one-hot expansion of the part id

CONFIGS = {
    # CPU budget: ~0.5 M parameters, >= 4 fps at 384 x 384 on this 2-core CPU with the analytic part.
    "small": dict(motion_ch=32, motion_blocks=1, deep_blocks=2, gen_ch=(16, 32), gen_blocks=1, spade_hidden=16,
                  spade_half=False, flow_scale=8.0, occ_prior=4.0, disc_ch=32, disc_layers=3, disc_scales=2,
                  blend=True),
    # GPU: wider, SPADE at 1/2 resolution too.
    "full": dict(motion_ch=64, motion_blocks=3, deep_blocks=3, gen_ch=(32, 64), gen_blocks=3, spade_hidden=64,
                 spade_half=True, flow_scale=8.0, occ_prior=4.0, disc_ch=64, disc_layers=4, disc_scales=3,
                 blend=True),
}


def config(name_or_dict) -> dict:
    if isinstance(name_or_dict, dict):
        base = dict(CONFIGS["small"])
        base.update(name_or_dict)
        base["gen_ch"] = tuple(int(c) for c in base["gen_ch"])     # JSON gives lists
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
    hole: torch.Tensor | None = None      # B x H x W bool: background disocclusion (engine.synthesis.motion.Motion.hole)
    base: torch.Tensor | None = None      # B x 3 x H x W: the analytic decoder's frame (holes filled)
    stats: torch.Tensor | None = None     # B x N_STATS whole-frame motion statistics (frame_stats); computed
                                          # from grid when None (so pass them when grid is a crop)

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


def mesh_features(mesh: torch.Tensor, s: int = 1) -> torch.Tensor:
    """Raw mesh image B x 6 x H x W -> B x MESH_FEATURES x H/s x W/s.

    Continuous channels are area-averaged; the part id is taken at each block's centre pixel and
    one-hot encoded at the low resolution (cheap: no full-resolution one-hot).
    """
    cont = pool(mesh[:, :5], s) * torch.tensor([1.0, 1.0, 1.0, 1.0, 4.0], device=mesh.device,
                                               dtype=mesh.dtype)[None, :, None, None]
    part = mesh[:, 5, s // 2::s, s // 2::s].round().long()
    onehot = Fn.one_hot((part + 1).clamp(0, N_PARTS), N_PARTS + 1).permute(0, 3, 1, 2)[:, 1:].to(mesh.dtype)
    return torch.cat([cont, onehot], 1)


N_STATS = 3


def frame_stats(grid: torch.Tensor, body: torch.Tensor, visible: torch.Tensor) -> torch.Tensor:
    """Whole-frame cues of how far the frame is from its key frame (how much to trust the analytic warp):
    mean flow magnitude on the body and overall (in 1/16 of the frame size), and the occluded share of the
    body. grid B x H x W x 2 (whole frame), body, visible B x H x W -> B x N_STATS."""
    from engine.synthesis.motion import identity_grid  # noqa: PLC0415
    B, H, W, _ = grid.shape
    mag = (grid - identity_grid(H, W, grid.device, grid.dtype)).norm(dim=-1) / (max(H, W) / 16.0)
    b = body.to(grid.dtype)
    nb = b.flatten(1).sum(1).clamp(min=1)
    on_body = (mag * b).flatten(1).sum(1) / nb
    occl = (b * (~visible).to(grid.dtype)).flatten(1).sum(1) / nb
    return torch.stack([on_body, mag.flatten(1).mean(1), occl], 1)


def conv(cin, cout, k=3, stride=1, zero=False):
    c = nn.Conv2d(cin, cout, k, stride, k // 2)
    if zero:
        nn.init.zeros_(c.weight)
        nn.init.zeros_(c.bias)
    return c


class SegEmbed(nn.Module):
    """The mesh image embedded once per resolution; every SPADE layer at that resolution reads it."""

    def __init__(self, seg_ch: int, hidden: int):
        super().__init__()
        self.conv = conv(seg_ch, hidden)

    def forward(self, seg, size):
        if seg.shape[-2:] != size:
            seg = Fn.interpolate(seg, size=size, mode="bilinear", align_corners=False)
        return act(self.conv(seg))


class SPADE(nn.Module):
    """Spatially-adaptive modulation by an embedded mesh image (normalisation-free, see the module
    docstring): ``x * (1 + gamma) + beta`` with gamma, beta from a 1 x 1 convolution (zero-initialised)."""

    def __init__(self, ch: int, hidden: int):
        super().__init__()
        self.gb = conv(hidden, 2 * ch, k=1, zero=True)

    def forward(self, x, emb):
        gamma, beta = self.gb(emb).chunk(2, 1)
        return x * (1 + gamma) + beta


class SPADEResBlock(nn.Module):
    def __init__(self, ch: int, hidden: int):
        super().__init__()
        self.n1 = SPADE(ch, hidden)
        self.c1 = conv(ch, ch)
        self.n2 = SPADE(ch, hidden)
        self.c2 = conv(ch, ch)

    def forward(self, x, emb):
        h = self.c1(act(self.n1(x, emb)))
        h = self.c2(act(self.n2(h, emb)))
        return x + h


class ResBlock(nn.Module):
    def __init__(self, ch: int):
        super().__init__()
        self.c1 = conv(ch, ch)
        self.c2 = conv(ch, ch)

    def forward(self, x, emb=None):
        return x + self.c2(act(self.c1(act(x))))


# ----------------------------------------------------------------------------- motion (eqs. 3-4)

class MotionNet(nn.Module):
    """Flow correction and occlusion at 1/4 resolution (paper eqs. 3-4, as a refinement).

    1/4 -> 1/8 -> 1/16 (a receptive field as large as the regions a moving speaker uncovers) and
    back, SPADE-modulated by the frame mesh image at every level.
    """

    scale = 4

    def __init__(self, cfg: dict):
        super().__init__()
        C = cfg["motion_ch"]
        hid = cfg["spade_hidden"]
        self.flow_scale = float(cfg["flow_scale"])
        self.occ_prior = float(cfg["occ_prior"])
        cin = 3 + MESH_FEATURES * 2 + 2 + 4 + N_STATS
        seg = MESH_FEATURES + 1
        self.emb4 = SegEmbed(seg, hid)
        self.emb8 = SegEmbed(seg, hid)
        self.emb16 = SegEmbed(seg, hid)
        self.inp = conv(cin, C, k=1)
        self.down = conv(C, 2 * C, stride=2)
        self.low = nn.ModuleList([SPADEResBlock(2 * C, hid) for _ in range(cfg["motion_blocks"])])
        self.down2 = conv(2 * C, 2 * C, stride=2)
        self.deep = nn.ModuleList([SPADEResBlock(2 * C, hid) for _ in range(cfg["deep_blocks"])])
        self.fuse2 = conv(4 * C, 2 * C, k=1)
        self.fuse = conv(3 * C, C, k=1)
        self.out_norm = SPADE(C, hid)
        self.out_conv = conv(C, C)
        self.flow_head = conv(C, 2, zero=True)
        self.occ_head = conv(C, 1, zero=True)
        self.out_ch = C

    def forward(self, key_lo, key_hw, inp: RefinerInputs, key_mesh_lo):
        s = self.scale
        grid4 = grid_down(inp.grid, s)
        B, h, w, _ = grid4.shape
        wk = warp_px(key_lo, grid4, key_hw) / 127.5 - 1.0
        fm = mesh_features(inp.mesh, s)
        km = warp_px(key_mesh_lo, grid4, key_hw)
        from engine.synthesis.motion import identity_grid  # noqa: PLC0415 (no Qt, light)
        ident = grid_down(identity_grid(inp.grid.shape[1], inp.grid.shape[2], inp.grid.device, inp.grid.dtype), s)
        flow = (grid4 - ident).permute(0, 3, 1, 2) / 32.0
        vis = pool(inp.visible[:, None].to(wk.dtype), s)
        body = pool(inp.body[:, None].to(wk.dtype), s)
        wgt = pool(inp.weight[:, None].to(wk.dtype), s)
        hole = pool(inp.hole[:, None].to(wk.dtype), s) if inp.hole is not None else torch.zeros_like(wgt)
        if inp.hole is not None and inp.base is not None:
            wk = torch.where(hole > 0.5, pool(inp.base, s) / 127.5 - 1.0, wk)
        stats = inp.stats if inp.stats is not None else frame_stats(inp.grid, inp.body, inp.visible)
        stats = stats.to(wk.dtype)[:, :, None, None].expand(-1, -1, h, w)
        seg = torch.cat([fm, vis], 1)
        e4 = self.emb4(seg, (h, w))
        x0 = act(self.inp(torch.cat([wk, fm, km, flow, vis, body, wgt, hole, stats], 1)))
        x1 = act(self.down(x0))
        e8 = self.emb8(Fn.avg_pool2d(seg, 2, ceil_mode=True), x1.shape[-2:])
        for blk in self.low:
            x1 = blk(x1, e8)
        x2 = act(self.down2(x1))
        e16 = self.emb16(Fn.avg_pool2d(seg, 4, ceil_mode=True), x2.shape[-2:])
        for blk in self.deep:
            x2 = blk(x2, e16)
        u2 = Fn.interpolate(x2, size=x1.shape[-2:], mode="bilinear", align_corners=False)
        x1 = act(self.fuse2(torch.cat([u2, x1], 1)))
        u = Fn.interpolate(x1, size=x0.shape[-2:], mode="bilinear", align_corners=False)
        x = act(self.fuse(torch.cat([u, x0], 1)))
        x = x + self.out_conv(act(self.out_norm(x, e4)))
        dflow = self.flow_head(x) * self.flow_scale                      # B x 2 x h x w, full-res pixels
        occ_logit = self.occ_head(x) + self.occ_prior * (2 * vis - 1)    # B x 1 x h x w
        return dflow, occ_logit, x, seg


# ----------------------------------------------------------------------------- generator (eq. 5)

class Generator(nn.Module):
    """Motion refinement + occlusion-aware generator. ``forward(inp) -> (rgb 0..255, aux)``."""

    def __init__(self, cfg="small"):
        super().__init__()
        cfg = config(cfg)
        self.cfg = cfg
        g0, g1 = cfg["gen_ch"]
        hid = cfg["spade_hidden"]
        self.motion = MotionNet(cfg)
        # key-picture encoder: 1/2 and 1/4 resolution features (once per key frame)
        self.e2a = conv(3, g0, stride=2)
        self.e2b = conv(g0, g0)
        self.e4a = conv(g0, g1, stride=2)
        self.e4b = conv(g1, g1)
        self.emb4 = SegEmbed(MESH_FEATURES + 1, hid)
        self.d4_in = conv(g1 + self.motion.out_ch, g1, k=1)
        self.d4 = nn.ModuleList([SPADEResBlock(g1, hid) for _ in range(cfg["gen_blocks"])])
        self.d2_in = conv(g1 + g0, g0, k=1)
        self.spade_half = bool(cfg["spade_half"])
        if self.spade_half:
            self.emb2 = SegEmbed(7, hid // 2)
            self.d2 = SPADEResBlock(g0, hid // 2)
        else:
            self.d2 = ResBlock(g0)
        # the residual is read from the decoder features only: given the warped picture itself, the head
        # learns a global contrast shrink towards grey (MSE-optimal on badly aligned frames) that costs
        # dB on the well-aligned ones
        self.rgb_head = conv(g0, 3, zero=True)
        # where the motion is uncertain, the MSE-best frame is a local average of the warped key picture:
        # a per-pixel blend towards its 1/4-resolution version (keeps the local mean colour, unlike a residual)
        self.blend_head = conv(g0, 1, zero=True)
        # a global "trust the analytic frame" gate from the whole-frame motion statistics: near the key
        # frame (little motion) the analytic warp is nearly exact and the network should change little
        # gate = sigmoid(slope * (log(body motion + 0.01) - log(knee))), initialised so that frames whose
        # body moved less than ~1/160 of the frame since the key get < 0.2 of the learned change
        self.gate_slope = nn.Parameter(torch.tensor(2.0))
        self.gate_knee = nn.Parameter(torch.tensor(math.log(0.1)))
        # False switches the blend off (config "blend": False trains without it)
        self.use_blend = bool(cfg["blend"])
        # how much of the learned blend is applied at inference (bench --learned sweeps it: PSNR against
        # sharpness); the output is linear in it
        self.blend_strength = 1.0

    # -- per key frame ----------------------------------------------------------------------
    def encode_key(self, key: torch.Tensor, key_mesh: torch.Tensor) -> dict:
        """Everything that depends only on the key frame (cache it per GOP)."""
        x = key / 127.5 - 1.0
        e2 = act(self.e2b(act(self.e2a(x))))
        e4 = act(self.e4b(act(self.e4a(e2))))
        return {"key": key, "key_hw": tuple(key.shape[-2:]), "e2": e2, "e4": e4,
                "key_lo": pool(key, MotionNet.scale), "key_mesh_lo": mesh_features(key_mesh, MotionNet.scale)}

    # -- per frame ---------------------------------------------------------------------------
    def forward(self, inp: RefinerInputs, key_ctx: dict | None = None):
        ctx = key_ctx if key_ctx is not None else self.encode_key(inp.key, inp.key_mesh)
        key_hw = ctx["key_hw"]
        B, H, W, _ = inp.grid.shape
        dflow4, occ_logit4, mfeat, seg4 = self.motion(ctx["key_lo"], key_hw, inp, ctx["key_mesh_lo"])
        dflow = Fn.interpolate(dflow4, size=(H, W), mode="bilinear", align_corners=False)
        grid = inp.grid + dflow.permute(0, 2, 3, 1)
        occ4 = torch.sigmoid(occ_logit4)
        g4 = grid_down(grid, 4)
        g2 = grid_down(grid, 2)
        w4 = warp_px(ctx["e4"], g4, key_hw) * occ4                                   # eq. 5
        occ2 = torch.sigmoid(Fn.interpolate(occ_logit4, size=g2.shape[1:3], mode="bilinear", align_corners=False))
        w2 = warp_px(ctx["e2"], g2, key_hw) * occ2
        h4 = act(self.d4_in(torch.cat([w4, mfeat], 1)))
        emb = self.emb4(torch.cat([seg4[:, :-1], occ4], 1), h4.shape[-2:])
        for blk in self.d4:
            h4 = blk(h4, emb)
        h2 = Fn.interpolate(h4, size=w2.shape[-2:], mode="bilinear", align_corners=False)
        h2 = act(self.d2_in(torch.cat([h2, w2], 1)))
        if self.spade_half:
            seg2 = torch.cat([pool(inp.mesh[:, :5], 2), pool(inp.visible[:, None].to(h2.dtype), 2), occ2], 1)
            h2 = self.d2(h2, self.emb2(seg2, h2.shape[-2:]))
        else:
            h2 = self.d2(h2)
        h1 = Fn.interpolate(h2, size=(H, W), mode="bilinear", align_corners=False)
        warped = warp_px(ctx["key"], grid, key_hw)
        if inp.hole is not None and inp.base is not None:      # the analytic fill of disocclusions
            warped = torch.where(inp.hole[:, None], inp.base.to(warped.dtype), warped)
        f1 = act(h1)
        stats = inp.stats if inp.stats is not None else frame_stats(inp.grid, inp.body, inp.visible)
        motion = torch.log(stats[:, :1].to(f1.dtype) + 0.01)
        gate = torch.sigmoid(self.gate_slope * (motion - self.gate_knee))[:, :, None, None]   # B x 1 x 1 x 1
        res = self.rgb_head(f1) * gate
        if self.use_blend and self.blend_strength > 0:
            beta = self.blend_head(f1).clamp(0, 1) * gate * self.blend_strength
        else:
            beta = torch.zeros_like(res[:, :1])
        if H % 4 == 0 and W % 4 == 0:
            smooth = Fn.interpolate(Fn.avg_pool2d(warped, 4), size=(H, W), mode="bilinear", align_corners=False)
        else:
            smooth = warped
        rgb = warped + beta * (smooth - warped) + 127.5 * res
        return rgb, {"grid": grid, "occlusion": occ4, "warped": warped, "dflow": dflow4, "residual": res,
                     "blend": beta, "gate": gate}


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
