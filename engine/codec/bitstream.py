"""The in-memory IHVC bitstream: what a .ihvc file holds, as dataclasses.

Serialisation lives in engine/codec/container.py (``to_bytes`` / ``from_bytes`` /
``read`` / ``write``); this module is the object every other part uses.

    Bitstream
      width, height, fps, quant, body_model, has_camera
      gops: [GroupOfPictures]
        start          index of the group's first frame in the clip
        key_offset     the key picture shows frame start + key_offset (0 in version 1)
        key_picture    KeyPicture (codec id, qp, size, payload bytes)
        key            KeySemantics (all 21 joints, shape, rot, trans, loc, focal)
        frames         float (n, D): per-frame semantics of the GOP's frames,
                       already on the quantization grid (row 0 is the key frame)
        refs           other groups whose key pictures the frames may draw from (version 2)
      max_refs         the most key pictures one frame draws from (1: its own key only)
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace
from fractions import Fraction

import numpy as np

from engine.codec.semantics import FrameSemantics, KeySemantics, QuantSpec, quantize, semantic_names, snap

# Fixed numeric ids: never renumber (old files must keep decoding).
CODEC_IDS = {"vvc": 1, "hevc": 2, "av1": 3}
CODEC_NAMES = {v: k for k, v in CODEC_IDS.items()}
BODY_MODEL_IDS = {"anny": 1, "smplx": 2, "synthetic": 255}
BODY_MODEL_NAMES = {v: k for k, v in BODY_MODEL_IDS.items()}


def reference_lists(n_keys: int, max_refs: int) -> list[tuple[int, ...]]:
    """Per key j, the other keys its frames draw from: the next key, then the previous ones nearest
    first, ``max_refs - 1`` in all. What the encoder sends, and what a version-3 file that lists no
    references means."""
    out = []
    for j in range(n_keys):
        cand = ([j + 1] if j + 1 < n_keys else []) + list(range(j - 1, -1, -1))
        out.append(tuple(cand[:max(0, max_refs - 1)]))
    return out


@dataclass
class KeyPicture:
    """An intra-coded picture: the bytes are opaque to everything but engine/codec/keypicture.py."""
    codec: int
    qp: int
    width: int
    height: int
    payload: bytes

    @property
    def codec_name(self) -> str:
        return CODEC_NAMES.get(self.codec, f"codec#{self.codec}")


@dataclass
class GroupOfPictures:
    start: int
    key_picture: KeyPicture
    key: KeySemantics
    frames: np.ndarray          # (n, D) float on the quantization grid
    refs: tuple[int, ...] = ()  # other groups (indices into Bitstream.gops) whose key pictures these frames
                                # may also draw from (format version 2); () = their own key only
    key_offset: int = 0         # the key picture shows frame start + key_offset (version 2: a key need not
                                # open its group; frames before and after it use it)

    @property
    def key_frame(self) -> int:
        return self.start + self.key_offset

    @property
    def n_frames(self) -> int:
        return int(self.frames.shape[0])


@dataclass
class Bitstream:
    width: int
    height: int
    fps: Fraction
    quant: QuantSpec
    body_model: int
    has_camera: bool
    gops: list[GroupOfPictures] = field(default_factory=list)
    max_refs: int = 1           # the most key pictures one frame draws from (format version 2 states it)
    # The key pictures are one chain (engine.codec.keypicture.encode_key_chain): each group's payload is one
    # access unit of a VVC stream, decoded after those of the groups before it (format version 3, a flag).
    chained: bool = False
    # Filled by container.from_bytes: section name -> byte size, for inspect.
    sizes: dict = field(default_factory=dict, compare=False, repr=False)
    # Filled by container.from_bytes: the format version the file was written in (0: never read).
    version: int = field(default=0, compare=False, repr=False)

    @property
    def n_frames(self) -> int:
        return sum(g.n_frames for g in self.gops)

    @property
    def dims(self) -> int:
        return 34 if self.has_camera else 31

    @property
    def names(self) -> tuple[str, ...]:
        return semantic_names(self.has_camera)

    @property
    def steps(self) -> np.ndarray:
        return self.quant.steps(self.has_camera)

    @property
    def key_frames(self) -> list[int]:
        return [g.key_frame for g in self.gops]

    def semantics(self) -> np.ndarray:
        """All per-frame semantics, (N, D)."""
        return np.concatenate([g.frames for g in self.gops], 0)

    def gop_of(self, frame: int) -> tuple[GroupOfPictures, int]:
        """The GOP holding ``frame`` and the frame's index inside it."""
        if not 0 <= frame < self.n_frames:
            raise IndexError(f"frame {frame} out of range 0..{self.n_frames - 1}")
        for g in self.gops:
            if frame < g.start + g.n_frames:
                return g, frame - g.start
        raise AssertionError("unreachable")

    def is_key_row(self, gop: GroupOfPictures, row: np.ndarray) -> bool:
        """Whether ``row`` (a frame's D values) is the key picture's own state: the key's body (its
        joints, rotation, translation and box) and no camera motion, on the quantization grid. The
        encoder writes every key frame so; an edit of a key frame changes it, and the frame is then
        drawn from its semantics like any other, not shown as the key picture (else the edited video
        jumps back to the original pose at every key frame)."""
        own = gop.key.frame(camera=self.has_camera).to_array()
        return np.shape(row) == own.shape and np.array_equal(quantize(row, self.steps), quantize(own, self.steps))

    def frame(self, i: int) -> FrameSemantics:
        g, j = self.gop_of(i)
        return FrameSemantics.from_array(g.frames[j])

    def with_semantics(self, values: np.ndarray) -> "Bitstream":
        """Rewrite primitive: same key pictures (the very same bytes objects), new per-frame semantics.

        values: (N, D) float; snapped to the quantization grid (what the file can carry).
        """
        values = np.asarray(values, float)
        if values.shape != (self.n_frames, self.dims):
            raise ValueError(f"semantics must have shape {(self.n_frames, self.dims)}, got {values.shape}")
        values = snap(values, self.steps)
        gops = [replace(g, frames=values[g.start:g.start + g.n_frames].copy()) for g in self.gops]
        return replace(self, gops=gops, sizes={})
