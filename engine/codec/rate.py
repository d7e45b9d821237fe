"""The one rate accounting: what every byte of a bitstream is spent on (Qt-free).

    rate_of(bs)                         -> Rate          (encode's summary, ``inspect`` and the studio's panel)
    summarize(bs)                       -> dict          (what ``python main.py inspect --json`` prints)
    pending_change(bs, edited, rate)    -> SizeChange    (what saving edited semantics would change)

Every byte of the file is counted in exactly one part: key-picture payloads (the intra
codec's bytes; what versions 3 and 4 store once for all of them count once), key semantics (KSEM, or
that part of a version-3 GRUP section; in version 4 the shapes in GRUP and the keys' part of the one
SEMS stream, split where the decoder stood), per-frame semantics (FSEM, likewise; split into the camera
group and the rest by the coder's ideal code length per dimension), and headers (magic,
sequence header, section framing and checksums, key-picture headers, end). The size of
pending edits is not estimated: the semantics coder is adaptive (context counts follow the
whole clip), so the only exact answer is to code the edited semantics with the real
container writer, in memory, and count bytes (about 25 ms per 1,000 frames).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.codec import container
from engine.codec.bitstream import Bitstream

REFERENCE_FPS = 25.0      # rates are also given at 25 fps: the paper's rate tables use 25 fps


def budget_bytes(kbps: float, n_frames: int) -> float:
    """The bytes ``n_frames`` may take at ``kbps`` (a rate at REFERENCE_FPS, as --rate gives it)."""
    return kbps * 1000.0 / 8.0 * n_frames / REFERENCE_FPS


@dataclass(frozen=True)
class Rate:
    """A bitstream's size and rate; the *_bpf parts are bits per frame and add up to ``total_bpf``."""
    frames: int
    fps: float
    bytes: int
    key_picture_bpf: float      # key-picture payloads
    key_semantics_bpf: float    # the key frames' semantics (KSEM)
    semantics_bpf: float        # coded per-frame semantics (FSEM) other than the camera group
    camera_bpf: float           # the camera group's share of FSEM
    header_bpf: float           # magic, sequence header, framing, checksums, key-picture headers
    per_group_bpf: dict         # coded per-frame semantics by group (pose, rot, trans, loc, camera)

    @property
    def total_bpf(self) -> float:
        return 8.0 * self.bytes / self.frames

    @property
    def side_bpf(self) -> float:
        """Everything but the key pictures: what the semantics cost with their headers."""
        return self.total_bpf - self.key_picture_bpf

    @property
    def kbps_at_file_fps(self) -> float:
        return self.total_bpf * self.fps / 1000.0

    @property
    def kbps_at_25fps(self) -> float:
        return self.total_bpf * REFERENCE_FPS / 1000.0

    def parts(self) -> dict:
        return {"key_picture": self.key_picture_bpf, "key_semantics": self.key_semantics_bpf,
                "semantics": self.semantics_bpf, "camera": self.camera_bpf, "header": self.header_bpf,
                "total": self.total_bpf}

    def rate_text(self) -> str:
        """The rate, once: at the file's frame rate, and at 25 fps only when that differs."""
        text = f"{self.kbps_at_file_fps:.2f} kbps at {self.fps:g} fps"
        if abs(self.fps - REFERENCE_FPS) > 1e-9:
            text += f" ({self.kbps_at_25fps:.2f} kbps at 25 fps)"
        return text


def with_sizes(bs: Bitstream) -> Bitstream:
    """``bs`` with its section sizes filled (a bitstream that was never read from a file has none).

    The sizes are what the writer produces: the bitstream is coded and parsed back in memory.
    """
    if bs.sizes:
        return bs
    return container.from_bytes(container.to_bytes(bs))


