"""Learned refiner: network shapes and identity at init, a training step, checkpoints, DDP, decoder entry."""
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
from engine.training.losses import GeneratorLoss, d_loss, loss_plan
from engine.synthesis.networks import Generator, MultiScaleDiscriminator, RefinerInputs
from engine.synthesis.motion import warp

torch.set_num_threads(1)
SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
TINY = dict(motion_ch=8, motion_blocks=1, deep_blocks=1, gen_ch=(8, 8), gen_blocks=1, spade_hidden=8, disc_ch=8, disc_layers=2,
            disc_scales=2)


def test_shapes_and_identity_at_init():
    inp, tgt = synthetic_batch(batch=2, size=32)
    gen = Generator("small")
    rgb, aux = gen(inp)
    assert rgb.shape == (2, 3, 32, 32) and aux["grid"].shape == (2, 32, 32, 2)
    assert aux["occlusion"].shape == (2, 1, 8, 8) and aux["dflow"].shape == (2, 2, 8, 8)
    # zero-initialised heads: the untrained network *is* the analytic decoder
    assert torch.equal(rgb, warp(inp.key, inp.grid))
    assert float(aux["occlusion"].detach().min()) > 0.98            # visible everywhere -> occlusion weight ~1
    # the key context computed once gives the same frame
    ctx = gen.encode_key(inp.key, inp.key_mesh)
    assert torch.equal(gen(inp, ctx)[0], rgb)
    # with a disocclusion: the hole shows the analytic fill (``base``), the rest the warped key
    hole = torch.zeros(2, 32, 32, dtype=torch.bool)
    hole[:, :6, :10] = True
    base = torch.full((2, 3, 32, 32), 77.0)
    rgb_h, _ = gen(RefinerInputs(**{**inp.__dict__, "hole": hole, "base": base}))
    assert torch.all(rgb_h[:, :, :6, :10] == 77.0) and torch.equal(rgb_h[:, :, 6:], rgb[:, :, 6:])
    outs = MultiScaleDiscriminator("small")(rgb, inp.mesh)
    assert len(outs) == 2 and outs[0][0].shape[0] == 2 and outs[1][0].shape[-1] < outs[0][0].shape[-1]
    assert len(outs[0][1]) == 3


def test_training_steps_decrease_loss():
    torch.manual_seed(0)
    inp, tgt = synthetic_batch(batch=2, size=32)
    gen = Generator(TINY)
    disc = MultiScaleDiscriminator(TINY)
    plan = loss_plan(adversarial=1.0)
    assert plan["ms_ssim"] == 20.0 or plan["dists"] == 20.0           # DISTS or its stated substitute
    assert any("MS-SSIM" in n for n in plan["notes"]) or plan["dists"] > 0
    crit = GeneratorLoss(plan)
    opt = torch.optim.Adam(gen.parameters(), lr=2e-3, betas=(0.5, 0.999))
    opt_d = torch.optim.Adam(disc.parameters(), lr=2e-4, betas=(0.5, 0.999))
    losses = []
    for _ in range(12):
        pred, _ = gen(inp)
        ld = d_loss(disc(tgt, inp.mesh), disc(pred.detach(), inp.mesh))
        opt_d.zero_grad()
        ld.backward()
        opt_d.step()
        l1_only = GeneratorLoss(dict(plan, adversarial=0.0, feature_matching=0.0))
        loss, terms = crit(pred, tgt, [(a.detach(), [f.detach() for f in fs]) for a, fs in disc(tgt, inp.mesh)],
                           disc(pred, inp.mesh))
        assert {"l1", "adversarial", "feature_matching"} <= set(terms)
        losses.append(float(l1_only(pred, tgt)[0].detach()))
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert losses[-1] < 0.9 * losses[0], losses


def _save_tiny(tmp_path):
    gen = Generator(TINY)
    with torch.no_grad():
        for p in gen.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    path = ckpt.save(tmp_path / "g.safetensors", gen, {"note": "test"})
    return gen, path


