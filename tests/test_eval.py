"""engine/evaluation/metrics.py, engine/evaluation/anchors.py and ``main.py eval`` on a 10-frame synthetic clip.

The IHVC encoder (engine.analysis.encoder) is replaced by a stand-in that codes the first frame as the
key picture and constant semantics for the synthetic box body of tests/test_decoder.py; the
anchors, metrics, BD-rate, CSVs and plot are the real ones.
"""
from __future__ import annotations

import csv
import math
from fractions import Fraction

import numpy as np
import pytest

from engine.evaluation import anchors

from engine.evaluation import metrics
from engine.evaluation import rd as ev
from engine.evaluation import scoring
from tests.test_decoder import BoxBody, make_stream


def clip(n=10, size=64):
    y, x = np.mgrid[0:size, 0:size] / size
    out = []
    for t in range(n):
        img = np.stack([0.5 + 0.4 * np.sin(9 * x + 3 * y + 0.2 * t), 0.5 + 0.4 * np.cos(7 * y - 0.1 * t),
                        0.3 + 0.5 * x * y], -1)
        img[(x - 0.3 - 0.02 * t) ** 2 + (y - 0.5) ** 2 < 0.02] = (0.9, 0.8, 0.7)
        out.append((img * 255).astype(np.uint8))
    return np.stack(out)


def fake_encoder(frames, fps, key_qp, path=None, region=None, gop=0):
    """make_stream's semantics, a key picture from the clip every ``gop`` frames (0: one)."""
    from dataclasses import replace

    from engine.codec.bitstream import GroupOfPictures
    from engine.codec.keypicture import encode_key_picture
    bs = make_stream(n=len(frames), size=frames.shape[1])
    g = bs.gops[0]
    gop = gop or len(frames)
    gops = [GroupOfPictures(s, encode_key_picture(frames[s], "hevc", key_qp), g.key, g.frames[s:s + gop])
            for s in range(0, len(frames), gop)]
    return replace(bs, gops=gops)


