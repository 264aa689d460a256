"""Step 1 of PrivImage: the semantic query function, a classifier of the PUBLIC dataset's own labels.

It maps any image to a ranking of public classes ("which public semantics does this look like?"). It is
trained on public data only, so it spends no privacy; only its later use on sensitive images does
(see query.py).

Checkpoint format (a directory; bring your own by writing the same two files):
    weights.safetensors  state dict of `network.ResNet` (keys `stem.*`, `layers.*`, `head.*`), float32
    meta.json            {"format": "privimage-classifier/1",
                          "classes": [public class names, index = logit index],
                          "resolution": 32, "channels": 3,       # input size the network expects
                          "normalisation": {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]},
                                                                   # applied to pixels scaled to [0, 1]
                          "architecture": {"width": 32, "stages": 3, "blocks": 1},
                          "val_accuracy": 0.41 or null, "source": "provenance of the public data",
                          "training": {the ClassifierConfig used, or {}}}

Example:
    model, meta = train_classifier(public, config=ClassifierConfig(epochs=5))
    save_classifier("ckpt", model, meta)
    model, meta = load_classifier("ckpt")
    top5 = predict_topk(model, sensitive, k=5)   # (N, 5) int64 public class ids
"""

import dataclasses
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from privimage.data.imageset import ImageSet
from privimage.device import resolve_device
from privimage.errors import UserError
from privimage.files import atomic_path, read_json, write_json_atomic
from privimage.log import progress_enabled
from privimage.semantic.inputs import augment, to_model_input  # noqa: F401 (augment: public API)
from privimage.semantic.network import ResNet, ResNetConfig

log = logging.getLogger(__name__)
FORMAT = "privimage-classifier/1"
OPTIMIZERS = {"sgd", "adam"}


@dataclass
class ClassifierConfig:
    arch: ResNetConfig = field(default_factory=ResNetConfig)  # network shape (width, stages, blocks)
    epochs: int = 10  # passes over the public training split
    batch_size: int = 128  # images per optimizer step
    optimizer: str = "sgd"  # "sgd" (Nesterov momentum 0.9) or "adam" (AdamW)
    lr: float = 0.1  # peak learning rate, decayed to 0 by a cosine schedule (try 1e-3 for adam)
    weight_decay: float = 5e-4  # L2 penalty on the weights
    crop_padding: int = 2  # random-crop augmentation: pad by this many pixels, crop back (0 = off)
    flip: bool = True  # random horizontal flips; set False for glyphs / digits (mirroring changes them)
    channels_last: bool = False  # NHWC memory layout: faster convolutions on CPU (oneDNN) and tensor cores
    bf16: bool = False  # autocast convolutions to bfloat16 (CUDA; CPUs with AVX512-BF16: 1.5x measured)


@dataclass
class ClassifierMeta:
    """Everything needed to use the weights; written as meta.json next to weights.safetensors."""

    classes: list[str]  # public class names; logit i is class i
    resolution: int  # H = W the network expects; other sizes are resized to it
    channels: int  # 1 or 3; other channel counts are converted
    mean: list[float]  # per-channel normalisation of pixels in [0, 1]: (x - mean) / std
    std: list[float]
    architecture: ResNetConfig
    val_accuracy: float | None = None  # accuracy on the held-out public split (None: no split)
    source: str = ""  # provenance of the public training data
    training: dict = field(default_factory=dict)  # the ClassifierConfig used (informational)

    def to_json(self) -> dict:
        return {
            "format": FORMAT,
            "classes": list(self.classes),
            "resolution": self.resolution,
            "channels": self.channels,
            "normalisation": {"mean": list(self.mean), "std": list(self.std)},
            "architecture": dataclasses.asdict(self.architecture),
            "val_accuracy": self.val_accuracy,
            "source": self.source,
            "training": dict(self.training),
        }

    @classmethod
    def from_json(cls, obj: dict, *, where: str = "meta.json") -> "ClassifierMeta":
        if obj.get("format") != FORMAT:
            raise UserError(f"{where}: format must be {FORMAT!r}, got {obj.get('format')!r}")
        try:
            meta = cls(
                classes=[str(c) for c in obj["classes"]],
                resolution=int(obj["resolution"]),
                channels=int(obj["channels"]),
                mean=[float(m) for m in obj["normalisation"]["mean"]],
                std=[float(s) for s in obj["normalisation"]["std"]],
                architecture=ResNetConfig(**obj["architecture"]),
                val_accuracy=obj.get("val_accuracy"),
                source=str(obj.get("source", "")),
                training=dict(obj.get("training", {})),
            )
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{where}: missing or invalid field ({err!r})") from None
        if meta.channels not in (1, 3) or len(meta.mean) != meta.channels or len(meta.std) != meta.channels:
            raise UserError(f"{where}: channels must be 1 or 3 with one mean/std per channel")
        if len(meta.classes) < 2 or meta.resolution < 8:
            raise UserError(f"{where}: needs >= 2 classes and resolution >= 8")
        return meta


