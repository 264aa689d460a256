"""Selection: disjoint per sensitive class, exact top-k without noise, fraction mode, relabelling, and a
selection.json that holds noisy counts only."""

import json

import numpy as np
import pytest

from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.semantic.selection import Selection, apply_selection, random_subset, select, selection_precision

PUBLIC = [f"p{i}" for i in range(8)]
SENSITIVE = ["cat", "dog"]


def public_set(per_class: list[int]) -> ImageSet:
    """Public images whose pixel value encodes their index, so tests can trace which ones were kept."""
    y = np.repeat(np.arange(len(per_class)), per_class)
    x = np.arange(len(y), dtype=np.uint8).reshape(-1, 1, 1, 1).repeat(4, 1).repeat(4, 2)  # (N, 4, 4, 1)
    return ImageSet(x, y, [f"p{i}" for i in range(len(per_class))], source="public")


def test_noiseless_disjoint_rows_select_the_exact_top_k():
    histogram = np.array([[9, 1, 7, 0, 5, 0, 0, 2], [0, 8, 0, 6, 1, 9, 0, 0]], dtype=float)
    selection = select(histogram, k=3, public_classes=PUBLIC, sensitive_classes=SENSITIVE, public_counts=np.full(8, 5))
    assert [c.public_ids for c in selection.classes] == [[0, 2, 4], [5, 1, 3]]
    assert selection.classes[0].public_names == ["p0", "p2", "p4"]
    assert selection.classes[1].noisy_counts == [9.0, 8.0, 6.0]
    assert selection.n_images == 30 and selection.fraction_of_public == pytest.approx(30 / 40)


def test_rows_are_disjoint_and_later_rows_skip_taken_classes():
    rng = np.random.default_rng(0)
    for _ in range(50):
        noisy = rng.normal(size=(4, 8)) * 10
        selection = select(noisy, k=2, public_classes=PUBLIC, sensitive_classes=list("abcd"),
                           public_counts=np.full(8, 3))
        chosen = [p for c in selection.classes for p in c.public_ids]
        assert len(chosen) == len(set(chosen)) == 8
    same = np.tile(np.arange(8, dtype=float)[::-1], (2, 1))  # both rows prefer p0, p1, p2, ...
    selection = select(same, k=2, public_classes=PUBLIC, sensitive_classes=SENSITIVE, public_counts=np.full(8, 1))
    assert [c.public_ids for c in selection.classes] == [[0, 1], [2, 3]]


def test_empty_public_classes_are_never_selected_and_too_large_k_is_refused():
    noisy = np.tile(np.arange(8, dtype=float)[::-1], (2, 1))
    counts = np.array([0, 4, 4, 4, 4, 4, 4, 4])
    selection = select(noisy, k=1, public_classes=PUBLIC, sensitive_classes=SENSITIVE, public_counts=counts)
    assert [c.public_ids for c in selection.classes] == [[1], [2]]
    with pytest.raises(UserError, match="needs 8 non-empty public classes"):
        select(noisy, k=4, public_classes=PUBLIC, sensitive_classes=SENSITIVE, public_counts=counts)
    with pytest.raises(ValueError, match="must be"):
        select(noisy[:1], k=1, public_classes=PUBLIC, sensitive_classes=SENSITIVE, public_counts=counts)


def test_fraction_mode_fills_each_row_to_its_share_of_the_public_set():
    noisy = np.tile(np.arange(8, dtype=float)[::-1], (2, 1))
    counts = np.array([10, 10, 10, 10, 10, 10, 10, 10])
    selection = select(noisy, k=5, public_classes=PUBLIC, sensitive_classes=SENSITIVE, public_counts=counts,
                       fraction=0.5)  # 40 of 80 images, 20 per sensitive class -> 2 classes each
    assert [c.public_ids for c in selection.classes] == [[0, 1], [2, 3]]
    assert selection.fraction_of_public == pytest.approx(0.5)
    overshoot = select(noisy, k=5, public_classes=PUBLIC, sensitive_classes=SENSITIVE, public_counts=counts,
                       fraction=0.3)  # 12 per class: the second class overshoots to 20
    assert [len(c.public_ids) for c in overshoot.classes] == [2, 2]
    with pytest.raises(UserError, match="fraction"):
        select(noisy, k=1, public_classes=PUBLIC, sensitive_classes=SENSITIVE, public_counts=counts, fraction=1.5)


