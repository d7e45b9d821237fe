"""The .ihvc file format (versions 1 to 4): serialise and parse a Bitstream.

    file     = "IHVC" version:u8 section*
    section  = tag:4s length:u32 payload crc32(tag + payload):u32
    sections = SEQH, then per group of pictures KPIC KSEM FSEM (version 3: one GRUP), then END_;
               version 4: SEQH KEYS SEMS (SEMS is the last: no END_)

    SEQH  width:u16 height:u16 fps_num:u32 fps_den:u32 frames:u32 gops:u16
          body_model:u8 flags:u8 (bit 0: camera group present)
          steps: 5 x f64 (pose, rot, trans, loc, camera)   group_starts: gops x u32
          version 2 adds the reference structure:
          max_refs:u8 (key pictures one frame draws from at most, its own included), then per group
          key_offset:u32 (the key picture shows frame start + key_offset) n_refs:u8 refs:n_refs x u16
          (the other groups, by index = fixed id, whose key pictures the group's frames also use)
          version 3: flags bit 1, the steps are listed (else QuantSpec's defaults, not written);
          bit 2, each group lists n_refs and refs (else the standard lists, bitstream.reference_lists);
          bit 3, the key pictures are one chain: each group's payload is one access unit of a VVC
          stream, in group order, decoded after the groups' before it back to the last whose access
          unit holds a sequence parameter set (keypicture.encode_key_chain, chain_segments);
          after the reference structure shared_len:u16 shared:shared_len bytes (the bytes every key
          picture's payload begins with, stored once: the intra codec's parameter sets; none for one group)
          version 4: group_starts are gops - 1 varints (LEB128), each group's start less the one before's
          (the first starts at 0), and key_offset is a varint
    KPIC  codec:u8 qp:u8 width:u16 height:u16 payload (the intra codec's elementary stream)
    KSEM  n_betas:u8 betas:n_betas x f32 focal:2 x f32 coded:... (arithmetic-coded integers
          of body_pose 21x3, rot, trans, loc on the quantization grid, predicted from 0 in
          version 1, from the previous group's key in versions 2 and 3)
    FSEM  frames:u32 coded:... (residuals from the previously coded frame; the first coded
          frame is predicted from the key frame's own semantics. The key frame is coded first,
          then the frames after it, then those before it backwards from the key: coding_order)
    GRUP  (version 3, one per group, the three above in one section) codec:u8 qp:u8 n:u32
          payload:n bytes (without the shared bytes, which the reader puts back in front; the
          picture is the sequence's size)  shape:u8 (0: n_betas, betas and focal follow as in KSEM;
          1: the previous group's key's, never on the first group)  n_key:u16 key coded:n_key bytes
          (as KSEM's)  frames coded:... (as FSEM's, the group's frame count from SEQH)
    KEYS  (version 4) per group, in order: codec:u8 qp:u8 n:varint (LEB128, at most 4 bytes) payload:n bytes
          (as GRUP's) shape:u8 (as GRUP's, and betas and focal after a 0): one section framing and a
          2-byte length a group instead of a framing, a 4-byte length and two lengths and flushes
    SEMS  (version 4) one arithmetic-coded stream (entropy.StreamEncoder): per group in order, its key's
          row (as KSEM's) then its frames' rows (as FSEM's); the key rows' contexts carry from one group's
          key to the next, the frame rows' likewise, so that a group is coded with what the groups before
          it taught the model, not from even odds, and with one flush and no lengths for all of them

Version 3 stores once what every group repeated: about 120 bytes per group with VVC key pictures
(the parameter sets, the body shape, two section framings, the frame count, the standard reference
list) and 40 per file (the default steps). The writer writes version 4, whose one semantics stream
and one key-picture section make files with keys by content 4.2 to 7.9 % smaller than version 3 with
the same content (13 people, 100 frames each; docs/BENCHMARKS.md "Format version 4"). The reader reads
all four; ``to_bytes(bs, version=2)`` or ``version=3`` still writes those (tests read them back).

All integers are little-endian. Every length is checked against what is left
before anything is allocated, and every failure of a malformed file becomes
one BitstreamError naming the section and the byte offset.
"""
from __future__ import annotations

import os
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import numpy as np

from engine.codec.bitstream import BODY_MODEL_NAMES, CODEC_NAMES, Bitstream, GroupOfPictures, KeyPicture, reference_lists
from engine.codec.entropy import (MAX_VALUE, EntropyError, StreamDecoder,
                                  code_lengths, decode_residuals, encode_residuals, encode_stream, predict_residuals,
                                  reconstruct, stream_code_lengths)