class Classifier(nn.Module):
    """A ResNet plus its input normalisation. forward: (B, C, H, W) in [-1, 1] -> logits (B, P)."""

    def __init__(self, net: ResNet, *, mean: list[float], std: list[float]):
        super().__init__()
        self.net = net
        # Non-persistent: the normalisation lives in meta.json, the weights file holds only the ResNet.
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1), persistent=False)

    @property
    def resolution(self) -> int:
        return self.net.resolution

    @property
    def channels(self) -> int:
        return self.net.in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(((x + 1) / 2 - self.mean) / self.std)


def build_classifier(meta: ClassifierMeta) -> Classifier:
    net = ResNet(meta.architecture, in_channels=meta.channels, num_classes=len(meta.classes), resolution=meta.resolution)
    return Classifier(net, mean=meta.mean, std=meta.std)


def save_classifier(path: str | Path, model: Classifier, meta: ClassifierMeta) -> None:
    """Write the checkpoint directory `path` (weights.safetensors + meta.json)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    weights = {name: t.detach().to("cpu").contiguous() for name, t in model.net.state_dict().items()}
    with atomic_path(path / "weights.safetensors") as tmp:  # a resumed run reloads it
        save_file(weights, str(tmp))
    write_json_atomic(path / "meta.json", meta.to_json())


def load_classifier(path: str | Path, *, device: str | None = None) -> tuple[Classifier, ClassifierMeta]:
    """Read a checkpoint directory written by `save_classifier` (or by hand, see the module docstring)."""
    path = Path(path)
    if not (path / "weights.safetensors").is_file():
        raise UserError(f"{path}: not a classifier checkpoint (weights.safetensors missing)")
    meta = ClassifierMeta.from_json(read_json(path / "meta.json"), where=str(path / "meta.json"))
    model = build_classifier(meta)
    try:
        model.net.load_state_dict(load_file(str(path / "weights.safetensors")))
    except RuntimeError as err:
        first = str(err).splitlines()[0]
        raise UserError(f"{path}/weights.safetensors does not match meta.json's architecture: {first}") from None
    return model.to(resolve_device(device)).eval(), meta


@torch.inference_mode()
def predict_logits(model: Classifier, images: ImageSet | np.ndarray, *, batch_size: int = 512,
                   progress: bool = False) -> torch.Tensor:
    """Logits (N, P) on the model's device, images resized / converted to the model's input."""
    x = images.x if isinstance(images, ImageSet) else images
    if not (isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 4 and x.shape[-1] in (1, 3)):
        raise ValueError("images must be an ImageSet or a uint8 array (N, H, W, C) with C in {1, 3}")
    device = next(model.parameters()).device
    model.eval()
    out = []
    for start in tqdm(range(0, len(x), batch_size), desc="classify", disable=not progress_enabled(progress),
                      leave=False):
        batch = torch.from_numpy(x[start : start + batch_size]).to(device)
        out.append(model(to_model_input(batch, channels=model.channels, resolution=model.resolution)))
    return torch.cat(out) if out else torch.zeros(0, model.net.num_classes, device=device)


def predict_topk(model: Classifier, images: ImageSet | np.ndarray, *, k: int, batch_size: int = 512,
                 progress: bool = False) -> np.ndarray:
    """The k most likely public classes of each image, best first: (N, k) int64 public class ids."""
    if not 1 <= k <= model.net.num_classes:
        raise UserError(f"k={k} must be between 1 and the classifier's {model.net.num_classes} public classes")
    logits = predict_logits(model, images, batch_size=batch_size, progress=progress)  # (N, P)
    return logits.topk(k, dim=1).indices.cpu().numpy().astype(np.int64)


def train_classifier(public: ImageSet, *, config: ClassifierConfig, val_fraction: float = 0.05, seed: int = 0,
                     device: str | None = None, progress: bool = True) -> tuple[Classifier, ClassifierMeta]:
    """Train the semantic query function on the public images' own labels; report held-out accuracy.

    A random `val_fraction` of the public images is held out for validation. Public data only: no
    privacy is spent here.
    """
    _check_training_input(public, config, val_fraction)
    device = resolve_device(device)
    meta = ClassifierMeta(
        classes=list(public.classes), resolution=public.resolution, channels=public.channels,
        mean=[0.5] * public.channels, std=[0.5] * public.channels, architecture=config.arch,
        source=public.source, training=dataclasses.asdict(config),
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_classifier(meta).to(device)
    layout = torch.channels_last if config.channels_last else torch.contiguous_format
    model = model.to(memory_format=layout)
    generator = torch.Generator().manual_seed(seed)
    order = torch.randperm(len(public), generator=generator).numpy()
    n_val = int(round(val_fraction * len(public)))
    val, train = public.subset(order[:n_val]), public.subset(order[n_val:])

    x = torch.from_numpy(train.x).to(device)  # (N, H, W, C) uint8
    y = torch.from_numpy(train.y).to(device)  # (N,)
    steps_per_epoch = math.ceil(len(train) / config.batch_size)
    optimizer = _make_optimizer(model, config)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=config.epochs * steps_per_epoch)
    bar = tqdm(total=config.epochs * steps_per_epoch, desc="train classifier",  # with ETA
               disable=not progress_enabled(progress))
    t0 = time.time()
    for epoch in range(config.epochs):
        model.train()
        perm = torch.randperm(len(train), generator=generator).to(device)
        for start in range(0, len(train), config.batch_size):
            index = perm[start : start + config.batch_size]
            if len(index) > 1:  # BatchNorm cannot train on a single image
                inputs = to_model_input(x[index], channels=meta.channels, resolution=meta.resolution)
                inputs = augment(inputs, padding=config.crop_padding, flip=config.flip, generator=generator)
                with torch.autocast(device.type, dtype=torch.bfloat16, enabled=config.bf16):
                    logits = model(inputs.contiguous(memory_format=layout))
                loss = F.cross_entropy(logits.float(), y[index])
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                if bar.n % 50 == 0:  # .item() waits for the device: not every step
                    bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
            schedule.step()
            bar.update()
        if n_val:
            meta.val_accuracy = accuracy(model, val)
            bar.set_postfix(val_acc=f"{meta.val_accuracy:.3f}")
            log.info("semantic classifier epoch %d/%d: val top-1 %.4f (%.0f s)", epoch + 1, config.epochs,
                     meta.val_accuracy, time.time() - t0)
    bar.close()
    meta.training.update(seconds=round(time.time() - t0, 1), device=str(device))
    return model.eval(), meta


def accuracy(model: Classifier, images: ImageSet, *, batch_size: int = 512) -> float:
    """Top-1 accuracy of `model` on labelled images whose classes are the model's classes."""
    pred = predict_logits(model, images, batch_size=batch_size).argmax(dim=1).cpu().numpy()
    return float((pred == images.y).mean())


