"""Quality metrics on constructed cases with known answers, using real MiniLM embeddings."""
from __future__ import annotations

import numpy as np
import pytest

from core.analysis import quality as analysis
from core.serialize import classifier_text
from fixtures.analysis.store import dermatology_record, oncology_record


@pytest.fixture(scope="module")
def emb():
    from core.analysis.embeddings import embed_texts, get_encoder

    enc = get_encoder("minilm")
    onc = [classifier_text(oncology_record(i)) for i in range(60)]
    derm = [classifier_text(dermatology_record(i), synthetic=True) for i in range(60)]
    return {"onc": embed_texts(onc, encoder=enc), "derm": embed_texts(derm, encoder=enc),
            "onc_texts": onc, "derm_texts": derm}


def test_identical_sets_are_indistinguishable_and_every_trial_is_a_copy(emb):
    real = emb["onc"][:40]
    synth = real.copy()
    assert analysis.detection_auc(real, synth, seed=0) == pytest.approx(0.5, abs=0.02)
    d, idx = analysis.nearest(synth, real)
    assert np.all(d < 1e-5)
    assert np.array_equal(idx, np.arange(40))
    assert int((d <= 0.05).sum()) == 40


def test_disjoint_topics_are_told_apart_and_nothing_is_a_copy(emb):
    auc = analysis.detection_auc(emb["onc"][:40], emb["derm"][:40], seed=0)
    assert auc > 0.95
    d, _ = analysis.nearest(emb["derm"][:40], emb["onc"][:40])
    assert d.min() > 0.2
    rng = np.random.default_rng(0)
    within = analysis.pair_cosines(emb["onc"], None, 2000, rng).mean()
    across = analysis.pair_cosines(emb["onc"], emb["derm"], 2000, rng).mean()
    assert within > across + 0.3  # same topic much more similar than across topics


def test_two_samples_of_one_topic_are_hard_to_tell_apart(emb):
    perm = np.random.default_rng(1).permutation(60)
    a, b = emb["onc"][perm[:30]], emb["onc"][perm[30:]]
    auc = analysis.detection_auc(a, b, seed=0)
    assert 0.2 < auc < 0.8  # no real signal: near chance, far from the 1.0 of disjoint topics


def test_sampled_pairs_are_seeded_and_never_a_trial_with_itself():
    rng = np.random.default_rng(5)
    # 7 trials have 21 distinct pairs: asking for 10,000 gives those 21, each once (was: 10,000 resampled)
    i, j = analysis.sample_pairs(7, None, 10_000, rng)
    assert len(i) == 21 and not np.any(i == j)
    assert set(np.unique(np.r_[i, j])) == set(range(7))  # every trial is drawn
    i2, j2 = analysis.sample_pairs(7, None, 10_000, np.random.default_rng(5))
    assert np.array_equal(i, i2) and np.array_equal(j, j2)
    i, j = analysis.sample_pairs(70, None, 500, rng)
    assert len(i) == 500 and not np.any(i == j) and len(set(zip(i.tolist(), j.tolist()))) == 500
    i2, j2 = analysis.sample_pairs(70, None, 500, np.random.default_rng(5))
    assert len(analysis.sample_pairs(1, None, 10, rng)[0]) == 0


def test_distinct_n_counts_repeated_ngrams():
    assert analysis.distinct_n(["a b a b"], 1) == pytest.approx(2 / 4)
    assert analysis.distinct_n(["a b a b"], 2) == pytest.approx(2 / 3)
    assert analysis.distinct_n(["x y", "x y"], 2) == pytest.approx(1 / 2)
    assert analysis.distinct_n([""], 1) is None


def test_diversity_of_copies_of_one_text_is_low(emb):
    one = np.repeat(emb["onc"][:1], 20, axis=0)
    sims = analysis.pair_cosines(one, None, 500, np.random.default_rng(0))
    assert sims.mean() == pytest.approx(1.0, abs=1e-5)
    assert analysis.distinct_n([emb["onc_texts"][0]] * 20, 2) < 0.1
    assert analysis.distinct_n(emb["onc_texts"], 2) > analysis.distinct_n([emb["onc_texts"][0]] * 20, 2)


def test_validation_rates_from_validation_json():
    rows = [
        {"validation": {"intervention": {"ok": True}, "label_leak": {"ok": True}}},
        {"validation": {"intervention": {"ok": False}, "label_leak": {"ok": False}}},
        {"validation": {"intervention": {"ok": True}, "label_leak": {"ok": True}}},
        {"validation": {}, "intervention_match": True},  # no check: the column counts
    ]
    r = analysis.validation_rates(rows)
    assert r["intervention_match_rate"] == pytest.approx(3 / 4) and r["intervention_checked"] == 4
    assert r["leakage_rate"] == pytest.approx(1 / 3) and r["leakage_checked"] == 3
    assert analysis.validation_rates([{"validation": {}}])["leakage_rate"] is None


@pytest.mark.parametrize("method", ["tsne", "umap"])
def test_projection_keeps_topics_apart(emb, method):
    x = np.vstack([emb["onc"][:30], emb["derm"][:30]])
    xy = analysis.project(x, method, seed=0, max_iter=500 if method == "tsne" else 1000)
    assert xy.shape == (60, 2) and np.isfinite(xy).all()
    ca, cb = xy[:30].mean(0), xy[30:].mean(0)
    spread = max(xy[:30].std(0).max(), xy[30:].std(0).max())
    assert np.linalg.norm(ca - cb) > 2 * spread  # two separate clusters


def test_params_are_checked():
    with pytest.raises(ValueError, match="real_scope"):
        analysis.AnalysisParams(real_scope="some")
    with pytest.raises(ValueError, match="copy_threshold"):
        analysis.AnalysisParams(copy_threshold=3)
    assert analysis.AnalysisParams(seed=1).key("quality") != analysis.AnalysisParams(seed=2).key("quality")