from engine.errors import BitstreamError, InputError
from engine.fileio import atomic_write_bytes
from engine.codec.semantics import GROUPS, N_BODY_JOINTS, KeySemantics, QuantSpec, quantize

MAGIC = b"IHVC"
VERSION = 4                   # the newest this program writes and reads
VERSIONS = (1, 2, 3, 4)
MAX_REFS = 16
# Stated limits, checked by the reader before any decoding and by the writer before any
# writing (what one accepts the other writes). They bound the work a file can ask for:
# parsing costs about 75 us per frame (pure-Python arithmetic decoding), so MAX_FRAMES caps
# it near 7 s; decoding a frame costs memory and time in proportion to its pixels, and the
# encoder works at most at engine.codec.video.MAX_WORKING_SIZE (2048) a side.
MAX_FRAMES = 90_000          # one hour at 25 fps
MAX_GOPS = 65_535
MAX_SIDE = 2048
MAX_BETAS = 64
MAX_SHARED = 4096            # bytes of the key pictures' shared beginning (version 3)
# Version 3's sequence-header flags beyond bit 0 (the camera group): absent, the quantization steps are
# QuantSpec's defaults and the reference lists the standard ones (codec.bitstream.reference_lists).
FLAG_STEPS = 2
FLAG_REFS = 4
FLAG_CHAINED = 8
MAX_FILE = 1 << 31           # 2 GiB: anything larger is not an IHVC file
MAX_FPS_TERM = (1 << 31) - 1                     # numerator and denominator fit a signed 32-bit rational (FFmpeg's)
MIN_FPS, MAX_FPS = Fraction(1, 1000), Fraction(1000)
# Quantized semantics stay within +-MAX_INT so that any residual between two of them (or the
# first frame and its key-frame predictor) is below the entropy coder's MAX_VALUE.
MAX_INT = (MAX_VALUE >> 1) - 1
_KEY_DIMS = N_BODY_JOINTS * 3 + 3 + 3 + 4


def sequence_problem(width: int, height: int, num: int, den: int, n_frames: int, n_gops: int) -> str | None:
    """Why a sequence header (frame rate num/den) is out of this format's limits, or None.

    Shared by the reader and the writer. The frame rate is checked here, at parse, because
    every consumer (the muxers, the studio's clock) breaks on absurd rates."""
    if not (1 <= width <= MAX_SIDE and 1 <= height <= MAX_SIDE):
        return f"frame size {width}x{height} out of range (1 to {MAX_SIDE} a side)"
    if not (1 <= num <= MAX_FPS_TERM and 1 <= den <= MAX_FPS_TERM and MIN_FPS <= Fraction(num, den) <= MAX_FPS):
        return f"frame rate {num}/{den} out of range ({MIN_FPS} to {MAX_FPS} fps, terms below 2^31)"
    if not (1 <= n_frames <= MAX_FRAMES and 1 <= n_gops <= min(MAX_GOPS, n_frames)):
        return f"{n_frames} frames in {n_gops} groups is not a valid count (at most {MAX_FRAMES} frames)"
    return None


def _ints_problem(q: np.ndarray) -> str | None:
    if q.size and int(np.abs(q).max()) > MAX_INT:
        return f"a semantic value is {int(np.abs(q).max())} quantization steps from zero (at most {MAX_INT})"
    return None


# ---------------------------------------------------------------- writing

def _section(tag: bytes, payload: bytes) -> bytes:
    return tag + struct.pack("<I", len(payload)) + payload + struct.pack("<I", zlib.crc32(tag + payload))


def _key_steps(quant: QuantSpec) -> np.ndarray:
    return np.r_[np.full(N_BODY_JOINTS * 3, quant.pose), np.full(3, quant.rot),
                 np.full(3, quant.trans), np.full(4, quant.loc)]


def _key_ints(key: KeySemantics, quant: QuantSpec) -> np.ndarray:
    flat = np.r_[np.asarray(key.body_pose, float).reshape(-1), key.rot, key.trans, key.loc]
    return quantize(flat, _key_steps(quant))


def coding_order(n_frames: int, key_offset: int) -> np.ndarray:
    """The order a group's frames are coded in: from its key frame to the end, then from the key frame
    back to the first, so that every frame is predicted from a neighbour (version 2; a key opening its
    group gives 0, 1, 2, ... as in version 1)."""
    return np.r_[np.arange(key_offset, n_frames), np.arange(key_offset - 1, -1, -1)].astype(np.int64)


