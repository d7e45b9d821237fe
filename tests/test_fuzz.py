"""Fuzzing the bitstream reader and the decoder (#17): mutated real bitstreams, CRCs fixed.

Every mutated file must end in a clean error (engine.errors.IHVCError, one printable line) or a
valid decode (uint8 frames of the coded size, muxed into an .mp4 at the file's frame rate);
anything else is an *unexpected* outcome. The checksums and lengths of the mutated sections are
recomputed, so mutations get past the framing into the arithmetic decoder (KSEM, FSEM), the
key-picture decoder (KPIC) and rendering (semantic mutations re-coded by the writer).

The suite runs a fixed-seed sample of cases within a time budget (``test_fuzz_ci``). The long
run documented in docs/BENCHMARKS.md ("Reliability") is this module as a script::

    .venv/bin/python -m tests.test_fuzz --cases 10000 --seed 1 [--side 48]
"""
from __future__ import annotations

import random
import struct
import sys
import tempfile
import time
import traceback
import zlib
from collections import Counter
from dataclasses import replace
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from engine.codec import container  # noqa: E402
from engine.errors import IHVCError  # noqa: E402
from engine.fileio import ASSETS  # noqa: E402

SAMPLE = ASSETS / "sample.ihvc"


# ----------------------------------------------------------------------------- sources

def sources() -> list[bytes]:
    """Small real bitstreams built from the shipped sample (real key picture, real semantics):
    12 frames with the camera group in one group of pictures (version 1: the sample's first group
    without its references, its key picture opening it), and 2 x 6 frames without it (written as
    version 4, the default, whose semantics are one stream, as version 3, whose two groups share their key
    pictures' first bytes and body shape, and as version 2), the same with its two key pictures coded as
    one chain (the second predicted from the first)."""
    bs = container.read(SAMPLE)
    g = replace(bs.gops[0], refs=(), key_offset=0)
    # The sample's first key picture alone: the first of a chain is an intra picture with its parameter sets.
    a = replace(bs, gops=[replace(g, frames=g.frames[:12].copy())], max_refs=1, sizes={}, chained=False)
    rows = g.frames[:12, :31].copy()
    g2 = replace(g, start=6, frames=rows[6:].copy())
    b = replace(bs, has_camera=False, gops=[replace(g, frames=rows[:6].copy()), g2], sizes={}, chained=False)
    from engine.codec.keypicture import decode_key_picture, encode_key_chain
    pic = decode_key_picture(g.key_picture)
    chain = encode_key_chain([pic, np.ascontiguousarray(np.roll(pic, 8, axis=1))], "vvc", 45)
    c = replace(b, gops=[replace(x, key_picture=k) for x, k in zip(b.gops, chain)], chained=True, sizes={})
    return [container.to_bytes(a, version=1), container.to_bytes(b), container.to_bytes(b, version=2),
            container.to_bytes(c), container.to_bytes(b, version=3)]


