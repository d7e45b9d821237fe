"""engine/synthesis/decoder.py and ``main.py decode``: a small bitstream built here, with a real key picture
(engine.codec.keypicture) and a synthetic two-box body whose "head" box follows the head joint."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import torch
import trimesh

from engine.codec.bitstream import BODY_MODEL_IDS, Bitstream, GroupOfPictures
from engine.errors import InputError
from engine.codec.keypicture import decode_key_picture, encode_key_picture
from engine.codec.semantics import KeySemantics, QuantSpec, snap

SIZE = 64


class BoxBody:
    """Torso box + head box; the head slides sideways with the head joint's y rotation."""

    def __init__(self):
        torso = trimesh.creation.box(extents=[0.5, 0.6, 0.25])
        head = trimesh.creation.box(extents=[0.25, 0.25, 0.25])
        head.apply_translation([0.0, 0.45, 0.0])
        self.n_torso = len(torso.vertices)
        m = trimesh.util.concatenate([torso, head])
        self.faces = np.asarray(m.faces, np.int64)
        self.v = torch.tensor(np.asarray(m.vertices), dtype=torch.float32)
        self.calls = 0

    def forward(self, body_pose, betas=None):
        self.calls += 1
        body_pose = torch.as_tensor(body_pose, dtype=torch.float32)
        v = self.v[None].repeat(body_pose.shape[0], 1, 1)
        v[:, self.n_torso:, 0] += body_pose[:, 14, 1, None] * 0.5
        return type("Out", (), {"vertices": v, "joints": None})()


def picture(size=SIZE):
    y, x = np.mgrid[0:size, 0:size] / size
    img = np.stack([0.5 + 0.4 * np.sin(9 * x + 3 * y), 0.5 + 0.4 * np.cos(7 * y), 0.3 + 0.5 * x * y], -1)
    return (img * 255).astype(np.uint8)


def make_stream(n=6, camera=False, size=SIZE, codec="hevc"):
    quant = QuantSpec()
    bs = Bitstream(width=size, height=size, fps=Fraction(25), quant=quant,
                   body_model=BODY_MODEL_IDS["anny"], has_camera=camera)
    d = 34 if camera else 31
    rows = np.zeros((n, d))
    rows[:, 26] = 5.0                                   # trans z
    rows[:, 27:31] = (0.5, 0.5, 1.0, 1.0)               # loc
    rows[:, 27] += np.linspace(0, 0.1, n)               # the body drifts right
    rows[:, 1 * 0 + 1] = np.linspace(0, 0.2, n)         # head.y (pose row 0 = head)
    rows = snap(rows, bs.steps)
    pose = np.zeros((21, 3))
    pose[14:] = rows[0, :21].reshape(7, 3)
    key = KeySemantics(body_pose=pose, betas=np.zeros(0), rot=rows[0, 21:24], trans=rows[0, 24:27],
                       loc=rows[0, 27:31], focal=np.array([2.0, 2.0]))
    kp = encode_key_picture(picture(size), codec, 22)
    bs.gops.append(GroupOfPictures(0, kp, key, rows))
    return bs


@pytest.fixture(scope="module")
def stream():
    return make_stream()


def test_key_frame_is_the_decoded_key_picture(stream):
    from engine.synthesis.decoder import Decoder
    dec = Decoder(stream, device="cpu", body_model=BoxBody())
    key = decode_key_picture(stream.gops[0].key_picture)
    assert np.array_equal(dec.decode_frame(0), key)
    # The key frame's own semantics, decoded through the mesh path, reproduce the key picture.
    same = dec.decode_frame(3, semantics=stream.gops[0].frames[0])
    assert same.dtype == np.uint8 and same.shape == (SIZE, SIZE, 3)
    assert np.abs(same.astype(int) - key.astype(int)).max() <= 1