def _coded_residuals(q: np.ndarray, key_ints: np.ndarray, dims: int, key_offset: int) -> np.ndarray:
    """Residuals of a group's quantized frames (n x dims) in coding order; the key frame's row is
    predicted from the key's own semantics, the frames after it from the one before, the frames before
    it (coded last, backwards) from the one after. The backward part starts from the key frame."""
    order = coding_order(len(q), key_offset)
    res = predict_residuals(q[order], _first_prediction(key_ints, dims))
    if key_offset and key_offset < len(q):
        back = len(q) - key_offset                  # first backward row: predict from the key frame's row
        res[back] = q[order[back]] - q[key_offset]
    return res


def _uncoded(res: np.ndarray, key_ints: np.ndarray, dims: int, key_offset: int) -> np.ndarray:
    """Inverse of :func:`_coded_residuals`: quantized frames in display order."""
    n = len(res)
    order = coding_order(n, key_offset)
    fwd = reconstruct(res[:n - key_offset], _first_prediction(key_ints, dims))
    parts = [fwd]
    if key_offset:
        parts.append(reconstruct(res[n - key_offset:], fwd[0]))
    q = np.empty_like(res)
    q[order] = np.concatenate(parts, 0)
    return q


def _first_prediction(key_ints: np.ndarray, dims: int) -> np.ndarray:
    """The key frame's own per-frame semantics as integers: the first frame's predictor."""
    pred = np.zeros(dims, np.int64)
    # pose: joints 14..20 at pose step; rot/trans/loc at their own steps (same grids).
    pred[GROUPS["pose"]] = key_ints[14 * 3:N_BODY_JOINTS * 3]
    pred[GROUPS["rot"]] = key_ints[63:66]
    pred[GROUPS["trans"]] = key_ints[66:69]
    pred[GROUPS["loc"]] = key_ints[69:73]
    return pred


def to_bytes(bs: Bitstream, version: int | None = None) -> bytes:
    """The file's bytes, in ``version`` (default the newest, VERSION)."""
    if not bs.gops:
        raise InputError("bitstream has no frames")
    if not all(np.all(np.isfinite(g.frames)) for g in bs.gops):
        raise InputError("semantics contain NaN or infinite values")
    problem = _writable_problem(bs)
    if problem:
        raise InputError(f"cannot write this bitstream: {problem}")
    version = VERSION if version is None else version
    if version not in VERSIONS or (version == 1 and _needs_version_2(bs)) or (version < 3 and bs.chained):
        raise InputError(f"cannot write this bitstream as format version {version}")
    try:
        return _to_bytes(bs, version)
    except (ValueError, struct.error) as exc:
        raise InputError(f"cannot code these semantics: {exc}") from None


def _writable_problem(bs: Bitstream) -> str | None:
    """The reader's checks, applied before writing: a file this writes always reads back."""
    fps = Fraction(bs.fps)
    problem = sequence_problem(int(bs.width), int(bs.height), fps.numerator, fps.denominator,
                               bs.n_frames, len(bs.gops))
    if problem:
        return problem
    if not all(np.isfinite(s) and 1e-9 < s < 1e3 for s in bs.quant.as_tuple()):
        return f"invalid quantization steps {bs.quant.as_tuple()}"
    start = 0
    for g in bs.gops:
        kp = g.key_picture
        if g.start != start or g.n_frames < 1:
            return f"group at frame {g.start} does not follow the previous one (expected {start})"
        start += g.n_frames
        if kp.codec not in CODEC_NAMES or (kp.width, kp.height) != (bs.width, bs.height) or not kp.payload:
            return f"key picture of the group at frame {g.start} is unknown, empty or not {bs.width}x{bs.height}"
        betas = np.asarray(g.key.betas, np.float32).reshape(-1)
        with np.errstate(all="ignore"):
            focal = np.asarray(g.key.focal, np.float32).reshape(-1)
        if betas.size > MAX_BETAS or focal.size != 2 or not (np.all(np.isfinite(betas)) and np.all(np.isfinite(focal))
                                                             and np.all(focal > 0)):
            return f"key semantics of the group at frame {g.start}: bad shape parameters or focal length"
        key_ints = _key_ints(g.key, bs.quant)
        problem = _ints_problem(key_ints) or _ints_problem(quantize(g.frames, bs.steps))
        if problem:
            return f"group at frame {g.start}: {problem}"
        if not 0 <= g.key_offset < g.n_frames:
            return f"group at frame {g.start}: key offset {g.key_offset} outside its {g.n_frames} frames"
        if (len(g.refs) > min(bs.max_refs - 1, MAX_REFS)
                or any(not 0 <= k < len(bs.gops) or bs.gops[k] is g for k in g.refs)):
            return f"group at frame {g.start}: references {list(g.refs)[:8]} invalid (at most {bs.max_refs - 1} others)"
    if not 1 <= bs.max_refs <= MAX_REFS:
        return f"{bs.max_refs} references per frame (1..{MAX_REFS})"
    if any(len(g.key_picture.payload) >= 1 << 28 for g in bs.gops):
        return "a key picture of 256 MiB or more"
    if bs.chained and any(g.key_picture.codec_name != "vvc" for g in bs.gops):
        return "chained key pictures must all be VVC"
    return None


