"""Pre-training data of the baselines, as their papers define them: public images WITHOUT sensitive labels.

    none    DPDM (Dockhorn et al. 2023): no pre-training; DP-SGD from a random initialisation.
    all     PDP-Diffusion (Ghalebikesabi et al. 2023; Sabry et al. 2023): pre-train on the whole public set.
    random  a uniformly random public subset, of the size PrivImage is EXPECTED to select.

The public images have no sensitive labels: a public class is not a CIFAR-10 class, and inventing one
(a random sensitive label per image, as an earlier version did) teaches the class embeddings noise.
So `all` and `random` pre-train UNCONDITIONALLY, every image through the U-Net's null class (the class
classifier-free guidance already trains), and the class embeddings are learnt by the usual conditional
DP fine-tuning. Only PrivImage's own selection gives public images a sensitive label (step 3).

Each method is its own release with its own ledger: the random subset's size comes from the config and
public metadata only (`random_size`), never from PrivImage's noisy selection, which is charged to
PrivImage's ledger, not the baseline's. See docs/baselines.md.

Example:
    >>> images = baseline_public_data("random", config, public, num_sensitive=10)   # or None for "none"
    >>> pretrain(net, images, config=config.pretrain, out_dir=..., unconditional=True)
"""

import numpy as np

from privimage.data import ImageSet
from privimage.errors import UserError

UNCONDITIONAL = ("all", "random")  # baselines whose pre-training uses only the null class


def expected_fraction(*, k: int, fraction: float | None, num_sensitive: int, public_counts: np.ndarray) -> float:
    """Fraction of the public images PrivImage's selection is EXPECTED to hold, from public metadata only.

    Fraction mode selects about `fraction` of the public set; top-k mode k classes per sensitive class,
    i.e. k * S of the P non-empty public classes, of the mean public class size (what its realised
    selection holds when the public classes are balanced, as Tiny-ImageNet's 500 per class are).
    """
    if fraction is not None:
        return float(fraction)
    counts = np.asarray(public_counts)
    nonempty = counts[counts > 0]
    if len(nonempty) == 0:
        raise UserError("the public data has no images")
    return min(1.0, k * num_sensitive * float(nonempty.mean()) / float(nonempty.sum()))


def random_size(config, public: ImageSet, *, num_sensitive: int) -> int:
    """Images in the random baseline's subset: baselines.random_fraction of the public set, or (unset)
    the expected size of PrivImage's selection under the same semantic settings."""
    f = config.baselines.random_fraction
    if f is None:
        f = expected_fraction(k=config.semantic.k, fraction=config.semantic.fraction, num_sensitive=num_sensitive,
                              public_counts=public.counts())
    return int(min(len(public), max(1, round(f * len(public)))))


def random_public_subset(public: ImageSet, n: int, *, seed: int) -> ImageSet:
    """n public images drawn uniformly without replacement (a public seed: the choice sees public data only).
    Labels stay the PUBLIC ones; the baseline pre-trains unconditionally and ignores them."""
    if not 1 <= n <= len(public):
        raise UserError(f"random subset of {n} images asked from {public.source!r} with {len(public)} images")
    index = np.sort(np.random.default_rng(seed).choice(len(public), size=n, replace=False))
    return ImageSet(public.x[index], public.y[index], list(public.classes),
                    source=f"{public.source} | random {n} images", meta=dict(public.meta))


def baseline_public_data(method: str, config, public: ImageSet, *, num_sensitive: int) -> ImageSet | None:
    """Pre-training images of baseline `method` (None: no pre-training); pre-train them unconditionally."""
    if method == "none":
        return None
    if method == "all":
        return public
    if method == "random":
        return random_public_subset(public, random_size(config, public, num_sensitive=num_sensitive),
                                    seed=config.seed)
    raise ValueError(f"not a baseline: {method!r} (baselines: none, all, random)")