def split(data: bytes) -> list[tuple[bytes, bytes]]:
    """(tag, payload) of every section of a well-formed file."""
    out, pos = [], 5
    while pos < len(data):
        tag = data[pos:pos + 4]
        (n,) = struct.unpack_from("<I", data, pos + 4)
        out.append((tag, data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def join(head: bytes, sections, fix_crc: bool = True) -> bytes:
    parts = [head]
    for tag, payload in sections:
        crc = zlib.crc32(tag + payload) if fix_crc else random.getrandbits(32)
        parts.append(tag + struct.pack("<I", len(payload)) + payload + struct.pack("<I", crc))
    return b"".join(parts)


# ----------------------------------------------------------------------------- mutations

_EDGES = [0, 1, 2, 3, 7, 8, 15, 16, 127, 128, 255, 256, 1000, 1001, 2047, 2048, 2049, 4096, 65535,
          65536, 90_000, 90_001, 2**31 - 1, 2**31, 2**32 - 1]
# SEQH layout: width u16, height u16, fps_num u32, fps_den u32, frames u32, gops u16, body u8, flags u8, 5 f64
_SEQH_FIELDS = [(0, "H"), (2, "H"), (4, "I"), (8, "I"), (12, "I"), (16, "H"), (18, "B"), (19, "B")]


def _mutate_bytes(p: bytes, rng: random.Random) -> bytes:
    b = bytearray(p)
    for _ in range(rng.choice((1, 1, 1, 2, 3, 6))):
        op = rng.randrange(7)
        i = rng.randrange(len(b)) if b else 0
        if op == 0 and b:
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:
            b[i] = rng.randrange(256)
        elif op == 2 and b:
            b[i] = rng.choice((0, 0xFF, 0x7F, 0x80))
        elif op == 3:
            b[i:i] = bytes(rng.randrange(256) for _ in range(rng.randrange(1, 9)))
        elif op == 4 and b:
            del b[i:i + rng.randrange(1, 17)]
        elif op == 5 and b:
            del b[rng.randrange(len(b)):]
        elif op == 6 and b:
            j = rng.randrange(len(b))
            b[i:i] = b[j:j + rng.randrange(1, 33)]
    return bytes(b)


def _mutate_semantics(data: bytes, rng: random.Random) -> bytes:
    """Re-code the file with odd but codable semantics: the body near or behind the camera
    plane, tiny, empty, mirrored or huge boxes, wild angles, odd focal lengths."""
    bs = container.from_bytes(data)
    vals = bs.semantics().copy()
    names = list(bs.names)
    picks = {
        "trans.z": lambda: rng.choice([rng.uniform(-1, 0.1), rng.uniform(0.001, 0.05), rng.uniform(0, 50), 1e3]),
        "loc.w": lambda: rng.choice([0.0, rng.uniform(-0.02, 0.02), rng.uniform(-3, 3), 1e3]),
        "loc.h": lambda: rng.choice([0.0, rng.uniform(-0.02, 0.02), rng.uniform(-3, 3), 1e3]),
        "loc.cx": lambda: rng.uniform(-3, 4), "loc.cy": lambda: rng.uniform(-3, 4),
        "trans.x": lambda: rng.uniform(-5, 5), "trans.y": lambda: rng.uniform(-5, 5),
    }
    rows = slice(rng.randrange(bs.n_frames), None)
    for _ in range(rng.randrange(1, 6)):
        d = rng.randrange(len(names))
        pick = picks.get(names[d], lambda: rng.uniform(-20, 20))
        vals[rows, d] = pick()
    out = bs.with_semantics(vals)
    if rng.random() < 0.3:                                  # the key frame's own semantics too
        g = out.gops[0]
        key = replace(g.key, trans=np.array([g.key.trans[0], g.key.trans[1], rng.uniform(0.001, 0.2)]),
                      loc=np.array([rng.uniform(-1, 2), rng.uniform(-1, 2), rng.uniform(-0.05, 0.05), 0.01]),
                      focal=np.array([rng.choice([1e-3, 5.0, 1e4])] * 2))
        out = replace(out, gops=[replace(g, key=key)] + out.gops[1:])
    return container.to_bytes(out)


def mutate(data: bytes, rng: random.Random) -> tuple[str, bytes]:
    """One mutation of a well-formed file: (kind, bytes)."""
    head, secs = data[:5], split(data)
    kind = rng.choices(["payload", "field", "semantics", "structure", "crc"], [50, 15, 20, 10, 5])[0]
    if kind == "payload":
        tags = [t for t, _ in secs]
        weights = [{b"SEQH": 1, b"KPIC": 3, b"KSEM": 3, b"FSEM": 6}.get(t, 0.2) for t in tags]
        k = rng.choices(range(len(secs)), weights)[0]
        tag, payload = secs[k]
        if tag == b"FSEM" and len(payload) > 4 and rng.random() < 0.8:
            payload = payload[:4] + _mutate_bytes(payload[4:], rng)     # keep the frame count: reach the coder
        elif tag == b"KPIC" and len(payload) > 6 and rng.random() < 0.8:
            payload = payload[:6] + _mutate_bytes(payload[6:], rng)     # keep the header: reach the codec
        else:
            payload = _mutate_bytes(payload, rng)
        secs[k] = (tag, payload)
        kind = f"payload:{tag.decode()}"
    elif kind == "field":
        tag, payload = secs[0]
        p = bytearray(payload)
        off, fmt = rng.choice(_SEQH_FIELDS)
        if rng.random() < 0.2 and len(p) >= 60:        # the steps (versions 1 and 2; version 3's defaults are not written)
            off, fmt = 20 + 8 * rng.randrange(5), "d"
            v = rng.choice([0.0, -1.0, 1e-12, 1e-9, 1e3, 1e300, float("inf"), float("nan"), 5e-4])
        else:
            v = rng.choice(_EDGES) % (1 << (8 * struct.calcsize(fmt)))
        struct.pack_into("<" + fmt, p, off, v)
        secs[0] = (tag, bytes(p))
    elif kind == "semantics":
        return kind, _mutate_semantics(data, rng)
    elif kind == "structure":
        op = rng.randrange(5)
        i = rng.randrange(len(secs))
        if op == 0:
            del secs[i]
        elif op == 1:
            secs.insert(i, secs[rng.randrange(len(secs))])
        elif op == 2:
            j = rng.randrange(len(secs))
            secs[i], secs[j] = secs[j], secs[i]
        elif op == 3:
            return kind, data[:rng.randrange(len(data))]
        else:
            return kind, data + bytes(rng.randrange(256) for _ in range(rng.randrange(1, 40)))
    else:
        k = rng.randrange(len(secs))
        secs[k] = (secs[k][0], _mutate_bytes(secs[k][1], rng))
        return kind, join(head, secs, fix_crc=False)
    if rng.random() < 0.02:
        head = bytes([head[0] ^ 1]) + head[1:] if rng.random() < 0.5 else head[:4] + bytes([rng.randrange(256)])
    return kind, join(head, secs)


# ----------------------------------------------------------------------------- one case

_DECODERS: dict = {}


def run_case(data: bytes, side: int = 48, frames: int = 3) -> str:
    """'error' (a clean IHVCError) or 'valid' (decoded and muxed). Anything else raises."""
    from engine.codec.video import write_video
    from engine.synthesis.decoder import open_decoder
    try:
        bs = container.from_bytes(data)
        dec = open_decoder(bs, device="cpu", analytic=True).scaled(side)
        pick = sorted({0, min(1, bs.n_frames - 1), bs.n_frames - 1})[:frames]
        out = dec.decode_all(pick)
        assert out.dtype == np.uint8 and out.shape == (len(pick), dec.height, dec.width, 3), out.shape
        with tempfile.TemporaryDirectory() as d:
            assert write_video(Path(d) / "x.mp4", iter(out), bs.fps) == len(pick)
    except IHVCError as exc:
        msg = str(exc)
        assert msg and "\n" not in msg and msg.isprintable(), f"error message not one printable line: {msg!r}"
        return "error"
    return "valid"


def fuzz(n: int, seed: int, budget_s: float | None = None, side: int = 48, log=None) -> dict:
    """Run up to ``n`` cases (stopping after ``budget_s`` seconds if given). Returns totals."""
    import torch
    torch.set_num_threads(1)
    rng = random.Random(seed)
    random.seed(seed)                    # join(fix_crc=False) draws wrong checksums from it
    srcs = sources()
    totals: Counter = Counter()
    by_kind: Counter = Counter()
    unexpected = []
    t0 = time.perf_counter()
    for i in range(n):
        if budget_s is not None and time.perf_counter() - t0 > budget_s:
            break
        kind, data = mutate(srcs[rng.randrange(len(srcs))], rng)
        try:
            outcome = run_case(data, side)
        except Exception as exc:  # noqa: BLE001 - that is what is counted
            outcome = "unexpected"
            unexpected.append((i, kind, f"{exc.__class__.__name__}: {exc}", traceback.format_exc(), data))
        totals[outcome] += 1
        by_kind[(kind.split(":")[0] + (":" + kind.split(":")[1] if ":" in kind else ""), outcome)] += 1
        if log is not None and (i + 1) % 500 == 0:
            log(f"{i + 1} cases, {dict(totals)}, {time.perf_counter() - t0:.0f} s")
    return {"cases": sum(totals.values()), "totals": totals, "by_kind": by_kind, "unexpected": unexpected,
            "seconds": time.perf_counter() - t0}


# ----------------------------------------------------------------------------- the suite

def test_mutations_keep_framing_valid():
    """The mutator fixes lengths and checksums: a payload mutation passes the framing checks."""
    src = sources()[0]
    rng = random.Random(3)
    secs = split(src)
    secs[3] = (secs[3][0], _mutate_bytes(secs[3][1], rng))
    data = join(src[:5], secs)
    assert [s[0] for s in container._sections(data)] == ["SEQH", "KPIC", "KSEM", "FSEM", "END_"]


def test_fuzz_ci():
    """A fixed-seed sample within a time budget (no timing is asserted): zero unexpected outcomes,
    and the sample reaches every stage (clean errors and valid decodes of mutated files)."""
    r = fuzz(400, seed=17, budget_s=40)
    detail = "\n".join(f"case {i} ({k}): {e}\n{tb}" for i, k, e, tb, _ in r["unexpected"][:3])
    assert not r["unexpected"], detail
    t = r["totals"]
    assert r["cases"] >= 50 and t["error"] > 0 and t["valid"] > 0, t
    kinds = {k for (k, outcome) in r["by_kind"] if outcome == "valid"}
    assert "semantics" in kinds and any(k.startswith("payload:") for k in kinds), r["by_kind"]


# ----------------------------------------------------------------------------- the long run

def main(argv=None) -> int:  # pragma: no cover - the long run (docs/BENCHMARKS.md, "Reliability")
    import argparse
    import resource
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--cases", type=int, default=10_000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--side", type=int, default=48, help="decoded frame size (drafts, as the studio's preview)")
    p.add_argument("--save", default=None, help="folder to keep the unexpected cases in")
    a = p.parse_args(argv)
    r = fuzz(a.cases, a.seed, side=a.side, log=lambda s: print(s, flush=True))
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"cases {r['cases']}: clean errors {r['totals']['error']}, valid decodes {r['totals']['valid']}, "
          f"unexpected {r['totals']['unexpected']}; {r['seconds']:.0f} s; peak RSS {peak:.0f} MB")
    for (kind, outcome), c in sorted(r["by_kind"].items()):
        print(f"  {kind:14s} {outcome:10s} {c}")
    for i, k, e, tb, data in r["unexpected"][:20]:
        print(f"UNEXPECTED case {i} ({k}): {e}\n{tb}")
        if a.save:
            Path(a.save).mkdir(parents=True, exist_ok=True)
            (Path(a.save) / f"case_{i}.ihvc").write_bytes(data)
    return 1 if r["unexpected"] else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