def file_version(bs: Bitstream) -> int:
    """The version ``bs`` was read as, else the one the writer writes: the newest, VERSION (smaller than
    1 and 2 for any bitstream: at least section framings, frame counts and the default steps go)."""
    return bs.version or VERSION


def _needs_version_2(bs: Bitstream) -> bool:
    """Whether ``bs`` uses what version 1 cannot hold (references, keys inside their groups)."""
    return bs.max_refs > 1 or any(g.refs or g.key_offset for g in bs.gops)


def shared_prefix(payloads: list[bytes]) -> bytes:
    """The bytes every key picture's payload begins with (version 3 stores them once): the intra codec's
    parameter sets, which each picture repeats (VVC: its SPS and most of its PPS, 55 bytes). Nothing
    for a single picture, and never a whole payload (each keeps at least one byte of its own)."""
    if len(payloads) < 2:
        return b""
    common = os.path.commonprefix(payloads)          # works on any sequences, bytes included
    return bytes(common[:min(min(len(p) for p in payloads) - 1, MAX_SHARED)])


def shared_bytes(bs: Bitstream) -> bytes:
    """What the file of ``bs`` (:func:`file_version`) stores once for all its key pictures."""
    return shared_prefix([g.key_picture.payload for g in bs.gops]) if file_version(bs) >= 3 else b""


def key_picture_bytes(bs: Bitstream) -> int:
    """The bytes the file of ``bs`` spends on key-picture payloads: each payload once, less what version 3
    shares between them (stored once)."""
    return sum(len(g.key_picture.payload) for g in bs.gops) - max(len(bs.gops) - 1, 0) * len(shared_bytes(bs))


def same_shape(a, b) -> bool:
    """Whether two keys have the same coded body shape and focal length (version 3 codes it once)."""
    return (np.array_equal(np.asarray(a.betas, np.float32).reshape(-1), np.asarray(b.betas, np.float32).reshape(-1))
            and np.array_equal(np.asarray(a.focal, np.float32).reshape(-1), np.asarray(b.focal, np.float32).reshape(-1)))


