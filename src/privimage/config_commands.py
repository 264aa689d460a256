"""`privimage init` (a commented config derived from your data) and `privimage config show / list`.

    privimage init --sensitive my_images/ --public public_images/ > my.yaml
    privimage config show my.yaml privacy.epsilon=5     # the resolved config, every key commented
    privimage config list                               # the configs that ship with privimage

`init` reads the data with the same readers as `privimage run` and fills in what follows from it:
the sensitive classes (model.num_classes), channels and resolution (data.*, model.*), whether a real
held-out split exists, and k from the number of public classes. It prints only what the YAML needs:
class names, image size, channels; never counts or statistics of the sensitive images.
"""

import dataclasses
import json

from privimage.config_doc import commented_yaml
from privimage.config_io import packaged_configs
from privimage.data import load_images
from privimage.errors import UserError
from privimage.models.unet import CONFIGS
from privimage.preflight import mostly_within
from privimage.run_config import DataConfig, load_run_config

DEFAULT_BASE = "privimage:demo.yaml"  # CPU-sized; privimage:cifar10.yaml holds the paper's (GPU) settings
FALLBACK_RESOLUTION = 32  # for images of mixed sizes or sizes the U-Net does not take
PUBLIC_PER_SELECTED = 4  # k is chosen so that about a quarter of the public classes is selected (paper: 50/200)


def model_resolution(native: int) -> int | None:
    """The images' own size when the U-Net takes it (16..64, a multiple of 4), else None."""
    return native if 16 <= native <= 64 and native % 4 == 0 else None


def probe_sensitive(path: str) -> tuple[list[str], int, int, bool, list[str]]:
    """(classes, resolution, channels, has_test_split, notes) of a sensitive dataset."""
    notes = []
    try:
        images = load_images(path, split="train")
        resolution = model_resolution(images.resolution)
        if resolution is None:
            notes.append(f"images are {images.resolution}px; resized to {FALLBACK_RESOLUTION}px (the U-Net "
                         f"takes 16..64)")
    except UserError as err:
        if "pass a resolution" not in str(err):
            raise
        images, resolution = load_images(path, split="train", resolution=FALLBACK_RESOLUTION), None
        notes.append(f"images have mixed sizes; all are resized to {FALLBACK_RESOLUTION}px")
    resolution = resolution or FALLBACK_RESOLUTION
    try:  # read at the run's size and channels, so the run finds it in the cache
        test = load_images(path, split="test", resolution=resolution, channels=images.channels)
        train = images if images.resolution == resolution else \
            load_images(path, split="train", resolution=resolution, channels=images.channels)
        has_test = not mostly_within(test, train)  # an .npz recording no split answers 'test' with its images
    except UserError:
        has_test = False
    return list(images.classes), resolution, images.channels, has_test, notes


def derived_overrides(sensitive: str | None, public: str | None) -> tuple[list[str], list[str], dict[str, str]]:
    """(key=value overrides, header lines, per-key notes) that follow from the data."""
    overrides, header, notes = [], [], {}
    if sensitive is None:
        return overrides, header, notes
    classes, resolution, channels, has_test, probe_notes = probe_sensitive(sensitive)
    unet = CONFIGS["demo"] if (resolution, channels) == (16, 1) else CONFIGS["cifar10"]
    model = dataclasses.replace(unet, img_resolution=resolution, in_channels=channels, num_classes=len(classes))
    overrides += [f"data.sensitive={json.dumps(sensitive)}", f"data.resolution={resolution}",
                  f"data.channels={channels}",
                  "model=" + json_flow(model.to_dict())]
    header.append(f"sensitive data {sensitive}: {len(classes)} classes ({', '.join(classes[:12])}"
                  f"{', ...' if len(classes) > 12 else ''}), {'RGB' if channels == 3 else 'grayscale'}")
    header += probe_notes
    for key in ("data.resolution", "data.channels", "model.img_resolution", "model.in_channels", "model.num_classes"):
        notes[key] = "read from the data"
    if channels == 3:  # photographs: mirror images are as likely as the originals (not so for text or digits)
        overrides += ["pretrain.hflip=true", "semantic.train.flip=true"]
    if not has_test:
        if "holdout" in {f.name for f in dataclasses.fields(DataConfig)}:
            overrides.append("data.holdout=0.1")
            notes["data.holdout"] = "no test split in the data: CA is measured on this held-out part"
        else:
            header.append("the sensitive data has no test split: set data.test_split to a split of real "
                          "held-out images, or CA cannot be measured")
    if public is not None:
        pub = load_images(public, split="train", resolution=resolution, channels=channels)
        k = max(1, len(pub.classes) // (PUBLIC_PER_SELECTED * len(classes)))
        overrides += [f"data.public={json.dumps(public)}", f"semantic.k={k}"]
        header.append(f"public data {public}: {len(pub.classes)} classes")
        notes["semantic.k"] = f"{k} x {len(classes)} sensitive classes of {len(pub.classes)} public classes"
    return overrides, header, notes


def json_flow(value: dict) -> str:
    """A dict as a one-line YAML flow mapping (a valid override value)."""
    return "{" + ", ".join(f"{k}: {list(v) if isinstance(v, tuple) else v}" for k, v in value.items()) + "}"


def cmd_init(args) -> int:
    overrides, header, notes = derived_overrides(args.sensitive, args.public)
    config = load_run_config(args.base, overrides + list(args.overrides))
    intro = [f"privimage config written by `privimage init` (base {args.base}). Run it with:",
             "    privimage run THIS_FILE.yaml [key=value ...] --out runs/mine", ""]
    intro += header + ["Every key below can also be set on the command line: key=value, e.g. privacy.epsilon=5", ""]
    print(commented_yaml(config, header=intro, notes=notes), end="")
    return 0


def cmd_show(args) -> int:
    config = load_run_config(args.config, list(args.overrides))
    print(commented_yaml(config, header=[f"resolved config of {args.config}"]), end="")
    return 0


def cmd_list(args) -> int:
    for name in packaged_configs():
        print(f"privimage:{name}")
    return 0


def register(subparsers) -> None:
    """Add `init` and `config show / list` to the `privimage` parser."""
    p = subparsers.add_parser("init", help="print a commented config derived from your data (> my.yaml)",
                              description="Reads the data with the readers of `privimage run` and prints a YAML "
                                          "config with every key and its meaning; redirect it into a file.")
    p.add_argument("--sensitive", help="your sensitive images (folder of class folders, archive, npz, ...)")
    p.add_argument("--public", help="public images with labels (the pre-training candidates)")
    p.add_argument("--base", default=DEFAULT_BASE, help=f"config to start from (default {DEFAULT_BASE}; "
                                                          "privimage:cifar10.yaml = the paper's GPU settings)")
    p.add_argument("overrides", nargs="*", metavar="KEY=VALUE", help="e.g. privacy.epsilon=5")
    p.set_defaults(func=cmd_init)

    config = subparsers.add_parser("config", help="show a resolved config, or list the packaged ones")
    sub = config.add_subparsers(dest="config_command", metavar="COMMAND", required=True)
    show = sub.add_parser("show", help="the resolved config with every key commented")
    show.add_argument("config", nargs="?", default=DEFAULT_BASE, help=f"YAML file or privimage:NAME.yaml "
                                                                       f"(default {DEFAULT_BASE})")
    show.add_argument("overrides", nargs="*", metavar="KEY=VALUE")
    show.set_defaults(func=cmd_show)
    listing = sub.add_parser("list", help="configs that ship with privimage (use as privimage:NAME.yaml)")
    listing.set_defaults(func=cmd_list)