def test_checkpoint_round_trip(tmp_path):
    gen, path = _save_tiny(tmp_path)
    meta = json.loads(path.with_suffix(".json").read_text())
    assert meta["format"] == ckpt.FORMAT and meta["body_model"] == "anny" and meta["code_version"]
    assert meta["config"]["motion_ch"] == 8 and meta["note"] == "test"
    net, meta2 = ckpt.load_generator(path)
    inp, _ = synthetic_batch(batch=1, size=32)
    assert torch.equal(net(inp)[0], gen.eval()(inp)[0])
    from engine.synthesis.refiner import load_refiner
    ref = load_refiner(path)
    out = ref.refine(inp.key, inp.grid, inp.visible, inp.body, inp.weight, inp.mesh, inp.key_mesh)
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
    # corrupt tensor file: checksum mismatch, then (checksum dropped) an unreadable file
    jp.write_text(good_json)
    path.write_bytes(good_bytes[:len(good_bytes) // 2])
    with pytest.raises(IHVCError, match="checksum"):
        ckpt.load_generator(path)
    meta = json.loads(good_json)
    meta.pop("sha256")
    jp.write_text(json.dumps(meta))
    with pytest.raises(IHVCError, match="corrupt"):
        ckpt.load_generator(path)
    # weights of another config (shapes differ)
    path.write_bytes(good_bytes)
    meta["config"]["motion_ch"] = 16
    jp.write_text(json.dumps(meta))
    with pytest.raises(IHVCError, match="shape|missing"):
        ckpt.load_generator(path)
    meta["config"] = dict(TINY, bogus=1)
    jp.write_text(json.dumps(meta))
    with pytest.raises(IHVCError, match="unknown network config"):
        ckpt.load_generator(path)
    meta["config"] = TINY
    meta["format_version"] = 99
    jp.write_text(json.dumps(meta))
    with pytest.raises(IHVCError, match="format version"):
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


def test_ddp_two_process_gloo_step(tmp_path):
    import torch.multiprocessing as mp
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_ddp_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
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
    ref = LearnedRefiner(Generator(TINY))
    gop = bs.gops[0]
    rows = gop.frames[1:3]
    fa = dec.analyse(gop, rows)
    out = ref.refine_decoder(fa)
    expect = np.stack([dec.decode_frame(1), dec.decode_frame(2)])
    got = out.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
    assert got.shape == expect.shape and np.array_equal(got, expect)
    assert fa.raster.mask.any()                                     # the body is in the picture


def test_shipped_generator_is_valid():
    from engine.synthesis.refiner import DEFAULT_CHECKPOINT, load_refiner
    if not DEFAULT_CHECKPOINT.exists():
        pytest.skip("no shipped generator (assets/generator.safetensors): the analytic decoder is used")
    ref = load_refiner(body_model="anny")
    assert ref is not None and DEFAULT_CHECKPOINT.stat().st_size <= 30 * 2 ** 20
    assert ref.meta["validation"]["gain_db"] > 0 and ref.meta["validation_clip"] == "ted_e_384"
    assert "ted_e_384" not in ref.meta["train_clips"]


def test_blend_switch_removes_only_the_blend():
    """use_blend=False leaves the warp and the residual as they are; blend_strength (bench --learned's
    sweep) scales the blend linearly, 0 being the same as off."""
    inp, _ = synthetic_batch(batch=1, size=32)
    gen = Generator("small").eval()
    with torch.no_grad():
        for head, bias in ((gen.blend_head, 0.5), (gen.rgb_head, 0.01)):
            head.bias.fill_(bias)
        gen.gate_knee.fill_(-20.0)                           # gate fully open
        rgb, aux = gen(inp)
        gen.blend_strength = 0.5
        half, _ = gen(inp)
        gen.blend_strength = 0.0
        zero, _ = gen(inp)
        gen.blend_strength = 1.0
        gen.use_blend = False
        sharp, aux2 = gen(inp)
    assert float(aux["blend"].min()) > 0.4 and float(aux2["blend"].abs().max()) == 0.0
    assert torch.equal(zero, sharp)
    assert torch.allclose(half, (rgb + sharp) / 2, atol=1e-3) and not torch.allclose(half, rgb)
    assert torch.allclose(sharp, aux2["warped"] + 127.5 * aux2["residual"])
    assert not torch.allclose(sharp, rgb)


@pytest.mark.skipif(not SHARED_DATA.exists(), reason=f"real clips not available at {SHARED_DATA}")
def test_held_out_clips_stay_out_of_training():
    from engine.training.dataset import find_clips
    from engine.training.train import HOLDOUT_TEST, HOLDOUT_VAL
    names = [p.stem for p in find_clips(SHARED_DATA)]
    assert any(n.startswith(HOLDOUT_VAL) for n in names)
    assert all(any(n.startswith(t) for n in names) for t in HOLDOUT_TEST)


def _fake_clip(folder: Path, name: str, n: int = 4, size: int = 32, seed: int = 0) -> Path:
    """A cache folder in engine/training/dataset.py's layout, from the synthetic batch."""
    inp, tgt = synthetic_batch(batch=n - 1, size=size, seed=seed)
    folder.mkdir(parents=True)
    frames = np.concatenate([inp.key.permute(0, 2, 3, 1).numpy(), tgt.permute(0, 2, 3, 1).numpy()]).round()
    np.save(folder / "frames.npy", frames.clip(0, 255).astype(np.uint8))
    pad = lambda a: np.concatenate([a[:1], a])  # noqa: E731  (row 0 is the key frame)
    np.save(folder / "grid.npy", pad(inp.grid.numpy()).astype(np.float16))
    np.save(folder / "flags.npy", pad((inp.visible.numpy() | (inp.body.numpy() << 1)).astype(np.uint8)))
    np.save(folder / "weight.npy", pad(inp.weight.numpy()).astype(np.float16))
    np.save(folder / "mesh.npy", pad(inp.mesh.numpy()).astype(np.float16))
    np.savez(folder / "keys.npz", starts=np.array([0]), key_0=frames[0].clip(0, 255).astype(np.uint8),
             mesh_0=inp.key_mesh[0].numpy().astype(np.float16))
    (folder / "meta.json").write_text(json.dumps({"source": f"/x/{name}.mp4", "n_frames": n, "height": size,
                                                  "width": size, "gop_starts": [0]}))
    return folder


def _train_worker(rank, world, port, tmp):
    os.environ.update(WORLD_SIZE=str(world), RANK=str(rank), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    from engine.training.train import train
    tmp = Path(tmp)
    train(None, config=TINY, device="cpu", out_dir=tmp / "out", steps=3, threads=1, log_fn=lambda m: None,
          clips=([tmp / "a", tmp / "b"], tmp / "v"), batch=2, crop=16, adversarial=1.0, val_every=3, log_every=1,
          ckpt_every=3)


def test_train_loop_under_ddp_and_resume(tmp_path):
    """The real loop (sampler, losses incl. adversarial, validation, checkpoints) with 2 gloo processes."""
    import torch.multiprocessing as mp
    for i, n in enumerate("abv"):
        _fake_clip(tmp_path / n, f"clip_{n}", seed=i)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    mp.spawn(_train_worker, args=(2, port, str(tmp_path)), nprocs=2, join=True)
    out = tmp_path / "out"
    rows = (out / "train.csv").read_text().splitlines()
    assert rows[0].startswith("step,") and len(rows) == 4 and rows[-1].split(",")[0] == "3"
    assert rows[-1].split(",")[-1] != ""                           # validated at the last step
    log = (out / "train.log").read_text()
    assert "world 2" in log and ("MS-SSIM" in log or "dists x20" in log)
    assert (out / "samples" / "step_000003.png").exists()
    meta = json.loads((out / "last.json").read_text())
    assert meta["step"] == 3 and "optim_d" in meta and meta["validation_clip"] == "clip_v"
    from engine.training.train import train
    res = train(None, config=TINY, device="cpu", out_dir=out, steps=4, resume=True, threads=1, log_fn=lambda m: None,
                clips=([tmp_path / "a"], tmp_path / "v"), batch=1, crop=16, adversarial=1.0, val_every=10)
    assert res["step"] == 4 and "resumed from" in (out / "train.log").read_text()


def test_fine_tuning_starts_from_init_weights(tmp_path):
    from engine.training.train import train
    for i, n in enumerate("av"):
        _fake_clip(tmp_path / n, f"clip_{n}", seed=i)
    gen, path = _save_tiny(tmp_path)
    out = tmp_path / "out"
    # one step at learning rate 0: what is saved is exactly where training started
    train(None, config=TINY, device="cpu", out_dir=out, steps=1, threads=1, log_fn=lambda m: None,
          clips=([tmp_path / "a"], tmp_path / "v"), batch=1, crop=16, init=str(path), lr=0.0)
    assert "initialised from" in (out / "train.log").read_text()
    from safetensors.torch import load_file
    saved = load_file(str(out / "last.safetensors"))
    want = gen.state_dict()
    k = next(k for k in want if want[k].dtype.is_floating_point and want[k].numel() > 1)
    assert torch.equal(saved["gen." + k], want[k]) and torch.equal(saved["ema." + k], want[k])
    other = Generator(dict(TINY, gen_ch=(8, 16)))
    bad = ckpt.save(tmp_path / "other.safetensors", other, {})
    with pytest.raises(IHVCError, match="another network config"):
        train(None, config=TINY, device="cpu", out_dir=tmp_path / "o2", steps=1, threads=1, log_fn=lambda m: None,
              clips=([tmp_path / "a"], tmp_path / "v"), batch=1, crop=16, init=str(bad))


def test_training_without_the_blend_keeps_it_off(tmp_path):
    """train(blend=False) from blended weights: the blend head gets no gradient and the saved
    config says blend False, so the decoder loads a generator with the blend off."""
    from engine.training.train import train
    for i, n in enumerate("av"):
        _fake_clip(tmp_path / n, f"clip_{n}", seed=i)
    gen, path = _save_tiny(tmp_path)
    out = tmp_path / "out"
    train(None, config=TINY, device="cpu", out_dir=out, steps=2, threads=1, log_fn=lambda m: None,
          clips=([tmp_path / "a"], tmp_path / "v"), batch=1, crop=16, init=str(path), blend=False)
    from safetensors.torch import load_file
    saved = load_file(str(out / "last.safetensors"))
    assert torch.equal(saved["gen.blend_head.weight"], gen.state_dict()["blend_head.weight"])
    meta = ckpt.read_meta(out / "last.safetensors")
    assert meta["config"]["blend"] is False
    assert Generator(meta["config"]).use_blend is False and Generator(TINY).use_blend is True


def test_training_on_a_missing_data_folder_writes_nothing(tmp_path):
    from engine.training.train import train
    out = tmp_path / "out"
    with pytest.raises(InputError, match="no such data folder"):
        train(tmp_path / "nope", out_dir=out, steps=1, log_fn=lambda m: None)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no video clips"):
        train(tmp_path / "empty", out_dir=out, steps=1, log_fn=lambda m: None)
    assert not out.exists()


def test_psnr_term_can_be_switched_off(tmp_path):
    """train --psnr 0 drops the small config's per-sample log-MSE term (and says so in the log)."""
    from engine.cli.train import add_arguments
    from engine.training.train import train
    import argparse
    p = argparse.ArgumentParser()
    add_arguments(p)
    assert p.parse_args(["--data", "d", "--psnr", "0"]).psnr == 0.0
    for i, n in enumerate("av"):
        _fake_clip(tmp_path / n, f"clip_{n}", seed=i)
    for w, out in ((None, tmp_path / "default"), (0.0, tmp_path / "off")):
        train(None, config=TINY, device="cpu", out_dir=out, steps=1, threads=1, log_fn=lambda m: None,
              clips=([tmp_path / "a"], tmp_path / "v"), batch=1, crop=16, psnr=w)
    assert "log-MSE" in (tmp_path / "default" / "train.log").read_text()
    assert "log-MSE" not in (tmp_path / "off" / "train.log").read_text()
