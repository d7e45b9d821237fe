"""Context-adaptive binary arithmetic coding of integer semantics.

    q_t (N x D ints) --(inter prediction: q_t - q_{t-1}, the previous *decoded* frame)--> r_t
    r_t --binarize--> zero flag | sign | unary magnitude bins | exp-Golomb escape
        --context per (dimension, bin), adaptive counts--> range coder --> bytes

Everything is integer arithmetic, so encoder and decoder are bit-exact on
every machine. Probabilities are Krichevsky-Trofimov estimates from per-context
bit counts (halved past COUNT_LIMIT so the model follows changing motion);
escape suffix bits are coded with p = 1/2.

The range coder is the carry-less-cache scheme of LZMA (32-bit range, 15-bit
probabilities). Decoding corrupt data never hangs: the symbol count is known,
exp-Golomb prefixes are bounded, reading past the end is counted and refused.
"""
from __future__ import annotations

import math
import threading
from collections import OrderedDict

import numpy as np

PROB_BITS = 15
PROB_ONE = 1 << PROB_BITS
TOP = 1 << 24
MASK32 = 0xFFFFFFFF
COUNT_LIMIT = 255           # halve counts past this: adapt to non-stationary motion
N_UNARY = 6                 # context-coded magnitude bins before the escape
MAX_EG_PREFIX = 40          # larger exp-Golomb prefixes only occur in corrupt data
MAX_OVERRUN = 8             # bytes read past the end before the data is called truncated

MAX_VALUE = 1 << 39            # |residual| < MAX_VALUE, for the encoder and the decoder alike

# Bin context layout per dimension: 0 zero flag, 1 sign, 2..2+N_UNARY-1 unary, then EG prefix.
CTX_PER_DIM = 2 + N_UNARY + MAX_EG_PREFIX + 1


class EntropyError(ValueError):
    """Arithmetic-coded data is truncated or malformed (the container adds the section/offset)."""


class _Contexts:
    """Adaptive binary probability per context: bit counts (n0, n1)."""

    def __init__(self, n: int):
        self.n0 = [0] * n
        self.n1 = [0] * n

    def p0(self, c: int) -> int:
        """P(bit = 0) in 1/PROB_ONE units (KT estimate), clamped away from 0 and 1."""
        n0, n1 = self.n0[c], self.n1[c]
        p = ((2 * n0 + 1) * PROB_ONE) // (2 * (n0 + n1) + 2)
        return min(max(p, 32), PROB_ONE - 32)

    def update(self, c: int, bit: int) -> None:
        if bit:
            self.n1[c] += 1
        else:
            self.n0[c] += 1
        if self.n0[c] + self.n1[c] > COUNT_LIMIT:
            self.n0[c] = (self.n0[c] + 1) >> 1
            self.n1[c] = (self.n1[c] + 1) >> 1


class RangeEncoder:
    def __init__(self):
        self.low = 0
        self.range = MASK32
        self.cache = 0
        self.cache_size = 1
        self.out = bytearray()

    def _shift_low(self):
        if self.low < 0xFF000000 or self.low > MASK32:
            carry = self.low >> 32
            temp = self.cache
            while True:
                self.out.append((temp + carry) & 0xFF)
                temp = 0xFF
                self.cache_size -= 1
                if self.cache_size == 0:
                    break
            self.cache = (self.low >> 24) & 0xFF
        self.cache_size += 1
        self.low = (self.low << 8) & MASK32

    def encode(self, bit: int, p0: int):
        bound = (self.range >> PROB_BITS) * p0
        if bit == 0:
            self.range = bound
        else:
            self.low += bound
            self.range -= bound
        while self.range < TOP:
            self.range = (self.range << 8) & MASK32
            self._shift_low()

    def finish(self) -> bytes:
        for _ in range(5):
            self._shift_low()
        # The first byte is always the initial zero cache: drop it.
        return bytes(self.out[1:])


class RangeDecoder:
    def __init__(self, data: bytes):
        self.data = data
        self.pos = 0
        self.overrun = 0
        self.range = MASK32
        self.code = 0
        for _ in range(4):
            self.code = (self.code << 8) | self._byte()

    def _byte(self) -> int:
        if self.pos < len(self.data):
            b = self.data[self.pos]
            self.pos += 1
            return b
        self.overrun += 1
        if self.overrun > MAX_OVERRUN:
            raise EntropyError(f"arithmetic-coded data truncated after {len(self.data)} bytes")
        return 0

    def decode(self, p0: int) -> int:
        bound = (self.range >> PROB_BITS) * p0
        if self.code < bound:
            self.range = bound
            bit = 0
        else:
            self.code -= bound
            self.range -= bound
            bit = 1
        while self.range < TOP:
            self.range = (self.range << 8) & MASK32
            self.code = ((self.code << 8) | self._byte()) & MASK32
        return bit


