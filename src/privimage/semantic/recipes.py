"""Default training recipes of the semantic classifier, one per device kind, picked when none is configured.

Why per device: the classifier only has to rank public classes well enough for the noisy vote, but its
cost differs ~100x between a laptop CPU and a data-centre GPU. Measured on Tiny-ImageNet-32 (100k images,
200 classes; docs/semantic.md has the tables and commands):
  * cpu: a stride-2 stem (the network works at 16x16 after its first convolution: 6x cheaper than the
    same ResNet at 32x32), width 32, four stages, bfloat16 autocast (1.5x on CPUs with AVX512-BF16; off
    on CPUs without it, where oneDNN would emulate it). NOT channels_last: 1.1x faster with one thread,
    but its backward pass segfaults in oneDNN with two threads (PyTorch 2.13 CPU build, measured).
    ~1.3 CPU-minutes per epoch on one core.
  * cuda: ResNet-18-like (width 64, four stages of two blocks) at full resolution, bf16, channels_last,
    batch 512. Measured on one H200 (2026-12-04): 8 epochs reached val top-1 0.387 in 20 s (0.340 after
    6); the recipe's 15 epochs take ~40 s by proportion (not measured), inside the 2-minute target.
An explicit `semantic.train` (or the `privimage semantic train` flags) overrides the recipe.

Example:
    config = recipe_for(torch.device("cpu"), resolution=public.resolution)
    model, meta = train_classifier(public, config=config)
"""

import dataclasses

import torch

from privimage.semantic.classifier import ClassifierConfig
from privimage.semantic.network import ResNetConfig

RECIPES = {
    "cpu": ClassifierConfig(
        arch=ResNetConfig(width=32, stages=4, blocks=1, stem_stride=2), epochs=10, batch_size=256,
        optimizer="sgd", lr=0.1, weight_decay=5e-4, crop_padding=2, flip=True, channels_last=False, bf16=True,
    ),
    "cuda": ClassifierConfig(
        arch=ResNetConfig(width=64, stages=4, blocks=2, stem_stride=1), epochs=15, batch_size=512,
        optimizer="sgd", lr=0.2, weight_decay=5e-4, crop_padding=4, flip=True, channels_last=True, bf16=True,
    ),
}


def recipe_for(device: torch.device | str, *, resolution: int) -> ClassifierConfig:
    """The recipe for a device: "cuda" for CUDA devices, "cpu" for everything else (CPU, MPS).

    The CPU recipe's stride-2 stem is kept only for public images of >= 32 px: below, it would leave too
    few pixels for four stages (glyphs, digits at 16 px train at full resolution).
    """
    if torch.device(device).type == "cuda":
        return RECIPES["cuda"]
    cpu = RECIPES["cpu"]
    arch = dataclasses.replace(cpu.arch, stem_stride=cpu.arch.stem_stride if resolution >= 32 else 1)
    return dataclasses.replace(cpu, arch=arch, bf16=cpu.bf16 and _cpu_has_bf16())


def _cpu_has_bf16() -> bool:
    """Whether oneDNN runs bfloat16 natively here (AVX512-BF16 or AMX); emulated bf16 is slower than float32."""
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private PyTorch hook: absent in some builds
        return False