def test_metrics_basic():
    a = clip(3)
    assert metrics.psnr_frames(a, a).tolist() == [100.0] * 3
    b = np.clip(a.astype(int) + 10, 0, 255).astype(np.uint8)
    p = metrics.psnr_frames(a, b)
    mse = ((a.astype(float) - b) ** 2).reshape(3, -1).mean(1)
    assert np.allclose(p, 10 * np.log10(255 ** 2 / mse))
    assert metrics.ssim_frames(a, a) == pytest.approx([1.0] * 3, abs=1e-5)
    assert 0.5 < metrics.ms_ssim_frames(a, b).mean() < 1.0
    v_same, v_bad = metrics.vmaf(a, a), metrics.vmaf(a, (a // 64) * 64)
    assert v_same > 90 and v_bad < v_same
    with pytest.raises(Exception):
        metrics.psnr_frames(a, a[:2])
    st = metrics.extra_metrics_status()
    assert set(st) == {"lpips", "dists"} and all(s.startswith(("available", "unavailable")) for s in st.values())


def test_step_error_sees_a_jump_between_frames_that_a_frame_by_frame_metric_does_not():
    """Two decodings with the same per-frame error: one always 6 too bright, one 6 too bright then 6 too dark
    from frame 3 on (a group giving way to the next one's). PSNR cannot tell them apart; the step into frame 3
    can, and only that step."""
    a = np.full((6, 16, 16, 3), 100, np.uint8)
    a[:, :, :8] = 150                                       # a still scene
    steady = a + np.uint8(6)
    pop = steady.copy()
    pop[3:] = a[3:] - np.uint8(6)
    assert np.allclose(metrics.psnr_frames(a, steady), metrics.psnr_frames(a, pop))
    assert metrics.step_errors(a, a).tolist() == [0.0] * 5
    assert metrics.step_errors(a, steady).tolist() == [0.0] * 5
    assert metrics.step_errors(a, pop).tolist() == [0.0, 0.0, 12.0, 0.0, 0.0]
    assert metrics.boundary_steps(a, pop, [0, 3]) == (12.0, 0.0)
    # the source's own motion is not an error: a decoding that follows it exactly has none
    moving = np.stack([np.roll(a[0], 2 * t, axis=1) for t in range(6)])
    assert metrics.step_errors(moving, moving).max() == 0.0
    assert metrics.step_errors(moving, np.repeat(moving[:1], 6, 0)).min() > 0
    at, inside = metrics.boundary_steps(a, pop, [0])        # no boundary but frame 0's
    assert np.isnan(at) and inside == pytest.approx(12.0 / 5)


def test_bd_rate_math():
    def pts(codec, rates, q):
        return [ev.Point(codec, i, int(r * 1000 / 8 / 25 * 10), 10, {"psnr": v}) for i, (r, v) in enumerate(zip(rates, q))]
    ref = pts("a", [10, 20, 40, 80], [30, 33, 36, 39])
    half = pts("b", [5, 10, 20, 40], [30, 33, 36, 39])
    bd, lo, hi, note = ev.bd_rate(half, ref, "psnr")
    assert bd == pytest.approx(-50.0, abs=0.5) and (lo, hi) == (30, 39) and note == ""
    assert ev.bd_rate(ref, ref, "psnr")[0] == pytest.approx(0.0, abs=1e-6)
    far = pts("c", [1, 2, 3], [20, 21, 22])
    bd, _, _, note = ev.bd_rate(far, ref, "psnr")
    assert math.isnan(bd) and note.startswith("no overlap")
    assert ev.quality_at_rate(ref, "psnr", 20) == pytest.approx(33.0, abs=0.01)
    assert math.isnan(ev.quality_at_rate(ref, "psnr", 1000))


def test_anchor_counts_every_byte_and_decodes():
    a = clip(6)
    r = anchors.encode_anchor(a, "x265", 40)
    assert r.frames.shape == a.shape and r.n_bytes > 100
    assert metrics.psnr_frames(a, r.frames).mean() > 20
    with pytest.raises(Exception):
        anchors.encode_anchor(a, "x265", 60)


def test_eval_cli_writes_csv_and_plot(tmp_path, monkeypatch):
    import engine.synthesis.body as bm
    from engine.codec.video import write_video
    from main import main
    monkeypatch.setattr(bm, "load_body_model", lambda name="anny", path=None, device=None: BoxBody())
    monkeypatch.setattr(scoring, "default_ihvc_encoder", fake_encoder)
    monkeypatch.setattr(anchors, "DEFAULT_QPS", {"vvc": (44, 58), "x265": (40, 51), "svtav1": (50, 63)})
    video = tmp_path / "synthetic.mkv"
    write_video(video, clip(10), Fraction(25))
    out = tmp_path / "res"
    assert main(["eval", str(video), "--key-qps", "22,32,42", "--out", str(out), "--device", "cpu",
                 "--decoders", "analytic", "--gops", "0"]) == 0
    with open(out / "synthetic_points.csv") as f:
        rows = list(csv.DictReader(f))
    assert [r["codec"] for r in rows] == ["ihvc"] * 3 + ["vvc"] * 2 + ["x265"] * 2 + ["svtav1"] * 2
    for r in rows:
        assert int(r["frames"]) == 10 and int(r["bytes"]) > 0
        assert float(r["kbps_at_25fps"]) == pytest.approx(int(r["bytes"]) * 8 / 10 * 25 / 1000)
        for m in ("psnr", "ssim", "ms_ssim", "vmaf"):
            assert math.isfinite(float(r[m]))
    ihvc = [r for r in rows if r["codec"] == "ihvc"]
    # Higher key QP: fewer bytes, lower PSNR.
    assert int(ihvc[0]["bytes"]) > int(ihvc[2]["bytes"]) and float(ihvc[0]["psnr"]) > float(ihvc[2]["psnr"])
    with open(out / "synthetic_bd.csv") as f:
        bd = list(csv.DictReader(f))
    assert len(bd) == 12 and {r["anchor"] for r in bd} == {"vvc", "x265", "svtav1"}
    for r in bd:
        v = float(r["bd_rate_percent"])
        assert math.isfinite(v) or r["note"]
    with open(out / "synthetic_matched.csv") as f:
        assert len(list(csv.DictReader(f))) == 3 * 3 * 4
    with open(out / "synthetic_lowest.csv") as f:
        low = list(csv.DictReader(f))
    assert len(low) == 3 * 4 and {r["anchor_qp"] for r in low if r["anchor"] == "x265"} == {"51"}
    png = (out / "synthetic_rd.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    # --all over a folder, with the default two decoders and two key periods: every IHVC point per
    # (period, QP, decoder), per-clip files and the averaged BD-rates per IHVC curve.
    assert main(["eval", "--all", str(tmp_path), "--key-qps", "22,42", "--out", str(tmp_path / "all"),
                 "--max-frames", "6", "--anchors", "x265", "--no-vmaf", "--gops", "0,3"]) == 0
    with open(tmp_path / "all" / "synthetic_points.csv") as f:
        rows = list(csv.DictReader(f))
    ihvc = [(r["gop"], r["qp"], r["decoder"]) for r in rows if r["codec"] == "ihvc"]
    assert sorted(ihvc) == sorted((g, q, d) for g in ("0", "3") for q in ("22", "42") for d in ("learned", "analytic"))
    assert len(rows) == 8 + 2
    by = {(r["gop"], r["qp"], r["decoder"]): int(r["bytes"]) for r in rows if r["codec"] == "ihvc"}
    assert by[("3", "22", "analytic")] > by[("0", "22", "analytic")]        # two key pictures cost more
    with open(tmp_path / "all" / "all_bd.csv") as f:
        avg = list(csv.DictReader(f))
    assert [(r["ihvc"], r["metric"]) for r in avg] == [(c, m) for c in ("ihvc", "ihvc_analytic")
                                                       for m in ("psnr", "ssim", "ms_ssim")]
    assert all(r["clips"] == "1" for r in avg)
    assert main(["eval", str(video), "--key-qps", "a,b"]) == 2
    assert main(["eval", str(video), "--gops", "x"]) == 2 and main(["eval", str(video), "--decoders", "magic"]) == 2


def test_pareto_front_keeps_the_best_choice_per_rate():
    pts = [ev.Point("ihvc", q, b, 10, {"psnr": v}) for q, b, v in
           ((37, 100, 20.0), (42, 80, 21.0), (32, 150, 20.5), (27, 200, 23.0), (30, 180, float("nan")))]
    front = ev.pareto(pts, "psnr")
    assert [p.qp for p in front] == [42, 27]


def test_lowest_rate_rows_pick_the_best_point_at_or_below_the_anchor_rate():
    P = ev.Point
    pts = [P("ihvc", 42, 100, 10, {"ssim": 0.80}, decoder="analytic", gop=20),
           P("ihvc", 37, 140, 10, {"ssim": 0.85}, decoder="analytic", gop=20),      # above the anchor's rate
           P("ihvc", 45, 90, 10, {"ssim": 0.70}, decoder="analytic", gop=0),
           P("x265", 47, 200, 10, {"ssim": 0.90}), P("x265", 51, 120, 10, {"ssim": 0.75}),
           P("vvc", 63, 50, 10, {"ssim": 0.60})]
    rows = {r["anchor"]: r for r in ev.lowest_rate_rows(pts, "c", ["ssim"])}
    x = rows["x265"]
    assert (x["anchor_qp"], x["ihvc_key_qp"], x["ihvc_gop"], x["ihvc_quality"], x["wins"]) == (51, 42, 20, 0.80, True)
    v = rows["vvc"]                                                   # nothing of IHVC's at or below 4 kbps
    assert math.isnan(v["ihvc_quality"]) and v["wins"] is False


SHARED_DATA = __import__("pathlib").Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.mark.skipif(not (SHARED_DATA / "ted" / "ted_a_384.mkv").exists(),
                    reason=f"real clips not available at {SHARED_DATA}")
def test_vvc_anchor_on_real_clip():
    from engine.codec.video import read_video
    frames = read_video(SHARED_DATA / "ted" / "ted_a_384.mkv", max_frames=8).frames
    hi, lo = anchors.encode_anchor(frames, "vvc", 40), anchors.encode_anchor(frames, "vvc", 55)
    assert hi.frames.shape == frames.shape and hi.n_bytes > lo.n_bytes
    p_hi, p_lo = metrics.psnr_frames(frames, hi.frames).mean(), metrics.psnr_frames(frames, lo.frames).mean()
    assert 28 < p_hi < 45 and p_lo < p_hi


def test_eval_rate_targets_and_merging_runs(tmp_path, monkeypatch):
    """``--rates`` adds points whose keys and key QP the encoder chose under a rate target (the QP it chose is
    the point's); ``--merge`` summarises the points of separate runs as one run."""
    import engine.synthesis.body as bm
    from engine.codec.video import write_video
    from main import main

    asked = []

    def rate_encoder(frames, fps, key_qp, path=None, region=None, gop=0, rate=None):
        asked.append((gop, rate))
        if rate:                     # a stand-in for the key QP search: a finer QP when more rate is allowed
            key_qp = 30 if rate > 100 else 45
        return fake_encoder(frames, fps, key_qp, path, region, 5 if gop == ev.AUTO else gop)
    monkeypatch.setattr(bm, "load_body_model", lambda name="anny", path=None, device=None: BoxBody())
    monkeypatch.setattr(scoring, "default_ihvc_encoder", rate_encoder)
    monkeypatch.setattr(anchors, "DEFAULT_QPS", {"vvc": (44, 58), "x265": (40, 51), "svtav1": (50, 63)})
    video = tmp_path / "clips" / "synthetic.mkv"
    video.parent.mkdir()
    write_video(video, clip(8), Fraction(25))
    common = ["--device", "cpu", "--decoders", "analytic", "--no-vmaf"]
    assert main(["eval", str(video), "--gops", "none", "--rates", "20,200", "--anchors", "x265",
                 "--out", str(tmp_path / "r"), *common]) == 0
    assert asked == [(ev.AUTO, 20.0), (ev.AUTO, 200.0)]
    rated = ev.read_points(tmp_path / "r" / "synthetic_points.csv")["synthetic"]
    ihvc = [p for p in rated if p.codec == "ihvc"]
    assert [(p.rate_target, p.qp, p.gop) for p in ihvc] == [(20.0, 45, ev.AUTO), (200.0, 30, ev.AUTO)]
    assert ihvc[1].n_bytes > ihvc[0].n_bytes
    assert main(["eval", str(video), "--gops", "0", "--key-qps", "50", "--anchors", "none",
                 "--out", str(tmp_path / "one"), *common]) == 0
    merged = tmp_path / "merged"
    assert main(["eval", "--merge", str(tmp_path / "r"), str(tmp_path / "one"), "--out", str(merged), "--no-vmaf"]) == 0
    got = ev.read_points(merged / "synthetic_points.csv")["synthetic"]
    key = lambda p: (p.codec, p.qp, p.gop, p.rate_target, p.n_bytes)    # noqa: E731
    assert sorted(map(key, got)) == sorted(map(key, rated + ev.read_points(tmp_path / "one" / "synthetic_points.csv")["synthetic"]))
    with open(merged / "synthetic_lowest.csv") as f:
        low = list(csv.DictReader(f))
    # x265's lowest point against the best IHVC point at or below its rate, from either run.
    x = min((p for p in got if p.codec == "x265"), key=lambda p: p.kbps)
    for r in low:
        below = [p for p in got if p.codec == "ihvc" and p.kbps <= x.kbps]
        best = max((p.quality[r["metric"]] for p in below), default=math.nan)
        assert float(r["ihvc_quality"]) == pytest.approx(best) or (math.isnan(best) and r["ihvc_quality"] == "nan")
    assert (merged / "synthetic_rd.png").stat().st_size > 10_000 and (merged / "all_bd.csv").exists()
    assert main(["eval", "--merge", str(tmp_path / "clips"), "--out", str(tmp_path / "x")]) == 2    # no points files
    assert main(["eval", str(video), "--rates", "fast"]) == 2
    assert main(["eval", str(video), "--rates", "-3"]) == 2
    assert main(["eval", str(video), "--gops", "none"]) == 2                                        # nothing to code