def _to_bytes(bs: Bitstream, version: int) -> bytes:
    steps = bs.steps
    n = len(bs.gops)
    refs_listed = any(tuple(g.refs) != r for g, r in zip(bs.gops, reference_lists(n, bs.max_refs)))
    steps_listed = bs.quant.as_tuple() != QuantSpec().as_tuple()
    flags = int(bs.has_camera)
    if version >= 3:
        flags |= (FLAG_STEPS if steps_listed else 0) | (FLAG_REFS if refs_listed else 0)
        flags |= FLAG_CHAINED if bs.chained else 0
    head = struct.pack("<HHIIIHBB", bs.width, bs.height, bs.fps.numerator, bs.fps.denominator,
                       bs.n_frames, n, bs.body_model, flags)
    if version < 3 or steps_listed:
        head += struct.pack("<5d", *bs.quant.as_tuple())
    if version >= 4:                        # the first group starts at 0; the others' distances, as varints
        head += b"".join(_varint(b.start - a.start) for a, b in zip(bs.gops, bs.gops[1:]))
    else:
        head += struct.pack(f"<{n}I", *(g.start for g in bs.gops))
    if version >= 2:
        head += struct.pack("<B", bs.max_refs)
        for g in bs.gops:
            head += _varint(g.key_offset) if version >= 4 else struct.pack("<I", g.key_offset)
            if version < 3 or refs_listed:
                head += struct.pack(f"<B{len(g.refs)}H", len(g.refs), *g.refs)
    shared = shared_prefix([g.key_picture.payload for g in bs.gops]) if version >= 3 else b""
    if version >= 3:
        head += struct.pack("<H", len(shared)) + shared
    out = [MAGIC, bytes([version]), _section(b"SEQH", head)]
    prev_key = np.zeros(_KEY_DIMS, np.int64)
    keys, stream = [], []                   # version 4: every group's picture and shape, every group's semantics
    for j, g in enumerate(bs.gops):
        kp = g.key_picture
        betas = np.asarray(g.key.betas, np.float32).reshape(-1)
        key_ints = _key_ints(g.key, bs.quant)
        shape = (struct.pack("<B", betas.size) + betas.tobytes()
                 + np.asarray(g.key.focal, np.float32).reshape(2).tobytes())
        key_res = (key_ints - prev_key)[None]
        if version >= 2:
            prev_key = key_ints             # version 2: a key's semantics are coded from the previous key's
        frames_res = _coded_residuals(quantize(g.frames, steps), key_ints, bs.dims, g.key_offset)
        if version >= 3:
            # The picture without the shared bytes, then the shape or "the previous key's"; the picture's
            # size and the group's frame count are the header's.
            picture = kp.payload[len(shared):]
            own = struct.pack("<B", 1) if j > 0 and same_shape(g.key, bs.gops[j - 1].key) else struct.pack("<B", 0) + shape
        if version >= 4:
            keys.append(struct.pack("<BB", kp.codec, kp.qp) + _varint(len(picture)) + picture + own)
            stream += [("key", key_res), ("frames", frames_res)]
            continue
        key_coded = encode_residuals(key_res)
        frames_coded = encode_residuals(frames_res)
        if version >= 3:
            # One section: the picture and shape, the key's semantics, the frames' semantics.
            out.append(_section(b"GRUP", struct.pack("<BBI", kp.codec, kp.qp, len(picture)) + picture + own
                                + struct.pack("<H", len(key_coded)) + key_coded + frames_coded))
            continue
        out.append(_section(b"KPIC", struct.pack("<BBHH", kp.codec, kp.qp, kp.width, kp.height) + kp.payload))
        out.append(_section(b"KSEM", shape + key_coded))
        out.append(_section(b"FSEM", struct.pack("<I", g.n_frames) + frames_coded))
    if version >= 4:
        out.append(_section(b"KEYS", b"".join(keys)))
        out.append(_section(b"SEMS", encode_stream(stream)))      # the last section: no END_ needed after it
    else:
        out.append(_section(b"END_", b""))
    return b"".join(out)


def _varint(n: int) -> bytes:
    """``n`` (0 <= n < 2^28) in LEB128: 7 bits a byte, low first, the high bit set on all but the last."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _group_residuals(bs: Bitstream, g: GroupOfPictures) -> np.ndarray:
    """A group's coded residuals, in coding order (what the writer codes)."""
    return _coded_residuals(quantize(g.frames, bs.steps), _key_ints(g.key, bs.quant), bs.dims, g.key_offset)


def _frame_code_lengths(bs: Bitstream) -> list[np.ndarray]:
    """Per group, the ideal code length (bits) of each value of its coded frame rows, in coding order, as
    the file's version codes them: each group from fresh contexts (versions 1 to 3) or the contexts
    carried from the groups before (version 4)."""
    res = [_group_residuals(bs, g) for g in bs.gops]
    return stream_code_lengths(res) if file_version(bs) >= 4 else [code_lengths(r) for r in res]


def semantic_bits_by_group(bs: Bitstream) -> dict[str, float]:
    """Bits of the coded per-frame semantics attributed to each semantic group (whole file).

    From the coder's ideal code length per dimension; the key semantics are not included.
    """
    out = {name: 0.0 for name in GROUPS if GROUPS[name].stop <= bs.dims}
    for lengths in _frame_code_lengths(bs):
        bits = lengths.sum(0)
        for name in out:
            out[name] += float(bits[GROUPS[name]].sum())
    return out


def frame_bits(bs: Bitstream) -> list[np.ndarray]:
    """Per group, the ideal code length (bits) of each frame's coded semantics row, in display order."""
    out = []
    for g, lengths in zip(bs.gops, _frame_code_lengths(bs)):
        bits = np.empty(len(lengths))
        bits[coding_order(len(lengths), g.key_offset)] = lengths.sum(1)
        out.append(bits)
    return out


def write(bs: Bitstream, path) -> int:
    """Write atomically (temporary name, then rename). Returns the byte count."""
    data = to_bytes(bs)
    atomic_write_bytes(path, data)
    return len(data)


# ---------------------------------------------------------------- reading