def test_an_edited_key_frame_is_drawn_from_its_row(stream):
    """A key frame whose row an edit changed is drawn from that row, in decode_frame and decode_all alike,
    and through a written file: shown as the key picture, the edited video jumped back to the original
    pose at every key frame. The key's own row still gives the key picture as coded."""
    from engine.codec import container
    from engine.synthesis.decoder import Decoder
    key = decode_key_picture(stream.gops[0].key_picture).astype(int)
    own = stream.gops[0].frames[0]
    assert stream.is_key_row(stream.gops[0], own) and stream.is_key_row(stream.gops[0], own + 0.2 * stream.steps)
    rows = stream.semantics().copy()
    rows[0, 27] += 0.125                                 # the key frame's box 8 px right
    edited = container.from_bytes(container.to_bytes(stream.with_semantics(rows)))
    assert not edited.is_key_row(edited.gops[0], edited.gops[0].frames[0])
    assert edited.gops[0].key_picture.payload == stream.gops[0].key_picture.payload
    dec = Decoder(edited, device="cpu", body_model=BoxBody())
    out = dec.decode_frame(0)
    assert np.abs(out[32, 36:44].astype(int) - key[32, 28:36]).max() <= 2
    assert np.array_equal(dec.decode_all(frames=[0, 1])[0], out)
    assert np.array_equal(dec.decode_frame(0, semantics=own), key)
    # A camera edit of a key frame shows too.
    cam = make_stream(n=3, camera=True)
    moved = cam.gops[0].frames[0].copy()
    moved[31] = 4 / SIZE
    assert cam.is_key_row(cam.gops[0], cam.gops[0].frames[0]) and not cam.is_key_row(cam.gops[0], moved)


def test_body_motion_moves_pixels(stream):
    from engine.synthesis.decoder import Decoder
    dec = Decoder(stream, device="cpu", body_model=BoxBody())
    key = decode_key_picture(stream.gops[0].key_picture).astype(int)
    row = stream.gops[0].frames[0].copy()
    row[27] += 0.125                                     # move the box 8 px right, nothing else
    out = dec.decode_frame(2, semantics=row).astype(int)
    # Centre of the torso: the frame shows what the key had 8 px to the left.
    assert np.abs(out[32, 36:44] - key[32, 28:36]).max() <= 2
    # Far corner (background, identity): unchanged.
    assert np.abs(out[:4, :4] - key[:4, :4]).max() <= 1
    with pytest.raises(InputError):
        dec.decode_frame(2, semantics=np.zeros(5))
    with pytest.raises(InputError):
        dec.decode_frame(99)


def test_decode_all_matches_decode_frame_and_caches_key(stream):
    from engine.synthesis.decoder import Decoder
    body = BoxBody()
    dec = Decoder(stream, device="cpu", body_model=body, batch=4)
    seen = []
    video = dec.decode_all(progress=lambda d, t: seen.append((d, t)))
    assert video.shape == (6, SIZE, SIZE, 3) and video.dtype == np.uint8
    assert seen[-1] == (6, 6)
    calls = body.calls
    for i in (1, 5):
        assert np.array_equal(dec.decode_frame(i), video[i])
    assert body.calls == calls + 2                      # one forward per frame; the key mesh is cached
    assert len(dec._cache) == 1
    # Frames really differ as the body drifts.
    assert np.abs(video[5].astype(int) - video[0].astype(int)).mean() > 1.0
    sub = dec.decode_all(frames=[4, 1])
    assert np.array_equal(sub[0], video[4]) and np.array_equal(sub[1], video[1])


def test_camera_group_pans_background():
    from engine.synthesis.decoder import Decoder
    bs = make_stream(n=3, camera=True)
    dec = Decoder(bs, device="cpu", body_model=BoxBody())
    key = decode_key_picture(bs.gops[0].key_picture).astype(int)
    row = bs.gops[0].frames[0].copy()
    row[31] = 4 / SIZE                                    # pan the background 4 px right
    out = dec.decode_frame(1, semantics=row).astype(int)
    assert np.abs(out[2:10, 10:20] - key[2:10, 6:16]).max() <= 2


