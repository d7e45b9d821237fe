"""Write a bitstream and prove it: read the written file back, decode it, compare (Qt-free).

    save_verified(bs, path, expected_semantics, expected_key_payloads) -> SavedFile
        code -> write a temporary file beside ``path`` -> verify_written(temporary) -> rename onto ``path``
    verify_written(path, expected_semantics, expected_key_payloads) -> Bitstream   (raises VerifyError)

Verifying the temporary file *before* the rename means a failed check never
replaces the previous file: the user keeps the last good copy and the error says
so. What is checked: the file parses (framing, checksums, entropy decoding), its
per-frame semantics equal the expected values exactly (both are integers times
the quantization step, so equality is exact, not approximate), and every
key-picture payload is byte-identical to the source's (editing never re-codes
pixels; DESIGN.md "edit").

The read-back goes through the operating system's page cache, so this catches
a faulty writer, a full disk, a truncated or damaged write, not a disk that
corrupts data later.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from engine.codec import container
from engine.codec.bitstream import Bitstream
from engine.errors import IHVCError
from engine.fileio import atomic_path


class VerifyError(IHVCError):
    """The written file does not read back as what was meant to be written (one line)."""


@dataclass(frozen=True)
class SavedFile:
    path: Path
    frames: int
    bytes: int
    bitstream: Bitstream        # as read back from the file (section sizes filled)

    @property
    def message(self) -> str:
        return f"Saved and verified: {self.frames} frames, {self.bytes} bytes"


def write_file(path: Path, data: bytes) -> None:
    """The one step that puts bytes on disk (kept separate so tests can damage what it wrote)."""
    Path(path).write_bytes(data)


def structure_of(bs: Bitstream) -> tuple:
    """What an edit must never change besides the key pictures: the references, key positions and whether
    the key pictures are one chain (their bytes decode only as one)."""
    return bs.max_refs, [(g.key_offset, g.refs) for g in bs.gops], bs.chained


def verify_written(path, expected_semantics: np.ndarray, expected_key_payloads,
                   expected_structure: tuple | None = None) -> Bitstream:
    """Read ``path`` back and compare it with what was meant to be written.

    expected_semantics: (N, D) on the quantization grid; expected_key_payloads: one ``bytes``
    per group of pictures, in order; expected_structure: :func:`structure_of` the source (optional).
    Returns the Bitstream read back; raises VerifyError.
    """
    try:
        bs = container.read(path)
    except IHVCError as exc:
        raise VerifyError(f"the written file does not read back: {exc}") from None
    expected = np.asarray(expected_semantics, float)
    got = bs.semantics()
    if got.shape != expected.shape:
        raise VerifyError(f"the written file holds {got.shape[0]} frames x {got.shape[1]} semantics, "
                          f"expected {expected.shape[0]} x {expected.shape[1]}")
    if not np.array_equal(got, expected):
        f, d = np.argwhere(got != expected)[0]
        raise VerifyError(f"the written file reads back {bs.names[d]} = {got[f, d]:.6g} at frame {f}, "
                          f"expected {expected[f, d]:.6g}")
    payloads = list(expected_key_payloads)
    if len(payloads) != len(bs.gops):
        raise VerifyError(f"the written file holds {len(bs.gops)} key pictures, expected {len(payloads)}")
    for g, want in zip(bs.gops, payloads):
        if g.key_picture.payload != bytes(want):
            raise VerifyError(f"the key picture at frame {g.key_frame} differs from the source's "
                              f"({len(g.key_picture.payload)} bytes, source {len(want)})")
    if expected_structure is not None and structure_of(bs) != expected_structure:
        raise VerifyError("the written file's reference structure (key positions, references) differs from the source's")
    return bs


def save_verified(bs: Bitstream, path, expected_semantics: np.ndarray | None = None,
                  expected_key_payloads=None) -> SavedFile:
    """Write ``bs`` to ``path`` atomically and verify it before it replaces anything.

    The expectations default to ``bs``'s own semantics and key pictures; the studio passes the
    document's edited values and the *source* file's payloads, so a writer that altered either
    is caught. On VerifyError the temporary file is removed and ``path`` is untouched.
    """
    path = Path(path)
    expected = bs.semantics() if expected_semantics is None else expected_semantics
    payloads = [g.key_picture.payload for g in bs.gops] if expected_key_payloads is None else expected_key_payloads
    data = container.to_bytes(bs)
    with atomic_path(path) as tmp:
        write_file(tmp, data)
        try:
            back = verify_written(tmp, expected, payloads, structure_of(bs))
        except VerifyError as exc:
            raise VerifyError(f"{exc}; {path.name} was not replaced") from None
        size = tmp.stat().st_size
    return SavedFile(path, back.n_frames, size, back)
