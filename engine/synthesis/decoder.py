"""The IHVC decoder: bitstream -> frames, from the bitstream alone.

DESIGN.md "Data flow", decode: key picture + key semantics + per-frame
semantics -> body model -> meshes (key, frame) -> rasterize -> dense flow +
occlusion -> frame. This is the training-free analytic decoder (DESIGN.md:
"The analytic flow alone is a complete, training-free decoder"): the key
picture is backward-warped with the mesh-derived motion of engine/synthesis/motion.py.

Everything that depends only on the key frame (decoded key picture, key mesh,
its world-space vertices, its depth buffer, the key person masks) is computed
once per group of pictures and cached; a frame then costs one body-model
forward, one rasterization of the frame mesh, the flow and one ``grid_sample``
(plus background the person uncovered, ``Motion.hole``: from the other key pictures the frame
references where they saw it, filled smoothly elsewhere).

Speed (``python main.py bench --decode``, TED 384 x 384, Anny, 2 shared CPU
cores): about 27 frames/s per CPU core (36 ms CPU per frame, one thread);
45-60 frames/s with two threads on an idle machine, but on an oversubscribed
one two OpenMP threads stall badly, so ``decode --threads 1`` is the robust
choice there.

    dec = Decoder(bitstream, device="cpu")
    rgb = dec.decode_frame(12)                       # uint8 H x W x 3
    rgb = dec.decode_frame(12, semantics=edited)     # live preview of an edited (31|34,) vector
    video = dec.decode_all()                         # uint8 N x H x W x 3
    for i, rgb in dec.iter_frames(range(0, 50)): ... # streaming, batched
"""
from __future__ import annotations

import bisect
import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field, fields
from functools import cached_property
from typing import Callable, Iterable, Iterator

import numpy as np
import torch

from engine.codec.bitstream import BODY_MODEL_NAMES, Bitstream, GroupOfPictures
from engine.synthesis.camera import project, to_world
from engine.errors import IHVCError, InputError
from engine.synthesis.device import resolve_device
from engine.synthesis.motion import (BACKGROUND_MARGIN, Motion, ReferenceSample, analytic_frame, analytic_motion,
                                     background_sample, compose_cameras, fill_unseen_body, fuse_references, hole_of,
                                     invented, invert_camera, key_forward, key_surface, outline_distance,
                                     person_margin, person_mask, reference_sample, unseen_interior)
from engine.synthesis.raster import Raster, rasterize
from engine.codec.semantics import FrameSemantics


# Nearness in time of another reference key: 1 / (1 + |frame - key frame| / scale); at 10 frames a key
# 10 frames away counts half as much as one in the same frame (other things equal).
REFERENCE_TIME_SCALE = 10.0
# The other references fill only the inside of what the frame's own key did not see: that region eroded by
# this fraction of the frame size (2 px at 384). Its thin slivers along occlusion boundaries (an arm's edge
# over the torso) are where the fits of two keys disagree by a pixel or two: another key's texture there
# drew dark seams down a dancer's forearm, and the own key's sample (what covered the point in that key,
# the neighbouring surface) is closer. Default encodes of eight clips decoded again: PSNR, SSIM and VMAF up
# on all eight (up to +0.11 dB), MS-SSIM on six (docs/BENCHMARKS.md, "Thin unseen slivers").
UNSEEN_EROSION = 0.005


# Frames per CPU batch: as many as make this many pixels. ``python main.py bench --decode``-like runs
# of a 100-frame ted_e file at 384 x 384, 2 threads, idle machine: batch 1 5.69 s and 534 MB peak,
# 4: 4.46 s and 605 MB, 8: 4.29 s and 722 MB; at 128 x 128, 1: 2.14 s, 8: 1.36 s (the per-op
# overhead of small frames is shared by the batch). Frames do not depend on their batch mates.
CPU_BATCH_PIXELS = 4 * 384 * 384


