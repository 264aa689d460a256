"""Checkpoints of the GAN family: the layout of train/checkpoint.py, with two networks and two optimizers.

    model.safetensors   "net.G.*", "net.D.*" (live weights) and "ema.*" (EMA of G, what is sampled);
                        metadata: step, kind, model = {"family": "gan", "gan": GANConfig}
    state.safetensors   optimizer tensors "opt_d.<param>.<key>", "opt_g.<param>.<key>"; for NON-private
                        training (pre-training) also RNG states "rng.<name>"
    state.json          step, kind ("pretrain" | "finetune"), model (with its family), config, optimizer
                        hyper-parameters, ledger position
Written with the same atomic writer (temp + fsync + rename, state.json last) and read back with
`train.checkpoint.load_checkpoint`, which detects a save cut short. A DP fine-tuning checkpoint holds no
generator state: its randomness comes from the release's NoiseSource key (privacy/noise_key.py).

Example:
    >>> save_gan_checkpoint("run/finetune", gan=gan, ema_g=ema, optimizers={"d": opt_d, "g": opt_g},
    ...                     step=10, kind="finetune", config={})
    >>> gan = load_gan("run/finetune")   # G carries the EMA weights
"""

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from privimage.errors import UserError
from privimage.files import atomic_path, write_json_atomic
from privimage.models.gan import GAN, GANConfig
from privimage.train.checkpoint import JSON_FILE, MODEL_FILE, STATE_FILE, Checkpoint, load_checkpoint

FAMILY = "gan"


def gan_meta(gan: GAN) -> dict:
    """The "model" entry of state.json and of model.safetensors' metadata."""
    return {"family": FAMILY, "gan": gan.config.to_dict()}


def save_gan_checkpoint(path, *, gan: GAN, ema_g: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                        step: int, kind: str, config: dict, generators: dict[str, torch.Generator] | None = None,
                        ledger: dict | None = None, extra: dict | None = None) -> None:
    """Write the checkpoint directory `path` (module docstring); optimizers: {"d": ..., "g": ...}."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {"step": str(step), "kind": kind, "model": json.dumps(gan_meta(gan))}
    weights = {f"net.{k}": v for k, v in gan.state_dict().items()}
    weights |= {f"ema.{k}": v for k, v in ema_g.state_dict().items()}
    tensors, groups = {}, {}
    for name, opt in optimizers.items():
        state = opt.state_dict()
        tensors |= {f"opt_{name}.{i}.{k}": v for i, s in state["state"].items() for k, v in s.items()
                    if torch.is_tensor(v)}
        groups[name] = state["param_groups"]
    if generators:  # non-private training only (see the module docstring)
        tensors |= {f"rng.{name}": gen.get_state() for name, gen in generators.items()}
    state = {"step": step, "kind": kind, "model": gan_meta(gan), "config": config, "optimizer": groups,
             "ledger": ledger, **(extra or {})}
    with atomic_path(path / MODEL_FILE) as tmp:
        save_file(_cpu(weights), str(tmp), metadata=meta)
    with atomic_path(path / STATE_FILE) as tmp:
        save_file(_cpu(tensors), str(tmp), metadata=meta)
    write_json_atomic(path / JSON_FILE, state)


def load_gan_checkpoint(path, *, kind: str) -> Checkpoint:
    """A GAN checkpoint of this `kind`; UserError when it is damaged, of another family or another kind."""
    ckpt = load_checkpoint(path)
    family = ckpt.state.get("model", {}).get("family", "diffusion")
    if family != FAMILY or ckpt.state.get("kind") != kind:
        raise UserError(f"{path}: holds a {family} {ckpt.state.get('kind')} checkpoint, not a {FAMILY} {kind} one; "
                        f"use a new output directory")
    return ckpt


def restore_gan(ckpt: Checkpoint, gan: GAN, ema_g: torch.nn.Module, optimizers: dict[str, torch.optim.Optimizer],
                generators: dict[str, torch.Generator] | None = None) -> None:
    """Load weights, EMA, both optimizers and (when saved) RNG states into a run continuing from ckpt.step."""
    device = next(gan.parameters()).device
    gan.load_state_dict(_strip(ckpt.weights, "net."))
    ema_g.load_state_dict(_strip(ckpt.weights, "ema."))
    for name, opt in optimizers.items():
        opt_state = {}
        for key, value in ckpt.tensors.items():
            if key.startswith(f"opt_{name}."):
                _, index, field = key.split(".", 2)
                opt_state.setdefault(int(index), {})[field] = value if field == "step" else value.to(device)
        opt.load_state_dict({"state": opt_state, "param_groups": ckpt.state["optimizer"][name]})
    for name, gen in (generators or {}).items():
        gen.set_state(ckpt.tensors[f"rng.{name}"])


def load_gan(path, *, ema: bool = True) -> GAN:
    """The GAN stored in checkpoint directory `path`; G carries the EMA weights unless ema=False."""
    ckpt = load_checkpoint(path)
    meta = ckpt.state.get("model", {})
    if meta.get("family") != FAMILY:
        raise UserError(f"{path}: not a GAN checkpoint (family {meta.get('family', 'diffusion')!r})")
    gan = GAN(GANConfig.from_dict(meta["gan"]))
    gan.load_state_dict(_strip(ckpt.weights, "net."))
    if ema:
        gan.G.load_state_dict(_strip(ckpt.weights, "ema."))
    return gan


def _strip(weights: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def _cpu(tensors: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