class _Reader:
    """Bounded reads over one section's payload; every overrun is a BitstreamError."""

    def __init__(self, data: bytes, section: str, offset: int):
        self.data, self.section, self.base, self.pos = data, section, offset, 0

    def fail(self, msg: str):
        raise BitstreamError(msg, self.section, self.base + self.pos)

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.data):
            self.fail(f"needs {n} more bytes, {len(self.data) - self.pos} left")
        b = self.data[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))

    def rest(self) -> bytes:
        return self.take(len(self.data) - self.pos)

    def varint(self) -> int:
        """A LEB128 length (container._varint), at most 4 bytes."""
        n = 0
        for i in range(4):
            (b,) = self.unpack("B")
            n |= (b & 0x7F) << (7 * i)
            if not b & 0x80:
                return n
        self.fail("length longer than 4 bytes")


def _sections(data: bytes):
    """Yield (tag, payload, offset of payload) after checking framing and checksums."""
    pos = 5
    while pos < len(data):
        if pos + 8 > len(data):
            raise BitstreamError("truncated section header", "file", pos)
        tag = data[pos:pos + 4]
        (length,) = struct.unpack_from("<I", data, pos + 4)
        name = tag.decode("ascii", "backslashreplace")     # engine.errors escapes control characters
        if length > len(data) - pos - 12:
            raise BitstreamError(f"length {length} exceeds the {max(len(data) - pos - 12, 0)} bytes left",
                                 name, pos + 4)
        payload = data[pos + 8:pos + 8 + length]
        (crc,) = struct.unpack_from("<I", data, pos + 8 + length)
        if zlib.crc32(tag + payload) != crc:
            raise BitstreamError("checksum mismatch", name, pos)
        yield name, payload, pos + 8
        pos += 12 + length


