"""Classification Accuracy (CA): train a classifier on synthetic images, test it on real ones.

The synthetic images carry the labels the conditional generator was asked for; a high accuracy on
the real held-out split means the synthetic images carry the class information of the real ones.
No model selection looks at the test split: the classifier after its last epoch is the one scored.

Example:
    >>> acc = classification_accuracy(synthetic, real_test, classifier="cnn")
    >>> scores = classification_accuracies(synthetic, real_test, classifiers=("cnn", "resnet9"))
    >>> scores["per_classifier"], scores["mean"]
"""

import math
import sys

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from privimage.data.imageset import ImageSet
from privimage.data.tensors import to_model_space
from privimage.device import resolve_device
from privimage.errors import UserError
from privimage.evaluate.classifiers import CLASSIFIERS, Recipe
from privimage.log import progress_enabled


def check_compatible(train: ImageSet, test: ImageSet) -> None:
    """Raise UserError unless train and test share classes, channels and resolution."""
    if len(train) == 0 or len(test) == 0:
        raise UserError(f"CA needs images in both sets (train has {len(train)}, test has {len(test)})")
    if len(train.classes) != len(test.classes):
        raise UserError(
            f"CA: synthetic set has {len(train.classes)} classes but real set {test.source!r} has {len(test.classes)}"
        )
    if train.x.shape[1:] != test.x.shape[1:]:
        raise UserError(
            f"CA: synthetic images are {train.x.shape[1:]} (H, W, C) but real images {test.source!r} are "
            f"{test.x.shape[1:]}; read the real data with the same resolution and channels"
        )