def _make_optimizer(model: nn.Module, config: ClassifierConfig) -> torch.optim.Optimizer:
    if config.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=config.lr, momentum=0.9, nesterov=True,
                               weight_decay=config.weight_decay)
    return torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)


def _check_training_input(public: ImageSet, config: ClassifierConfig, val_fraction: float) -> None:
    if config.optimizer not in OPTIMIZERS:
        raise UserError(f"classifier optimizer must be one of {sorted(OPTIMIZERS)}, got {config.optimizer!r}")
    if config.epochs < 1 or config.batch_size < 2 or config.lr <= 0 or config.crop_padding < 0:
        raise UserError(f"classifier config needs epochs >= 1, batch_size >= 2, lr > 0, crop_padding >= 0: {config}")
    if not 0 <= val_fraction < 1:
        raise UserError(f"val_fraction must be in [0, 1), got {val_fraction}")
    if len(public.classes) < 2:
        raise UserError(f"public data {public.source!r} has {len(public.classes)} class; the classifier needs >= 2")
    if public.x.shape[1] != public.x.shape[2] or public.resolution < 8:
        raise UserError(f"public images must be square and >= 8 px, got {public.x.shape[1:3]} ({public.source})")
    if config.crop_padding >= public.resolution:
        raise UserError(f"crop_padding {config.crop_padding} must be smaller than the resolution {public.resolution}")
    if len(public) * (1 - val_fraction) < 2:
        raise UserError(f"public data {public.source!r} has too few images ({len(public)}) to train on")