def test_apply_selection_relabels_exactly_the_selected_images():
    public = public_set([3, 2, 4, 1, 2, 2, 1, 1])  # 16 images
    noisy = np.array([[0, 9, 0, 0, 8, 0, 0, 0], [0, 0, 9, 0, 0, 0, 0, 0]], dtype=float)
    selection = select(noisy, k=1, public_classes=public.classes, sensitive_classes=SENSITIVE,
                       public_counts=public.counts())
    chosen = apply_selection(public, selection)
    assert chosen.classes == SENSITIVE and len(chosen) == selection.n_images == 2 + 4
    expected = {int(i): (0 if public.y[i] == 1 else 1) for i in np.flatnonzero(np.isin(public.y, [1, 2]))}
    assert {int(v): int(label) for v, label in zip(chosen.x[:, 0, 0, 0], chosen.y)} == expected
    other = ImageSet(public.x, public.y, [f"q{i}" for i in range(8)], source="other public")
    with pytest.raises(UserError, match="another public dataset"):
        apply_selection(other, selection)


def test_selection_precision_counts_images_not_classes():
    noisy = np.array([[5, 4, 0, 0, 0, 0, 0, 0], [0, 0, 5, 0, 0, 0, 0, 0]], dtype=float)
    counts = np.array([30, 10, 60, 1, 1, 1, 1, 1])
    selection = select(noisy, k=1, public_classes=PUBLIC, sensitive_classes=SENSITIVE, public_counts=counts)
    assert selection_precision(selection, {"p0"}) == pytest.approx(30 / 90)
    assert selection_precision(selection, {"p0", "p2"}) == 1.0
    assert selection_precision(selection, set()) == 0.0


def test_selection_precision_per_class_counts_an_image_only_for_the_row_it_feeds():
    noisy = np.array([[5, 4, 0, 0, 0, 0, 0, 0], [0, 0, 5, 0, 0, 0, 0, 0]], dtype=float)
    counts = np.array([30, 10, 60, 1, 1, 1, 1, 1])
    selection = select(noisy, k=1, public_classes=PUBLIC, sensitive_classes=SENSITIVE, public_counts=counts)
    s0, s1 = SENSITIVE
    assert selection_precision(selection, {s0: ["p0"], s1: ["p2"]}) == 1.0
    assert selection_precision(selection, {s0: ["p2"], s1: ["p0"]}) == 0.0  # swapped rows: both miss
    assert selection_precision(selection, ["p2", "p0"]) == 1.0  # the flat list cannot see the swap
    assert selection_precision(selection, {s0: ["p0"]}) == pytest.approx(30 / 90)  # unmapped row: no hits


def test_selection_json_round_trips_and_holds_only_noisy_counts(tmp_path):
    exact = np.array([[7, 0, 3, 0, 0, 0, 0, 0], [0, 6, 0, 2, 0, 0, 0, 0]], dtype=float)
    noisy = exact + np.random.default_rng(0).normal(0, 0.4, size=exact.shape)
    selection = select(noisy, k=2, public_classes=PUBLIC, sensitive_classes=SENSITIVE, public_counts=np.full(8, 5),
                       sigma_q=0.2)
    selection.save(tmp_path / "selection.json")
    assert [p.name for p in tmp_path.iterdir()] == ["selection.json"]  # no temp file left behind
    obj = json.loads((tmp_path / "selection.json").read_text())
    assert obj["k"] == 2 and obj["sigma_q"] == 0.2 and obj["n_images"] == 20 and obj["fraction_of_public"] == 0.5
    assert obj["classes"][0]["public_names"] == ["p0", "p2"]
    written = [v for c in obj["classes"] for v in c["noisy_counts"]]
    assert written == [round(noisy[0, 0]), round(noisy[0, 2]), round(noisy[1, 1]), round(noisy[1, 3])]
    assert all(isinstance(v, int) for v in written)  # rounded: the noise's digits are not released
    assert Selection.load(tmp_path / "selection.json").to_json() == obj
    (tmp_path / "bad.json").write_text('{"k": 2}')
    with pytest.raises(UserError, match="bad.json"):
        Selection.load(tmp_path / "bad.json")


def test_random_subset_has_the_requested_size_and_uniform_labels():
    public = public_set([100] * 8)
    subset = random_subset(public, 400, SENSITIVE, seed=0)
    assert len(subset) == 400 and subset.classes == SENSITIVE
    assert 150 < (subset.y == 0).sum() < 250  # binomial(400, 1/2): sd 10
    assert np.array_equal(random_subset(public, 400, SENSITIVE, seed=0).y, subset.y)
    with pytest.raises(UserError, match="801"):
        random_subset(public, 801, SENSITIVE, seed=0)


def test_relevant_public_is_a_list_or_a_per_class_mapping():
    from privimage.run_config import load_run_config

    config = load_run_config("privimage:demo.yaml", ["data.relevant_public={'0': ['0', O], '1': [l]}"])
    assert config.data.relevant_public == {"0": ["0", "O"], "1": ["l"]}
    for bad in ("5", "{'0': O}", "[[a]]"):
        with pytest.raises(UserError, match="data.relevant_public must be"):
            load_run_config("privimage:demo.yaml", [f"data.relevant_public={bad}"])