def from_bytes(data: bytes) -> Bitstream:
    if len(data) > MAX_FILE:
        raise BitstreamError("file too large to be an IHVC bitstream", "file", 0)
    if len(data) < 5 or data[:4] != MAGIC:
        raise BitstreamError("not an IHVC file (bad magic)", "file", 0)
    version = data[4]
    if version not in VERSIONS:
        raise BitstreamError(f"unsupported format version {version} (this program reads 1 to {VERSION})", "file", 4)
    sections = _sections(data)
    sizes: dict[str, int] = {"header": 5}

    def expect(tag: str):
        try:
            name, payload, off = next(sections)
        except StopIteration:
            raise BitstreamError(f"missing {tag} section (file truncated)", tag, len(data)) from None
        if name != tag:
            raise BitstreamError(f"expected section {tag}, found {name!r}", name, off - 8)
        sizes[tag] = sizes.get(tag, 0) + len(payload) + 12
        return _Reader(payload, tag, off)

    r = expect("SEQH")
    w, h, fnum, fden, n_frames, n_gops, body_model, flags = r.unpack("HHIIIHBB")
    problem = sequence_problem(w, h, fnum, fden, n_frames, n_gops)
    if problem:
        r.fail(problem)
    known = 1 | (FLAG_STEPS | FLAG_REFS | FLAG_CHAINED if version >= 3 else 0)
    if flags & ~known:
        r.fail(f"unknown flags {flags:#x}")
    steps = r.unpack("5d") if version < 3 or flags & FLAG_STEPS else QuantSpec().as_tuple()
    if not all(np.isfinite(s) and 1e-9 < s < 1e3 for s in steps):
        r.fail(f"invalid quantization steps {steps}")
    quant = QuantSpec.from_tuple(steps)
    if version >= 4:
        key_frames = [0]
        for _ in range(n_gops - 1):
            key_frames.append(key_frames[-1] + r.varint())
    else:
        key_frames = list(r.unpack(f"{n_gops}I"))
    if key_frames[0] != 0 or any(b <= a for a, b in zip(key_frames, key_frames[1:])) or key_frames[-1] >= n_frames:
        r.fail(f"group starts {key_frames[:8]} are not increasing within 0..{n_frames - 1}")
    ends = key_frames[1:] + [n_frames]
    max_refs, offsets, refs = 1, [0] * n_gops, [()] * n_gops
    if version >= 2:
        (max_refs,) = r.unpack("B")
        if not 1 <= max_refs <= MAX_REFS:
            r.fail(f"{max_refs} references per frame (1..{MAX_REFS})")
        standard = reference_lists(n_gops, max_refs)
        for j in range(n_gops):
            off = r.varint() if version >= 4 else r.unpack("I")[0]
            if off >= ends[j] - key_frames[j]:
                r.fail(f"key offset {off} outside the {ends[j] - key_frames[j]} frames of group {j}")
            if version >= 3 and not flags & FLAG_REFS:
                offsets[j], refs[j] = off, standard[j]
                continue
            (n_refs,) = r.unpack("B")
            if n_refs > max_refs - 1:
                r.fail(f"group {j} lists {n_refs} references, the header allows {max_refs - 1}")
            ids = r.unpack(f"{n_refs}H")
            if any(k >= n_gops or k == j for k in ids):
                r.fail(f"group {j} refers to groups {list(ids)} of {n_gops}")
            offsets[j], refs[j] = off, tuple(ids)
    shared = b""
    if version >= 3:
        (n_shared,) = r.unpack("H")
        if n_shared > MAX_SHARED or (n_shared and n_gops < 2):
            r.fail(f"{n_shared} shared key-picture bytes for {n_gops} groups (at most {MAX_SHARED}, none for one)")
        shared = r.take(n_shared)
    if r.pos != len(r.data):
        r.fail("trailing bytes")
    bs = Bitstream(width=w, height=h, fps=Fraction(fnum, fden), quant=quant, body_model=body_model,
                   has_camera=bool(flags & 1), sizes=sizes, max_refs=max_refs, version=version,
                   chained=bool(flags & FLAG_CHAINED))
    frame_steps = bs.steps
    key_steps = _key_steps(quant)
    prev_key = np.zeros(_KEY_DIMS, np.int64)
    parts = []                     # per group: picture, shape, and where its semantics are coded
    if version >= 4:
        keys_r = expect("KEYS")
        sizes["KEYS"] -= len(keys_r.data)             # the framing; the bytes go to KPIC and KSEM below
    for j, (start, end) in enumerate(zip(key_frames, ends)):
        if version >= 3:
            # The picture and the shape: in the group's own section (version 3), or the next in the one
            # KEYS section, the picture's length a varint (version 4).
            grp = keys_r if version >= 4 else expect("GRUP")
            at = grp.pos
            codec, qp = grp.unpack("BB")
            n_pic = grp.varint() if version >= 4 else grp.unpack("I")[0]
            pic = _Reader(grp.take(n_pic), grp.section, grp.base + grp.pos - n_pic)
            kp = _read_picture(pic, codec, qp, w, h, shared)
            sizes["KPIC"] = sizes.get("KPIC", 0) + grp.pos - at
            at = grp.pos
            betas, focal = _read_shape(grp, True, parts[-1][1] if parts else None)
            sizes["KSEM"] = sizes.get("KSEM", 0) + grp.pos - at
            if version >= 4:
                parts.append((kp, (betas, focal), None, None))       # the semantics: in SEMS, below
                continue
            sizes["GRUP"] -= len(grp.data)            # what is left: the section's framing
            (n_key,) = grp.unpack("H")
            sizes["KSEM"] += 2 + n_key
            key_r = _Reader(grp.take(n_key), "GRUP", grp.base + grp.pos - n_key)
            frames_r = grp
            sizes["FSEM"] = sizes.get("FSEM", 0) + len(grp.data) - grp.pos
        else:
            r = expect("KPIC")
            codec, qp, kw, kh = r.unpack("BBHH")
            if (kw, kh) != (w, h):
                r.fail(f"key picture is {kw}x{kh}, sequence is {w}x{h}")
            kp = _read_picture(r, codec, qp, w, h, b"")
            key_r = expect("KSEM")
            betas, focal = _read_shape(key_r, False, None)
            frames_r = expect("FSEM")
            (n,) = frames_r.unpack("I")
            if n != end - start:
                frames_r.fail(f"group holds {n} frames, header says {end - start}")
        parts.append((kp, (betas, focal), key_r, frames_r))
    stream = None
    if version >= 4:
        if keys_r.pos != len(keys_r.data):
            keys_r.fail("trailing bytes")
        # Version 4: every group's key row and frame rows in one stream, contexts carried (entropy.StreamEncoder).
        sems = expect("SEMS")
        stream = StreamDecoder(sems.data)
        sizes["SEMS"] -= len(sems.data)               # the framing; the bytes go to KSEM and FSEM below
        key_bytes = 0

    def decoded(rd: _Reader | None, n: int, d: int, kind: str) -> np.ndarray:
        at = where(rd)
        try:
            if rd is not None:
                return decode_residuals(rd.rest(), n, d)
            return stream.rows(kind, n, d)
        except EntropyError as exc:
            raise BitstreamError(str(exc), *at) from None

    def where(rd: _Reader | None) -> tuple[str, int]:
        """The section and byte offset of what is read next from ``rd``, or from the stream."""
        return (rd.section, rd.base + rd.pos) if rd is not None else ("SEMS", sems.base + min(stream.used, len(sems.data)))

    for j, ((kp, (betas, focal), key_r, frames_r), start, end) in enumerate(zip(parts, key_frames, ends)):
        at = where(key_r)
        before = stream.used if stream is not None else 0
        key_ints = decoded(key_r, 1, _KEY_DIMS, "key")[0] + prev_key
        if stream is not None:
            key_bytes += stream.used - before
        if version >= 2:
            prev_key = key_ints
        problem = _ints_problem(key_ints)
        if problem:
            raise BitstreamError(problem, *at)
        kv = key_ints * key_steps
        key = KeySemantics(body_pose=kv[:63].reshape(21, 3), betas=betas, rot=kv[63:66], trans=kv[66:69],
                           loc=kv[69:73], focal=focal, body_model=body_model)
        at = where(frames_r)
        res = decoded(frames_r, end - start, bs.dims, "frames")
        q = _uncoded(res, key_ints, bs.dims, offsets[j])
        problem = _ints_problem(q)
        if problem:
            raise BitstreamError(problem, *at)
        bs.gops.append(GroupOfPictures(start=start, key_picture=kp, key=key, frames=q * frame_steps,
                                       refs=refs[j], key_offset=offsets[j]))
    if stream is not None:
        # The stream's bytes split between the keys' and the frames' semantics by where the decoder
        # stood (exact in sum; within a byte or two per group in each part).
        key_bytes = min(key_bytes, len(sems.data))
        sizes["KSEM"] = sizes.get("KSEM", 0) + key_bytes
        sizes["FSEM"] = sizes.get("FSEM", 0) + len(sems.data) - key_bytes
    if version < 4:
        r = expect("END_")
        if r.data:
            r.fail(f"the end section holds {len(r.data)} bytes; the writer leaves it empty")
    try:
        name, _, off = next(sections)
        raise BitstreamError(f"data after the {'SEMS' if version >= 4 else 'end'} section ({name!r})", name, off - 8)
    except StopIteration:
        pass
    return bs


