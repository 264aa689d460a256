"""The query's share of the budget (semantic.query_epsilon or semantic.sigma_q), refusals before the query
spends anything, and selection modes (top-k, fraction, unlabelled) on grey sensitive data of any class count."""

import dataclasses
import json

import numpy as np
import pytest

from privimage.data.imageset import ImageSet
from privimage.errors import UserError
from privimage.pipeline import query_and_select
from privimage.privacy.accountant import calibrate_query_sigma, calibrate_sigma, epsilon_pld
from privimage.privacy.ledger import Ledger, Mechanism
from privimage.run_config import RunConfig, load_run_config
from privimage.semantic.query import MECHANISM_NAME, query_sigma
from privimage.semantic.selection import check_selectable
from test_semantic_query import random_classifier


def query_epsilon(sigma: float) -> float:
    return epsilon_pld([Mechanism("q", "gaussian", noise_multiplier=sigma)], delta=1e-5)


@pytest.mark.parametrize("target", [0.005, 0.2, 1.0])
def test_calibrated_query_sigma_meets_its_epsilon_tightly(target):
    sigma = calibrate_query_sigma(epsilon=target, delta=1e-5)
    assert query_epsilon(sigma) <= target < query_epsilon(sigma / 1.003)  # smallest sigma within 0.3 %


def test_query_sigma_takes_exactly_one_of_the_two_keys():
    assert query_sigma(sigma_q=484.0, query_epsilon=None, delta=1e-5) == 484.0
    assert query_sigma(sigma_q=None, query_epsilon=0.2, delta=1e-5) == calibrate_query_sigma(epsilon=0.2, delta=1e-5)
    with pytest.raises(UserError, match="exactly one of semantic.sigma_q and semantic.query_epsilon"):
        query_sigma(sigma_q=5.0, query_epsilon=0.2, delta=1e-5)
    with pytest.raises(UserError, match="exactly one of semantic.sigma_q and semantic.query_epsilon"):
        query_sigma(sigma_q=None, query_epsilon=None, delta=1e-5)
    with pytest.raises(UserError, match="semantic.query_epsilon must be a finite number > 0"):
        query_sigma(sigma_q=None, query_epsilon=0.0, delta=1e-5)


@pytest.mark.parametrize("overrides, message", [
    (["semantic.sigma_q=5"], "exactly one of semantic.sigma_q and semantic.query_epsilon"),
    (["semantic.query_epsilon=null"], "exactly one of semantic.sigma_q and semantic.query_epsilon"),
    (["semantic.query_epsilon=-0.1"], "semantic.query_epsilon must be > 0 and below privacy.epsilon=10"),
    (["semantic.query_epsilon=10"], "semantic.query_epsilon must be > 0 and below privacy.epsilon=10"),
    (["semantic.query_epsilon=null", "semantic.sigma_q=0"], "semantic.sigma_q must be a finite number > 0"),
])
def test_config_refuses_an_impossible_split(overrides, message):
    with pytest.raises(UserError, match=message):
        load_run_config(None, overrides)


def grey_sensitive(n: int, num_classes: int) -> ImageSet:
    """MNIST-like: 28 x 28 grey, any number of classes (not 10)."""
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (n, 28, 28, 1), dtype=np.uint8)
    return ImageSet(x, np.arange(n) % num_classes, [f"digit{i}" for i in range(num_classes)], source="grey")


def public_set(num_classes: int, per_class: int = 5) -> ImageSet:
    x = np.zeros((num_classes * per_class, 16, 16, 3), dtype=np.uint8)
    y = np.repeat(np.arange(num_classes), per_class)
    return ImageSet(x, y, [f"p{i}" for i in range(num_classes)], source="public")


def semantic_config(**fields) -> RunConfig:
    config = RunConfig()
    config.semantic = dataclasses.replace(config.semantic, **fields)
    config.privacy = dataclasses.replace(config.privacy, epsilon=2.0, seed=0)
    return config


