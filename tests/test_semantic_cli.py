"""`privimage semantic train` and `privimage semantic query` end to end on tiny image-folder trees."""

import json

import pytest
from PIL import Image

from privimage.cli import main
from test_semantic_classifier import SHAPE_CLASSES, shapes


def write_tree(root, images, names=None):
    """ImageFolder layout root/<class>/<i>.png; `names` renames the classes."""
    names = names or images.classes
    for i, (x, y) in enumerate(zip(images.x, images.y)):
        folder = root / names[y]
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(x).save(folder / f"{i}.png")
    return root


@pytest.fixture(scope="module")
def trees(tmp_path_factory):
    """A public shapes tree, a classifier trained on it by the CLI, and a sensitive tree of two classes."""
    root = tmp_path_factory.mktemp("semantic_cli")
    mp = pytest.MonkeyPatch()
    mp.setenv("PRIVIMAGE_CACHE", str(root / "cache"))
    public = write_tree(root / "public", shapes(420, seed=0))
    # Sensitive "warm" = red squares (public class 0), "cool" = blue discs (public class 5).
    sensitive = shapes(80, seed=9, classes=[0, 5])
    write_tree(root / "sensitive", sensitive, names=["warm", "x", "x", "x", "x", "cool"])
    code = main(["semantic", "train", "--public", str(public), "--out", str(root / "ckpt"), "--epochs", "5",
                 "--width", "8", "--stages", "2", "--batch-size", "32", "--lr", "0.1", "--val-fraction", "0.15",
                 "--json"])
    assert code == 0
    yield root
    mp.undo()


def test_train_writes_a_checkpoint_and_reports_accuracy(trees, capsys):
    meta = json.loads((trees / "ckpt" / "meta.json").read_text())
    assert meta["classes"] == sorted(SHAPE_CLASSES) and meta["val_accuracy"] >= 0.9
    assert (trees / "ckpt" / "weights.safetensors").is_file()


def test_query_selects_the_matching_public_classes(trees, capsys, tmp_path):
    out = tmp_path / "run"
    args = ["semantic", "query", "--classifier", str(trees / "ckpt"), "--public", str(trees / "public"),
            "--sensitive", str(trees / "sensitive"), "--k", "1", "--sigma-q", "2", "--seed", "0", "--out", str(out)]
    capsys.readouterr()
    assert main([*args, "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    selection = json.loads((out / "selection.json").read_text())
    by_class = {c["sensitive_class"]: c["public_names"] for c in selection["classes"]}
    assert by_class == {"cool": ["blue-disc"], "warm": ["red-square"]}
    assert selection["k"] == 1 and selection["sigma_q"] == 2.0
    ledger = json.loads((out / "ledger.json").read_text())
    assert [(e["name"], e["noise_multiplier"]) for e in ledger["entries"]] == [("semantic_query", 2.0)]
    assert ledger["noise_seed"] == "test seed 0 (NOT private: the noise is predictable)" and report["epsilon"] == pytest.approx(ledger["epsilon_pld"])
    assert 0 < report["epsilon"] < 10 and report["n_images"] == selection["n_images"]

    assert main(args) == 1  # a second query into the same ledger is refused, one line on stderr
    err = capsys.readouterr().err.strip()
    assert err.startswith("privimage: error:") and "already in the ledger" in err and "\n" not in err
    assert len(json.loads((out / "ledger.json").read_text())["entries"]) == 1


def test_query_unlabelled_and_fraction(trees, capsys, tmp_path):
    out = tmp_path / "run"
    assert main(["semantic", "query", "--classifier", str(trees / "ckpt"), "--public", str(trees / "public"),
                 "--sensitive", str(trees / "sensitive"), "--k", "1", "--sigma-q", "2", "--seed", "1",
                 "--unlabelled", "--fraction", "0.3", "--out", str(out)]) == 0
    selection = json.loads((out / "selection.json").read_text())
    assert [c["sensitive_class"] for c in selection["classes"]] == ["all"]
    # ~70 public images per class, target 0.3 * 420 = 126: the two voted-for classes, in either order.
    assert set(selection["classes"][0]["public_names"]) == {"blue-disc", "red-square"}
    assert selection["fraction_of_public"] >= 0.3 and selection["fraction_target"] == 0.3
    assert "ledger epsilon=" in capsys.readouterr().out


def test_impossible_selection_is_refused_before_privacy_is_spent(trees, capsys, tmp_path):
    out = tmp_path / "run"
    code = main(["semantic", "query", "--classifier", str(trees / "ckpt"), "--public", str(trees / "public"),
                 "--sensitive", str(trees / "sensitive"), "--k", "4", "--sigma-q", "2", "--out", str(out)])
    assert code == 1 and "needs 8 non-empty public classes" in capsys.readouterr().err
    assert not (out / "ledger.json").exists()
    assert main(["semantic", "query", "--classifier", str(tmp_path / "missing"), "--public", str(trees / "public"),
                 "--sensitive", str(trees / "sensitive"), "--sigma-q", "2", "--out", str(out)]) == 1
    assert "weights.safetensors missing" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written
