"""Generator checkpoints: ``NAME.safetensors`` (tensors) + ``NAME.json`` (what they are).

The JSON holds the format id and version, the code version (``git describe`` at
training time, or the package constant), the body model the mesh images came from,
the network config, the SHA-256 of the tensor file and free-form training notes.
Loading validates all of it and raises :class:`~engine.errors.IHVCError` with one
line naming the file and what is wrong (missing, corrupt, mismatched).

Training checkpoints (``--resume``) use the same pair with extra tensors
(``disc.*`` discriminator, ``optim.*`` Adam moments) and the step in the JSON.
"""
from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path

import torch

from engine.errors import IHVCError
from engine.fileio import REPO, atomic_path
from engine.synthesis.networks import CONFIGS, Generator, MultiScaleDiscriminator, config as make_config
from engine.workers import run

FORMAT = "ihvc-generator"
FORMAT_VERSION = 2          # 2: the gated refiner (issue #15); 1 was the blend-head generator
CODE_VERSION = "ihvc-generator-2"      # used when git is unavailable


def code_version() -> str:
    root = REPO
    try:
        out = run(["git", "describe", "--always", "--dirty", "--tags"], cwd=root, text=True, timeout=5)
        if out.returncode == 0 and out.stdout.strip():
            return f"{CODE_VERSION}+{out.stdout.strip()}"
    except (OSError, subprocess.SubprocessError):
        pass
    return CODE_VERSION


def json_path(path) -> Path:
    return Path(path).with_suffix(".json")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def save(path, generator: Generator, meta: dict | None = None, extra: dict | None = None,
         half: bool = False) -> Path:
    """Write ``path`` (.safetensors) and its .json atomically; extra: more named tensors (resume state)."""
    from safetensors.torch import save_file
    path = Path(path)
    tensors = {f"gen.{k}": (v.half() if half and v.is_floating_point() else v).detach().cpu().contiguous()
               for k, v in generator.state_dict().items()}
    for k, v in (extra or {}).items():
        tensors[k] = v.detach().cpu().contiguous()
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp))
        digest = _sha256(tmp)
    info = {"format": FORMAT, "format_version": FORMAT_VERSION, "code_version": code_version(),
            "body_model": "anny", "config": generator.cfg, "sha256": digest,
            "tensors": len(tensors), "dtype": "float16" if half else "float32"}
    info.update(meta or {})
    info["sha256"] = digest
    with atomic_path(json_path(path)) as tmp:
        tmp.write_text(json.dumps(info, indent=2, sort_keys=True))
    return path