@pytest.mark.parametrize("fields, message", [
    ({"k": 4}, "semantic.k=4 public classes for each of 3 sensitive classes needs 12"),
    ({"k": 11, "fraction": 0.5}, "semantic.k=11: each sensitive image votes for k public classes"),
    ({"fraction": 0.01}, "semantic.fraction=0.01 of 50 public images is less than one image"),
    ({"fraction": 1.5}, r"semantic.fraction must be in \(0, 1\]"),
    ({"query_epsilon": 3.0}, "semantic query alone spends epsilon 3 >= privacy.epsilon 2"),
])
def test_query_and_select_refuses_before_charging(tmp_path, fields, message):
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5, epsilon_budget=2.0)
    with pytest.raises(UserError, match=message):
        query_and_select(semantic_config(**fields), random_classifier(10), grey_sensitive(30, 3), public_set(10),
                         ledger, tmp_path / "selection.json")
    assert not ledger.has(MECHANISM_NAME) and not (tmp_path / "selection.json").exists()
    assert json.loads((tmp_path / "ledger.json").read_text())["entries"] == []


def test_query_epsilon_sets_the_ledger_entry_and_dpsgd_gets_the_rest(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5, epsilon_budget=2.0)
    selection = query_and_select(semantic_config(k=2, query_epsilon=0.5), random_classifier(10),
                                 grey_sensitive(40, 4), public_set(10), ledger, tmp_path / "selection.json")
    sigma = calibrate_query_sigma(epsilon=0.5, delta=1e-5)
    assert [(m.name, m.noise_multiplier) for m in ledger.entries] == [(MECHANISM_NAME, sigma)]
    saved = json.loads((tmp_path / "selection.json").read_text())
    assert saved["sigma_q"] == sigma and 0.499 < saved["query_epsilon"] <= 0.5 and saved["epsilon_budget"] == 2.0
    assert [len(c.public_ids) for c in selection.classes] == [2, 2, 2, 2]  # 4 grey classes, k = 2 each
    # The pipeline's DP-SGD calibration composes with the ledger's query: total <= 2, query 0.5 of it.
    dpsgd_sigma, total = calibrate_sigma(epsilon=2.0, delta=1e-5, sample_rate=0.1, steps=20, query_sigma=sigma)
    dpsgd = Mechanism("finetune", "poisson_gaussian", noise_multiplier=dpsgd_sigma, sample_rate=0.1, steps=20)
    assert 1.99 < epsilon_pld([*ledger.entries, dpsgd], delta=1e-5) <= 2.0


def test_unlabelled_grey_data_votes_in_one_row(tmp_path):
    ledger = Ledger(tmp_path / "ledger.json", delta=1e-5, epsilon_budget=2.0)
    config = semantic_config(k=3, labelled=False, sigma_q=3.0, query_epsilon=None)
    selection = query_and_select(config, random_classifier(10), grey_sensitive(40, 7), public_set(10), ledger,
                                 tmp_path / "selection.json")
    assert selection.sensitive_classes == ["all"] and len(selection.classes[0].public_ids) == 3
    assert ledger.has(MECHANISM_NAME)
    # Unlabelled, 7 sensitive classes with k = 3 do not need 21 public classes: one row needs 3.
    check_selectable(k=3, num_sensitive=1, public_counts=np.full(10, 5), fraction=None)


def test_fraction_mode_leaves_every_row_a_class():
    counts = np.array([100] + [1] * 9)  # one huge class: the first row may take it and more
    with pytest.raises(UserError, match="could take every public class before the last one gets any"):
        check_selectable(k=1, num_sensitive=3, public_counts=counts, fraction=0.9)
    check_selectable(k=1, num_sensitive=3, public_counts=np.full(10, 10), fraction=0.3)


def test_report_shows_the_split():
    from privimage.evaluate.report_sections import selection_section

    html = selection_section({"k": 5, "sigma_q": 16.3, "query_epsilon": 0.2, "epsilon_budget": 10.0,
                              "n_images": 25000, "n_public": 100000, "classes": []})
    assert "query epsilon 0.2 of the release&#x27;s 10 (DP-SGD calibrated to the rest)" in html \
        or "query epsilon 0.2 of the release's 10 (DP-SGD calibrated to the rest)" in html
