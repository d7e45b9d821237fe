"""Codec foundation: semantics, arithmetic coding, container, key picture, inspect, rewrite."""
import json
import struct
import zlib

from dataclasses import replace

import numpy as np
import pytest

from engine.codec import container
from engine.codec.entropy import (adaptive_entropy_bits, decode_residuals, encode_residuals, predict_residuals,
                            reconstruct)
from engine.errors import BitstreamError, InputError
from engine.codec.keypicture import decode_key_picture, encode_key_picture
from engine.codec.semantics import CORE_NAMES, FrameSemantics, QuantSpec, quantize, semantic_names, snap
from tests.factories import make_bitstream, smooth_semantics, real_picture


def test_semantic_names_and_flat_round_trip():
    assert len(CORE_NAMES) == 31 and len(semantic_names(True)) == 34
    assert CORE_NAMES[0] == "head.x" and CORE_NAMES[-1] == "loc.h"
    a = np.arange(34, dtype=float)
    f = FrameSemantics.from_array(a)
    assert f.pose.shape == (7, 3) and f.camera is not None
    np.testing.assert_array_equal(f.to_array(), a)
    with pytest.raises(ValueError):
        FrameSemantics.from_array(np.zeros(30))


def test_snap_is_idempotent_and_bounded():
    steps = QuantSpec().steps(True)
    x = smooth_semantics(50, True)
    s = snap(x, steps)
    np.testing.assert_array_equal(snap(s, steps), s)
    assert np.all(np.abs(s - x) <= steps / 2 + 1e-12)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_arithmetic_coder_round_trip_and_efficiency(seed):
    steps = QuantSpec().steps(True)
    q = quantize(smooth_semantics(150, True, seed), steps)
    r = predict_residuals(q, q[0])
    data = encode_residuals(r)
    back = decode_residuals(data, *r.shape)
    np.testing.assert_array_equal(back, r)
    np.testing.assert_array_equal(reconstruct(back, q[0]), q)
    ratio = 8 * len(data) / adaptive_entropy_bits(r)
    assert ratio < 1.05, f"code length {ratio:.3f} x the adaptive empirical entropy"


def test_arithmetic_coder_extremes():
    rng = np.random.default_rng(3)
    r = np.concatenate([np.zeros((20, 5), int), rng.integers(-100000, 100000, (20, 5)),
                        np.full((3, 5), 2**38), np.full((3, 5), -(2**38))])
    np.testing.assert_array_equal(decode_residuals(encode_residuals(r), *r.shape), r)


def test_container_round_trip_several_gops():
    bs = make_bitstream(45, gop=20)
    back = container.from_bytes(container.to_bytes(bs))
    assert back.key_frames == [0, 20, 40] and back.n_frames == 45 and back.has_camera
    np.testing.assert_allclose(back.semantics(), bs.semantics(), atol=1e-9)
    for g, h in zip(bs.gops, back.gops):
        assert h.key_picture.payload == g.key_picture.payload
        np.testing.assert_allclose(h.key.body_pose, g.key.body_pose, atol=QuantSpec().pose / 2 + 1e-9)
        np.testing.assert_allclose(h.key.betas, g.key.betas, atol=1e-6)
    # Serialising the parsed stream again gives the very same bytes.
    assert container.to_bytes(back) == container.to_bytes(bs)


def test_semantics_cost_is_small():
    bs = make_bitstream(100, camera=True)
    back = container.from_bytes(container.to_bytes(bs))
    assert back.sizes["FSEM"] * 8 / 100 < 120   # bits per frame of smooth synthetic motion


@pytest.mark.parametrize("codec,qp,min_psnr", [("vvc", 32, 30), ("hevc", 32, 30), ("av1", 32, 30)])
def test_key_picture_codecs(codec, qp, min_psnr):
    img = real_picture(128)
    kp = encode_key_picture(img, codec, qp)
    dec = decode_key_picture(kp)
    assert dec.shape == img.shape
    psnr = 10 * np.log10(255**2 / np.mean((dec.astype(float) - img) ** 2))
    assert psnr > min_psnr
    assert len(kp.payload) < img.nbytes / 10
    # Higher QP, fewer bytes.
    assert len(encode_key_picture(img, codec, qp + 10).payload) < len(kp.payload)