def read_meta(path) -> dict:
    path = Path(path)
    jp = json_path(path)
    if not path.exists():
        raise IHVCError(f"generator checkpoint missing: {path}")
    if not jp.exists():
        raise IHVCError(f"generator checkpoint {path.name} has no {jp.name} beside it")
    try:
        meta = json.loads(jp.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise IHVCError(f"generator config {jp.name} is not valid JSON ({exc.__class__.__name__})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise IHVCError(f"{jp.name} is not an IHVC generator config")
    if meta.get("format_version") != FORMAT_VERSION:
        raise IHVCError(f"{jp.name} has format version {meta.get('format_version')}, this program reads "
                        f"{FORMAT_VERSION}")
    if not isinstance(meta.get("config"), dict):
        raise IHVCError(f"{jp.name} has no network config")
    unknown = set(meta["config"]) - set(CONFIGS["small"])
    if unknown:
        raise IHVCError(f"{jp.name}: unknown network config keys {sorted(unknown)}")
    return meta


def load_tensors(path, meta: dict) -> dict:
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    path = Path(path)
    if meta.get("sha256") and _sha256(path) != meta["sha256"]:
        raise IHVCError(f"generator weights {path.name} do not match {json_path(path).name} (checksum differs: "
                        f"corrupt or from another training run)")
    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise IHVCError(f"generator weights {path.name} are corrupt ({str(exc).splitlines()[0][:80]})") from None


def _load_state(module: torch.nn.Module, tensors: dict, prefix: str, name: str) -> None:
    want = module.state_dict()
    got = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    missing = sorted(set(want) - set(got))
    extra = sorted(set(got) - set(want))
    if missing or extra:
        raise IHVCError(f"{name} does not match its config: {len(missing)} missing tensors"
                        f"{' (' + missing[0] + ', ...)' if missing else ''}, {len(extra)} unexpected"
                        f"{' (' + extra[0] + ', ...)' if extra else ''}")
    for k, v in got.items():
        if tuple(v.shape) != tuple(want[k].shape):
            raise IHVCError(f"{name}: tensor {k} has shape {tuple(v.shape)}, the config needs {tuple(want[k].shape)}")
        if not torch.isfinite(v.float()).all():
            raise IHVCError(f"{name}: tensor {k} holds non-finite values")
    module.load_state_dict({k: v.to(want[k].dtype) for k, v in got.items()})


def load_generator(path, device="cpu"):
    """(Generator in eval mode, meta dict) from ``path`` (.safetensors + .json); IHVCError when invalid."""
    meta = read_meta(path)
    try:
        net = Generator(make_config(meta["config"]))
    except (TypeError, ValueError, KeyError) as exc:
        raise IHVCError(f"{json_path(path).name}: invalid network config ({exc})") from None
    tensors = load_tensors(path, meta)
    _load_state(net, tensors, "gen.", Path(path).name)
    return net.to(device).eval(), meta


# ----------------------------------------------------------------------------- training state

def optimizer_tensors(opt: torch.optim.Optimizer, prefix: str) -> tuple[dict, dict]:
    """Adam state -> (tensors, json-able info)."""
    sd = opt.state_dict()
    tensors = {}
    for idx, st in sd["state"].items():
        for k, v in st.items():
            tensors[f"{prefix}.{idx}.{k}"] = torch.as_tensor(v).reshape(-1) if torch.as_tensor(v).dim() == 0 else v
    groups = [{k: v for k, v in g.items() if k != "params"} | {"params": list(g["params"])} for g in sd["param_groups"]]
    return tensors, {"param_groups": groups}


def restore_optimizer(opt: torch.optim.Optimizer, tensors: dict, info: dict, prefix: str) -> None:
    params = [p for g in opt.param_groups for p in g["params"]]
    state: dict = {}
    for k, v in tensors.items():
        if not k.startswith(prefix + "."):
            continue
        _, idx, name = k.rsplit(".", 2)
        i = int(idx)
        if name == "step":
            ref = v.reshape(())
        elif i < len(params) and v.numel() == params[i].numel():
            ref = v.reshape(params[i].shape)            # 0-d parameters were stored as 1-element vectors
        else:
            ref = v
        state.setdefault(i, {})[name] = ref
    try:
        opt.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    except (KeyError, ValueError, TypeError) as exc:
        raise IHVCError(f"training checkpoint optimizer state does not match ({exc})") from None


def save_training(path, gen: Generator, disc: MultiScaleDiscriminator | None, opt_g, opt_d, meta: dict,
                  ema: Generator | None = None) -> Path:
    extra = {}
    info = dict(meta)
    if ema is not None:
        extra.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    if disc is not None:
        extra.update({f"disc.{k}": v for k, v in disc.state_dict().items()})
    t, i = optimizer_tensors(opt_g, "optim.g")
    extra.update(t)
    info["optim_g"] = i
    if opt_d is not None:
        t, i = optimizer_tensors(opt_d, "optim.d")
        extra.update(t)
        info["optim_d"] = i
    return save(path, gen, info, extra)


def load_training(path, gen: Generator, disc, opt_g, opt_d, ema: Generator | None = None) -> dict:
    meta = read_meta(path)
    if make_config(meta["config"]) != gen.cfg:
        raise IHVCError(f"{Path(path).name} was trained with another network config; use the same --config")
    tensors = load_tensors(path, meta)
    _load_state(gen, tensors, "gen.", Path(path).name)
    if ema is not None:
        if any(k.startswith("ema.") for k in tensors):
            _load_state(ema, tensors, "ema.", Path(path).name)
        else:
            ema.load_state_dict(gen.state_dict())
    if disc is not None and any(k.startswith("disc.") for k in tensors):
        _load_state(disc, tensors, "disc.", Path(path).name)
    if "optim_g" in meta:
        restore_optimizer(opt_g, tensors, meta["optim_g"], "optim.g")
    if opt_d is not None and "optim_d" in meta:
        restore_optimizer(opt_d, tensors, meta["optim_d"], "optim.d")
    return meta