def rate_of(bs: Bitstream) -> Rate:
    """Where the bits of ``bs`` go (coded in memory first when it was never read from a file)."""
    bs = with_sizes(bs)
    n = bs.n_frames
    sizes = bs.sizes
    total = sum(sizes.values())
    key_payload = container.key_picture_bytes(bs)
    ksem = sizes.get("KSEM", 0)
    fsem_bits = 8.0 * sizes.get("FSEM", 0)
    groups = container.semantic_bits_by_group(bs)           # ideal code lengths, scaled to the real FSEM bits
    scale = fsem_bits / (sum(groups.values()) or 1.0)
    per_group = {k: v * scale / n for k, v in groups.items()}
    camera = per_group.get("camera", 0.0)
    return Rate(frames=n, fps=float(bs.fps), bytes=total, key_picture_bpf=8.0 * key_payload / n,
                key_semantics_bpf=8.0 * ksem / n, semantics_bpf=fsem_bits / n - camera, camera_bpf=camera,
                header_bpf=8.0 * (total - key_payload - ksem - sizes.get("FSEM", 0)) / n, per_group_bpf=per_group)


def summarize(bs: Bitstream) -> dict:
    """What ``inspect`` prints, as a dict (JSON-ready)."""
    bs = with_sizes(bs)
    r = rate_of(bs)
    return {
        "format_version": container.file_version(bs), "width": bs.width, "height": bs.height, "frames": r.frames,
        "fps": r.fps, "fps_rational": f"{bs.fps.numerator}/{bs.fps.denominator}",
        "body_model": container.body_model_name(bs), "camera_group": bs.has_camera,
        "key_frames": bs.key_frames,
        "quantization": dict(zip(("pose", "rot", "trans", "loc", "camera"), bs.quant.as_tuple())),
        "key_pictures": [{"frame": g.key_frame, "codec": g.key_picture.codec_name, "qp": g.key_picture.qp,
                          "bytes": len(g.key_picture.payload), "group": [g.start, g.start + g.n_frames - 1],
                          "references": [bs.gops[k].key_frame for k in g.refs]} for g in bs.gops],
        "max_references": bs.max_refs,
        "key_pictures_chained": bs.chained,
        "key_pictures_shared_bytes": len(container.shared_bytes(bs)),
        "sections": dict(bs.sizes), "bytes": r.bytes,
        "bits_per_frame": {**r.parts(), "per_group": r.per_group_bpf},
        "kbps_at_25fps": r.kbps_at_25fps, "kbps_at_file_fps": r.kbps_at_file_fps,
    }


def encoded_bytes(bs: Bitstream, semantics: np.ndarray | None = None) -> int:
    """Bytes the container writer produces for ``bs`` (with ``semantics`` (N, D) in place of its own)."""
    if semantics is not None:
        bs = bs.with_semantics(semantics)
    return len(container.to_bytes(bs))


@dataclass(frozen=True)
class SizeChange:
    """File size before and after the pending edits; kbps at the file's own frame rate."""
    bytes_before: int
    bytes_after: int
    frames: int
    fps: float

    @property
    def delta_bytes(self) -> int:
        return self.bytes_after - self.bytes_before

    @property
    def delta_kbps(self) -> float:
        return 8.0 * self.delta_bytes / max(self.frames, 1) * self.fps / 1000.0

    def text(self) -> str:
        """E.g. "+37 bytes (+0.4 kbps)"."""
        return f"{self.delta_bytes:+d} bytes ({self.delta_kbps:+.1f} kbps)"


def pending_change(bs: Bitstream, edited: np.ndarray, rate: Rate | None = None) -> SizeChange:
    """What writing ``edited`` (N, D) over ``bs`` would change in size, against the file's bytes.

    ``rate`` is ``rate_of(bs)`` when the caller has it (saves coding ``bs`` again).
    Raises engine.errors.InputError when the values cannot be coded (NaN, out of range).
    """
    rate = rate or rate_of(bs)
    return SizeChange(rate.bytes, encoded_bytes(bs, edited), rate.frames, rate.fps)
