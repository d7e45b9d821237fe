"""``python main.py train``: train the learned motion refinement and generator.

    python main.py train --data ../shared/data                  # small config, CPU
    python main.py train --data ../shared/data --config full --device cuda
    torchrun --nproc_per_node 4 main.py train --data DATA --config full --device cuda   # DDP
    python main.py train --data DATA --resume --out out/train    # continue from out/train/last.*

Trains on the people of ../shared/data/more; held out (validation, named before any training:
engine.training.train.VALIDATION): ted_g, dance_tiktok_3 and taichi_lia2; the best checkpoint is the
one with the largest MS-SSIM gain over the analytic decoder on them.
``--export assets/generator.safetensors`` copies the best checkpoint there at the end, only if it
beat the analytic decoder on validation; check it with ``python main.py bench --learned`` first.
"""
from __future__ import annotations


def add_arguments(p):
    p.add_argument("--data", required=True, help="folder of training clips (../shared/data)")
    p.add_argument("--config", choices=("small", "full"), default="small", help="network size (default small)")
    p.add_argument("--device", default=None, help="cpu or cuda (default: cuda when available)")
    p.add_argument("--resume", action="store_true", help="continue from OUT/last.safetensors")
    p.add_argument("--out", default="out/train", help="output folder (default out/train)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default 20000 small, 200000 full)")
    p.add_argument("--batch", type=int, default=None, help="crops per batch and process")
    p.add_argument("--crop", type=int, default=None, help="crop size in pixels (multiple of 8)")
    p.add_argument("--lr", type=float, default=None, help="Adam learning rate (default 5e-4 small, 2e-4 full; betas 0.5, 0.999)")
    p.add_argument("--adversarial", type=float, default=None, help="adversarial weight (default 1)")
    p.add_argument("--val-every", type=int, default=None, help="validate on the held-out clip every N steps")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process")
    p.add_argument("--time-limit", type=float, default=None, help="stop after this many seconds")
    p.add_argument("--export", default=None, metavar="PATH", help="write the best checkpoint here when it beats analytic")
    p.add_argument("--init", default=None, metavar="W.safetensors",
                   help="start the generator from these weights (fine-tuning; same --config)")
    p.add_argument("--seed", type=int, default=0)


def run(args) -> int:
    from engine.fileio import refuse_unwritable, refuse_unwritable_folder
    from engine.training.train import train
    refuse_unwritable_folder(args.out, "--out", "last.safetensors")          # before the data are prepared
    if args.export is not None:
        refuse_unwritable(args.export)
    res = train(args.data, config=args.config, device=args.device, resume=args.resume, out_dir=args.out,
                steps=args.steps, threads=args.threads, seed=args.seed, export_to=args.export,
                time_limit=args.time_limit, batch=args.batch, crop=args.crop, lr=args.lr,
                adversarial=args.adversarial, val_every=args.val_every, init=args.init)
    print(f"trained {res['step']} steps in {res['seconds']:.0f} s; best validation MS-SSIM gain over the analytic "
          f"decoder {res['best_msssim_gain']:+.4f} ({res['best_gain_db']:+.3f} dB PSNR)")
    return 0
