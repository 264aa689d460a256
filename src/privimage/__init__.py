"""privimage: differentially private synthetic images by semantic-aware pre-training (PrivImage).

The whole method in three lines (see README, "Python API"):

    >>> import privimage
    >>> fit = privimage.PrivImage("privimage:tiny.yaml").fit(sensitive, public, test=test)  # doctest: +SKIP
    >>> fit.epsilon, fit.sample(100)                                                         # doctest: +SKIP

The five steps of the method live in five places, each exported here for researchers:
    semantic/classifier.py  1. semantic query function (classifier on public labels)   train_classifier
    semantic/query.py       2. DP semantic distribution (noisy histogram, charged)      dp_semantic_distribution
    semantic/selection.py   3. selection of public classes, relabelled                 select, apply_selection
    train/pretrain.py       4. pre-training of the conditional generator               pretrain
    train/finetune.py       5. DP fine-tuning on the sensitive data (DP-SGD, charged)   finetune
`pipeline.py` runs them top to bottom (`run`). Names are imported on first use, so `import privimage`
stays cheap and the command line does not load what it does not need.
"""

import importlib
import os

from privimage.memory import keep_freed_memory

# OpenMP threads that spin while they wait made DP fine-tuning ~10x slower on a CPU shared with other
# processes (docs/benchmarks.md); PASSIVE waiters sleep. libgomp reads it when torch loads, so it is set
# here, before any privimage module imports torch; an explicit OMP_WAIT_POLICY wins.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# Freed memory stays in the process (glibc malloc would unmap it and page it in again every DP step,
# 3-4x the fast clipping's cost on CPU; see memory.py). PRIVIMAGE_KEEP_FREED_MEMORY=0 opts out.
KEEPS_FREED_MEMORY = keep_freed_memory()

__version__ = "0.1.0"

# public name -> module that defines it (an explicit table; nothing is found by string search)
_EXPORTS = {
    "PrivImage": "privimage.api", "Fit": "privimage.api",
    "RunConfig": "privimage.run_config", "load_config": "privimage.run_config",
    "ImageSet": "privimage.data.imageset", "load_images": "privimage.data.load",
    "run": "privimage.pipeline",
    "train_classifier": "privimage.semantic.classifier", "ClassifierConfig": "privimage.semantic.classifier",
    "dp_semantic_distribution": "privimage.semantic.query",
    "select": "privimage.semantic.selection", "apply_selection": "privimage.semantic.selection",
    "Selection": "privimage.semantic.selection",
    "pretrain": "privimage.train.pretrain", "PretrainConfig": "privimage.train.pretrain",
    "finetune": "privimage.train.finetune", "FinetuneConfig": "privimage.train.finetune",
    "plan": "privimage.train.finetune", "calibrate_for_ledger": "privimage.train.finetune",
    "EDMPrecond": "privimage.models.edm", "UNet": "privimage.models.unet", "UNetConfig": "privimage.models.unet",
    "generate": "privimage.sample", "save_samples": "privimage.sample",
    "Ledger": "privimage.privacy.ledger", "Mechanism": "privimage.privacy.ledger",
    "NoiseSource": "privimage.privacy.rng",
    "classification_accuracy": "privimage.evaluate.ca", "fid_of_sets": "privimage.evaluate.fid",
    "write_report": "privimage.evaluate.report", "export_samples": "privimage.export",
    "UserError": "privimage.errors",
}
_RENAMED = {"load_config": "load_run_config"}  # exported name -> name in its module

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    """Import an exported name on first use (PEP 562)."""
    if name not in _EXPORTS:
        raise AttributeError(f"module 'privimage' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), _RENAMED.get(name, name))
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
