"""Step 3 of PrivImage: pick the public classes whose semantics the sensitive data shows, relabel them.

Input is the NOISY semantic distribution (S, P) from query.py, so everything here is post-processing
and spends no privacy. Rows are visited in sensitive-class order; each row takes its highest-ranked
public classes that no earlier row took (so the selections are disjoint), and every selected public
class is relabelled to that row's sensitive class. How many classes a row takes:
  * top-k mode (fraction=None): k classes per row (the paper's setting, k' = k);
  * fraction mode: classes in rank order until the row's public images reach
    fraction * len(public) / S (the last class may overshoot), so the pre-training set is about
    `fraction` of the public data, split evenly over the sensitive classes (DPImageBench's ratio);
  * unlabelled sensitive data: one row (S = 1, all images vote in it), either mode; the selection is
    then one set of public classes, not one per sensitive class.
selection.json records only noisy counts, rounded to integers, never the exact histogram.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.files import read_json, write_json_atomic

UNLABELLED_CLASS = "all"  # the one histogram row (and selection) of unlabelled sensitive data


@dataclass
class ClassSelection:
    sensitive_class: str  # name of the sensitive class; its label id is its position in Selection.classes
    public_ids: list[int]  # selected public class ids, best-ranked first
    public_names: list[str]  # their names
    noisy_counts: list[float]  # their cells of the NOISY semantic distribution (DP-released)
    image_counts: list[int]  # public images in each selected class (public information)


@dataclass
class Selection:
    k: int  # top-k of the query; also public classes per sensitive class in top-k mode
    sigma_q: float | None  # noise multiplier of the query (None: not recorded)
    fraction: float | None  # target fraction of the public set (None: top-k mode)
    n_public: int  # images in the whole public set
    classes: list[ClassSelection]  # one per sensitive class, in sensitive-class order (one row if unlabelled)
    query_epsilon: float | None = None  # the query's own epsilon at the release's delta (PLD); DP-SGD gets the rest
    epsilon_budget: float | None = None  # the release's total budget (query + DP-SGD composed), when known

    @property
    def sensitive_classes(self) -> list[str]:
        return [c.sensitive_class for c in self.classes]

    @property
    def n_images(self) -> int:
        """Public images selected for pre-training."""
        return sum(sum(c.image_counts) for c in self.classes)

    @property
    def fraction_of_public(self) -> float:
        return self.n_images / self.n_public if self.n_public else 0.0

    def to_json(self) -> dict:
        return {
            "k": self.k,
            "sigma_q": self.sigma_q,
            "query_epsilon": self.query_epsilon,
            "epsilon_budget": self.epsilon_budget,
            "fraction_target": self.fraction,
            "n_images": self.n_images,
            "n_public": self.n_public,
            "fraction_of_public": self.fraction_of_public,
            "classes": [
                {
                    "sensitive_class": c.sensitive_class,
                    "public_ids": list(c.public_ids),
                    "public_names": list(c.public_names),
                    "noisy_counts": [int(round(v)) for v in c.noisy_counts],  # integers: no noise digits
                    "image_counts": list(c.image_counts),
                }
                for c in self.classes
            ],
        }

    @classmethod
    def from_json(cls, obj: dict, *, where: str = "selection.json") -> "Selection":
        try:
            classes = [
                ClassSelection(str(c["sensitive_class"]), [int(i) for i in c["public_ids"]],
                               [str(n) for n in c["public_names"]], [float(v) for v in c["noisy_counts"]],
                               [int(n) for n in c["image_counts"]])
                for c in obj["classes"]
            ]
            selection = cls(k=int(obj["k"]), sigma_q=obj["sigma_q"], fraction=obj["fraction_target"],
                            n_public=int(obj["n_public"]), classes=classes, query_epsilon=obj.get("query_epsilon"),
                            epsilon_budget=obj.get("epsilon_budget"))
        except (KeyError, TypeError, ValueError) as err:
            raise UserError(f"{where}: missing or invalid field ({err!r})") from None
        for c in classes:
            if not len(c.public_ids) == len(c.public_names) == len(c.noisy_counts) == len(c.image_counts):
                raise UserError(f"{where}: class {c.sensitive_class!r} has lists of different lengths")
        return selection

    def save(self, path: str | Path) -> None:
        """Write selection.json atomically (temp file + rename)."""
        write_json_atomic(path, self.to_json())

    @classmethod
    def load(cls, path: str | Path) -> "Selection":
        return cls.from_json(read_json(path), where=str(path))

    def summary(self) -> str:
        """Human-readable lines: which public classes feed each sensitive class."""
        lines = [f"selected {self.n_images} public images ({self.fraction_of_public:.1%} of {self.n_public})"]
        for c in self.classes:
            lines.append(f"  {c.sensitive_class}: {', '.join(c.public_names)}")
        return "\n".join(lines)


def select(noisy: np.ndarray, *, k: int, public_classes: list[str], sensitive_classes: list[str],
           public_counts: np.ndarray, sigma_q: float | None = None, fraction: float | None = None) -> Selection:
    """Choose disjoint public classes per sensitive class from the noisy distribution (S, P).

    public_counts: (P,) images per public class (public information); empty public classes are never
    selected. See the module docstring for top-k vs fraction mode.

    Example:
        sel = select(noisy, k=5, public_classes=public.classes, sensitive_classes=sensitive.classes,
                     public_counts=public.counts(), sigma_q=484.0)
    """
    noisy = np.asarray(noisy, dtype=np.float64)
    public_counts = np.asarray(public_counts, dtype=np.int64)
    num_rows, num_public = len(sensitive_classes), len(public_classes)
    if noisy.shape != (num_rows, num_public) or public_counts.shape != (num_public,):
        raise ValueError(f"noisy {noisy.shape} must be (S={num_rows}, P={num_public}); "
                         f"public_counts {public_counts.shape} must be ({num_public},)")
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    check_selectable(k=k, num_sensitive=num_rows, public_counts=public_counts, fraction=fraction)
    taken = public_counts == 0  # (P,) bool: classes no row may take any more
    target = None if fraction is None else fraction * public_counts.sum() / num_rows  # images per row

    classes = []
    for s in range(num_rows):
        chosen, n_images = [], 0
        for p in np.argsort(-noisy[s], kind="stable"):
            row_full = len(chosen) == k if target is None else bool(chosen) and n_images >= target
            if row_full:
                break
            if not taken[p]:
                chosen.append(int(p))
                taken[p] = True
                n_images += int(public_counts[p])
        if not chosen:  # check_selectable rules this out; kept as an internal invariant
            raise UserError(f"no public classes left for sensitive class {sensitive_classes[s]!r}; "
                            "lower semantic.fraction")
        classes.append(ClassSelection(sensitive_classes[s], chosen, [public_classes[p] for p in chosen],
                                      [float(round(noisy[s, p])) for p in chosen], [int(public_counts[p]) for p in chosen]))
    return Selection(k=int(k), sigma_q=None if sigma_q is None else float(sigma_q),
                     fraction=None if fraction is None else float(fraction),
                     n_public=int(public_counts.sum()), classes=classes)


def check_selectable(*, k: int, num_sensitive: int, public_counts: np.ndarray, fraction: float | None) -> None:
    """UserError if the query or `select` cannot work: k votes need k public classes; top-k mode needs k
    classes per row; fraction mode must select at least one image per row and leave every row a class.
    Call it before the query so that a hopeless configuration is refused before privacy is spent."""
    counts = np.asarray(public_counts, dtype=np.int64)
    available, n_public = int((counts > 0).sum()), int(counts.sum())
    if k > available:
        raise UserError(f"semantic.k={k}: each sensitive image votes for k public classes, the public data "
                        f"has {available} non-empty classes")
    if fraction is None:
        if k * num_sensitive > available:
            raise UserError(f"semantic.k={k} public classes for each of {num_sensitive} sensitive classes needs "
                            f"{k * num_sensitive} non-empty public classes, the public data has {available}; "
                            f"lower semantic.k or set semantic.fraction")
        return
    if not 0 < fraction <= 1:
        raise UserError(f"semantic.fraction must be in (0, 1], got {fraction}")
    if fraction * n_public < num_sensitive:
        raise UserError(f"semantic.fraction={fraction:g} of {n_public} public images is less than one image for "
                        f"each of {num_sensitive} sensitive classes; raise it")
    # Rows before the last take at most their target plus one class each; the last row needs a class left.
    taken_before_last = (num_sensitive - 1) * (fraction * n_public / num_sensitive + counts.max())
    if num_sensitive > available or taken_before_last >= n_public:
        raise UserError(f"semantic.fraction={fraction:g}: the first {num_sensitive - 1} sensitive classes could take "
                        f"every public class before the last one gets any; lower it")


def apply_selection(public: ImageSet, selection: Selection) -> ImageSet:
    """The selected public images, labelled with their sensitive class ids; classes = sensitive names."""
    relabel = np.full(len(public.classes), -1, dtype=np.int64)  # public class id -> sensitive id or -1
    for s, c in enumerate(selection.classes):
        for p, name in zip(c.public_ids, c.public_names):
            if p >= len(public.classes) or public.classes[p] != name:
                raise UserError(f"selection names public class {p} {name!r}, which {public.source!r} does not have "
                                "at that index: the selection was made for another public dataset")
            relabel[p] = s
    keep = relabel[public.y] >= 0  # (N,) bool
    return ImageSet(public.x[keep], relabel[public.y[keep]], selection.sensitive_classes,
                    source=f"{public.source} | selection of {keep.sum()} images", meta=dict(public.meta))


def selection_precision(selection: Selection, relevant: dict[str, list[str]] | list[str] | set[str]) -> float:
    """Fraction of the selected IMAGES that are relevant (0.0 if none selected).

    relevant: {sensitive class: public class names that truly show it} counts an image only for the row it
    feeds (a digit-0 row that picked the glyph "9" is a miss); a flat collection counts any of its names in
    any row. Rows of the unlabelled mode (one row, "all") use the union of the mapping.
    """
    total = selection.n_images
    if isinstance(relevant, dict):
        union = set().union(*map(set, relevant.values())) if relevant else set()
        default = union if len(selection.classes) == 1 else set()
        ok = {c.sensitive_class: set(relevant.get(c.sensitive_class, default)) for c in selection.classes}
    else:
        ok = {c.sensitive_class: set(relevant) for c in selection.classes}
    hits = sum(n for c in selection.classes for name, n in zip(c.public_names, c.image_counts)
               if name in ok[c.sensitive_class])
    return hits / total if total else 0.0


def random_subset(public: ImageSet, n: int, sensitive_classes: list[str], seed: int) -> ImageSet:
    """The "random" baseline: n random public images, each labelled with a uniformly random sensitive class."""
    if not 1 <= n <= len(public):
        raise UserError(f"random subset of {n} images asked from {public.source!r} with {len(public)} images")
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(len(public), size=n, replace=False))
    labels = rng.integers(0, len(sensitive_classes), size=n)
    return ImageSet(public.x[index], labels, list(sensitive_classes),
                    source=f"{public.source} | random {n} images", meta=dict(public.meta))
