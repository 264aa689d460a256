"""Every supported dataset format, read from small datasets written here (PNG, tar, zip, pickles, IDX)."""

import gzip
import json
import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from privimage.data import ImageSet, load_images
from privimage.errors import UserError


def pixel(label: int, i: int) -> int:
    """Gray value of image i of class `label`: images carry their label, so label order can be checked."""
    return 20 * label + i + 1


def write_folder(root: Path, counts: dict[str, int], *, size=(8, 8), mode="RGB", suffix=".png") -> Path:
    """root/<class>/<i><suffix>: solid images whose value encodes (class index, i) in sorted order."""
    for k, name in enumerate(sorted(counts)):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(counts[name]):
            v = pixel(k, i)
            Image.new(mode, size, v if mode == "L" else (v, v, v)).save(root / name / f"{i:03d}{suffix}")
    return root


def pack(src: Path, dest: Path, arcname: str = "") -> Path:
    """Write the folder `src` into a .tar / .tar.gz / .tar.xz / .zip at dest (under `arcname/`)."""
    if dest.suffix == ".zip":
        with zipfile.ZipFile(dest, "w") as z:
            for f in sorted(src.rglob("*")):
                z.write(f, str(Path(arcname) / f.relative_to(src)))
        return dest
    mode = {".tar": "w", ".gz": "w:gz", ".xz": "w:xz"}[dest.suffix]
    with tarfile.open(dest, mode) as t:
        t.add(src, arcname=arcname or ".")
    return dest


