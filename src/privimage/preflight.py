"""Refuse before spending: every check a run needs, in one pass, before anything is written or charged.

A run spends privacy early (the semantic query, then DP-SGD) and fails late (a sampler name, a missing
FID weights file, a batch larger than the data). `preflight(config, device=...)` checks everything the
later steps need while nothing has been written to the run directory and nothing has been charged:
the config, the device, the data (sizes, channels, classes, held-out split really held out), the
selection's feasibility, the fine-tuning batch, the budget (a noise multiplier exists for it), FID
weights and FID images. It returns the data it checked, so the run uses exactly what was checked.

Example:
    >>> inputs = preflight(load_run_config("configs/tiny.yaml"), device="cpu")   # doctest: +SKIP
    >>> len(inputs.sensitive), len(inputs.test), inputs.device                    # doctest: +SKIP
    (1347, 450, device(type='cpu'))
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from privimage.data import ImageSet, demo, load_images
from privimage.data.splits import hold_out
from privimage.device import resolve_device
from privimage.errors import UserError
from privimage.files import read_json
from privimage.generators import family
from privimage.privacy.accountant import calibrate_sigma, check_delta
from privimage.run_config import RunConfig, validate
from privimage.semantic.classifier import ClassifierMeta
from privimage.semantic.query import query_sigma
from privimage.semantic.selection import check_selectable
from privimage.train.finetune import plan


@dataclass
class Inputs:
    """The checked data and device of one run."""

    sensitive: ImageSet  # training part: the only images the query and DP-SGD read (the ledger's N)
    test: ImageSet | None  # held-out real images for CA (data.test_split, or the data.holdout part; None: no CA)
    public: ImageSet  # public images (semantic classifier, pre-training)
    fid_real: ImageSet | None  # real images FID compares against; None when FID is not asked for
    fid_nonprivate: bool  # fid_real shares images with the sensitive training part: FID is not private
    device: torch.device
    test_name: str  # what `test` is, for metrics.json ("test split", "holdout 0.1 of train, seed 0")
    query_sensitive: ImageSet | None = None  # the same sensitive images at semantic.resolution; None = `sensitive`
    query_public: ImageSet | None = None  # the same public images at semantic.resolution; None = `public`

    def query_images(self) -> tuple[ImageSet, ImageSet]:
        """(sensitive, public) as the semantic classifier and query see them (semantic.resolution)."""
        return (self.sensitive if self.query_sensitive is None else self.query_sensitive,
                self.public if self.query_public is None else self.query_public)


def preflight(config: RunConfig, *, device="auto", data: tuple | None = None, progress: bool = True) -> Inputs:
    """Every check of a run; UserError (one line) on the first problem. Writes nothing, spends nothing.

    `data` = (sensitive, test or None, public) already in memory (the Python API) instead of config.data's paths.
    """
    validate(config)  # the config alone (again: a RunConfig may have been built in Python)
    dev = resolve_device(device)
    sensitive, test, public = data if data is not None else load_data(config, progress=progress)
    check_data(config, sensitive, test, public)
    check_steps(config, sensitive, public)
    fid_real, nonprivate = fid_images(config, sensitive, test)
    query_sensitive, query_public = query_views(config, sensitive, public, in_memory=data is not None,
                                                progress=progress)
    check_budget(config, len(sensitive))  # last: the slowest check (a few PLD evaluations)
    d = config.data
    test_name = f"{d.test_split} split" if d.holdout is None else \
        f"holdout {d.holdout:g} of {d.sensitive_split} (seed {d.holdout_seed})"
    if data is not None:
        test_name = "held-out images given in memory" if test is not None else "none (no test set given)"
    return Inputs(sensitive, test, public, fid_real, nonprivate, dev, test_name, query_sensitive, query_public)


def load_data(config: RunConfig, *, resolution: int | None = None, progress: bool = True
              ) -> tuple[ImageSet, ImageSet, ImageSet]:
    """(sensitive training part, held-out real images, public data), all at `resolution` (data.resolution)."""
    d = config.data
    resolution = resolution or d.resolution
    if d.holdout is not None:  # the held-out images come out of the training split, chosen by a public seed
        full = sensitive_split(config, d.sensitive_split, resolution=resolution, progress=progress)
        train, held = hold_out(len(full), fraction=d.holdout, seed=d.holdout_seed)
        sensitive, test = full.subset(train), full.subset(held)
        sensitive.source += f" | training part ({len(train)} of {len(full)})"
        test.source += f" | held out: data.holdout={d.holdout:g}, seed {d.holdout_seed}"
    else:
        sensitive = sensitive_split(config, d.sensitive_split, resolution=resolution, progress=progress)
        test = sensitive_split(config, d.test_split, resolution=resolution, progress=progress)
    if d.public == "demo:glyphs":
        public = demo.render_glyphs(per_class=d.glyphs_per_class, resolution=resolution, progress=progress)
    else:
        public = load_images(d.public, split=d.public_split, resolution=resolution, channels=d.channels,
                             progress=progress)
    return sensitive, test, public


def sensitive_split(config: RunConfig, split: str, *, resolution: int | None = None,
                    progress: bool = True) -> ImageSet:
    """One split of the sensitive dataset at `resolution` (data.resolution; the demo digits have train and test)."""
    d = config.data
    resolution = resolution or d.resolution
    if d.sensitive == "demo:digits":
        return demo.digits(split, resolution=resolution)
    return load_images(d.sensitive, split=split, resolution=resolution, channels=d.channels, progress=progress)


def query_views(config: RunConfig, sensitive: ImageSet, public: ImageSet, *, in_memory: bool, progress: bool = True
                ) -> tuple[ImageSet | None, ImageSet | None]:
    """The same sensitive and public images at semantic.resolution, or (None, None) when it is data.resolution.

    Why: the classifier ranks public classes better from more pixels (CIFAR-10 vs Tiny-ImageNet: 8 of 10
    classes right at 32 px, 4-5 at 16 px; docs/results.md) while a CPU generator trains ~3x faster at 16 px.
    The query still reads exactly the sensitive training images DP-SGD reads (checked below), so the
    ledger's N and the guarantee are unchanged.
    """
    s, d = config.semantic, config.data
    if s.resolution is None or s.resolution == d.resolution or "privimage" not in config.methods:
        return None, None
    if in_memory:
        raise UserError(f"semantic.resolution={s.resolution} reads the data again at that size from config.data's "
                        f"paths; with images given in memory, leave it null (data.resolution)")
    query_sensitive, _, query_public = load_data(config, resolution=s.resolution, progress=progress)
    for name, small, large in (("data.sensitive", sensitive, query_sensitive), ("data.public", public, query_public)):
        if len(small) != len(large) or not np.array_equal(small.y, large.y):
            raise UserError(f"{name} read at semantic.resolution={s.resolution} gave other images than at "
                            f"data.resolution={d.resolution} ({len(large)} vs {len(small)})")
    return query_sensitive, query_public


def check_data(config: RunConfig, sensitive: ImageSet, test: ImageSet, public: ImageSet) -> None:
    """Sizes, channels and classes agree with the config; the CA images are not the training images."""
    d = config.data
    for name, images in (("data.sensitive", sensitive), ("held-out split", test), ("data.public", public)):
        if images is None:  # no test set given to the Python API: CA is skipped
            continue
        if images.channels != d.channels:
            raise UserError(f"data.channels is {d.channels} but {name} ({images.source}) has {images.channels} "
                            f"channel(s); set data.channels and model.in_channels to {images.channels}")
        if images.resolution != d.resolution:
            raise UserError(f"{name} ({images.source}) is {images.resolution}px, not data.resolution={d.resolution}")
    fam = family(config.generator)  # the active generator family's model config (`model` or `gan.model`)
    if len(sensitive.classes) != fam.architecture(config).num_classes:
        raise UserError(f"the sensitive data has {len(sensitive.classes)} classes but {fam.config_key}.num_classes "
                        f"is {fam.architecture(config).num_classes}")
    if test is None:
        return
    if test.classes != sensitive.classes:
        raise UserError(f"data.test_split {d.test_split!r} has other classes than data.sensitive_split "
                        f"{d.sensitive_split!r}; CA needs the same classes")
    if d.holdout is None and mostly_within(test, sensitive):
        raise UserError(f"data.test_split {d.test_split!r} holds the same images as data.sensitive_split "
                        f"{d.sensitive_split!r} (the dataset has no separate split); set data.holdout, e.g. 0.1")


def mostly_within(a: ImageSet, b: ImageSet) -> bool:
    """Whether most images of `a` are byte-identical to images of `b` (then `a` is not held out from `b`)."""
    seen = {hash(row.tobytes()) for row in b.x.reshape(len(b), -1)}
    shared = sum(hash(row.tobytes()) in seen for row in a.x.reshape(len(a), -1))
    return 2 * shared > len(a)


def check_steps(config: RunConfig, sensitive: ImageSet, public: ImageSet) -> None:
    """The selection is feasible (and the user's classifier fits the public data); the batch fits the data."""
    s, f = config.semantic, config.finetune
    if "privimage" in config.methods:
        rows = len(sensitive.classes) if s.labelled else 1  # unlabelled: one histogram row
        check_selectable(k=s.k, num_sensitive=rows, public_counts=public.counts(), fraction=s.fraction)
        if s.classifier is not None:
            meta_path = Path(s.classifier) / "meta.json"
            meta = ClassifierMeta.from_json(read_json(meta_path), where=str(meta_path))
            if meta.classes != public.classes:
                raise UserError(f"semantic.classifier: {meta_path} lists other classes than data.public")
    if f.batch_size > len(sensitive):
        raise UserError(f"finetune.batch_size ({f.batch_size}) is larger than the {len(sensitive)} sensitive "
                        f"training images; lower finetune.batch_size")


def check_budget(config: RunConfig, n: int) -> None:
    """A DP-SGD noise multiplier exists for every release's budget (the query included); delta vs 1/N."""
    s, p = config.semantic, config.privacy
    check_delta(p.delta, n)  # warns when delta >= 1/N
    q, steps = plan(config.finetune, n)
    # The sigma each release will use (calibrate_sigma caches it): a hopeless budget fails now, not after the query.
    sigma_q = query_sigma(sigma_q=s.sigma_q, query_epsilon=s.query_epsilon, delta=p.delta)  # semantic.query_epsilon
    queries = {sigma_q if m == "privimage" else None for m in config.methods}
    for release_query in sorted(queries, key=lambda x: x is None):
        calibrate_sigma(epsilon=p.epsilon, delta=p.delta, sample_rate=q, steps=steps, query_sigma=release_query)


def fid_images(config: RunConfig, sensitive: ImageSet, test: ImageSet) -> tuple[ImageSet | None, bool]:
    """(real images FID compares against, whether that FID is non-private); the weights must load."""
    e, d = config.evaluate, config.data
    if "fid" not in e.metrics:
        return None, False
    if config.sample.n < 2:
        raise UserError(f"FID needs sample.n >= 2, got {config.sample.n}")
    from privimage.evaluate.inception import load_inception  # optional extra [fid]: only when asked for

    load_inception(e.fid_weights, device="cpu")  # readable weights, or one line now (not after training)
    if e.fid_stats is not None:  # the real images' statistics were computed elsewhere (pytorch-fid .npz)
        from privimage.evaluate.fid import load_stats, stats_nonprivate

        load_stats(e.fid_stats)  # readable, or one line now
        nonprivate = stats_nonprivate(e.fid_stats)  # written by `privimage fid-stats --split train`
        if nonprivate and not e.allow_nonprivate_fid:
            raise UserError(f"evaluate.fid_stats {e.fid_stats} holds statistics of training images: that FID is not "
                            f"covered by the privacy guarantee; set evaluate.allow_nonprivate_fid: true")
        return None, nonprivate
    if e.fid_real_split is None:
        if test is None:
            raise UserError("evaluate.metrics: fid needs held-out images (a test set) or evaluate.fid_stats")
        return (test if e.fid_n_real is None else test.balanced_head(e.fid_n_real)), False
    real = sensitive_split(config, e.fid_real_split)
    real = real if e.fid_n_real is None else real.balanced_head(e.fid_n_real)
    nonprivate = e.fid_real_split == d.sensitive_split or mostly_within(real, sensitive)
    if nonprivate and not e.allow_nonprivate_fid:
        raise UserError(f"evaluate.fid_real_split {e.fid_real_split!r} holds sensitive training images: that FID "
                        f"is not covered by the privacy guarantee; set evaluate.allow_nonprivate_fid: true")
    return real, nonprivate