def _read_picture(r: _Reader, codec: int, qp: int, w: int, h: int, shared: bytes) -> KeyPicture:
    """A key picture whose payload is the rest of ``r`` (after ``shared``, version 3's common bytes)."""
    if codec not in CODEC_NAMES:
        r.fail(f"unknown key-picture codec id {codec}")
    payload = r.rest()
    if not payload:
        r.fail("empty key picture")
    return KeyPicture(codec=codec, qp=qp, width=w, height=h, payload=shared + payload)


def _read_shape(r: _Reader, flagged: bool, previous: tuple | None) -> tuple[np.ndarray, np.ndarray]:
    """A key's body shape and focal length: n_betas, betas and focal; ``flagged`` (version 3) first a
    flag, 1: the key before's (``previous``: its betas and focal), 0: its own follows."""
    if flagged:
        (repeat,) = r.unpack("B")
        if repeat > 1 or (repeat and previous is None):
            r.fail(f"shape flag {repeat}" + (" on the first group" if repeat == 1 else ""))
        if repeat:
            return previous[0].copy(), previous[1].copy()
    (n_betas,) = r.unpack("B")
    if n_betas > MAX_BETAS:
        r.fail(f"{n_betas} shape parameters (at most {MAX_BETAS})")
    with np.errstate(all="ignore"):
        betas = np.frombuffer(r.take(4 * n_betas), np.float32).astype(float)
        focal = np.frombuffer(r.take(8), np.float32).astype(float)
    if not (np.all(np.isfinite(betas)) and np.all(np.isfinite(focal)) and np.all(focal > 0)):
        r.fail("non-finite shape or focal length")
    return betas, focal


def read(path) -> Bitstream:
    path = Path(path)
    if not path.exists():
        raise InputError(f"no such file: {path}")
    if path.is_dir():
        raise InputError(f"is a folder, not a bitstream: {path}")
    if path.stat().st_size > MAX_FILE:
        raise BitstreamError("file too large to be an IHVC bitstream", "file", 0)
    return from_bytes(path.read_bytes())


def body_model_name(bs: Bitstream) -> str:
    return BODY_MODEL_NAMES.get(bs.body_model, f"model#{bs.body_model}")