def assert_labels_match_pixels(images: ImageSet, classes: list[str]) -> None:
    """Each image's value decodes to its class name; works across splits with one class list."""
    names = [classes[(v - 1) // 20] for v in images.x[:, 0, 0, 0].tolist()]
    assert names == [images.classes[k] for k in images.y.tolist()]


def test_folder_reads_classes_labels_and_pixels(tmp_path):
    root = write_folder(tmp_path / "d", {"dog": 2, "cat": 3})
    images = load_images(root, cache=False, progress=False)
    assert images.classes == ["cat", "dog"]
    assert images.x.shape == (5, 8, 8, 3) and images.x.dtype == np.uint8
    assert images.counts().tolist() == [3, 2]
    assert_labels_match_pixels(images, ["cat", "dog"])
    assert images.meta["split"] == "train" and str(root) in images.source


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz", ".tar.xz", ".zip"])
def test_archive_with_wrapper_folder_and_splits(tmp_path, suffix):
    src = tmp_path / "src"
    write_folder(src / "train", {"cat": 3, "dog": 2, "emu": 1})
    write_folder(src / "test", {"cat": 1, "dog": 2})
    archive = pack(src, tmp_path / f"data{suffix}", arcname="mydata")
    train = load_images(archive, split="train", cache=False, progress=False)
    test = load_images(archive, split="test", cache=False, progress=False)
    assert train.classes == test.classes == ["cat", "dog", "emu"]  # one label space for both splits
    assert train.counts().tolist() == [3, 2, 1] and test.counts().tolist() == [1, 2, 0]
    assert_labels_match_pixels(test, ["cat", "dog", "emu"])
    np.testing.assert_array_equal(train.x, load_images(src, cache=False, progress=False).x)  # same as unpacked
    with pytest.raises(UserError, match="no 'val' split"):
        load_images(archive, split="val", cache=False, progress=False)


def test_split_folder_aliases(tmp_path):
    write_folder(tmp_path / "Training", {"a": 2, "b": 1})
    write_folder(tmp_path / "validation", {"a": 1, "b": 1})
    assert len(load_images(tmp_path, split="train", cache=False, progress=False)) == 3
    assert len(load_images(tmp_path, split="val", cache=False, progress=False)) == 2


def write_tiny_imagenet(root: Path) -> dict[str, int]:
    """Two classes, 3 + 2 train images, 3 val images listed in val_annotations.txt."""
    wnids = {"n02": 2, "n01": 3}
    (root / "val" / "images").mkdir(parents=True)
    (root / "wnids.txt").write_text("n02\nn01\n")
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\ttabby, tabby cat\nn99\tother\n")
    for wnid, n in wnids.items():
        k = sorted(wnids).index(wnid)
        (root / "train" / wnid / "images").mkdir(parents=True)
        (root / "train" / wnid / f"{wnid}_boxes.txt").write_text("")
        for i in range(n):
            Image.new("RGB", (8, 8), (pixel(k, i),) * 3).save(root / "train" / wnid / "images" / f"{wnid}_{i}.JPEG")
    lines = []
    for i, wnid in enumerate(["n02", "n01", "n02"]):
        value = pixel(sorted(wnids).index(wnid), i)
        Image.new("RGB", (8, 8), (value,) * 3).save(root / "val" / "images" / f"val_{i}.JPEG")
        lines.append(f"val_{i}.JPEG\t{wnid}\t0\t0\t7\t7")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")
    return wnids


@pytest.mark.parametrize("packed", [False, True])
def test_tiny_imagenet_layout(tmp_path, packed):
    write_tiny_imagenet(tmp_path / "tiny")
    path = tmp_path / "tiny"
    if packed:
        path = pack(path, tmp_path / "tiny.tar.xz", arcname="tiny-imagenet-200")
    train = load_images(path, split="train", cache=False, progress=False)
    val = load_images(path, split="val", cache=False, progress=False)
    assert train.classes == val.classes == ["goldfish", "tabby"]
    assert train.meta["wnids"] == ["n01", "n02"]
    assert train.counts().tolist() == [3, 2] and val.y.tolist() == [1, 0, 1]
    # JPEG of a flat gray is within 1 of the value: label recovered from the pixel
    assert ((train.x[:, 0, 0, 0].astype(int) - 1 + 2) // 20 == train.y).all()
    with pytest.raises(UserError, match="no labels"):
        load_images(path, split="test", cache=False, progress=False)


def write_cifar(folder: Path, kind: str, rng) -> dict[str, np.ndarray]:
    """A CIFAR python-pickle folder with 2 images per batch; returns the NHWC arrays per split."""
    folder.mkdir(parents=True)
    names = {"cifar10": ("label_names", "labels"), "cifar100": ("fine_label_names", "fine_labels")}[kind]
    files = {"cifar10": ({"train": [f"data_batch_{i}" for i in range(1, 6)], "test": ["test_batch"]}, "batches.meta"),
             "cifar100": ({"train": ["train"], "test": ["test"]}, "meta")}[kind]
    meta = {names[0].encode(): [b"apple", b"bee", b"cow"]}
    (folder / files[1]).write_bytes(pickle.dumps(meta))
    out = {}
    for split, batch_files in files[0].items():
        xs = []
        for f in batch_files:
            data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
            labels = rng.integers(0, 3, 2).tolist()
            (folder / f).write_bytes(pickle.dumps({b"data": data, names[1].encode(): labels}))
            xs.append((data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels))
        out[split] = (np.concatenate([x for x, _ in xs]), sum((y for _, y in xs), []))
    return out


@pytest.mark.parametrize("kind", ["cifar10", "cifar100"])
@pytest.mark.parametrize("packed", [False, True])
def test_cifar_pickles(tmp_path, kind, packed):
    expected = write_cifar(tmp_path / "batches-py", kind, np.random.default_rng(0))
    path = tmp_path / "batches-py"
    if packed:
        path = pack(path, tmp_path / f"{kind}-python.tar.gz", arcname=f"{kind}-batches-py")
    for split in ("train", "test"):
        images = load_images(path, split=split, cache=False, progress=False)
        assert images.classes == ["apple", "bee", "cow"]
        np.testing.assert_array_equal(images.x, expected[split][0])
        assert images.y.tolist() == expected[split][1]
    assert len(load_images(path, split="train", cache=False, progress=False)) == (10 if kind == "cifar10" else 2)


def idx_bytes(array: np.ndarray) -> bytes:
    header = bytes([0, 0, 0x08, array.ndim]) + np.array(array.shape, ">i4").tobytes()
    return header + array.astype(np.uint8).tobytes()


def write_idx(folder: Path, rng, *, gz: bool) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for prefix, n in (("train", 5), ("t10k", 3)):
        x, y = rng.integers(0, 256, (n, 6, 6), dtype=np.uint8), rng.integers(0, 10, n).astype(np.uint8)
        for part, arr in (("images-idx3", x), ("labels-idx1", y)):
            data = idx_bytes(arr)
            name = f"{prefix}-{part}-ubyte"
            (folder / (name + ".gz" if gz else name)).write_bytes(gzip.compress(data) if gz else data)
        out[prefix] = (x, y)
    return out


@pytest.mark.parametrize("gz", [False, True])
def test_idx_folder_and_single_file(tmp_path, gz):
    expected = write_idx(tmp_path / "mnist", np.random.default_rng(1), gz=gz)
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = load_images(tmp_path / "mnist", split=split, cache=False, progress=False)
        assert images.x.shape == (len(expected[prefix][0]), 6, 6, 1)
        np.testing.assert_array_equal(images.x[..., 0], expected[prefix][0])
        assert images.y.tolist() == expected[prefix][1].tolist()
        assert images.classes == [str(i) for i in range(10)]
    single = tmp_path / "mnist" / ("t10k-images-idx3-ubyte" + (".gz" if gz else ""))
    np.testing.assert_array_equal(load_images(single, cache=False, progress=False).x[..., 0], expected["t10k"][0])


def test_fashion_mnist_class_names(tmp_path):
    write_idx(tmp_path / "fashion-mnist", np.random.default_rng(2), gz=True)
    images = load_images(tmp_path / "fashion-mnist", cache=False, progress=False)
    assert images.classes[0] == "T-shirt/top" and len(images.classes) == 10


def test_npz_gray_with_classes(tmp_path):
    x = np.random.default_rng(3).integers(0, 256, (4, 5, 5), dtype=np.uint8)
    np.savez(tmp_path / "d.npz", x=x, y=np.array([0, 1, 1, 0]), classes=np.array(["a", "b"]))
    images = load_images(tmp_path / "d.npz", progress=False)
    np.testing.assert_array_equal(images.x[..., 0], x)
    assert images.classes == ["a", "b"] and images.y.dtype == np.int64


def test_dataset_json_zip(tmp_path):
    src = tmp_path / "src"
    (src / "00000").mkdir(parents=True)
    labels = []
    for i, label in enumerate([2, 0, 1, 2]):
        Image.new("RGB", (4, 4), (pixel(label, i),) * 3).save(src / "00000" / f"img{i:08d}.png")
        labels.append([f"00000/img{i:08d}.png", label])
    (src / "dataset.json").write_text(json.dumps({"labels": labels}))
    images = load_images(pack(src, tmp_path / "ds.zip"), cache=False, progress=False)
    assert images.classes == ["0", "1", "2"] and images.y.tolist() == [2, 0, 1, 2]
    assert_labels_match_pixels(images, ["0", "1", "2"])


def test_resize_is_antialiased_and_center_crops(tmp_path):
    checker = (np.indices((16, 24)).sum(0) % 2 * 255).astype(np.uint8)  # 1-pixel checkerboard, 24 wide
    (tmp_path / "a").mkdir()
    Image.fromarray(checker).save(tmp_path / "a" / "c.png")
    images = load_images(tmp_path, resolution=8, cache=False, progress=False)
    assert images.x.shape == (1, 8, 8, 1)
    # a strided resize would alias to pure 0 or 255; an antialiased one averages to mid-gray
    assert np.abs(images.x.astype(int) - 128).max() < 16


def test_gray_rgb_conversion(tmp_path):
    rng = np.random.default_rng(4)
    rgb = rng.integers(0, 256, (6, 6, 3), dtype=np.uint8)
    (tmp_path / "a").mkdir()
    Image.fromarray(rgb).save(tmp_path / "a" / "rgb.png")
    Image.fromarray(rgb[..., 0]).save(tmp_path / "a" / "gray.png")
    both = load_images(tmp_path, cache=False, progress=False)  # mixed files: gray promoted to RGB
    assert both.x.shape == (2, 6, 6, 3)
    np.testing.assert_array_equal(both.x[0], np.repeat(rgb[..., :1], 3, axis=-1))  # gray.png sorts first
    gray = load_images(tmp_path, channels=1, cache=False, progress=False)
    np.testing.assert_array_equal(gray.x[1, ..., 0], np.asarray(Image.fromarray(rgb).convert("L")))
    np.savez(tmp_path / "d.npz", x=rgb[None], y=np.zeros(1, int))  # the array path converts the same way
    np.testing.assert_array_equal(load_images(tmp_path / "d.npz", channels=1, progress=False).x, gray.x[1:])


def test_balanced_head_takes_classes_in_turn_from_a_class_grouped_set():
    """The first n of a set stored class by class (CIFAR-10's test folders) would be one class: not so here."""
    y = np.repeat(np.arange(3), [4, 2, 5])  # grouped by class, unequal counts
    x = np.arange(len(y), dtype=np.uint8).reshape(-1, 1, 1, 1).repeat(2, 1).repeat(2, 2)  # pixel = index
    images = ImageSet(x, y, ["a", "b", "c"], source="s")
    head = images.balanced_head(7)
    assert head.x[:, 0, 0, 0].tolist() == [0, 1, 2, 4, 5, 6, 7]  # a, b, c in turn: rounds (0, 4, 6), (1, 5, 7), then 2
    assert head.y.tolist() == [0, 0, 0, 1, 1, 2, 2]
    assert head.source == "s|balanced first 7"
    assert images.balanced_head(11) is images and images.balanced_head(50) is images
