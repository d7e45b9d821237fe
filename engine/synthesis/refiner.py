"""Decoder-side entry of the learned stage (DESIGN.md "Decoder", step 2; issue #15).

The analytic decoder (engine/synthesis/decoder.py) computes, per frame, a FrameAnalysis: the
frame-mesh raster, the analytic motion (engine/synthesis/motion.py), the other references' samples
and the mesh images. The learned refiner takes it and returns the frame:

    refiner = load_refiner()            # assets/generator.{safetensors,json}; None when not shipped
    out = refiner.refine_decoder(frame_analysis)   # B x 3 x H x W float 0..255

It builds the analytic frame exactly as the decoder does (own key's warp, disocclusions filled,
other references fused), and the network (engine.synthesis.networks.Generator) changes only the
pixels where it does not trust it; the rest pass through unchanged. An untrained network returns
the analytic frame exactly. The weights are shipped in assets/, but the studio and ``decode`` use the
analytic decoder unless asked (``--learned``): see README "Which decoder".

Training (engine/training/dataset.py) takes the same FrameAnalysis and the same helpers
(:func:`reference_seen`), so that training inputs and decoding inputs cannot drift apart.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import torch

from engine.errors import IHVCError
from engine.synthesis.device import resolve_device
from engine.fileio import ASSETS
from engine.synthesis.networks import Generator, RefinerInputs
from engine.synthesis.motion import analytic_frame, fuse_references, hole_of

DEFAULT_CHECKPOINT = ASSETS / "generator.safetensors"


def reference_seen(samples, shape) -> torch.Tensor:
    """B x H x W bool: the pixels that engine.synthesis.motion.fuse_references replaces (some other
    reference saw the surface point, weight > 0); shape = (B, H, W)."""
    B, H, W = shape
    seen = torch.zeros(B * H * W, dtype=torch.bool)
    for s in samples or []:
        seen = seen.to(s.idx.device)
        seen[s.idx[s.weight > 0]] = True
    return seen.reshape(B, H, W)


def analytic_base(fa):
    """What the learned stage starts from, for an engine.synthesis.decoder.FrameAnalysis: (the analytic frame
    as the decoder draws it, B x 3 x H x W float, the background other keys saw and the references fused;
    the disocclusions no key saw, B x H x W bool or None; the pixels another reference replaced, or None)."""
    mo = fa.motion
    shape = tuple(mo.visible.shape)
    with torch.no_grad():
        base = fuse_references(analytic_frame(fa.key.image, mo, fa.background), fa.references)
    refseen = reference_seen(fa.references, shape) if fa.references else None
    hole = hole_of(mo)
    if hole is not None and fa.background:
        hole = hole & ~reference_seen(fa.background, shape).to(hole.device)
    return base, hole, refseen


# ----------------------------------------------------------------------------- the refiner

class LearnedRefiner:
    """A trained :class:`~engine.synthesis.networks.Generator` ready to decode (eval mode, no grad).

    meta: the checkpoint's JSON (config, code version, body model, training figures).
    """

    def __init__(self, net: Generator, meta: dict | None = None, device=None, cache_gops: int = 4):
        self.device = resolve_device(device)
        self.net = net.to(self.device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.meta = meta or {}
        self._keys: OrderedDict[int, tuple] = OrderedDict()
        self._cache_size = cache_gops

    @property
    def body_model(self) -> str | None:
        return self.meta.get("body_model")

    def key_context(self, key_image: torch.Tensor, key_mesh: torch.Tensor | None = None) -> dict:
        """Per-key-picture features (key picture 1 x 3 x H x W float 0..255)."""
        with torch.no_grad():
            return self.net.encode_key(key_image.to(self.device).float())

    def refine(self, key_image: torch.Tensor, grid: torch.Tensor, visible: torch.Tensor, body: torch.Tensor,
               weight: torch.Tensor, mesh: torch.Tensor, key_mesh: torch.Tensor | None = None,
               key_ctx: dict | None = None, hole: torch.Tensor | None = None,
               base: torch.Tensor | None = None, refseen: torch.Tensor | None = None) -> torch.Tensor:
        """The frame(s), B x 3 x H x W float clamped to 0..255.

        key_image 1 x 3 x H x W (0..255); grid B x H x W x 2 analytic backward map (Motion.grid); visible, body
        B x H x W bool; weight B x H x W (Motion fields); mesh B x 6 x H x W frame mesh image; key_ctx:
        :meth:`key_context` to reuse; hole B x H x W bool (Motion.hole); base B x 3 x H x W the analytic
        frame (holes filled, references fused; None: the own key's warp); refseen B x H x W bool
        (:func:`reference_seen`).
        """
        d = self.device
        opt = lambda t, f=False: None if t is None else (t.to(d).float() if f else t.to(d))  # noqa: E731
        inp = RefinerInputs(key=key_image.to(d).float(), key_mesh=opt(key_mesh, True), grid=grid.to(d).float(),
                            visible=visible.to(d), body=body.to(d), weight=weight.to(d).float(),
                            mesh=mesh.to(d).float(), hole=opt(hole), base=opt(base, True), refseen=opt(refseen))
        with torch.no_grad():
            rgb, _ = self.net(inp, key_ctx)
        return rgb.clamp_(0, 255)

    # -- engine.synthesis.decoder integration ---------------------------------------------------------
    def _key(self, st) -> dict:
        hit = self._keys.get(id(st))
        if hit is not None and hit[0] is st:
            self._keys.move_to_end(id(st))
            return hit[1]
        ctx = self.key_context(st.image)
        self._keys[id(st)] = (st, ctx)
        while len(self._keys) > self._cache_size:
            self._keys.popitem(last=False)
        return ctx

    def refine_decoder(self, fa) -> torch.Tensor:
        """The frames of an engine.synthesis.decoder.FrameAnalysis, B x 3 x H x W float 0..255: the
        learned replacement of ``analytic_frame(key.image, motion)`` inside ``Decoder.render`` (which
        then fuses the references again: a no-op on what this returns, whose referenced pixels are
        the references' own)."""
        dev = fa.key.image.device
        if self.device != dev:
            self.net.to(dev)
            self.device = dev
            self._keys.clear()
        ctx = self._key(fa.key)
        mo = fa.motion
        # Only what no key saw of the background stays a hole for the network to regenerate.
        base, hole, refseen = analytic_base(fa)
        return self.refine(fa.key.image, mo.grid, mo.visible, mo.body, mo.weight, fa.mesh, None, ctx,
                           hole, base, refseen)


def load_refiner(path=None, device=None, body_model: str | None = None) -> LearnedRefiner | None:
    """Load a trained refiner.

    path: a ``.safetensors`` checkpoint with its ``.json`` beside it; None: the shipped
    assets/generator.safetensors, or None when the program ships none (the analytic decoder is used).
    body_model: the bitstream's body-model name; a checkpoint trained on another model raises IHVCError.
    Missing, corrupt or mismatched files raise :class:`~engine.errors.IHVCError` (one line).
    """
    from engine.synthesis.checkpoint import load_generator
    if path is None:
        if not DEFAULT_CHECKPOINT.exists() or not DEFAULT_CHECKPOINT.with_suffix(".json").exists():
            return None
        path = DEFAULT_CHECKPOINT
    net, meta = load_generator(path, device="cpu")
    if body_model is not None and meta.get("body_model") not in (None, body_model):
        raise IHVCError(f"generator {Path(path).name} was trained for body model {meta.get('body_model')!r}, "
                        f"the bitstream uses {body_model!r}")
    return LearnedRefiner(net, meta, device=device)
