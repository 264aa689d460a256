"""The disk cache (hit, invalidation, atomic entries) and the `privimage data` commands."""

import json
import logging

import numpy as np
import pytest

from privimage import cli
from privimage.data import decode, load_images
from privimage.errors import UserError
from test_data_formats import pack, write_folder


@pytest.fixture
def cache_dir(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(path))
    return path


def test_second_load_comes_from_cache_without_decoding(tmp_path, cache_dir, monkeypatch):
    archive = pack(write_folder(tmp_path / "d", {"a": 2, "b": 3}), tmp_path / "d.tar.xz")
    first = load_images(archive, resolution=4, progress=False)
    entries = list(cache_dir.glob("*.npz"))
    assert len(entries) == 1 and first.meta["from_cache"] is False

    def no_decode(*args, **kwargs):
        raise AssertionError("decoded although the cache holds this dataset")

    monkeypatch.setattr(decode, "decode_one", no_decode)
    second = load_images(archive, resolution=4, progress=False)
    assert second.meta["cache"] == str(entries[0]) and second.meta["from_cache"] is True
    np.testing.assert_array_equal(second.x, first.x)
    np.testing.assert_array_equal(second.y, first.y)
    assert (second.classes, second.source) == (first.classes, first.source)
    with pytest.raises(AssertionError, match="decoded although"):  # other options: a different entry
        load_images(archive, resolution=2, progress=False)
    assert not list(cache_dir.glob("*.tmp"))  # nothing half-written left behind


def test_changed_folder_is_read_again(tmp_path, cache_dir):
    root = write_folder(tmp_path / "d", {"a": 2})
    assert len(load_images(root, progress=False)) == 2
    write_folder(root, {"a": 3})  # adds a/002.png
    assert len(load_images(root, progress=False)) == 3
    assert len(list(cache_dir.glob("*.npz"))) == 2


def test_cache_false_writes_nothing_and_corrupt_entry_is_a_miss(tmp_path, cache_dir):
    root = write_folder(tmp_path / "d", {"a": 2})
    load_images(root, cache=False, progress=False)
    assert not cache_dir.exists()
    load_images(root, progress=False)
    (entry,) = cache_dir.glob("*.npz")
    entry.write_bytes(b"truncated")
    again = load_images(root, progress=False)
    assert len(again) == 2 and again.meta["from_cache"] is False


def test_unwritable_cache_warns_and_still_loads(tmp_path, monkeypatch, caplog):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("PRIVIMAGE_CACHE", str(blocker))
    logger = logging.getLogger("privimage")
    logger.addHandler(caplog.handler)  # the CLI's setup may have stopped propagation to the root logger
    try:
        images = load_images(write_folder(tmp_path / "d", {"a": 2}), progress=False)
    finally:
        logger.removeHandler(caplog.handler)
    assert len(images) == 2
    assert any(r.levelno == logging.WARNING and "not caching to" in r.getMessage() for r in caplog.records)


def test_cli_info_json(tmp_path, cache_dir, capsys):
    root = write_folder(tmp_path / "d", {"cat": 3, "dog": 1}, size=(6, 6), mode="L")
    assert cli.main(["data", "info", str(root), "--json"]) == 0
    out = capsys.readouterr().out
    assert json.loads(out) == {"n": 4, "classes": ["cat", "dog"], "counts": [3, 1], "height": 6, "width": 6,
                               "channels": 1}
    assert out.count("\n") == 1  # exactly one JSON object
    assert cli.main(["data", "info", str(root), "--json", "--resolution", "3", "--channels", "3"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert (info["height"], info["width"], info["channels"]) == (3, 3, 3)


def test_cli_info_text_and_error(tmp_path, cache_dir, capsys):
    root = write_folder(tmp_path / "d", {"cat": 3, "dog": 1})
    assert cli.main(["data", "info", str(root)]) == 0
    out = capsys.readouterr().out
    assert "4 images, 8x8, 3 channel(s), 2 classes" in out and "cat  3" in out
    assert cli.main(["data", "info", str(tmp_path / "missing")]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "missing: no such file or folder" in err


def test_cli_convert_round_trip(tmp_path, cache_dir, capsys):
    root = write_folder(tmp_path / "d", {"a": 2, "b": 1})
    out = tmp_path / "d.npz"
    assert cli.main(["data", "convert", str(root), "--out", str(out), "--no-cache"]) == 0
    original, converted = load_images(root, progress=False), load_images(out, progress=False)
    np.testing.assert_array_equal(converted.x, original.x)
    assert converted.y.tolist() == original.y.tolist() and converted.classes == original.classes
    assert cli.main(["data", "convert", str(root), "--out", str(tmp_path / "d.png")]) == 1


def test_converted_file_answers_only_its_recorded_split(tmp_path, cache_dir, capsys):
    """A converted TRAINING split asked for as held-out images (fid-stats' and evaluate's default, test) is
    refused: the statistics or CA would silently be of the (possibly sensitive) training images."""
    root = write_folder(tmp_path / "d", {"a": 2, "b": 1})
    train = tmp_path / "train.npz"
    assert cli.main(["data", "convert", str(root), "--out", str(train), "--no-cache"]) == 0
    assert load_images(train, split="train", progress=False).meta["recorded_split"] == "train"
    with pytest.raises(UserError, match="holds the 'train' split .* not 'test'"):
        load_images(train, split="test", progress=False)
    capsys.readouterr()
    assert cli.main(["fid-stats", str(train), "--out", str(tmp_path / "stats.npz"), "--device", "cpu"]) == 1
    assert "data convert SOURCE --split test" in capsys.readouterr().err
    assert not (tmp_path / "stats.npz").exists()
    # the same images converted as a held-out split answer 'test'; a file recording no split answers any
    held = tmp_path / "held.npz"
    assert cli.main(["data", "convert", str(train), "--split", "test", "--out", str(held)]) == 1  # train only
    with np.load(train) as f:
        np.savez(tmp_path / "plain.npz", x=f["x"], y=f["y"])
    assert cli.main(["data", "convert", str(tmp_path / "plain.npz"), "--split", "test", "--out", str(held)]) == 0
    assert load_images(held, split="test", progress=False).meta["recorded_split"] == "test"
    for split in ("train", "test", "val"):
        assert len(load_images(tmp_path / "plain.npz", split=split, progress=False)) == 3