def _encode_value(enc: RangeEncoder, ctx: _Contexts, base: int, v: int) -> None:
    def bit(c, b):
        enc.encode(b, ctx.p0(c))
        ctx.update(c, b)

    bit(base, int(v != 0))
    if v == 0:
        return
    bit(base + 1, int(v < 0))
    m = abs(v) - 1
    for i in range(N_UNARY):
        if m == i:
            bit(base + 2 + i, 0)
            return
        bit(base + 2 + i, 1)
    # Exp-Golomb order 0 of the remainder: context-coded prefix, p = 1/2 suffix.
    x = m - N_UNARY + 1
    nbits = x.bit_length() - 1
    for j in range(nbits):
        bit(base + 2 + N_UNARY + min(j, MAX_EG_PREFIX), 1)
    bit(base + 2 + N_UNARY + min(nbits, MAX_EG_PREFIX), 0)
    for k in range(nbits - 1, -1, -1):
        enc.encode((x >> k) & 1, PROB_ONE // 2)


def _decode_value(dec: RangeDecoder, ctx: _Contexts, base: int) -> int:
    def bit(c):
        b = dec.decode(ctx.p0(c))
        ctx.update(c, b)
        return b

    if not bit(base):
        return 0
    neg = bit(base + 1)
    m = None
    for i in range(N_UNARY):
        if not bit(base + 2 + i):
            m = i
            break
    if m is None:
        nbits = 0
        while bit(base + 2 + N_UNARY + min(nbits, MAX_EG_PREFIX)):
            nbits += 1
            if nbits > MAX_EG_PREFIX:
                raise EntropyError("exp-Golomb prefix too long")
        x = 1
        for _ in range(nbits):
            x = (x << 1) | dec.decode(PROB_ONE // 2)
        m = x - 1 + N_UNARY
        if m + 1 >= MAX_VALUE:      # the encoder refuses these: reader and writer agree on the limit
            raise EntropyError(f"coded value {m + 1} out of range (limit {MAX_VALUE})")
    return -(m + 1) if neg else m + 1


# The last streams coded, by content. The key search writes a bitstream for every placement it tries to
# learn its size, and the rate searches write the same semantics again under other key QPs. Version 3
# coded each group alone, so a trial coded only the two or three groups it changed; version 4's one
# stream is coded whole each time a key moves (ted_c, 100 frames: the encoder's 52 files took 0.64 s
# instead of 0.34 of a 45 s encode).
_CODED: OrderedDict = OrderedDict()
_CODED_LOCK = threading.Lock()
CODED_MEMO = 256


def encode_residuals(res: np.ndarray) -> bytes:
    """Integer residuals N x D -> bytes. Context per (dimension, bin), from even odds."""
    return encode_stream([("", res)])


def _contexts_of(table: dict, kind: str, d: int) -> _Contexts:
    """The contexts a stream keeps for arrays of ``kind`` and width ``d``, made on first use."""
    if (kind, d) not in table:
        table[kind, d] = _Contexts(d * CTX_PER_DIM)
    return table[kind, d]


class StreamEncoder:
    """Several arrays in one range-coded stream (format version 4): each kind of array (key rows, frame
    rows) keeps its contexts from one array to the next, so that a group's semantics are coded with
    what the groups before it taught the model, not from even odds. Against each group coded from
    fresh contexts with its own flush and length (version 3), the semantics of 13 files with keys by
    content take 12 to 34 % fewer bytes (docs/BENCHMARKS.md "Format version 4")."""

    def __init__(self):
        self.enc = RangeEncoder()
        self.ctx: dict = {}

    def code(self, kind: str, res: np.ndarray) -> None:
        res = np.asarray(res, dtype=np.int64)
        if res.size and np.abs(res).max() >= MAX_VALUE:
            raise ValueError(f"residual {np.abs(res).max()} too large to code (limit {MAX_VALUE})")
        ctx = _contexts_of(self.ctx, kind, res.shape[1])
        for row in res.tolist():
            for j, v in enumerate(row):
                _encode_value(self.enc, ctx, j * CTX_PER_DIM, v)

    def finish(self) -> bytes:
        return self.enc.finish()


def encode_stream(parts: list[tuple[str, np.ndarray]]) -> bytes:
    """``parts`` ((kind, N x D integer residuals), in coding order) -> one stream (StreamEncoder)."""
    parts = [(kind, np.ascontiguousarray(res, dtype=np.int64)) for kind, res in parts]
    memo = ("stream",) + tuple((kind, res.shape, res.tobytes()) for kind, res in parts)
    with _CODED_LOCK:
        data = _CODED.get(memo)
        if data is not None:
            _CODED.move_to_end(memo)
            return data
    enc = StreamEncoder()
    for kind, res in parts:
        enc.code(kind, res)
    data = enc.finish()
    with _CODED_LOCK:
        _CODED[memo] = data
        if len(_CODED) > CODED_MEMO:
            _CODED.popitem(last=False)
    return data


class StreamDecoder:
    """Reads what StreamEncoder wrote, array by array; ``used`` counts the bytes read so far."""

    def __init__(self, data: bytes):
        self.dec = RangeDecoder(data)
        self.ctx: dict = {}

    @property
    def used(self) -> int:
        return self.dec.pos

    def rows(self, kind: str, n: int, d: int) -> np.ndarray:
        """The next ``n`` x ``d`` array of ``kind`` (raises EntropyError on malformed data)."""
        ctx = _contexts_of(self.ctx, kind, d)
        # Rows grow as data is consumed (no up-front allocation from a header count).
        rows = [[_decode_value(self.dec, ctx, j * CTX_PER_DIM) for j in range(d)] for _ in range(n)]
        return np.array(rows, dtype=np.int64).reshape(n, d)


class _CostMeter:
    """Stands in for RangeEncoder: adds up the ideal code length (bits) per dimension."""

    def __init__(self, d: int):
        self.bits = np.zeros(d)
        self.dim = 0

    def encode(self, bit: int, p0: int):
        p = p0 if bit == 0 else PROB_ONE - p0
        self.bits[self.dim] += PROB_BITS - math.log2(p)


def code_lengths(res: np.ndarray, ctx: _Contexts | None = None) -> np.ndarray:
    """Ideal code length (bits) of every value of ``res`` (N x D) under the coder's own adaptive model (it sums
    to the coded size within the range coder's few bytes of flush; container.frame_bits and the rate split
    add it up by row and by dimension):
    from fresh contexts, or from ``ctx``, which it updates (the contexts an earlier array left, as a
    stream carries them: :func:`stream_code_lengths`)."""
    res = np.asarray(res, dtype=np.int64)
    n, d = res.shape
    ctx = _Contexts(d * CTX_PER_DIM) if ctx is None else ctx
    meter = _CostMeter(d)
    out = np.zeros((n, d))
    for i, row in enumerate(res.tolist()):
        meter.bits[:] = 0.0
        for j, v in enumerate(row):
            meter.dim = j
            _encode_value(meter, ctx, j * CTX_PER_DIM, v)
        out[i] = meter.bits
    return out


def stream_code_lengths(arrays: list[np.ndarray]) -> list[np.ndarray]:
    """code_lengths of each of ``arrays`` (one kind, in coding order), the contexts carried from one to
    the next as StreamEncoder carries them."""
    out, ctx = [], None
    for res in arrays:
        if ctx is None:
            ctx = _Contexts(np.shape(res)[1] * CTX_PER_DIM)
        out.append(code_lengths(res, ctx))
    return out


def decode_residuals(data: bytes, n: int, d: int) -> np.ndarray:
    """bytes -> integer residuals N x D (raises EntropyError on malformed data)."""
    return StreamDecoder(data).rows("", n, d)


def predict_residuals(q: np.ndarray, first_prediction: np.ndarray) -> np.ndarray:
    """Inter prediction from the previous decoded frame: r_0 = q_0 - pred, r_t = q_t - q_{t-1}.

    Quantization is lossless on the integers, so the encoder's previous decoded
    frame equals the decoder's.
    """
    q = np.asarray(q, np.int64)
    prev = np.vstack([np.asarray(first_prediction, np.int64)[None], q[:-1]])
    return q - prev


def reconstruct(res: np.ndarray, first_prediction: np.ndarray) -> np.ndarray:
    return np.cumsum(res, axis=0) + np.asarray(first_prediction, np.int64)[None]


def adaptive_entropy_bits(res: np.ndarray) -> float:
    """Reference code length: per-dimension adaptive (KT) model over the residual symbols.

    -sum log2 (count(s) + 1/2) / (n + |A|/2), with the alphabet A the residual
    values seen in that dimension: what an ideal adaptive symbol coder needs,
    not knowing the statistics in advance.
    """
    res = np.asarray(res, np.int64)
    total = 0.0
    for col in res.T:
        alphabet = len(set(col.tolist()))
        counts: dict[int, int] = {}
        for i, v in enumerate(col.tolist()):
            c = counts.get(v, 0)
            total -= math.log2((c + 0.5) / (i + alphabet / 2))
            counts[v] = c + 1
    return total