def test_cli_decode_writes_video_and_pngs(tmp_path, monkeypatch, stream):
    import engine.synthesis.body as bm
    from engine.codec import container
    from engine.codec.video import read_video
    from main import main
    monkeypatch.setattr(bm, "load_body_model", lambda name="anny", path=None, device=None: BoxBody())
    src = tmp_path / "clip.ihvc"
    container.write(stream, src)
    out = tmp_path / "out.mkv"
    rc = main(["decode", str(src), "-o", str(out), "--device", "cpu", "--frames", "1:4",
               "--png-dir", str(tmp_path / "png"), "--quiet", "--analytic", "--lossless"])
    assert rc == 0
    clip = read_video(out)
    assert clip.frames.shape == (3, SIZE, SIZE, 3)
    pngs = sorted((tmp_path / "png").glob("*.png"))
    assert [p.name for p in pngs] == ["frame_000001.png", "frame_000002.png", "frame_000003.png"]
    from engine.synthesis.decoder import Decoder
    ref = Decoder(container.read(src), device="cpu", body_model=BoxBody()).decode_all(range(1, 4))
    assert np.array_equal(clip.frames, ref)              # lossless output
    # Bad ranges and formats are one-line user errors, and nothing is written.
    assert main(["decode", str(src), "-o", str(tmp_path / "x.mkv"), "--frames", "9:20", "--quiet"]) == 2
    assert main(["decode", str(src), "-o", str(tmp_path / "x.avi"), "--quiet"]) == 2
    assert not (tmp_path / "x.mkv").exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]


def test_body_off_screen_and_refiner_hook(stream):
    from engine.synthesis.decoder import Decoder
    key = decode_key_picture(stream.gops[0].key_picture)
    dec = Decoder(stream, device="cpu", body_model=BoxBody())
    row = stream.gops[0].frames[0].copy()
    row[27] = 5.0                                        # the person's box far outside the frame
    out = dec.decode_frame(1, semantics=row)
    assert out.shape == key.shape and np.isfinite(out).all()

    class Refiner:
        def __init__(self):
            self.seen = None

        def refine_decoder(self, fa):
            self.seen = (fa.raster.tri.shape, fa.vertices.shape, fa.motion.grid.shape)
            return torch.full((fa.rot.shape[0], 3) + fa.key.image.shape[2:], 7.0)
    ref = Refiner()
    dec = Decoder(stream, device="cpu", body_model=BoxBody(), refiner=ref)
    assert (dec.decode_frame(2) == 7).all()
    assert ref.seen[0] == (1, SIZE, SIZE) and ref.seen[2] == (1, SIZE, SIZE, 2)


