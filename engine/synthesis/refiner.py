"""Decoder-side entry of the learned motion refinement and generator (DESIGN.md "Decoder", steps 2-3).

The analytic decoder (engine/synthesis/decoder.py) computes, per frame, the frame-mesh raster
and the analytic motion (engine/synthesis/motion.py). The learned refiner takes those, the
decoded key picture and the mesh images of key and frame, and returns the frame:

    refiner = load_refiner()            # assets/generator.{safetensors,json}; None when not shipped
    ...
    # in Decoder.render, instead of ``out = analytic_frame(st.image, mo)`` (engine.synthesis.motion):
    out = refiner.refine_decoder(self, st, r, verts, rot, trans, mo)   # B x 3 x H x W float 0..255

An untrained network reproduces ``warp(st.image, mo.grid)`` exactly (zero-initialised
heads); the shipped weights are only shipped when they beat the analytic decoder on
held-out clips (docs/BENCHMARKS.md, ``engine/benchmarks/learned.py``).

:func:`analyse` is the same computation for training (engine/training/dataset.py), so
that training inputs and decoding inputs cannot drift apart.
"""
from __future__ import annotations

from collections import OrderedDict
from pathlib import Path

import numpy as np
import torch

from engine.synthesis.camera import crop_to_frame, to_world, world_to_crop
from engine.errors import IHVCError
from engine.fileio import ASSETS
from engine.synthesis.networks import N_PARTS, Generator, RefinerInputs
from engine.synthesis.motion import analytic_frame, hole_of
from engine.synthesis.raster import Raster, rasterize

DEFAULT_CHECKPOINT = ASSETS / "generator.safetensors"


# ----------------------------------------------------------------------------- mesh images

