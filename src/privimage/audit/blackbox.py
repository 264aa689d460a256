"""The `input` setting: canary IMAGES in the training set, scored by the released model's loss (black-box).

Canaries are out-of-distribution images (random black-and-white pixel patterns, each with a random
label): nothing in the real data looks like them, so a model that memorises one shows it. The included
ones are appended to the sensitive images and the whole set goes through the real DP fine-tuning
(`train.finetune.finetune`: its engine, ledger and noise, unchanged). The released (EMA) model is then
scored on every canary by its EDM loss, averaged over fixed noise draws, relative to the loss of the
model before fine-tuning: score = loss_before - loss_after (larger = more likely trained on).

What it can detect: anything that makes the released model leak its training images beyond the claim,
wherever in the pipeline it happens. What it cannot: small violations -- one final model reveals far
less than every update, so its bounds sit well below the claim even for a correct engine.
"""

import copy

import numpy as np
import torch

from privimage.data import ImageSet
from privimage.models.edm import EDMLoss, EDMPrecond, to_model_space

SCORE_DRAWS = 64  # noise draws per canary in its score (the adversary's own randomness)
SCORE_BATCH = 64  # canaries scored per forward pass


def canary_images(m: int, like: ImageSet, *, generator: torch.Generator) -> ImageSet:
    """m random black-and-white images shaped like `like`'s, with random labels of its classes."""
    shape = (m, *like.x.shape[1:])
    x = (torch.rand(shape, generator=generator) < 0.5).to(torch.uint8).mul_(255).numpy()
    y = torch.randint(0, len(like.classes), (m,), generator=generator).numpy().astype(np.int64)
    return ImageSet(x=x, y=y, classes=list(like.classes), source=f"{m} audit canaries (random pixels)")


def with_canaries(sensitive: ImageSet, canaries: ImageSet, included: np.ndarray) -> ImageSet:
    """The training set of the audit: the sensitive images plus the included canaries."""
    return ImageSet(x=np.concatenate([sensitive.x, canaries.x[included]]),
                    y=np.concatenate([sensitive.y, canaries.y[included]]), classes=list(sensitive.classes),
                    source=f"{sensitive.source} + {int(included.sum())} audit canaries")


@torch.no_grad()
def loss_scores(before: EDMPrecond, after: EDMPrecond, canaries: ImageSet, *, seed: int, device) -> np.ndarray:
    """(m,) loss of `before` minus loss of `after` on each canary, over the same SCORE_DRAWS draws."""
    loss_fn = EDMLoss(sigma_data=after.sigma_data, label_dropout=0.0, multiplicity=SCORE_DRAWS)
    before, after = before.to(device).eval(), after.to(device).eval()
    out = []
    for start in range(0, len(canaries), SCORE_BATCH):
        x = to_model_space(torch.from_numpy(canaries.x[start:start + SCORE_BATCH]).to(device))
        y = torch.from_numpy(canaries.y[start:start + SCORE_BATCH]).to(device)
        draws = loss_fn.draw(x, y, generator=torch.Generator(device=device).manual_seed(seed + start))
        out.append((loss_fn(before, x, y, *draws) - loss_fn(after, x, y, *draws)).double().cpu())
    return torch.cat(out).numpy()


def frozen_copy(net: EDMPrecond) -> EDMPrecond:
    """The model before fine-tuning, kept as the scores' reference (fine-tuning trains `net` in place)."""
    return copy.deepcopy(net).requires_grad_(False)