@dataclass
class KeyState:
    """Per-GOP cache: what depends only on the key frame.

    image: 1 x 3 x H x W float (0..255) decoded key picture; rgb: H x W x 3 uint8 (the same);
    world: 1 x V x 3 key vertices in world space; depth: 1 x H x W key depth buffer;
    trans/loc/focal: 1 x 3, 1 x 4, 1 x 2 key camera; betas: 1 x K or None; tol: visibility tolerance;
    person: 1 x 2 x H x W float, the key mesh's coverage dilated and eroded (engine.synthesis.motion.person_mask).
    surface: the key mesh's surface points on a coarse grid (engine.synthesis.motion.key_surface).
    """
    rgb: np.ndarray
    image: torch.Tensor
    world: torch.Tensor
    depth: torch.Tensor
    trans: torch.Tensor
    loc: torch.Tensor
    focal: torch.Tensor
    betas: torch.Tensor | None
    tol: float
    person: torch.Tensor | None = None
    surface: tuple | None = None
    cache_id: tuple | None = field(default=None, repr=False, compare=False)   # its DecodeCache key, if any
    _mesh_of: object = field(default=None, repr=False, compare=False)    # () -> key mesh image, from the decoder

    @cached_property
    def mesh(self) -> torch.Tensor:
        """1 x 6 x H x W mesh image of the key frame (engine.synthesis.mesh_image), computed on first use."""
        return self._mesh_of()

    @cached_property
    def person_distance(self) -> torch.Tensor | None:
        """1 x H x W distance from the key's person (``person`` channel 0, motion.outline_distance): what
        analytic_motion's band rule reads for every batch of the group's frames; None without ``person``."""
        if self.person is None:
            return None
        return outline_distance(self.person[:, 0] > 0.5, max(self.person.shape[-2:]))


@dataclass
class FrameAnalysis:
    """The per-frame work before synthesis (:meth:`Decoder.analyse`), for a batch of B frames of one GOP.

    The refiner (engine.synthesis.refiner) and training (engine.training.dataset) take it as it is,
    so their inputs are the decoder's own.
    """
    key: KeyState
    raster: Raster                  # the frame meshes rasterized
    vertices: torch.Tensor          # B x V x 3 body-frame vertices
    rot: torch.Tensor               # B x 3
    trans: torch.Tensor             # B x 3
    motion: Motion                  # backward map to the key picture, visibility, holes
    references: list[ReferenceSample] = field(default_factory=list)   # other keys, where the own one did not see
    background: list[ReferenceSample] = field(default_factory=list)   # other keys' background at the disocclusions
    _mesh_of: object = field(default=None, repr=False, compare=False)

    @cached_property
    def world(self) -> torch.Tensor:
        """B x V x 3 world-space vertices."""
        return to_world(self.vertices, self.rot, self.trans)

    @cached_property
    def mesh(self) -> torch.Tensor:
        """B x 6 x H x W mesh image of the frames (engine.synthesis.mesh_image), computed on first use."""
        return self._mesh_of(self)


class DecodeCache:
    """Work shared between decoders of bitstreams that differ only in where their key pictures are (the
    key search of engine.analysis.keys builds a fresh bitstream and decoder for every placement it tries).

    ``keys``: key-frame states, by key frame, key semantics and key-picture bytes (not with ``pictures``:
    they are not read); ``frames``: per frame, its body mesh, its rasterization and its motion towards
    its own key, by that key and the frame's semantics. Both are exactly what the decoder would compute again, so a decoder with a cache decodes
    bit-identical frames. Share one only between decoders of the same clip, size and body model whose
    ``pictures`` (if any) give the same picture for the same key frame. Least recently used entries go
    first (``max_keys``, ``max_frames``).
    """

    def __init__(self, max_keys: int = 64, max_frames: int = 256):
        self.keys: OrderedDict = OrderedDict()
        self.frames: OrderedDict = OrderedDict()
        self.max_keys, self.max_frames = max_keys, max_frames
        self.faces = None               # the faces as wound for the first key mesh (Decoder.faces_oriented)
        self.hits = self.misses = 0

    def get(self, table: OrderedDict, key):
        v = table.get(key)
        if v is None:
            self.misses += 1
        else:
            self.hits += 1
            table.move_to_end(key)
        return v

    def put(self, table: OrderedDict, key, value, limit: int):
        table[key] = value
        while len(table) > limit:
            table.popitem(last=False)


def _batch_row(work: tuple, n: int) -> tuple:
    """Frame ``n`` of a batch's (raster, vertices, rot, trans, motion), as a batch of one (copied, so
    that a cached frame does not hold its batch mates' memory)."""
    def one(x):
        if x is None:
            return None
        if torch.is_tensor(x):
            return x[n:n + 1].clone()
        return type(x)(**{f.name: one(getattr(x, f.name)) for f in fields(x)})
    return tuple(one(x) for x in work)


def _batch_cat(parts: list[tuple]) -> tuple:
    """Frames of :func:`_batch_row` joined into one batch again."""
    def cat(xs):
        if xs[0] is None:
            return None
        if torch.is_tensor(xs[0]):
            return torch.cat(xs)
        return type(xs[0])(**{f.name: cat([getattr(x, f.name) for x in xs]) for f in fields(xs[0])})
    return tuple(cat(list(xs)) for xs in zip(*parts))


