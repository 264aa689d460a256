"""DP semantic distribution: exact top-k votes, noise of std sigma_q*sqrt(k) on every cell, one ledger
charge made before the release."""

import json
import math

import numpy as np
import pytest
import torch

from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.privacy.ledger import Ledger, Mechanism
from privimage.privacy.rng import noise_source
from privimage.semantic.classifier import ClassifierMeta, build_classifier, predict_topk
from privimage.semantic.network import ResNetConfig
from privimage.semantic.query import dp_semantic_distribution
from privimage.semantic.selection import select


def random_classifier(num_public: int, *, seed: int = 0):
    """A real (untrained, randomly initialised) query function: its rankings are arbitrary but fixed."""
    meta = ClassifierMeta(classes=[f"p{i}" for i in range(num_public)], resolution=16, channels=3,
                          mean=[0.5] * 3, std=[0.5] * 3, architecture=ResNetConfig(width=4, stages=2))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build_classifier(meta).eval()


def sensitive_set(n: int, num_classes: int, *, seed: int = 0) -> ImageSet:
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, (n, 16, 16, 3), dtype=np.uint8)
    y = np.arange(n) % num_classes
    return ImageSet(x, y, [f"s{i}" for i in range(num_classes)], source="random sensitive")


def exact(model, sensitive, k, *, labelled=True):
    return dp_semantic_distribution(model, sensitive, k=k, sigma_q=0.0, noise=noise_source(0),
                                    ledger=None, labelled=labelled, allow_zero_noise=True)


def test_noiseless_histogram_counts_each_images_top_k():
    model, sensitive = random_classifier(10), sensitive_set(40, 3)
    histogram = exact(model, sensitive, 3)
    reference = np.zeros((3, 10))
    for label, top in zip(sensitive.y, predict_topk(model, sensitive, k=3)):  # slow, obviously correct
        for public_class in top:
            reference[label, public_class] += 1
    assert np.array_equal(histogram, reference)
    assert np.array_equal(histogram.sum(axis=1), 3 * sensitive.counts())
    unlabelled = exact(model, sensitive, 3, labelled=False)
    assert unlabelled.shape == (1, 10) and np.array_equal(unlabelled[0], reference.sum(axis=0))


def test_noise_std_is_sigma_q_sqrt_k_on_every_cell(tmp_path):
    model, sensitive = random_classifier(200), sensitive_set(30, 3)
    k, sigma_q = 4, 2.5
    histogram = exact(model, sensitive, k)
    deviations = []
    for trial in range(10):
        ledger = Ledger(tmp_path / f"ledger{trial}.json", delta=1e-5)
        noisy = dp_semantic_distribution(model, sensitive, k=k, sigma_q=sigma_q,
                                         noise=noise_source(trial), ledger=ledger)
        deviations.append(noisy - histogram)  # (3, 200)
    deviations = np.stack(deviations).ravel()  # 6000 draws
    expected = sigma_q * math.sqrt(k)
    assert (deviations != 0).all()  # empty cells are noised too
    assert abs(deviations.mean()) < 4 * expected / math.sqrt(deviations.size)
    assert abs(deviations.std() / expected - 1) < 0.05  # relative std error ~0.9%


def test_same_seed_same_release_and_different_seeds_differ(tmp_path):
    model, sensitive = random_classifier(8), sensitive_set(20, 2)

    def release(name, seed):
        return dp_semantic_distribution(model, sensitive, k=2, sigma_q=1.0, noise=noise_source(seed),
                                        ledger=Ledger(tmp_path / name, delta=1e-5))

    assert np.array_equal(release("a.json", 7), release("b.json", 7))
    assert not np.array_equal(release("c.json", 7), release("d.json", 8))


def test_ledger_records_the_query_once(tmp_path):
    model, sensitive = random_classifier(8), sensitive_set(20, 2)
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5)
    gen = noise_source(1)
    dp_semantic_distribution(model, sensitive, k=2, sigma_q=3.0, noise=gen, ledger=ledger)
    assert ledger.entries == [Mechanism("semantic_query", "gaussian", noise_multiplier=3.0, sample_rate=1.0, steps=1)]
    on_disk = json.loads((tmp_path / "ledger.json").read_text())
    assert [e["name"] for e in on_disk["entries"]] == ["semantic_query"]
    with pytest.raises(UserError, match="already in the ledger"):
        dp_semantic_distribution(model, sensitive, k=2, sigma_q=3.0, noise=gen, ledger=ledger)
    assert len(Ledger(tmp_path / "ledger.json", delta=1e-5).entries) == 1


def test_over_budget_query_is_refused_before_release(tmp_path):
    model, sensitive = random_classifier(8), sensitive_set(20, 2)
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5, epsilon_budget=0.1)
    with pytest.raises(UserError, match="budget"):
        dp_semantic_distribution(model, sensitive, k=2, sigma_q=1.0, noise=noise_source(0),
                                 ledger=ledger)
    assert ledger.entries == []


def test_zero_noise_needs_explicit_opt_in_and_charges_nothing(tmp_path):
    model, sensitive = random_classifier(8), sensitive_set(20, 2)
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5)
    gen = noise_source(0)
    with pytest.raises(ValueError, match="allow_zero_noise"):
        dp_semantic_distribution(model, sensitive, k=2, sigma_q=0.0, noise=gen, ledger=ledger)
    dp_semantic_distribution(model, sensitive, k=2, sigma_q=0.0, noise=gen, ledger=ledger, allow_zero_noise=True)
    assert ledger.entries == []
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="sigma_q"):
            dp_semantic_distribution(model, sensitive, k=2, sigma_q=bad, noise=gen, ledger=ledger)
    with pytest.raises(ValueError, match="ledger is required"):
        dp_semantic_distribution(model, sensitive, k=2, sigma_q=1.0, noise=gen, ledger=None)
    with pytest.raises(ValueError, match="k must be"):
        dp_semantic_distribution(model, sensitive, k=0, sigma_q=1.0, noise=gen, ledger=ledger)


def test_huge_noise_makes_the_selection_close_to_uniform(tmp_path):
    model, sensitive = random_classifier(12), sensitive_set(12, 6)
    histogram = exact(model, sensitive, 1)  # (6, 12)
    assert (histogram[0] == histogram[0].max()).sum() == 1  # row 0 has one clear favourite

    def picks(sigma_q: float, trials: int) -> np.ndarray:
        """(trials, 6) public class picked for each sensitive class, k = 1."""
        out = []
        for trial in range(trials):
            noisy = dp_semantic_distribution(model, sensitive, k=1, sigma_q=sigma_q,
                                             noise=noise_source(trial),
                                             ledger=Ledger(tmp_path / f"{sigma_q}-{trial}.json", delta=1e-5))
            selection = select(noisy, k=1, public_classes=[f"p{i}" for i in range(12)],
                               sensitive_classes=sensitive.classes, public_counts=np.full(12, 10))
            out.append([c.public_ids[0] for c in selection.classes])
        return np.array(out)

    first = picks(1e-3, 2)[:, 0]  # barely any noise: row 0 always gets its exact favourite
    assert (first == histogram[0].argmax()).all()
    huge = np.bincount(picks(1e4, 50).ravel(), minlength=12)  # 300 picks: ~25 per class, sd < 4.8
    assert ((huge > 7) & (huge < 45)).all(), huge
