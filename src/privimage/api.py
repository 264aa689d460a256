"""The Python API: `PrivImage(config).fit(sensitive, public)` for notebooks and scripts.

`fit` runs the same pipeline as `privimage run` (pipeline.run) on data you pass in memory (ImageSet,
any torch Dataset of (image, label), or a path), in `out_dir` or, when none is given, in a new
temporary directory that is kept: the ledger of the release is a file there, exactly as for a CLI run,
so the epsilon you read is the one of everything that touched the data. The result holds the
fine-tuned model (its EMA), the ledger and the selection, and samples on demand.

Example:
    >>> import privimage
    >>> config = privimage.load_config("privimage:tiny.yaml", ["privacy.epsilon=5"])
    >>> fit = privimage.PrivImage(config).fit(sensitive, public, test=test)       # doctest: +SKIP
    >>> fit.epsilon, [m.name for m in fit.ledger.entries]                          # doctest: +SKIP
    (4.99..., ['semantic_query', 'finetune'])
    >>> fit.sample(100).x.shape                                                    # doctest: +SKIP
    (100, 16, 16, 1)
"""

import dataclasses
import logging
import tempfile
from pathlib import Path

import torch

from privimage.data.imageset import ImageSet
from privimage.data.load import load_images
from privimage.data.transform import transform_array
from privimage.device import resolve_device
from privimage.errors import UserError
from privimage.export import read_samples
from privimage.generators import family
from privimage.privacy.ledger import Ledger
from privimage.run_config import MEMORY, METHODS, RunConfig, load_run_config
from privimage.semantic.selection import Selection

log = logging.getLogger(__name__)


@dataclasses.dataclass
class Fit:
    """One finished release: the model, its ledger, and where its files are."""

    config: RunConfig  # the config it ran with (methods = [method], data as passed)
    method: str  # privimage, or a baseline: none, all, random
    out_dir: Path  # run directory (config.json, ledger, checkpoints, samples, report.html)
    model: torch.nn.Module  # the DP fine-tuned generator (diffusion: EMA U-Net; gan: the GAN), post-processing
    ledger: Ledger  # every mechanism that touched the sensitive data in this release
    classes: list[str]  # the sensitive classes the model is conditioned on
    metrics: dict  # this method's metrics.json: epsilon, CA (when a test set was given), ...
    selection: Selection | None  # public classes selected per sensitive class (privimage only)

    @property
    def epsilon(self) -> float:
        """Total epsilon of the release (PLD, every ledger entry composed) at ledger.delta."""
        return self.ledger.epsilon()

    def sample(self, n: int, *, seed: int = 0, steps: int | None = None, guidance: float | None = None,
               sampler: str | None = None, device=None, progress: bool = False) -> ImageSet:
        """n class-balanced synthetic images (no privacy cost): an ImageSet with the sensitive class names.

        steps, guidance and sampler apply to the diffusion family; a GAN draws each image in one pass of G.
        """
        s = self.config.sample
        s = dataclasses.replace(s, n=n, steps=steps or s.steps, guidance=s.guidance if guidance is None else guidance,
                                sampler=sampler or s.sampler)
        config = dataclasses.replace(self.config, sample=s, seed=seed)
        x, y = family(config.generator).sample(self.model, config, device=resolve_device(device), progress=progress)
        return ImageSet(x, y, list(self.classes), source=f"samples of {self.out_dir / self.method}")


class PrivImage:
    """PrivImage (or one of its baselines) with a fixed config; `fit` trains one DP release.

    config: a RunConfig, a YAML path / privimage:NAME.yaml, or None (the demo defaults).
    method: "privimage" (default), or "none" (DPDM), "all" (PDP-Diffusion), "random" as baselines.
    """

    def __init__(self, config: RunConfig | str | Path | None = None, *, method: str = "privimage",
                 overrides: list[str] = ()):
        if not isinstance(config, RunConfig):
            config = load_run_config(config, list(overrides))
        if method not in METHODS:
            raise UserError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
        self.config, self.method = config, method

    def fit(self, sensitive=None, public=None, *, test=None, out_dir=None, device="auto", progress: bool = True,
            resume: bool = False) -> Fit:
        """Train one release on `sensitive` (DP) with `public` for pre-training; CA on `test` if given.

        Each of sensitive / public / test may be an ImageSet, a torch Dataset of (image, label), a path,
        or None for the config's data.* paths. Images are brought to data.resolution and data.channels;
        model.num_classes follows the sensitive classes. Without `out_dir` a temporary directory is made
        (and kept: it holds the ledger). In-memory data cannot be recognised again, so an `out_dir`
        that already holds a run is reused only with resume=True.
        """
        from privimage.pipeline import run  # the pipeline imports most of the package
        from privimage.preflight import load_data

        config = dataclasses.replace(self.config, methods=[self.method])
        in_memory = not (sensitive is None and public is None and test is None)
        data = None  # None: everything from the config's paths, read and checked as by `privimage run`
        if in_memory:
            defaults = load_data(config, progress=progress) if sensitive is None or public is None else (None,) * 3
            d = config.data
            sensitive = as_image_set(sensitive, d, d.sensitive_split) if sensitive is not None else defaults[0]
            test = as_image_set(test, d, d.test_split) if test is not None else None
            public = as_image_set(public, d, d.public_split) if public is not None else defaults[2]
            data = (sensitive, test, public)
            classes = len(sensitive.classes)
            config = dataclasses.replace(
                config, model=dataclasses.replace(config.model, num_classes=classes),
                gan=dataclasses.replace(config.gan, model=dataclasses.replace(config.gan.model, num_classes=classes)),
                data=dataclasses.replace(d, sensitive=f"{MEMORY}{sensitive.source or 'ImageSet'}",
                                         public=f"{MEMORY}{public.source or 'ImageSet'}", holdout=None))
        out = Path(out_dir) if out_dir is not None else Path(tempfile.mkdtemp(prefix="privimage-"))
        if in_memory and (out / "config.json").is_file() and not resume:
            raise UserError(f"{out} already holds a run; in-memory data cannot be matched to it: pass "
                            f"resume=True to continue that run, or a new out_dir")
        log.info("run directory: %s", out)
        metrics = run(config, out, device=device, progress=progress, data=data)
        mdir = out / self.method
        return Fit(config=config, method=self.method, out_dir=out, model=family(config.generator).load(mdir / "finetune"),
                   ledger=Ledger(mdir / "ledger.json", delta=config.privacy.delta,
                                 epsilon_budget=config.privacy.epsilon),
                   classes=list(read_samples(mdir / "samples.npz").classes), metrics=metrics["methods"][self.method],
                   selection=Selection.load(out / "selection.json") if self.method == "privimage" else None)


def as_image_set(data, d, split: str) -> ImageSet:
    """An ImageSet at the config's resolution and channels from an ImageSet, a Dataset or a path."""
    if isinstance(data, (str, Path)):
        return load_images(data, split=split, resolution=d.resolution, channels=d.channels)
    if isinstance(data, ImageSet):
        x = transform_array(data.x, resolution=d.resolution, channels=d.channels)
        return ImageSet(x, data.y, list(data.classes), data.source, dict(data.meta))
    if hasattr(data, "__getitem__") and hasattr(data, "__len__"):
        return ImageSet.from_dataset(data, resolution=d.resolution, channels=d.channels)
    raise UserError(f"expected an ImageSet, a torch Dataset or a path, got {type(data).__name__}")
