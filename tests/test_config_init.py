"""Configs for users: every key commented, `privimage init` from a folder, packaged configs, overrides anywhere."""

import dataclasses

import numpy as np
import pytest
import yaml
from PIL import Image

from privimage.cli import main
from privimage.config_doc import commented_yaml, field_comments
from privimage.config_io import from_dict, packaged_configs
from privimage.data import demo
from privimage.run_config import RunConfig, load_run_config, read_config_file


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(tmp_path / "cache"))


def image_folder(root, classes, *, size=24, per_class=6, split=None, mode="RGB", sizes=None):
    """root/[split/]<class>/<i>.png with a distinct flat colour per class."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        folder = root / split / name if split else root / name
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            s = sizes[i % len(sizes)] if sizes else size
            pixels = np.full((s, s, 3), (40 * c) % 230, np.uint8) + rng.integers(0, 20, (s, s, 3), dtype=np.uint8)
            Image.fromarray(pixels).convert(mode).save(folder / f"{i}.png")
    return root


def leaf_keys(config, prefix=""):
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if dataclasses.is_dataclass(value):
            yield prefix + f.name, type(config)
            yield from leaf_keys(value, prefix + f.name + ".")
        else:
            yield prefix + f.name, type(config)


def test_every_config_key_has_a_comment_and_the_yaml_loads_back():
    config = RunConfig()
    missing = [key for key, cls in leaf_keys(config) if not field_comments(cls).get(key.rpartition(".")[2])]
    assert missing == []  # a new field without `# comment` fails here
    text = commented_yaml(config, header=["hello"])
    assert text.startswith("# hello\n")
    assert "  epsilon: 10.0  # total budget" in text
    assert from_dict(RunConfig, yaml.safe_load(text)) == config


def test_packaged_configs_resolve_and_inherit(tmp_path):
    assert {"demo.yaml", "tiny.yaml", "cifar10.yaml", "cifar10_eps1.yaml"} <= set(packaged_configs())
    assert read_config_file("privimage:cifar10_eps1.yaml")["semantic"]["k"] == 5  # its base: cifar10.yaml
    mine = tmp_path / "mine.yaml"
    mine.write_text("base: privimage:tiny.yaml\nprivacy: {epsilon: 3.0}\n")
    config = load_run_config(mine)
    assert config.privacy.epsilon == 3.0 and config.pretrain.steps == 4  # tiny's, from inside the package
    mine.write_text("base: privimage:nope.yaml\n")
    with pytest.raises(Exception, match="no such packaged config"):
        load_run_config(mine)


def test_init_from_image_folders(tmp_path, capsys):
    sensitive = image_folder(tmp_path / "mine", ["cat", "dog", "fox"], size=24)
    image_folder(tmp_path / "mine", ["cat", "dog", "fox"], size=24, per_class=2, split="test")
    for name in ("cat", "dog", "fox"):  # move the train images under train/
        (sensitive / "train").mkdir(exist_ok=True)
        (sensitive / name).rename(sensitive / "train" / name)
    public = image_folder(tmp_path / "public", [f"p{i}" for i in range(24)], size=40, per_class=2)
    assert main(["init", "--sensitive", str(sensitive), "--public", str(public)]) == 0
    text = capsys.readouterr().out
    assert "3 classes (cat, dog, fox), RGB" in text and "public data" in text
    path = tmp_path / "my.yaml"
    path.write_text(text)
    config = load_run_config(path)
    assert (config.data.resolution, config.data.channels) == (24, 3)
    assert (config.model.img_resolution, config.model.in_channels, config.model.num_classes) == (24, 3, 3)
    assert config.semantic.k == 2  # 2 x 3 of 24 public classes: about a quarter
    assert config.pretrain.hflip and config.data.sensitive == str(sensitive)
    assert "resolution: 24  # every image is resized to resolution x resolution; read from the data" in text


def test_init_resizes_mixed_sizes_and_notes_a_missing_test_split(tmp_path, capsys):
    folder = image_folder(tmp_path / "gray", ["a", "b"], sizes=[20, 30], mode="L")
    assert main(["init", "--sensitive", str(folder), "privacy.epsilon=2"]) == 0
    text = capsys.readouterr().out
    assert "mixed sizes; all are resized to 32px" in text
    config = from_dict(RunConfig, yaml.safe_load(text))
    assert (config.data.resolution, config.data.channels, config.model.num_classes) == (32, 1, 2)
    assert config.privacy.epsilon == 2.0
    assert config.data.holdout == 0.1  # no test split in the folder: CA on a held-out part of the images
    assert "no test split in the data: CA is measured on this held-out part" in text


def test_overrides_may_follow_flags(tmp_path, capsys):
    base = tmp_path / "c.yaml"
    base.write_text("base: privimage:tiny.yaml\n")
    # The override after --out is applied (so the bad value is refused before anything runs).
    assert main(["run", str(base), "--out", str(tmp_path / "run"), "privacy.epsilon=0"]) == 1
    assert "privacy.epsilon must be a finite number > 0" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exit_info:  # a stray word that is no KEY=VALUE stays a usage error
        main(["run", str(base), "--out", str(tmp_path / "run"), "oops"])
    assert exit_info.value.code == 2
    assert main(["config", "show", "privimage:tiny.yaml", "sample.n=7"]) == 0
    assert "  n: 7  # synthetic images per method" in capsys.readouterr().out


def test_init_holds_out_part_of_an_npz_without_a_test_split(tmp_path, capsys):
    """A plain .npz answers split 'test' with its own images; a converted one answers 'train' only. Neither has
    held-out images, so init sets data.holdout (without it the run would refuse: test = training images)."""
    train, _ = demo.load_digits_split(resolution=16)
    plain = tmp_path / "plain.npz"
    np.savez(plain, x=train.x, y=train.y, classes=np.array(train.classes))
    converted = tmp_path / "converted.npz"
    assert main(["data", "convert", str(plain), "--out", str(converted)]) == 0
    for path in (plain, converted):
        capsys.readouterr()
        assert main(["init", "--sensitive", str(path), "--public", str(plain)]) == 0
        config = from_dict(RunConfig, yaml.safe_load(capsys.readouterr().out))
        assert config.data.holdout == 0.1, path