def train_classifier(
    train: ImageSet, recipe: Recipe, *, epochs: int, seed: int, device: torch.device, progress: bool, desc: str
) -> nn.Module:
    """The recipe's optimizer and per-step schedule over `epochs`; returns the network after the last epoch
    (with the recipe's EMA of the weights in place of the weights when it has one)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = recipe.build(in_channels=train.channels, num_classes=len(train.classes)).to(device)
    if recipe.optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    else:
        opt = torch.optim.SGD(net.parameters(), lr=recipe.lr, momentum=recipe.momentum,
                              weight_decay=recipe.weight_decay, nesterov=recipe.nesterov)
    batch = min(recipe.batch_size, len(train))
    steps_per_epoch = math.ceil(len(train) / batch)
    sched = schedule(opt, recipe, total=max(1, epochs * steps_per_epoch), steps_per_epoch=steps_per_epoch)
    params = list(net.parameters())
    ema = [p.detach().clone() for p in params] if recipe.ema > 0 else None
    x_all, y_all = to_model_space(train.x), torch.from_numpy(train.y)
    shuffle = torch.Generator().manual_seed(seed)
    net.train()
    t = 0
    bar = tqdm(range(epochs), desc=desc, disable=not progress_enabled(progress), file=sys.stderr, leave=False)
    for _ in bar:
        order = torch.randperm(len(train), generator=shuffle)
        for i in range(steps_per_epoch):
            idx = order[i * batch : (i + 1) * batch]
            if len(idx) < 2:  # BatchNorm needs two images; drop a trailing singleton
                continue
            x = augment(x_all[idx], recipe, generator=shuffle).to(device)  # (B, C, H, W)
            loss = nn.functional.cross_entropy(net(x), y_all[idx].to(device), label_smoothing=recipe.label_smoothing)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if ema is not None:  # warmed-up decay (score_sde's EMA, which DPImageBench uses)
                decay = min(recipe.ema, (1 + t) / (10 + t))
                for e, p in zip(ema, params):
                    e.lerp_(p.detach(), 1 - decay)
            t += 1
        bar.set_postfix(loss=f"{loss.item():.3f}")
    if ema is not None:  # BatchNorm statistics stay the live network's, as in DPImageBench
        with torch.no_grad():
            for p, e in zip(params, ema):
                p.copy_(e)
    return net


def schedule(opt: torch.optim.Optimizer, recipe: Recipe, *, total: int,
             steps_per_epoch: int = 1) -> torch.optim.lr_scheduler.LRScheduler:
    """recipe.lr_step > 0: lr x lr_gamma every lr_step epochs. Otherwise cosine decay to 0 over `total` steps,
    after a linear warm-up from 0 over recipe.warmup * total steps (one-cycle: a cold start at the peak lr made
    ResNet-9 diverge)."""
    if recipe.lr_step > 0:
        every = recipe.lr_step * steps_per_epoch
        return torch.optim.lr_scheduler.LambdaLR(opt, lambda step: recipe.lr_gamma ** (step // every))
    warm = max(1, int(recipe.warmup * total)) if recipe.warmup > 0 else 0  # short runs still warm up
    if warm == 0:
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=total)

    def factor(step: int) -> float:
        if step < warm:  # 1/(w+1), ..., w/(w+1), then the peak at step w
            return (step + 1) / (warm + 1)
        return 0.5 * (1 + math.cos(math.pi * (step - warm) / max(1, total - warm)))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)


def augment(x: torch.Tensor, recipe: Recipe, *, generator: torch.Generator) -> torch.Tensor:
    """Random crops (reflect-padded by recipe.crop_padding) and horizontal flips of a batch (B, C, H, W)."""
    if recipe.flip:
        flip = torch.rand(len(x), generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(3), x)
    p = recipe.crop_padding
    if p:
        h, w = x.shape[2:]
        padded = nn.functional.pad(x, (p, p, p, p), mode="reflect")  # (B, C, H + 2p, W + 2p)
        dy, dx = torch.randint(0, 2 * p + 1, (2, len(x)), generator=generator)
        rows = (dy[:, None] + torch.arange(h))[:, None, :, None]  # (B, 1, H, 1)
        cols = (dx[:, None] + torch.arange(w))[:, None, None, :]  # (B, 1, 1, W)
        x = padded[torch.arange(len(x))[:, None, None, None], torch.arange(x.shape[1])[None, :, None, None],
                   rows, cols]
    return x


@torch.no_grad()
def accuracy(net: nn.Module, test: ImageSet, *, device: torch.device, batch_size: int = 500) -> float:
    """Top-1 accuracy of `net` on `test`."""
    return overall(per_class_accuracy(net, test, device=device, batch_size=batch_size), test)


def overall(per_class: np.ndarray, test: ImageSet) -> float:
    """Accuracy over all test images from the per-class accuracies (classes without images weigh 0)."""
    return float(np.average(np.nan_to_num(per_class), weights=test.counts()))


@torch.no_grad()
def per_class_accuracy(net: nn.Module, test: ImageSet, *, device: torch.device, batch_size: int = 500) -> np.ndarray:
    """(len(classes),) top-1 accuracy on the test images of each class (NaN for a class without any)."""
    net.eval()
    correct = np.zeros(len(test.classes))
    for i in range(0, len(test), batch_size):
        logits = net(to_model_space(test.x[i : i + batch_size]).to(device))  # (B, num_classes)
        hit = (logits.argmax(1).cpu() == torch.from_numpy(test.y[i : i + batch_size])).numpy()
        np.add.at(correct, test.y[i : i + batch_size], hit)
    counts = test.counts()
    return np.divide(correct, counts, out=np.full(len(counts), np.nan), where=counts > 0)


def classification_accuracy(train: ImageSet, test: ImageSet, *, classifier: str = "cnn", epochs: int | None = None,
                            seed: int = 0, device: str | torch.device | None = None, progress: bool = True) -> float:
    """Accuracy on `test` of classifier `classifier` trained on `train` for `epochs` (its recipe's default)."""
    scores = classification_scores(train, test, classifier=classifier, epochs=epochs, seed=seed, device=device,
                                   progress=progress)
    return overall(scores, test)


def classification_scores(
    train: ImageSet,
    test: ImageSet,
    *,
    classifier: str = "cnn",
    epochs: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> np.ndarray:
    """Per-class accuracy (len(classes),) on `test` of `classifier` trained on `train` (see classification_accuracy)."""
    if classifier not in CLASSIFIERS:
        raise UserError(f"unknown classifier {classifier!r}; choose from {', '.join(CLASSIFIERS)}")
    if epochs is not None and epochs < 1:
        raise UserError(f"epochs must be >= 1, got {epochs}")
    check_compatible(train, test)
    recipe = CLASSIFIERS[classifier]
    dev = resolve_device(device)
    net = train_classifier(
        train, recipe, epochs=epochs or recipe.epochs, seed=seed, device=dev, progress=progress, desc=f"CA {classifier}"
    )
    return per_class_accuracy(net, test, device=dev)


def classification_accuracies(
    train: ImageSet,
    test: ImageSet,
    *,
    classifiers: tuple[str, ...] = ("cnn",),
    real_train: ImageSet | None = None,
    epochs: int | None = None,
    seed: int = 0,
    device: str | torch.device | None = None,
    progress: bool = True,
) -> dict:
    """CA of every classifier and their mean; with `real_train`, the same trained on real data as reference.

    Returns {"per_classifier": {name: acc}, "mean": float, "per_class": {class name: acc, mean over the
    classifiers}, "real_per_classifier": {name: acc}, "real_mean": float | None}. A diverged classifier
    is reported as it scored, never dropped.
    """
    if not classifiers:
        raise UserError("CA needs at least one classifier")
    kwargs = dict(epochs=epochs, seed=seed, device=device, progress=progress)
    scores = {name: classification_scores(train, test, classifier=name, **kwargs) for name in classifiers}
    per = {name: overall(s, test) for name, s in scores.items()}
    per_class = np.mean(list(scores.values()), axis=0)  # (len(classes),)
    real = {}
    if real_train is not None:
        real = {name: classification_accuracy(real_train, test, classifier=name, **kwargs) for name in classifiers}
    return {
        "per_classifier": per,
        "mean": float(np.mean(list(per.values()))),
        "per_class": {name: None if np.isnan(a) else round(float(a), 4) for name, a in zip(test.classes, per_class)},
        "real_per_classifier": real,
        "real_mean": float(np.mean(list(real.values()))) if real else None,
    }
