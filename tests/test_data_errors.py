"""Bad input -> UserError whose message names the file and says what is wrong."""

import gzip
import json
import pickle

import numpy as np
import pytest
from PIL import Image

from privimage.data import load_images
from privimage.errors import UserError
from test_data_formats import idx_bytes, pack, write_folder, write_tiny_imagenet


def load(path, **kw):
    return load_images(path, cache=False, progress=False, **kw)


def test_missing_path(tmp_path):
    with pytest.raises(UserError, match=r"nope.*no such file"):
        load(tmp_path / "nope")


def test_unknown_format(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(UserError, match=r"notes\.txt: unknown dataset format"):
        load(tmp_path / "notes.txt")


@pytest.mark.parametrize("packed", [False, True])
def test_corrupt_image_is_named(tmp_path, packed):
    root = write_folder(tmp_path / "d", {"a": 2, "b": 2})
    (root / "b" / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    path = pack(root, tmp_path / "d.tar.gz") if packed else root
    with pytest.raises(UserError, match=r"b/bad\.png: cannot decode image"):
        load(path)


def test_truncated_image_is_named(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 1}, size=(64, 64), suffix=".jpg")
    data = (root / "a" / "000.jpg").read_bytes()
    (root / "a" / "000.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(UserError, match=r"a/000\.jpg: cannot decode image"):
        load(root)


def test_empty_class_folder(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 2})
    (root / "empty").mkdir()
    with pytest.raises(UserError, match=r"d/empty: class folder has no images"):
        load(root)


def test_image_outside_class_folder(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 2})
    Image.new("RGB", (8, 8)).save(root / "loose.png")
    with pytest.raises(UserError, match=r"loose\.png: image is not inside a class folder"):
        load(root)


def test_mixed_sizes_without_resolution(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 2})
    Image.new("RGB", (9, 8)).save(root / "a" / "wide.png")
    with pytest.raises(UserError, match=r"wide\.png: image is 9x8 but .* is 8x8; pass a resolution"):
        load(root)
    assert load(root, resolution=4).x.shape == (3, 4, 4, 3)


def test_labels_out_of_range(tmp_path):
    x = np.zeros((3, 4, 4, 3), np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 5]), classes=np.array(["a", "b"]))
    with pytest.raises(UserError, match=r"d\.npz: label 5 is out of range for 2 classes"):
        load(tmp_path / "d.npz")


def test_dataset_json_label_errors(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    Image.new("RGB", (4, 4)).save(src / "a.png")
    (src / "dataset.json").write_text(json.dumps({"labels": [["a.png", 0], ["missing.png", 1]]}))
    with pytest.raises(UserError, match=r"dataset\.json: labels\[1\] names .*missing\.png, which does not exist"):
        load(pack(src, tmp_path / "ds.zip"))
    (src / "dataset.json").write_text(json.dumps({"labels": [["a.png", -1]]}))
    with pytest.raises(UserError, match=r"labels\[0\] is \['a.png', -1\]"):
        load(src)


def test_no_images_for_requested_split(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 1})
    with pytest.raises(UserError, match=r"d: has no split folders .* not 'test'"):
        load(root, split="test")
    write_folder(tmp_path / "s" / "train", {"a": 1})
    with pytest.raises(UserError, match=r"no 'val' split \(found split folders: train\)"):
        load(tmp_path / "s", split="val")
    with pytest.raises(UserError, match="unknown split 'dev'"):
        load(root, split="dev")


def test_no_images_at_all(tmp_path):
    (tmp_path / "d" / "a").mkdir(parents=True)
    (tmp_path / "d" / "a" / "readme.txt").write_text("x")
    with pytest.raises(UserError, match=r"d: no images found"):
        load(tmp_path / "d")


def test_corrupt_archives(tmp_path):
    (tmp_path / "d.tar.xz").write_bytes(b"not an xz stream at all")
    with pytest.raises(UserError, match=r"d\.tar\.xz: not a readable tar archive"):
        load(tmp_path / "d.tar.xz")
    (tmp_path / "d.zip").write_bytes(b"PK nonsense")
    with pytest.raises(UserError, match=r"d\.zip: not a readable zip file"):
        load(tmp_path / "d.zip")


def test_bad_npz(tmp_path):
    np.savez(tmp_path / "noy.npz", x=np.zeros((2, 4, 4, 3), np.uint8))
    with pytest.raises(UserError, match=r"noy\.npz: missing array 'y'"):
        load(tmp_path / "noy.npz")
    np.savez(tmp_path / "float.npz", x=np.zeros((2, 4, 4, 3)), y=np.zeros(2, int))
    with pytest.raises(UserError, match=r"float\.npz: x must be uint8"):
        load(tmp_path / "float.npz")


def test_truncated_idx(tmp_path):
    data = idx_bytes(np.zeros((4, 6, 6), np.uint8))
    (tmp_path / "train-images-idx3-ubyte.gz").write_bytes(gzip.compress(data[:-10]))
    (tmp_path / "train-labels-idx1-ubyte.gz").write_bytes(gzip.compress(idx_bytes(np.zeros(4, np.uint8))))
    message = r"train-images-idx3-ubyte\.gz: header says \(4, 6, 6\) but the file holds 134 values \(truncated"
    with pytest.raises(UserError, match=message):
        load(tmp_path)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(UserError, match=r"train-images-idx3-ubyte\.gz: no labels file"):
        load(tmp_path)


def test_cifar_pickle_may_not_run_code(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    (folder / "batches.meta").write_bytes(pickle.dumps({b"label_names": [b"a"]}))
    (folder / "data_batch_1").write_bytes(pickle.dumps({b"data": Evil()}))
    with pytest.raises(UserError, match=r"data_batch_1: not a CIFAR pickle \(refusing to load builtins\.print\)"):
        load(folder)


def test_tiny_imagenet_bad_annotation(tmp_path):
    write_tiny_imagenet(tmp_path / "t")
    table = tmp_path / "t" / "val" / "val_annotations.txt"
    table.write_text(table.read_text() + "val_0.JPEG\tn77\t0\t0\t1\t1\n")
    with pytest.raises(UserError, match=r"val_annotations\.txt:4: label 'n77' is not listed in wnids\.txt"):
        load(tmp_path / "t", split="val")


def test_bad_options(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 1})
    with pytest.raises(UserError, match="channels must be 1"):
        load(root, channels=2)
    with pytest.raises(UserError, match="resolution must be a positive integer"):
        load(root, resolution=0)


def test_unreadable_file_is_named(tmp_path):
    root = write_folder(tmp_path / "d", {"a": 2})
    (root / "a" / "001.png").unlink()
    (root / "a" / "001.png").symlink_to(root / "a" / "gone.png")  # listed, but reading fails
    with pytest.raises(UserError, match=r"a/001\.png: cannot read"):
        load(root)