def test_key_picture_bad_input():
    with pytest.raises(InputError):
        encode_key_picture(np.zeros((15, 16, 3), np.uint8))
    with pytest.raises(InputError):
        encode_key_picture(real_picture(32), "mpeg2")
    with pytest.raises(InputError):
        encode_key_picture(real_picture(32), "hevc", 70)


def test_rewrite_keeps_key_picture_bytes(tmp_path):
    bs = make_bitstream(30, gop=12, codec="vvc")
    src = tmp_path / "in.ihvc"
    container.write(bs, src)
    original = container.read(src)
    edited_values = original.semantics()
    edited_values[5:9, 0] += 0.3           # turn the head in frames 5..8
    edited_values[:, 27] = 0.4              # move the box
    dst = tmp_path / "out.ihvc"
    container.write(original.with_semantics(edited_values), dst)
    out = container.read(dst)
    np.testing.assert_allclose(out.semantics(), snap(edited_values, out.steps), atol=1e-9)
    src_bytes, dst_bytes = src.read_bytes(), dst.read_bytes()
    # every payload is in both files, byte for byte: the bytes all of them begin with (the parameter
    # sets) once, in the sequence header (format versions 3 and 4), the rest of each in its own section
    shared = container.shared_prefix([g.key_picture.payload for g in out.gops])
    assert src_bytes[4] == dst_bytes[4] == container.VERSION and len(shared) > 20
    assert shared in src_bytes and shared in dst_bytes
    for g in out.gops:
        rest = g.key_picture.payload[len(shared):]
        assert rest and rest in src_bytes and rest in dst_bytes
    assert [g.key_picture.payload for g in out.gops] == [g.key_picture.payload for g in original.gops]
    with pytest.raises(ValueError):
        original.with_semantics(edited_values[:-1])


def test_version_3_stores_what_the_groups_repeat_once():
    """Version 3: the key pictures' common first bytes (VVC's parameter sets) go once into the sequence
    header and a key with the previous key's body shape says so in one byte; nothing else changes."""
    from engine.codec.keypicture import encode_key_picture
    bs = make_bitstream(30, gop=10, codec="vvc")
    pics = [encode_key_picture(real_picture(128)[:, ::(-1) ** j], "vvc", 38 + 3 * j) for j in range(3)]
    shape = bs.gops[0].key.betas                       # one body: the encoder fits one shape per clip
    bs = replace(bs, gops=[replace(g, key_picture=p, key=replace(g.key, betas=shape)) for g, p in zip(bs.gops, pics)],
                 sizes={})
    v3, v2 = container.to_bytes(bs, version=3), container.to_bytes(bs, version=2)
    shared = container.shared_prefix([p.payload for p in pics])
    assert v3[4] == 3 and v2[4] == 2 and 20 < len(shared) < min(len(p.payload) for p in pics)
    # each later group saves the shared bytes (less their u16 length) and its shape (1 + 4 x 10 + 8 bytes,
    # less one flag byte per group); every group two section framings (24), its frame count (4) and
    # its empty reference list (1), less the key semantics' u16 length; the default steps (40)
    n_betas = len(bs.gops[0].key.betas)
    assert len(v2) - len(v3) == (2 * len(shared) - 2) + (2 * (4 * n_betas + 9) - 3) + 3 * (24 + 4 + 1 - 2) + 40
    a, b = container.from_bytes(v3), container.from_bytes(v2)
    assert [g.key_picture.payload for g in a.gops] == [p.payload for p in pics] == [g.key_picture.payload for g in b.gops]
    assert np.array_equal(a.semantics(), b.semantics())
    # the rate accounting counts the shared bytes once, as key-picture bytes
    from engine.codec.rate import rate_of
    assert rate_of(a).key_picture_bpf * a.n_frames / 8 == sum(len(p.payload) for p in pics) - 2 * len(shared)
    assert rate_of(b).key_picture_bpf * b.n_frames / 8 == sum(len(p.payload) for p in pics)
    # a key with another shape keeps its own
    other = replace(bs.gops[1].key, betas=bs.gops[1].key.betas + 0.5)
    c = container.from_bytes(container.to_bytes(replace(bs, gops=[bs.gops[0], replace(bs.gops[1], key=other),
                                                                   bs.gops[2]], sizes={}), version=3))
    assert np.allclose(c.gops[1].key.betas, other.betas) and np.allclose(c.gops[2].key.betas, bs.gops[2].key.betas)
    # a shape flag on the first group, and shared bytes with a single group, are refused
    sections = _split(v3)
    assert [t for t, _ in sections] == [b"SEQH", b"GRUP", b"GRUP", b"GRUP", b"END_"]
    grp = sections[1][1]
    flag_at = 6 + struct.unpack_from("<I", grp, 2)[0]
    assert grp[flag_at] == 0
    bad = sections[:1] + [(b"GRUP", grp[:flag_at] + b"\x01" + grp[flag_at + 1:])] + sections[2:]
    with pytest.raises(BitstreamError, match="first group"):
        container.from_bytes(_join(v3[:5], bad))
    # the section sizes still add up to the file, split into what each part of a group holds
    assert sum(a.sizes.values()) == len(v3) and a.sizes["GRUP"] == 3 * 12 and a.sizes["KSEM"] > 0
    one = replace(bs, gops=[replace(bs.gops[0], frames=np.concatenate([g.frames for g in bs.gops]))], sizes={})
    data = container.to_bytes(one, version=3)
    head = _split(data)[0][1]
    assert head[-2:] == b"\x00\x00"                   # one group: nothing shared
    forged = head[:-2] + struct.pack("<H", 2) + b"ab"
    with pytest.raises(BitstreamError, match="shared key-picture bytes"):
        container.from_bytes(_join(data[:5], [(b"SEQH", forged)] + _split(data)[1:]))
    with pytest.raises(InputError, match="version 1"):
        container.to_bytes(replace(bs, max_refs=2, gops=[replace(bs.gops[0], refs=(1,))] + bs.gops[1:]), version=1)


