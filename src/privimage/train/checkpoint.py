"""Checkpoints that a killed run resumes from, and that move between machines: no pickled code.

A checkpoint is a directory:
    model.safetensors   fp32 weights "net.*" and their EMA "ema.*"; metadata: step, model config
    state.safetensors   optimizer tensors "opt.<param>.<key>"; for NON-private training (pre-training) also
                        the RNG states "rng.<name>" (uint8) of the generators it was given
    state.json          step, kind, model/train config, optimizer hyper-parameters, ledger position
Each file is written to a temporary name and renamed (atomic on POSIX); state.json goes last and the
files carry their step, so a save cut short is detected instead of silently mixing two steps.

A DP fine-tuning checkpoint holds NO generator state: its randomness is a pure function of the
release's NoiseSource key, which lives apart in noise.key (privacy/noise_key.py) and is deleted when the
release is final. Release only model.safetensors all the same (the optimizer state is not needed).
"""

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from privimage.errors import UserError
from privimage.files import atomic_path, read_json, write_json_atomic
from privimage.models.edm import EDMPrecond
from privimage.models.unet import UNet, UNetConfig

MODEL_FILE, STATE_FILE, JSON_FILE = "model.safetensors", "state.safetensors", "state.json"


@dataclass
class Checkpoint:
    """What `load_checkpoint` returns; tensors stay on CPU until `restore` moves them."""

    path: Path
    step: int  # optimisation steps taken
    state: dict  # the parsed state.json
    weights: dict[str, torch.Tensor]  # "net.*" and "ema.*"
    tensors: dict[str, torch.Tensor]  # "opt.*" and "rng.*"

    def model(self, *, ema: bool = True) -> EDMPrecond:
        """The network (EMA weights by default, as used for sampling and fine-tuning)."""
        net = build_model(self.state["model"])
        net.load_state_dict(_strip(self.weights, "ema." if ema else "net."))
        return net

    def restore(self, net, ema, optimizer, generators: dict[str, torch.Generator] | None = None) -> None:
        """Load weights, EMA, optimizer and (when saved) RNG states into a run that continues from this step."""
        device = next(net.parameters()).device
        net.load_state_dict(_strip(self.weights, "net."))
        ema.load_state_dict(_strip(self.weights, "ema."))
        opt_state = {}
        for key, value in self.tensors.items():
            if key.startswith("opt."):
                _, index, name = key.split(".", 2)
                opt_state.setdefault(int(index), {})[name] = value if name == "step" else value.to(device)
        optimizer.load_state_dict({"state": opt_state, "param_groups": self.state["optimizer"]})
        for name, gen in (generators or {}).items():
            gen.set_state(self.tensors[f"rng.{name}"])
        if "rng.torch" in self.tensors:
            torch.set_rng_state(self.tensors["rng.torch"])
        if "rng.cuda" in self.tensors and torch.cuda.is_available():
            torch.cuda.set_rng_state(self.tensors["rng.cuda"])


def build_model(model_meta: dict) -> EDMPrecond:
    """EDMPrecond(UNet) from the "model" entry of state.json: {"family", "unet": {...}, "sigma_data": float}."""
    if model_meta.get("family", "diffusion") != "diffusion":  # e.g. a GAN: privimage.generators.load_generator
        raise UserError(f"a {model_meta['family']} checkpoint is not a diffusion model; load it with "
                        f"privimage.generators.load_generator")
    return EDMPrecond(UNet(UNetConfig.from_dict(model_meta["unet"])), sigma_data=model_meta["sigma_data"])


def model_meta(net: EDMPrecond) -> dict:
    return {"family": "diffusion", "unet": net.config.to_dict(), "sigma_data": net.sigma_data}  # generators.py


