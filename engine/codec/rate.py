"""Rate figures of a bitstream for the studio's bitstream panel (Qt-free).

    file_stats(bs)                      -> BitstreamStats   (the figures ``python main.py inspect --json`` prints)
    pending_change(bs, edited, stats)   -> SizeChange       (what saving the edited semantics would change)

The figures come from ``engine.cli.inspect.summarize`` itself, so the panel and
``inspect`` can never disagree. The size of pending edits is not estimated: the
semantics coder is adaptive (context counts follow the whole clip), so the only
exact answer is to code the edited semantics with the real container writer, in
memory, and count bytes. That costs about 25 ms per 1,000 frames.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from engine.codec import container
from engine.codec.bitstream import Bitstream

REFERENCE_FPS = 25.0      # inspect reports kbps at 25 fps too: the paper's rate tables use 25 fps


@dataclass(frozen=True)
class BitstreamStats:
    """A file's size and rate. Bits per frame count every byte of the file in one part."""
    frames: int
    fps: float
    bytes: int
    key_picture_bpf: float      # key-picture payloads
    semantics_bpf: float        # everything else: headers, checksums, key + per-frame semantics
    camera_bpf: float           # the coded camera group (part of semantics_bpf)
    total_bpf: float
    kbps_at_file_fps: float
    kbps_at_25fps: float

    @classmethod
    def from_summary(cls, info: dict) -> "BitstreamStats":
        b = info["bits_per_frame"]
        return cls(frames=info["frames"], fps=info["fps"], bytes=info["bytes"], key_picture_bpf=b["key_picture"],
                   semantics_bpf=b["semantics"], camera_bpf=b["camera"], total_bpf=b["total"],
                   kbps_at_file_fps=info["kbps_at_file_fps"], kbps_at_25fps=info["kbps_at_25fps"])


def with_sizes(bs: Bitstream) -> Bitstream:
    """``bs`` with its section sizes filled (a bitstream that was never read from a file has none).

    The sizes are what the writer produces: the bitstream is coded and parsed back in memory.
    """
    if bs.sizes:
        return bs
    return container.from_bytes(container.to_bytes(bs))


def file_stats(bs: Bitstream) -> BitstreamStats:
    from engine.cli.inspect import summarize      # inspect's own helper: identical figures by construction
    return BitstreamStats.from_summary(summarize(with_sizes(bs)))


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


def pending_change(bs: Bitstream, edited: np.ndarray, stats: BitstreamStats | None = None) -> SizeChange:
    """What writing ``edited`` (N, D) over ``bs`` would change in size, against the file's bytes.

    ``stats`` are ``file_stats(bs)`` when the caller has them (saves coding ``bs`` again).
    Raises engine.errors.InputError when the values cannot be coded (NaN, out of range).
    """
    stats = stats or file_stats(bs)
    return SizeChange(stats.bytes, encoded_bytes(bs, edited), stats.frames, stats.fps)