def test_version_4_codes_all_semantics_in_one_stream():
    """Version 4: the groups' key and frame semantics in one arithmetic-coded stream whose contexts carry
    from group to group (the last section, SEMS): the same bitstream in fewer bytes, read back exactly."""
    from engine.codec.rate import rate_of
    bs = make_bitstream(60, gop=6)
    shape = bs.gops[0].key.betas                       # one body: the encoder fits one shape per clip
    bs = replace(bs, gops=[replace(g, key=replace(g.key, betas=shape)) for g in bs.gops], sizes={})
    v3, v4 = container.to_bytes(bs, version=3), container.to_bytes(bs)
    assert v4[4] == 4 and v3[4] == 3
    a, b = container.from_bytes(v4), container.from_bytes(v3)
    assert np.array_equal(a.semantics(), b.semantics()) and np.array_equal(a.semantics(), snap(bs.semantics(), bs.steps))
    for ga, gb in zip(a.gops, b.gops):
        assert ga.key_picture.payload == gb.key_picture.payload
        assert np.array_equal(ga.key.body_pose, gb.key.body_pose) and np.array_equal(ga.key.betas, gb.key.betas)
    # ten groups: the semantics learnt from the groups before cost less than from even odds each time
    sem3 = b.sizes["KSEM"] + b.sizes["FSEM"]
    sem4 = a.sizes["KSEM"] + a.sizes["FSEM"]
    assert sem4 < 0.9 * sem3 and len(v4) < len(v3)
    assert [t for t, _ in _split(v4)] == [b"SEQH", b"KEYS", b"SEMS"]
    assert sum(a.sizes.values()) == len(v4) and a.sizes["SEMS"] == a.sizes["KEYS"] == 12 and a.sizes["KSEM"] > 0
    assert rate_of(a).key_picture_bpf == rate_of(b).key_picture_bpf      # the same pictures, counted alike
    # the rate accounting's per-frame bits follow the stream: within a few bytes of what it holds
    assert abs(sum(np.sum(x) for x in container.frame_bits(a)) / 8 - a.sizes["FSEM"]) < 2 * len(a.gops) + 8
    assert rate_of(a).bytes == len(v4)
    assert container._varint(300) == b"\xac\x02" and container._varint(5) == b"\x05"
    # a stream cut short, bytes left over after the last picture, a picture's length running past the
    # section, or no stream at all: refused by name
    sections = _split(v4)
    with pytest.raises(BitstreamError, match="SEMS"):
        container.from_bytes(_join(v4[:5], sections[:-1] + [(b"SEMS", sections[-1][1][:len(sections[-1][1]) // 3])]))
    with pytest.raises(BitstreamError, match="KEYS.*trailing"):
        container.from_bytes(_join(v4[:5], sections[:1] + [(b"KEYS", sections[1][1] + b"x")] + sections[2:]))
    keys = sections[1][1]
    with pytest.raises(BitstreamError, match="KEYS.*more bytes"):
        container.from_bytes(_join(v4[:5], sections[:1] + [(b"KEYS", keys[:2] + b"\xff\xff\x7f" + keys[4:])] + sections[2:]))
    with pytest.raises(BitstreamError, match="longer than 4 bytes"):
        container.from_bytes(_join(v4[:5], sections[:1] + [(b"KEYS", keys[:2] + b"\xff" * 5 + keys[4:])] + sections[2:]))
    with pytest.raises(BitstreamError, match="missing SEMS"):
        container.from_bytes(_join(v4[:5], sections[:-1]))
    # one group: one stream, no larger than version 3's two
    one = make_bitstream(30)
    assert len(container.to_bytes(one)) <= len(container.to_bytes(one, version=3))


def _split(data: bytes) -> list[tuple[bytes, bytes]]:
    out, pos = [], 5
    while pos < len(data):
        (n,) = struct.unpack_from("<I", data, pos + 4)
        out.append((data[pos:pos + 4], data[pos + 8:pos + 8 + n]))
        pos += 12 + n
    return out


def _join(head: bytes, sections) -> bytes:
    return head + b"".join(t + struct.pack("<I", len(p)) + p + struct.pack("<I", zlib.crc32(t + p)) for t, p in sections)


def test_malformed_headers():
    data = container.to_bytes(make_bitstream(10))
    for bad, what in [(b"NOPE" + data[4:], "magic"), (data[:4] + b"\x09" + data[5:], "version"),
                      (data[:3], "magic"), (data[:-1], "SEMS")]:
        with pytest.raises(BitstreamError, match=what):
            container.from_bytes(bad)
    with pytest.raises(BitstreamError, match="at byte"):
        container.from_bytes(data[:40])


def test_read_missing_and_folder(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        container.read(tmp_path / "missing.ihvc")
    with pytest.raises(InputError, match="folder"):
        container.read(tmp_path)


def _fix_crcs(data: bytes) -> bytes:
    """Recompute every section checksum so mutations reach the parsers behind the CRC."""
    out, pos = bytearray(data[:5]), 5
    while pos + 8 <= len(data):
        tag = data[pos:pos + 4]
        (n,) = struct.unpack_from("<I", data, pos + 4)
        if pos + 12 + n > len(data):
            out += data[pos:]
            return bytes(out)
        payload = data[pos + 8:pos + 8 + n]
        out += data[pos:pos + 8 + n] + struct.pack("<I", zlib.crc32(tag + payload))
        pos += 12 + n
    out += data[pos:]
    return bytes(out)


def _parse_or_error(blob: bytes) -> str:
    try:
        container.from_bytes(blob)
        return "ok"
    except BitstreamError as exc:
        assert "at byte" in str(exc) or "(file" in str(exc)
        return "error"


@pytest.mark.timeout(240)
def test_fuzz_truncation_and_mutation():
    """Truncate a real bitstream at every byte, then 10,000+ random flips, insertions, deletions."""
    data = container.to_bytes(make_bitstream(12, gop=6, codec="hevc", size=64))
    for cut in range(len(data)):
        assert _parse_or_error(data[:cut]) == "error"
    rng = np.random.default_rng(1234)
    outcomes = {"ok": 0, "error": 0}
    for i in range(12000):
        blob = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            kind = rng.integers(3)
            pos = int(rng.integers(len(blob)))
            if kind == 0:
                blob[pos] ^= 1 << int(rng.integers(8))
            elif kind == 1:
                blob[pos:pos] = bytes(rng.integers(0, 256, int(rng.integers(1, 9)), dtype=np.uint8))
            else:
                del blob[pos:pos + int(rng.integers(1, 9))]
        blob = bytes(blob)
        if i % 2:            # half the cases get valid checksums, to reach the section parsers
            blob = _fix_crcs(blob)
        outcomes[_parse_or_error(blob)] += 1
    assert outcomes["error"] > 1000      # the corruptions are caught, not silently accepted...
    assert sum(outcomes.values()) == 12000


def test_inspect_cli(tmp_path, capsys):
    import main
    path = tmp_path / "still.ihvc"
    container.write(make_bitstream(25, codec="vvc", size=128), path)
    assert main.main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["frames"] == 25 and info["fps"] == 25
    b = info["bits_per_frame"]
    assert set(b) >= {"key_picture", "semantics", "total"}
    assert b["total"] == pytest.approx(sum(b[k] for k in ("key_picture", "key_semantics", "semantics", "camera", "header")))
    assert b["total"] * 25 == pytest.approx(path.stat().st_size * 8)
    assert info["kbps_at_25fps"] == pytest.approx(b["total"] * 25 / 1000)
    assert main.main(["inspect", str(path)]) == 0
    assert capsys.readouterr().out.count("kbps at 25 fps") == 1        # a 25 fps file: the rate once
    bad = tmp_path / "bad.ihvc"
    bad.write_bytes(path.read_bytes()[:100])
    assert main.main(["inspect", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: corrupt bitstream") and err.count("\n") == 1


def test_code_lengths_add_up_to_the_coded_size():
    from engine.codec.entropy import code_lengths
    steps = QuantSpec().steps(True)
    q = quantize(smooth_semantics(120, True, 5), steps)
    r = predict_residuals(q, q[0])
    lengths = code_lengths(r)
    bits = lengths.sum(0)
    assert lengths.shape == (120, 34) and np.all(bits > 0)
    coded = 8 * len(encode_residuals(r))
    assert abs(bits.sum() - coded) < 48       # the range coder's flush: a few bytes
    # A still dimension costs far less than a moving one.
    r2 = r.copy()
    r2[:, 31:] = 0
    assert code_lengths(r2).sum(0)[31:].sum() < bits[31:].sum() / 3
    # per row, the same model: a still row is the cheap one
    r3 = r.copy()
    r3[60] = 0
    assert code_lengths(r3).sum(1)[60] < lengths.sum(1)[60]


def test_frame_bits_follow_the_coding_order():
    """container.frame_bits: per group, each frame's row cost in display order (a key inside its group:
    frames before it are coded last, backwards); they add up to the group's semantic bits."""
    from engine.codec.container import frame_bits, semantic_bits_by_group
    from tests.factories import make_bitstream
    bs = make_bitstream(n_frames=8, camera=True, size=32, seed=1)
    g = bs.gops[0]
    moved = g.frames.copy()
    moved[5, :21] += 0.3                       # one frame jumps: it and the next cost more
    inside = replace(bs, gops=[replace(g, frames=moved, key_offset=3)])
    fb = frame_bits(inside)
    assert len(fb) == 1 and fb[0].shape == (8,)
    assert abs(fb[0].sum() - sum(semantic_bits_by_group(inside).values())) < 1e-6
    assert fb[0][5] > np.median(fb[0]) and fb[0][6] > np.median(fb[0])


def test_atomic_write_gives_the_usual_file_mode(tmp_path):
    import importlib
    import os

    import engine.fileio as fio
    mask = os.umask(0o022)
    try:
        importlib.reload(fio)                 # the module reads the umask once, at import
        fio.atomic_write_bytes(tmp_path / "a.bin", b"x")
    finally:
        os.umask(mask)
        importlib.reload(fio)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o644
    assert [p.name for p in tmp_path.iterdir()] == ["a.bin"]


@pytest.mark.parametrize("codec", ["vvc", "hevc"])
def test_key_picture_has_no_colour_bias(codec):
    # swscale's direct yuv420p -> rgb24 darkened pictures by ~1 level per channel; engine.codec.colour must not
    from skimage import data
    from skimage.transform import resize
    img = (resize(data.astronaut(), (128, 128)) * 255).astype(np.uint8)
    out = decode_key_picture(encode_key_picture(img, codec, 22)).astype(float)
    bias = (out - img).reshape(-1, 3).mean(0)
    assert np.abs(bias).max() < 0.4, bias


def test_colour_round_trip_through_raw_planes():
    # raw planes (the anchors' ffmpeg pipes) and PyAV frames (key pictures) convert identically
    from engine.codec.colour import rgb_to_yuv420_bytes, rgb_to_yuv420_frame, yuv420_bytes_to_rgb, yuv420_frame_to_rgb
    rng = np.random.default_rng(0)
    frames = np.repeat(np.repeat(rng.integers(30, 220, (2, 4, 4, 3), dtype=np.uint8), 16, 1), 16, 2)
    for fmt in ("yuv420p", "yuv420p10le"):
        back = yuv420_bytes_to_rgb(rgb_to_yuv420_bytes(frames, fmt), 64, 64, fmt)
        assert back.shape == frames.shape
        assert np.array_equal(back[1], yuv420_frame_to_rgb(rgb_to_yuv420_frame(frames[1], fmt)))
        inner = (back.astype(float) - frames)[:, 4:12, 4:12]       # away from colour edges: near exact
        assert np.abs(inner).max() <= 2


def test_picture_coder_codes_each_frame_once_as_encode_key_picture_does():
    from engine.codec.keypicture import PictureCoder
    frames = np.stack([real_picture(32), real_picture(32)[::-1].copy(), real_picture(32)[:, ::-1].copy()])
    with PictureCoder(frames, "hevc", 30, workers=2) as coder:
        coder.submit([2, 0, 2])
        first = coder.get(0)
        assert coder.get(0) is first                       # coded once
        assert coder.get(1).payload == encode_key_picture(frames[1], "hevc", 30).payload
        assert first.payload == encode_key_picture(frames[0], "hevc", 30).payload
        assert sorted(coder._jobs) == [(0, 30), (1, 30), (2, 30)]
        coarse = coder.get(0, qp=45)
        assert coarse.qp == 45 and len(coarse.payload) < len(first.payload)


def test_encode_residuals_remembers_by_content_not_by_array():
    """The coder remembers what it coded (the key search codes the same groups again and again): an array
    changed in place after coding must code as a fresh one of its new values does."""
    from engine.codec import entropy
    rng = np.random.default_rng(5)
    r = rng.integers(-3, 4, (30, 7))
    first = encode_residuals(r)
    assert encode_residuals(r.copy()) == first
    r[4, 2] += 9                                   # the same array object, other values
    again = encode_residuals(r)
    assert again != first
    entropy._CODED.clear()
    assert encode_residuals(r) == again            # what a coder with nothing remembered writes
    np.testing.assert_array_equal(decode_residuals(again, *r.shape), r)
    for k in range(entropy.CODED_MEMO + 10):       # bounded
        encode_residuals(np.full((1, 3), k))
    assert len(entropy._CODED) == entropy.CODED_MEMO


def test_picture_coder_limit_codes_one_at_a_time_then_side_by_side(monkeypatch):
    import threading
    import time

    from engine.codec import keypicture
    busy, most = [0], [0]
    lock = threading.Lock()

    def fake(rgb, codec, qp, preset):
        with lock:
            busy[0] += 1
            most[0] = max(most[0], busy[0])
        time.sleep(0.15)
        with lock:
            busy[0] -= 1
        return keypicture.KeyPicture(1, qp, rgb.shape[1], rgb.shape[0], b"x")

    monkeypatch.setattr(keypicture, "encode_key_picture", fake)
    frames = np.zeros((6, 8, 8, 3), np.uint8)
    with keypicture.PictureCoder(frames, "vvc", 37, workers=2) as coder:
        coder.limit(1)
        coder.submit([0, 1, 2])
        [coder.get(k) for k in (0, 1, 2)]
        assert most[0] == 1
        coder.limit(None)
        coder.submit([3, 4, 5])
        [coder.get(k) for k in (3, 4, 5)]
        assert most[0] == 2