def _oriented_faces(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """Faces wound so that the mesh's signed volume is positive (outward normals, counter-clockwise)."""
    v = vertices[faces]                                                       # F x 3 x 3
    vol = torch.einsum("fi,fi->f", v[:, 0], torch.cross(v[:, 1], v[:, 2], dim=-1)).sum()
    return faces if float(vol) >= 0 else faces[:, [0, 2, 1]].contiguous()


class Decoder:
    """Decode frames of an IHVC :class:`~engine.codec.bitstream.Bitstream`.

    bitstream:  the Bitstream (engine.codec.container.read gives one)
    device:     "cpu", "cuda" or None (CUDA when available)
    body_model: an object with ``.faces`` (F x 3) and ``.forward(body_pose B x 21 x 3, betas B x K | None)``
                returning ``.vertices`` B x V x 3 (engine.synthesis.body's BodyModel); default: loaded
                from the model id the bitstream records
    cull_backfaces: rasterize front faces only (about 40 % faster; needs a closed body mesh)
    batch:      frames per batch in :meth:`iter_frames` (default 8 on CUDA; on the CPU as many as make
                CPU_BATCH_PIXELS, 1 to 8: 4 at 384 x 384, 8 for drafts)
    refiner:    optional learned refiner (engine.synthesis.refiner.LearnedRefiner or any object with
                ``refine_decoder(FrameAnalysis) -> B x 3 x H x W``) used
                instead of the plain analytic warp; None = the training-free analytic decoder
    fill_disocclusions: background that the person hid in the key frame (``Motion.hole``) is taken from
                the other key pictures the frame references where they saw it (camera group applied), else
                filled smoothly from the surrounding background, instead of showing the key frame's person
    pictures:   optional ``pictures(gop) -> H x W x 3 uint8``, the key pictures as already decoded (the
                encoder scores key placements with its own frames, before coding any); default: decoded
                from the bitstream
    size:       output (H, W); None = the coded size. A smaller size decodes a draft (the studio's
                preview while a slider is dragged, :meth:`scaled`): the key picture is downscaled once
                per GOP and the mesh is rasterized at the small size; the camera maps normalised
                boxes, so the semantics need no change
    cache:      a :class:`DecodeCache` shared with other decoders of the same clip (same frames, faster)
    """

    # decode_frame(..., with_invented=True) says which pixels no key picture saw (the studio's
    # "Invented pixels" compare mode asks decoders for it only when they say they can).
    tells_invented = True

    def __init__(self, bitstream: Bitstream, device=None, body_model=None, cull_backfaces: bool = True,
                 batch: int | None = None, cache_gops: int = 4, refiner=None, fill_disocclusions: bool = True,
                 size: tuple[int, int] | None = None, pictures: Callable | None = None,
                 cache: DecodeCache | None = None):
        self.bs = bitstream
        self.device = resolve_device(device)
        self.dtype = torch.float32
        if body_model is None:
            name = BODY_MODEL_NAMES.get(bitstream.body_model)
            if name is None or name == "synthetic":
                raise IHVCError(f"bitstream uses body model #{bitstream.body_model}, which this decoder cannot load")
            from engine.synthesis.body import load_body_model
            body_model = load_body_model(name, device=self.device)
        self.body = body_model
        faces = torch.as_tensor(np.asarray(body_model.faces), dtype=torch.int64, device=self.device)
        self.faces = faces
        self._faces_oriented = None         # set from the first key mesh (faces_oriented)
        self._face_parts = None
        self.cull = cull_backfaces
        self._cache: OrderedDict[int, KeyState] = OrderedDict()
        self._segments: OrderedDict[int, list] = OrderedDict()   # chained files: decoded chain segments
        self._lock = threading.RLock()
        self._cache_size = max(1, cache_gops, int(getattr(bitstream, "max_refs", 1)) + 2)
        self.width, self.height = int(bitstream.width), int(bitstream.height)
        if size is not None:
            self.height, self.width = max(1, int(size[0])), max(1, int(size[1]))
        self.batch = max(1, int(batch)) if batch is not None else (
            8 if self.device.type == "cuda" else max(1, min(8, CPU_BATCH_PIXELS // (self.height * self.width))))
        self.refiner = refiner
        self.pictures = pictures
        self.fill_disocclusions = fill_disocclusions
        self.shared = cache

    def scaled(self, max_side: int) -> "Decoder":
        """A decoder of the same bitstream whose frames fit in ``max_side`` x ``max_side`` px.

        For fast drafts (the studio's preview while a slider moves). It shares this decoder's body
        model and device, and is analytic: a learned refiner is trained at the coded size.
        """
        s = min(1.0, float(max_side) / max(self.bs.width, self.bs.height))
        size = (max(1, round(self.bs.height * s)), max(1, round(self.bs.width * s)))
        return Decoder(self.bs, device=self.device, body_model=self.body, cull_backfaces=self.cull,
                       batch=self.batch, cache_gops=self._cache_size, fill_disocclusions=self.fill_disocclusions,
                       size=size)

    # -- body model -----------------------------------------------------------------------
    @property
    def faces_oriented(self) -> torch.Tensor:
        """F x 3 faces wound outwards (counter-clockwise seen from outside), as rasterized."""
        if self._faces_oriented is None:
            verts = self._vertices(np.zeros((1, 21, 3)), None)
            self._faces_oriented = _oriented_faces(verts[0], self.faces)
        return self._faces_oriented

    @property
    def face_parts(self) -> torch.Tensor:
        """F body-part ids (engine.synthesis.mesh_image.face_parts) for the mesh images."""
        if self._face_parts is None:
            from engine.synthesis.mesh_image import face_parts
            try:
                labels = self.body.part_labels()
            except (NotImplementedError, AttributeError):
                labels = np.zeros(int(self.faces.max()) + 1, np.int64)
            self._face_parts = face_parts(labels, self.faces_oriented)
        return self._face_parts

    def _key_mesh(self, st: KeyState) -> torch.Tensor:
        from engine.synthesis.mesh_image import key_mesh_image
        with torch.no_grad():
            return key_mesh_image(st, self.faces_oriented, self.face_parts, self.height, self.width, self.cull)

    def _frame_mesh(self, fa: FrameAnalysis) -> torch.Tensor:
        from engine.synthesis.mesh_image import mesh_image
        with torch.no_grad():
            return mesh_image(fa.raster, fa.world, self.faces_oriented, self.face_parts, fa.trans[:, 2])

    def _vertices(self, body_pose: np.ndarray, betas: torch.Tensor | None) -> torch.Tensor:
        """body_pose B x 21 x 3 -> vertices B x V x 3 (body frame)."""
        pose = torch.as_tensor(np.asarray(body_pose), dtype=self.dtype, device=self.device)
        b = betas[:1] if betas is not None else None
        vs = []
        # One frame at a time: a batched forward rounds the last bit of a frame's vertices differently
        # with different batch mates, which flips silhouette pixels and, through the body-motion
        # weight, the warp around them (11 to 217 pixels of a sample frame changed with its batch).
        # A frame must decode the same whichever frames share its batch (decode_all, one frame in the
        # studio, the encoder's scoring); one row at a time costs no more (8 x 1: 60 ms, 8 at once: 93).
        with torch.no_grad():
            for i in range(pose.shape[0]):
                out = self.body.forward(pose[i:i + 1], b)
                vs.append(out.vertices if hasattr(out, "vertices") else out[0])
        return torch.as_tensor(torch.cat(vs), dtype=self.dtype, device=self.device)

    # -- per-GOP state --------------------------------------------------------------------
    def key_state(self, gop: GroupOfPictures) -> KeyState:
        """The cached key-frame state of a GOP (computed on first use; thread-safe)."""
        with self._lock:
            st = self._cache.get(gop.start)
            if st is not None:
                self._cache.move_to_end(gop.start)
                return st
            return self._key_state(gop)

    def _key_id(self, gop: GroupOfPictures) -> tuple:
        """What a key state depends on (the :class:`DecodeCache` key)."""
        k = gop.key
        arr = lambda a: None if a is None else np.asarray(a, float).tobytes()  # noqa: E731
        # With ``pictures`` the payload is never read (the key search's placeholders differ by key QP). A
        # chained picture depends on every payload of its chain segment up to its own.
        picture = None
        if self.pictures is None:
            picture = gop.key_picture.payload
            if self.bs.chained:
                i = self._group_index(gop)
                seg = self._segment_of(i)
                picture = hashlib.sha256(b"".join(
                    g.key_picture.payload for g in self.bs.gops[seg.start:i + 1])).digest()
        return (gop.key_frame, self.height, self.width, self.cull, self.fill_disocclusions, arr(k.body_pose),
                arr(k.betas), arr(k.rot), arr(k.trans), arr(k.loc), arr(k.focal), self.bs.chained, picture)

    def _key_state(self, gop: GroupOfPictures) -> KeyState:
        if self.shared is not None:
            kid = self._key_id(gop)
            st = self.shared.get(self.shared.keys, kid)
            if st is None:
                st = self._new_key_state(gop)
                st.cache_id = kid
                self.shared.put(self.shared.keys, kid, st, self.shared.max_keys)
            if self.shared.faces is None:
                self.shared.faces = self._faces_oriented
            if self._faces_oriented is None:                  # the winding of the first key the cache saw
                self._faces_oriented = self.shared.faces
        else:
            st = self._new_key_state(gop)
        self._cache[gop.start] = st
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)
        return st

    @cached_property
    def _chain_segments(self) -> list[range]:
        from engine.codec.keypicture import chain_segments
        return chain_segments([g.key_picture for g in self.bs.gops])

    def _segment_of(self, i: int) -> range:
        """The chain segment key ``i`` of a chained bitstream belongs to."""
        segs = self._chain_segments
        return segs[bisect.bisect_right([s.start for s in segs], i) - 1]

    def _chained_picture(self, i: int) -> np.ndarray:
        """Key picture ``i`` of a chained bitstream: its chain segment is decoded whole (decoding one needs
        those before it; 2.7 to 3.4 ms a 384 x 384 picture, ted_c's 17 keys at QP 45 and 37) and the last two segments decoded are kept."""
        from engine.codec.keypicture import decode_key_chain
        seg = self._segment_of(i)
        if seg.start not in self._segments:
            self._segments[seg.start] = decode_key_chain([g.key_picture for g in self.bs.gops[seg.start:seg.stop]])
            while len(self._segments) > 2:
                self._segments.popitem(last=False)
        self._segments.move_to_end(seg.start)
        return self._segments[seg.start][i - seg.start]

    def _picture(self, gop: GroupOfPictures) -> np.ndarray:
        """The group's decoded key picture (``pictures``' if given)."""
        from engine.codec.keypicture import decode_key_picture
        if self.pictures is not None:
            return np.asarray(self.pictures(gop))
        if self.bs.chained:
            return self._chained_picture(self._group_index(gop))
        return decode_key_picture(gop.key_picture)

    def _new_key_state(self, gop: GroupOfPictures) -> KeyState:
        rgb = self._picture(gop)
        if rgb.shape[:2] != (self.bs.height, self.bs.width):
            raise IHVCError(f"key picture of frame {gop.key_frame} is {rgb.shape[1]}x{rgb.shape[0]}, "
                            f"the bitstream says {self.bs.width}x{self.bs.height}")
        if rgb.shape[:2] != (self.height, self.width):
            # Area averaging: the draft's key picture is what the full decode would show, blurred.
            small = torch.nn.functional.interpolate(
                torch.as_tensor(rgb).permute(2, 0, 1)[None].float(), size=(self.height, self.width), mode="area")
            rgb = small[0].permute(1, 2, 0).round().clamp(0, 255).to(torch.uint8).numpy()
        key = gop.key
        t = lambda a: torch.as_tensor(np.asarray(a, float), dtype=self.dtype, device=self.device)[None]  # noqa: E731
        betas = None
        if key.betas is not None and np.asarray(key.betas).size:
            betas = t(key.betas)
        verts = self._vertices(np.asarray(key.body_pose, float)[None], betas)
        if self._faces_oriented is None:
            self._faces_oriented = _oriented_faces(verts[0], self.faces)
        rot, trans, loc, focal = t(key.rot), t(key.trans), t(key.loc), t(key.focal)
        world = to_world(verts, rot, trans)
        xy, d = project(verts, rot, trans, loc, focal, self.width, self.height)
        r = rasterize(xy, d, self._faces_oriented, self.height, self.width, cull_backfaces=self.cull)
        ext = (verts[0].max(0).values - verts[0].min(0).values).norm()
        image = torch.as_tensor(rgb, device=self.device).permute(2, 0, 1)[None].to(self.dtype)
        st = KeyState(rgb=rgb, image=image, world=world, depth=r.depth, trans=trans, loc=loc, focal=focal,
                      betas=betas, tol=float(0.015 * ext), person=person_mask(r.mask),
                      surface=key_surface(r))
        st._mesh_of = lambda: self._key_mesh(st)
        return st

    # -- frames ---------------------------------------------------------------------------
    def _check_semantics(self, semantics) -> np.ndarray:
        a = np.asarray(semantics, dtype=float)
        if a.shape not in ((31,), (34,)) or not np.all(np.isfinite(a)):
            raise InputError(f"semantics must be 31 or 34 finite values, got shape {a.shape}")
        return a

    def analyse(self, gop: GroupOfPictures, rows: np.ndarray, frames=None) -> FrameAnalysis:
        """The per-frame work before synthesis, for rows (B x D semantics of frames of one GOP);
        ``frames``: their indices in the clip (for the other references' nearness in time; default: the key's).
        Training (engine/training/dataset.py) uses exactly this, so its inputs cannot drift."""
        st = self.key_state(gop)
        shared = self.shared if self.shared is not None and st.cache_id is not None else None
        if shared is None:
            r, verts, rot, trans, mo = self._frame_work(st, gop, rows)
        else:
            # One cache entry per frame, so that a frame is found whatever batch it came in before.
            fids = [(st.cache_id, np.ascontiguousarray(row, float).tobytes()) for row in rows]
            parts = [shared.get(shared.frames, f) for f in fids]
            miss = [i for i, p in enumerate(parts) if p is None]
            if miss:
                work = self._frame_work(st, gop, rows[miss])
                for n, i in enumerate(miss):
                    parts[i] = _batch_row(work, n)
                    shared.put(shared.frames, fids[i], parts[i], shared.max_frames)
            r, verts, rot, trans, mo = parts[0] if len(parts) == 1 else _batch_cat(parts)
        with torch.no_grad():
            at = frames if frames is not None else [gop.key_frame] * rows.shape[0]
            refs = self._references(gop, r, mo, at)
            back = self._background(gop, r, mo, rows, at)
        return FrameAnalysis(key=st, raster=r, vertices=verts, rot=rot, trans=trans, motion=mo,
                             references=refs, background=back, _mesh_of=self._frame_mesh)

    def _frame_work(self, st: KeyState, gop: GroupOfPictures, rows: np.ndarray) -> tuple:
        """What a batch of frames needs from its own key alone: (raster, vertices, rot, trans, motion)."""
        B = rows.shape[0]
        sems = [gop.key.with_frame(FrameSemantics.from_array(r)) for r in rows]
        t = lambda a: torch.as_tensor(np.asarray(a, float), dtype=self.dtype, device=self.device)  # noqa: E731
        rot = t(np.stack([s.rot for s in sems]))
        trans = t(np.stack([s.trans for s in sems]))
        loc = t(np.stack([s.loc for s in sems]))
        camera = t(rows[:, 31:34]) if rows.shape[1] == 34 else None
        with torch.no_grad():
            verts = self._vertices(np.stack([s.body_pose for s in sems]), st.betas)
            xy, d = project(verts, rot, trans, loc, st.focal.expand(B, 2), self.width, self.height)
            r = rasterize(xy, d, self._faces_oriented, self.height, self.width, cull_backfaces=self.cull)
            fill = self.fill_disocclusions
            mo = analytic_motion(r, self._faces_oriented, st.world, st.trans, st.loc, st.focal, st.depth,
                                 camera=camera, tol=st.tol, key_mask=st.person if fill else None,
                                 key_distance=st.person_distance if fill else None,
                                 key_forward=key_forward(st.surface, self._faces_oriented, xy)
                                 if fill and st.surface is not None else None)
        return r, verts, rot, trans, mo

    @property
    def _unseen_radius(self) -> int:
        """UNSEEN_EROSION in pixels of this decoder's frames."""
        return max(1, round(UNSEEN_EROSION * max(self.height, self.width)))

    def _references(self, gop: GroupOfPictures, r: Raster, mo: Motion, frames) -> list[ReferenceSample]:
        """Samples of the other key pictures the GOP's frames may draw from (DESIGN.md "Decoder" step 1),
        at the body pixels the frame's own key did not see, but for thin slivers (UNSEEN_EROSION); []
        when there are none (the single-key decoder, unchanged)."""
        if not gop.refs:
            return []
        unseen = unseen_interior(r.mask & ~mo.visible, self._unseen_radius).reshape(-1).nonzero().squeeze(1)
        if unseen.numel() == 0:
            return []
        t = torch.as_tensor(np.asarray(frames, float), dtype=self.dtype, device=self.device)
        out = []
        for g in (self.bs.gops[k] for k in gop.refs):
            k = self.key_state(g)
            near = 1.0 / (1.0 + (t - g.key_frame).abs() / REFERENCE_TIME_SCALE)
            out.append(reference_sample(r, self.faces_oriented, k.world, k.trans, k.loc, k.focal, k.depth, k.tol,
                                        k.image, near, unseen))
        return out

    def _background(self, gop: GroupOfPictures, r: Raster, mo: Motion, rows: np.ndarray,
                    frames) -> list[ReferenceSample]:
        """Samples of the other key pictures the GOP's frames may draw from at the background the frame's
        own key did not show (``Motion.hole``: where its person stood; not within BACKGROUND_MARGIN of the
        frame's mesh, where the real person often still is), each through the camera map from that key
        to the frame (DESIGN.md "Decoder" step 1: "off the body the background is the union of what the
        keys saw behind the person, moved by the camera group"); [] when there are none."""
        if not gop.refs:
            return []
        hole = hole_of(mo)
        if hole is None:
            return []
        B, H, W = hole.shape
        hole = hole & ~person_margin(r.mask, BACKGROUND_MARGIN)
        idx = hole.reshape(-1).nonzero().squeeze(1)
        if idx.numel() == 0:
            return []
        t = torch.as_tensor(np.asarray(frames, float), dtype=self.dtype, device=self.device)
        me = self._group_index(gop) if self.bs.has_camera else None
        out = []
        for j in gop.refs:
            g = self.bs.gops[j]
            k = self.key_state(g)
            camera = None
            if me is not None:
                # key j -> this group's key -> each frame (the frame's row is relative to its own key)
                to_key = self.key_camera(j, me)
                camera = torch.as_tensor(np.array([compose_cameras(to_key, row[31:34]) for row in rows]),
                                         dtype=self.dtype, device=self.device)
            near = 1.0 / (1.0 + (t - g.key_frame).abs() / REFERENCE_TIME_SCALE)
            out.append(background_sample((B, H, W), idx, camera, k.image, k.person, near))
        return out

    def _group_index(self, gop: GroupOfPictures) -> int:
        for i, g in enumerate(self.bs.gops):
            if g is gop:
                return i
        return next(i for i, g in enumerate(self.bs.gops) if g.start == gop.start)

    @cached_property
    def _key_cameras(self) -> list[tuple[float, float, float]]:
        """Per group, the camera map from the first group's key to its key, composed group by group.

        The bitstream codes each group's camera rows relative to the group's own key, so from key g to key
        g + 1 the map goes through the frames where they meet: key g -> its last frame b (group g's row),
        b -> b + 1 taken as no motion (one frame of camera motion, the approximation), b + 1 -> key g + 1
        (the inverse of group g + 1's first row)."""
        out = [(0.0, 0.0, 0.0)]
        for a, b in zip(self.bs.gops, self.bs.gops[1:]):
            step = compose_cameras(a.frames[-1, 31:34], invert_camera(b.frames[0, 31:34]))
            out.append(compose_cameras(out[-1], step))
        return out

    def key_camera(self, src: int, dst: int) -> tuple[float, float, float]:
        """The camera map from group ``src``'s key picture to group ``dst``'s (bitstreams with the camera
        group; see ``_key_cameras`` for how it is read from the groups' rows)."""
        cams = self._key_cameras
        return compose_cameras(invert_camera(cams[src]), cams[dst])

    def _synthesize(self, gop: GroupOfPictures, rows: np.ndarray, frames) -> np.ndarray:
        """rows: B x D semantics of frames ``frames`` of one GOP -> B x H x W x 3 uint8."""
        return self.render(self.analyse(gop, rows, frames))

    def render(self, fa: FrameAnalysis) -> np.ndarray:
        """The frames of an :meth:`analyse` result, B x H x W x 3 uint8 (for callers that also
        need the analysis itself, e.g. ``bench --regions``)."""
        with torch.no_grad():
            if self.refiner is not None:
                out = self.refiner.refine_decoder(fa)
            else:
                out = analytic_frame(fa.key.image, fa.motion, fa.background)
            out = fuse_references(out, fa.references)
            if self.refiner is None:
                out = fill_unseen_body(out, fa.motion, fa.references, self._unseen_radius)
            out = out.round_().clamp_(0, 255).to(torch.uint8).permute(0, 2, 3, 1)
        return out.cpu().numpy()

    def decode_frame(self, index: int, semantics: np.ndarray | None = None, with_invented: bool = False):
        """Frame ``index`` as uint8 H x W x 3.

        semantics: optional (31,) or (34,) flat vector replacing the frame's coded semantics
        (the studio's live preview of an edit); the frame's GOP still provides the key.
        with_invented: return (frame, H x W bool) instead, the pixels drawn where no key picture saw
        what is there (engine.synthesis.motion.invented; none on a key frame shown as coded).
        """
        try:
            gop, j = self.bs.gop_of(int(index))
        except IndexError as exc:
            raise InputError(str(exc)) from None
        row = gop.frames[j] if semantics is None else self._check_semantics(semantics)
        if j == gop.key_offset and self.bs.is_key_row(gop, row):
            rgb = self.key_state(gop).rgb.copy()
            return (rgb, np.zeros(rgb.shape[:2], bool)) if with_invented else rgb
        if not with_invented:
            return self._synthesize(gop, row[None], [int(index)])[0]
        fa = self.analyse(gop, row[None], [int(index)])
        with torch.no_grad():
            guess = invented(fa.motion, fa.background, fa.references)[0].cpu().numpy()
        return self.render(fa)[0], guess

    def iter_frames(self, frames: Iterable[int] | None = None) -> Iterator[tuple[int, np.ndarray]]:
        """Yield (index, uint8 H x W x 3) for the chosen frames (default: all), batched per GOP."""
        idx = list(range(self.bs.n_frames)) if frames is None else [int(i) for i in frames]
        for i in idx:
            if not 0 <= i < self.bs.n_frames:
                raise InputError(f"frame {i} out of range 0..{self.bs.n_frames - 1}")
        k = 0
        while k < len(idx):
            gop, j = self.bs.gop_of(idx[k])
            # A key frame is the key picture as coded, unless an edit moved it (Bitstream.is_key_row):
            # then it is drawn with the group's other frames.
            as_coded = self.bs.is_key_row(gop, gop.frames[gop.key_offset])
            if as_coded and j == gop.key_offset:
                yield idx[k], self.key_state(gop).rgb.copy()
                k += 1
                continue
            chunk = [idx[k]]
            while (k + len(chunk) < len(idx) and len(chunk) < self.batch
                   and gop.start <= idx[k + len(chunk)] < gop.start + gop.n_frames
                   and not (as_coded and idx[k + len(chunk)] == gop.key_frame)):
                chunk.append(idx[k + len(chunk)])
            rows = np.stack([gop.frames[i - gop.start] for i in chunk])
            for i, rgb in zip(chunk, self._synthesize(gop, rows, chunk)):
                yield i, rgb
            k += len(chunk)

    def decode_all(self, frames: Iterable[int] | None = None,
                   progress: Callable[[int, int], None] | None = None) -> np.ndarray:
        """Decode the chosen frames (default: all) into uint8 N x H x W x 3.

        progress(done, total) is called after every frame.
        """
        idx = list(range(self.bs.n_frames)) if frames is None else [int(i) for i in frames]
        out = np.empty((len(idx), self.height, self.width, 3), np.uint8)
        for n, (_, rgb) in enumerate(self.iter_frames(idx)):
            out[n] = rgb
            if progress is not None:
                progress(n + 1, len(idx))
        return out


def open_decoder(bitstream: Bitstream, device=None, analytic: bool = False, checkpoint=None,
                 body_model_path=None, say: Callable[[str], None] | None = None) -> Decoder:
    """The decoder a user gets: the learned path when a checkpoint is there, else the analytic one.

    analytic:   force the training-free analytic path
    checkpoint: a generator .safetensors (default: the shipped assets/generator.safetensors)
    body_model_path: folder of licensed SMPL-X files, for bitstreams coded with SMPL-X
    say:        called with one line whenever the learned path is not used although it was not
                refused (missing, corrupt or mismatched checkpoint): the fallback is never silent.
                The line is also kept in ``decoder.note`` ("" when the learned path runs).
    """
    body = None
    name = BODY_MODEL_NAMES.get(bitstream.body_model)
    if body_model_path is not None or name == "smplx":
        from engine.synthesis.body import body_model_for_id
        body = body_model_for_id(bitstream.body_model, body_model_path, str(resolve_device(device)))
    refiner, note = None, ""
    if not analytic:
        from engine.synthesis.refiner import DEFAULT_CHECKPOINT, load_refiner
        try:
            refiner = load_refiner(checkpoint, device=device, body_model=name)
            if refiner is None:
                note = f"no learned weights ({DEFAULT_CHECKPOINT.name} not shipped): analytic decoder"
        except IHVCError as exc:
            if checkpoint is not None:
                raise                       # the user named this file: failing to use it is an error
            note = f"learned decoder unavailable ({exc}): analytic decoder"
    dec = Decoder(bitstream, device=device, body_model=body, refiner=refiner)
    dec.note = note
    if note and say is not None:
        say(note)
    return dec