def save_checkpoint(path, *, net: EDMPrecond, ema: EDMPrecond, optimizer: torch.optim.Optimizer, step: int,
                    kind: str, config: dict, generators: dict[str, torch.Generator] | None = None,
                    ledger: dict | None = None, extra: dict | None = None) -> None:
    """Write the checkpoint directory `path` (see the module docstring). `ledger`: path and steps charged.

    generators: states of NON-private generators to save with the global ones (pre-training); a DP
    fine-tuning run passes none, so its checkpoint holds no randomness state.
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    meta = {"step": str(step), "kind": kind, "model": json.dumps(model_meta(net))}
    weights = {f"net.{k}": v for k, v in net.state_dict().items()}
    weights |= {f"ema.{k}": v for k, v in ema.state_dict().items()}
    opt = optimizer.state_dict()
    tensors = {f"opt.{i}.{k}": v for i, s in opt["state"].items() for k, v in s.items() if torch.is_tensor(v)}
    if generators:
        tensors |= {f"rng.{name}": gen.get_state() for name, gen in generators.items()}
        tensors["rng.torch"] = torch.get_rng_state()  # dropout draws from the global generators
        if torch.cuda.is_available():
            tensors["rng.cuda"] = torch.cuda.get_rng_state()
    state = {"step": step, "kind": kind, "model": model_meta(net), "config": config,
             "optimizer": opt["param_groups"], "ledger": ledger, **(extra or {})}
    with atomic_path(path / MODEL_FILE) as tmp:
        save_file(_cpu(weights), str(tmp), metadata=meta)
    with atomic_path(path / STATE_FILE) as tmp:
        save_file(_cpu(tensors), str(tmp), metadata=meta)
    write_json_atomic(path / JSON_FILE, state)


def load_checkpoint(path) -> Checkpoint:
    """Read a checkpoint directory; UserError (naming the file) when it is missing, cut short or corrupt."""
    path = Path(path)
    if not (path / JSON_FILE).is_file() or not (path / MODEL_FILE).is_file():
        raise UserError(f"{path}: not a checkpoint (no {JSON_FILE} / {MODEL_FILE})")
    state = read_json(path / JSON_FILE)
    if not isinstance(state.get("step"), int):
        raise UserError(f"{path / JSON_FILE}: no integer 'step'; the checkpoint is damaged")
    files = [MODEL_FILE] + ([STATE_FILE] if (path / STATE_FILE).is_file() else [])
    for name in files:
        step = _metadata(path / name).get("step")
        if step != str(state["step"]):
            raise UserError(f"{path / name}: step {step} but {JSON_FILE} says {state['step']} "
                            f"(save interrupted); delete the directory and restart")
    tensors = _tensors(path / STATE_FILE) if STATE_FILE in files else {}
    return Checkpoint(path, state["step"], state, _tensors(path / MODEL_FILE), tensors)


def model_description(path) -> dict:
    """The model description (family, architecture) stored in checkpoint directory `path`'s weights file."""
    path = Path(path)
    if not (path / MODEL_FILE).is_file():
        raise UserError(f"{path}: no {MODEL_FILE} (not a checkpoint directory)")
    try:
        return json.loads(_metadata(path / MODEL_FILE)["model"])
    except (KeyError, ValueError) as err:
        raise UserError(f"{path / MODEL_FILE}: no model description in its metadata ({err!r})") from None


def load_model(path, *, ema: bool = True) -> EDMPrecond:
    """The model stored in checkpoint directory `path` (no optimizer state needed)."""
    path = Path(path)
    meta = model_description(path)
    weights = _tensors(path / MODEL_FILE)
    return Checkpoint(path, 0, {"model": meta}, weights, {}).model(ema=ema)


def _metadata(file: Path) -> dict:
    """The string metadata of a safetensors file; UserError when it is truncated or not safetensors."""
    try:
        with safe_open(file, framework="pt") as f:
            return dict(f.metadata() or {})
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{file}: not a readable safetensors file ({_first_line(err)}); the checkpoint is "
                        f"damaged") from None


def _tensors(file: Path) -> dict[str, torch.Tensor]:
    try:
        return load_file(file)
    except (SafetensorError, OSError, ValueError) as err:
        raise UserError(f"{file}: not a readable safetensors file ({_first_line(err)}); the checkpoint is "
                        f"damaged") from None


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [err.__class__.__name__])[0]


def _strip(weights: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in weights.items() if k.startswith(prefix)}


def _cpu(tensors: dict) -> dict:
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in tensors.items()}