def vertex_normals(world: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """B x V x 3 world vertices, F x 3 faces (outward, counter-clockwise) -> B x V x 3 unit normals."""
    v = world[:, faces]                                                   # B x F x 3 x 3
    fn = torch.cross(v[:, :, 1] - v[:, :, 0], v[:, :, 2] - v[:, :, 0], dim=-1)
    n = torch.zeros_like(world)
    n.index_add_(1, faces.reshape(-1), fn[:, :, None, :].expand(-1, -1, 3, -1).reshape(world.shape[0], -1, 3))
    return n / n.norm(dim=-1, keepdim=True).clamp(min=1e-12)


def face_parts(part_labels, faces: torch.Tensor) -> torch.Tensor:
    """Per-face part id (the label of the face's first vertex whose label two vertices share, else vertex 0)."""
    lab = torch.as_tensor(np.asarray(part_labels), dtype=torch.int64, device=faces.device)[faces]   # F x 3
    two = torch.where(lab[:, 1] == lab[:, 2], lab[:, 1], lab[:, 0])
    return two.clamp(0, N_PARTS - 1)


def mesh_image(raster: Raster, world: torch.Tensor, faces: torch.Tensor, fparts: torch.Tensor,
               body_z: torch.Tensor) -> torch.Tensor:
    """B x 6 x H x W mesh image (networks.MESH_CHANNELS): mask, normals, depth - body distance, part id.

    world: B x V x 3 world vertices (engine.synthesis.camera.to_world); body_z: B body distances (trans z).
    """
    mask = raster.mask
    nrm = raster.interpolate(vertex_normals(world, faces), faces)             # B x H x W x 3
    nrm = nrm / nrm.norm(dim=-1, keepdim=True).clamp(min=1e-6)
    depth = torch.where(mask, raster.depth - body_z.reshape(-1, 1, 1).to(raster.depth.dtype),
                        torch.zeros_like(raster.depth))
    part = torch.where(mask, fparts[raster.tri.clamp(min=0)], torch.full_like(raster.tri, -1))
    return torch.cat([mask[:, None].float(), nrm.permute(0, 3, 1, 2).float(), depth[:, None].float(),
                      part[:, None].float()], 1)


def key_mesh_image(dec, st, fparts: torch.Tensor) -> torch.Tensor:
    """1 x 6 x H x W mesh image of a GOP's key frame from the decoder's cached KeyState ``st``."""
    uv, d = world_to_crop(st.world, st.trans, st.focal)
    xy = crop_to_frame(uv, st.loc, dec.width, dec.height)
    faces = dec._faces_oriented
    r = rasterize(xy, d, faces, dec.height, dec.width, cull_backfaces=dec.cull)
    return mesh_image(r, st.world, faces, fparts, st.trans[:, 2])


# ----------------------------------------------------------------------------- the refiner

class LearnedRefiner:
    """A trained :class:`~engine.synthesis.networks.Generator` ready to decode (eval mode, no grad).

    meta: the checkpoint's JSON (config, code version, body model, training figures).
    """

    def __init__(self, net: Generator, meta: dict | None = None, device=None, cache_gops: int = 4):
        self.device = torch.device(device or "cpu")
        self.net = net.to(self.device).eval()
        for p in self.net.parameters():
            p.requires_grad_(False)
        self.meta = meta or {}
        self._keys: OrderedDict[int, tuple] = OrderedDict()
        self._cache_size = cache_gops
        self._fparts = None

    @property
    def body_model(self) -> str | None:
        return self.meta.get("body_model")

    def key_context(self, key_image: torch.Tensor, key_mesh: torch.Tensor) -> dict:
        """Per-key-frame features (key picture 1 x 3 x H x W float 0..255, key mesh image 1 x 6 x H x W)."""
        with torch.no_grad():
            return self.net.encode_key(key_image.to(self.device).float(), key_mesh.to(self.device).float())

    def refine(self, key_image: torch.Tensor, grid: torch.Tensor, visible: torch.Tensor, body: torch.Tensor,
               weight: torch.Tensor, mesh: torch.Tensor, key_mesh: torch.Tensor,
               key_ctx: dict | None = None, hole: torch.Tensor | None = None,
               base: torch.Tensor | None = None) -> torch.Tensor:
        """The frame(s), B x 3 x H x W float clamped to 0..255.

        key_image 1 x 3 x H x W (0..255); grid B x H x W x 2 analytic backward map (engine.synthesis.motion.Motion.grid);
        visible, body B x H x W bool; weight B x H x W (Motion fields); mesh B x 6 x H x W frame mesh image and
        key_mesh 1 x 6 x H x W key mesh image (:func:`mesh_image`); key_ctx: :meth:`key_context` to reuse;
        hole B x H x W bool (Motion.hole) with base B x 3 x H x W, the analytic frame with the holes filled.
        """
        d = self.device
        if hole is None or base is None:
            hole = base = None
        inp = RefinerInputs(key=key_image.to(d).float(), key_mesh=key_mesh.to(d).float(), grid=grid.to(d).float(),
                            visible=visible.to(d), body=body.to(d), weight=weight.to(d).float(), mesh=mesh.to(d).float(),
                            hole=None if hole is None else hole.to(d), base=None if base is None else base.to(d).float())
        with torch.no_grad():
            rgb, _ = self.net(inp, key_ctx)
        return rgb.clamp_(0, 255)

    # -- engine.synthesis.decoder integration ---------------------------------------------------------
    def _face_parts(self, dec) -> torch.Tensor:
        if self._fparts is None or self._fparts[0] is not dec:
            try:
                labels = dec.body.part_labels()
            except (NotImplementedError, AttributeError):
                labels = np.zeros(int(dec.faces.max()) + 1, np.int64)
            self._fparts = (dec, face_parts(labels, dec._faces_oriented))
        return self._fparts[1]

    def _key(self, dec, st) -> tuple[torch.Tensor, dict]:
        hit = self._keys.get(id(st))
        if hit is not None and hit[0] is st:
            self._keys.move_to_end(id(st))
            return hit[1], hit[2]
        km = key_mesh_image(dec, st, self._face_parts(dec))
        ctx = self.key_context(st.image, km)
        self._keys[id(st)] = (st, km, ctx)
        while len(self._keys) > self._cache_size:
            self._keys.popitem(last=False)
        return km, ctx

    def refine_decoder(self, dec, st, raster: Raster, verts: torch.Tensor, rot: torch.Tensor,
                       trans: torch.Tensor, mo) -> torch.Tensor:
        """Drop-in for ``warp(st.image, mo.grid)`` inside engine.synthesis.decoder.Decoder._synthesize.

        dec: the Decoder; st: its KeyState for the GOP; raster: the frame-mesh Raster (``r``); verts: B x V x 3
        body-frame vertices; rot, trans: B x 3; mo: engine.synthesis.motion.Motion. Returns B x 3 x H x W float 0..255.
        """
        if self.device != dec.device:
            self.net.to(dec.device)
            self.device = dec.device
            self._keys.clear()
        km, ctx = self._key(dec, st)
        fparts = self._face_parts(dec)
        with torch.no_grad():
            world = to_world(verts, rot, trans)
            mesh = mesh_image(raster, world, dec._faces_oriented, fparts, trans[:, 2])
            hole = hole_of(mo)
            base = analytic_frame(st.image, mo) if hole is not None else None
        return self.refine(st.image, mo.grid, mo.visible, mo.body, mo.weight, mesh, km, ctx, hole, base)


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
