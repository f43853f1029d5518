"""Known answers for the analysis statistics: pairs drawn without replacement from the distinct pairs (no
trial with itself), the true n when fewer exist than asked for, and a detection AUC that carries its class
sizes, a confidence interval and a warning below the minimum size."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from core.analysis import metrics


def test_five_trials_give_the_ten_distinct_pairs_and_no_self_pair():
    i, j = metrics.sample_pairs(5, None, 10_000, np.random.default_rng(0))
    pairs = sorted(zip(i.tolist(), j.tolist()))
    assert pairs == list(itertools.combinations(range(5), 2))  # all 10, each once, i < j
    assert len(pairs) == 10 == metrics.distinct_pair_count(5, None)


def test_sampled_pairs_are_distinct_without_self_pairs_and_seeded():
    i, j = metrics.sample_pairs(69, None, 1000, np.random.default_rng(3))
    pairs = list(zip(i.tolist(), j.tolist()))
    assert len(pairs) == 1000 and len(set(pairs)) == 1000 and all(a < b < 69 for a, b in pairs)
    i2, j2 = metrics.sample_pairs(69, None, 1000, np.random.default_rng(3))
    assert np.array_equal(i, i2) and np.array_equal(j, j2)
    # 69 trials: 2,346 distinct pairs; asking for 10,000 uses all of them, once each
    i, j = metrics.sample_pairs(69, None, 10_000, np.random.default_rng(0))
    assert len(set(zip(i.tolist(), j.tolist()))) == len(i) == 2346 and not np.any(i == j)
    assert len(metrics.sample_pairs(1, None, 10, np.random.default_rng(0))[0]) == 0


def test_cross_pairs_are_distinct_and_all_used_when_few():
    i, j = metrics.sample_pairs(3, 4, 100, np.random.default_rng(0))
    assert sorted(zip(i.tolist(), j.tolist())) == list(itertools.product(range(3), range(4)))
    i, j = metrics.sample_pairs(50, 40, 500, np.random.default_rng(1))
    assert len(set(zip(i.tolist(), j.tolist()))) == 500 and i.max() < 50 and j.max() < 40


def test_identical_trials_are_not_paired_with_themselves():
    # Five different unit vectors: no sampled within-set pair can have cosine 1.
    x = np.eye(5, dtype=np.float32)
    sims = metrics.pair_cosines(x, None, 10_000, np.random.default_rng(0))
    assert len(sims) == 10 and sims.max() == pytest.approx(0.0)


def test_detection_auc_carries_class_sizes_ci_and_a_small_sample_warning():
    rng = np.random.default_rng(0)
    def unit(n, shift):
        v = rng.normal(size=(n, 8)) + shift
        return v / np.linalg.norm(v, axis=1, keepdims=True)

    small = metrics.detection_test(unit(21, 0), unit(5, 2), seed=0)
    assert small["n_real"] == 21 and small["n_synthetic"] == 5
    assert small["auc"] is not None and small["ci_low"] <= small["auc"] <= small["ci_high"]
    assert small["warning"] and "5 synthetic" in small["warning"]
    big = metrics.detection_test(unit(80, 0), unit(80, 0.0), seed=0)
    assert big["warning"] is None and big["n_real"] == 80 and big["n_synthetic"] == 80
    assert big["ci_low"] < 0.5 + 0.15 and big["ci_high"] > 0.5 - 0.15   # same distribution: interval near chance
    assert big["ci_high"] - big["ci_low"] < small["ci_high"] - small["ci_low"] + 0.5
    tiny = metrics.detection_test(unit(3, 0), unit(3, 1), seed=0)
    assert tiny["auc"] is None and "at least 5" in tiny["warning"]