def test_cli_decode_is_analytic_by_default_learned_on_request_and_says_when_it_falls_back(
        tmp_path, monkeypatch, capsys, stream):
    import engine.synthesis.body as bm
    import engine.synthesis.refiner as learned
    from engine.codec import container
    from engine.synthesis.decoder import Decoder
    from engine.codec.video import read_video
    from main import main
    monkeypatch.setattr(bm, "load_body_model", lambda name="anny", path=None, device=None: BoxBody())
    src = tmp_path / "clip.ihvc"
    container.write(stream, src)
    # Default: the analytic decoder (the better one on people it never saw; BENCHMARKS), said in the summary.
    assert main(["decode", str(src), "-o", str(tmp_path / "a.mkv"), "--device", "cpu", "--quiet", "--lossless"]) == 0
    assert "(analytic decoder)" in capsys.readouterr().err
    ana = Decoder(stream, device="cpu", body_model=BoxBody()).decode_all()
    assert np.array_equal(read_video(tmp_path / "a.mkv").frames, ana)
    if not learned.DEFAULT_CHECKPOINT.exists():
        pytest.skip("no shipped generator weights")
    # --learned: the shipped learned decoder, and the summary line says so.
    assert main(["decode", str(src), "-o", str(tmp_path / "l.mkv"), "--device", "cpu", "--quiet", "--lossless",
                 "--learned"]) == 0
    assert "(learned decoder)" in capsys.readouterr().err
    ref = Decoder(stream, device="cpu", body_model=BoxBody(), refiner=learned.load_refiner(device="cpu"))
    assert np.array_equal(read_video(tmp_path / "l.mkv").frames, ref.decode_all())
    # --learned with no weights shipped: the analytic decoder, said out loud.
    monkeypatch.setattr(learned, "DEFAULT_CHECKPOINT", tmp_path / "missing.safetensors")
    assert main(["decode", str(src), "-o", str(tmp_path / "m.mkv"), "--device", "cpu", "--quiet", "--lossless",
                 "--learned"]) == 0
    err = capsys.readouterr().err
    assert "note: no learned weights" in err and "(analytic decoder)" in err
    assert np.array_equal(read_video(tmp_path / "m.mkv").frames, ana)
    assert main(["decode", str(src), "-o", str(tmp_path / "n.mkv"), "--analytic", "--learned", "--quiet"]) == 2
    assert "contradict" in capsys.readouterr().err
    # A checkpoint the user names but that is corrupt: a one-line error and nothing written.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not weights")
    (tmp_path / "bad.json").write_text("{")
    assert main(["decode", str(src), "-o", str(tmp_path / "b.mkv"), "--checkpoint", str(bad), "--quiet"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and "bad" in err[0]
    assert not (tmp_path / "b.mkv").exists()


def test_error_regions_cover_the_frame_once():
    from engine.benchmarks.error_regions import REGIONS, region_masks
    body = np.zeros((40, 50), bool)
    body[10:20, 10:20] = True
    hole = np.zeros_like(body)
    hole[5:12, 30:40] = True
    hole[12:14, 12:14] = True                      # on the body: counts as body
    m = region_masks(body, hole, band_px=3)
    assert set(m) == set(REGIONS)
    assert np.array_equal(sum(v.astype(int) for v in m.values()), np.ones(body.shape, int))
    assert m["disoccluded"].sum() == 70 and m["band"][9, 15] and not m["band"][0, 0] and m["rest"][0, 0]
    assert region_masks(body, None)["disoccluded"].sum() == 0


def test_a_frame_decodes_the_same_whatever_shares_its_batch():
    """The bundled sample (Anny, fitted shape): decode_all's batches, a batch of other frames and one frame
    alone give the same pixels. (A batched body forward rounded the vertices' last bit by batch, which
    flipped silhouette pixels and moved the warp around them: 11 to 217 pixels of a frame.)"""
    from pathlib import Path

    from engine.codec import container
    from engine.synthesis.decoder import Decoder
    bs = container.read(Path(__file__).resolve().parents[1] / "assets" / "sample.ihvc")
    gop = next(g for g in bs.gops if g.n_frames >= 8)
    frames = [gop.start + j for j in range(8) if j != gop.key_offset]
    dec = Decoder(bs, device="cpu", batch=8)
    together = dec.decode_all(frames)
    for k in (0, 3, len(frames) - 1):
        assert np.array_equal(dec.decode_frame(frames[k]), together[k])
    odd = dec.decode_all(frames[1::2])
    assert all(np.array_equal(odd[n], together[1 + 2 * n]) for n in range(len(odd)))
    # A shared DecodeCache keeps one entry per frame: frames met in other batches are reused as they are.
    from engine.synthesis.decoder import DecodeCache
    cache = DecodeCache()
    Decoder(bs, device="cpu", body_model=dec.body, batch=3, cache=cache).decode_all(frames[1::2])
    assert len(cache.frames) == len(frames[1::2])
    cached = Decoder(bs, device="cpu", body_model=dec.body, batch=8, cache=cache)
    assert np.array_equal(cached.decode_all(frames), together)
    assert len(cache.frames) == len(frames)


def test_cpu_batches_hold_about_the_same_pixels_whatever_the_size(stream):
    from engine.synthesis.decoder import CPU_BATCH_PIXELS, Decoder
    bs = stream
    body = BoxBody()
    assert Decoder(bs, device="cpu", body_model=body).batch == 8                   # small frames: 8 at once
    assert Decoder(bs, device="cpu", body_model=body, size=(384, 384)).batch == CPU_BATCH_PIXELS // 384 ** 2
    assert Decoder(bs, device="cpu", body_model=body, size=(1080, 1920)).batch == 1
    assert Decoder(bs, device="cpu", body_model=body, batch=2).batch == 2


def test_the_decoder_says_which_pixels_no_key_picture_saw(stream):
    """decode_frame(with_invented=True): the same frame, and the background a moved body uncovers (the
    one key showed the body there) as guessed pixels; none on the key frame or in the key's own pose."""
    from engine.synthesis.decoder import Decoder
    dec = Decoder(stream, device="cpu", body_model=BoxBody())
    key, none = dec.decode_frame(0, with_invented=True)
    assert np.array_equal(key, dec.decode_frame(0)) and none.shape == (SIZE, SIZE) and not none.any()
    row = stream.gops[0].frames[0].copy()
    _, same_pose = dec.decode_frame(3, semantics=row, with_invented=True)
    assert not same_pose.any()
    row[27] += 0.35                                      # the box about 22 px to the right
    moved, guess = dec.decode_frame(3, semantics=row, with_invented=True)
    assert np.array_equal(moved, dec.decode_frame(3, semantics=row))
    gop = stream.gops[0]
    key_body = torch.isfinite(dec.key_state(gop).depth)[0].numpy()
    frame_body = dec.analyse(gop, row[None]).raster.mask[0].numpy()
    assert guess.sum() > 40
    assert not (guess & frame_body).any()                # the box's front was seen in the key
    from engine.synthesis.motion import dilate
    # Where the key showed the box and the frame shows background (away from the box's band): guessed.
    left = (~dilate(torch.as_tensor(~key_body)[None], 2, step=1) & ~dilate(torch.as_tensor(frame_body)[None], 8,
                                                                          step=1))[0].numpy()
    assert left.sum() > 40 and guess[left].all()
    assert not guess[:, :16].any() and not guess[:12].any() and not guess[-12:].any()   # background both saw


def test_bench_edit_measures_jumps_and_invented_pixels(stream):
    """``bench --edit``'s figures: the step into a group's first frame apart from the others, and an edited
    key frame drawn, not shown as its key picture (the jump the edited video made at every key frame)."""
    from engine.benchmarks.edit import frame_steps, measure
    from engine.synthesis.decoder import Decoder
    video = np.zeros((5, 2, 2, 3), np.uint8)
    video[3:] = 30                                       # a jump into frame 3, nothing else moves
    assert frame_steps(video, [0, 3]) == (30.0, 0.0)
    assert np.isnan(frame_steps(video[:3], [0])[0])
    rows = stream.semantics().copy()
    rows[:, 27] += 0.125                                 # every frame 8 px right, the key frame too
    edited = stream.with_semantics(rows)
    m = measure(edited, lambda b: Decoder(b, device="cpu", body_model=BoxBody()))
    plain = measure(stream, lambda b: Decoder(b, device="cpu", body_model=BoxBody()))
    assert m["video"].shape == plain["video"].shape == (stream.n_frames, SIZE, SIZE, 3)
    assert not np.array_equal(m["video"][0], plain["video"][0])
    jumpy = m["video"].copy()
    jumpy[0] = plain["video"][0]                         # the key frame shown as coded: a jump the steps see
    assert frame_steps(jumpy, [0])[1] > m["step_off"] + 0.5
    assert plain["invented_mean"] < m["invented_mean"] <= m["invented_max"] <= 1.0   # the move uncovers background
