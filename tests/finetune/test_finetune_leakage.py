"""No leakage: the scrubbed text the classifier sees contains none of the removed fields or outcome
words; real and synthetic trials are serialized alike; the leakage audit measures the removed fields."""
from __future__ import annotations

import random
import re

import pytest

from core.finetune import protocol as X
from core import serialize
from core.store import connect
from core.store.trials import labeled_trials
from fixtures.finetune.synthetic import record as synthetic_record

TITLES = dict(serialize._TEXT_ORDER)
WORD_RE = re.compile(r"\b(" + "|".join(re.escape(w) for w in serialize.LEAK_WORDS) + r")\b", re.IGNORECASE)


@pytest.fixture(scope="module")
def real_records(mirror_db) -> list[dict]:
    with connect(mirror_db, read_only=True) as con:
        recs = labeled_trials(con)
    # Trials that actually carry the leaking fields, plus a random sample of the rest.
    leaky = [r for r in recs if r["why_stopped"] or r["has_results"] or r["completion_date_type"]]
    return leaky[:400] + random.Random(0).sample(recs, 200)


def _line_titles(text: str) -> list[str]:
    return [line.split(":", 1)[0] for line in text.splitlines() if ":" in line and line.split(":", 1)[0] in
            TITLES.values()]


@pytest.mark.parametrize("mode", serialize.MODES)
def test_scrubbed_text_has_no_removed_field(real_records, mode):
    assert any(r["why_stopped"] for r in real_records) and any(r["has_results"] for r in real_records)
    for rec in real_records:
        text = serialize.classifier_text(rec, synthetic=False, mode=mode)
        titles = set(_line_titles(text))
        for field in serialize.removed_fields(mode):
            assert TITLES[field] not in titles, (rec["nct_id"], field)
        if rec["why_stopped"] and len(rec["why_stopped"]) > 15:
            assert " ".join(rec["why_stopped"].split()) not in text, rec["nct_id"]
        removed = serialize.removed_text(rec, mode)
        assert set(line.split(":", 1)[0] for line in removed.splitlines()) <= set(serialize.removed_fields(mode))


def test_strict_mode_removes_outcome_words_from_every_text(real_records):
    n_words_before = 0
    for rec in real_records:
        raw = serialize.classifier_text(rec, synthetic=False, mode="paper")
        n_words_before += bool(WORD_RE.search(raw))
        text = serialize.classifier_text(rec, synthetic=False, mode="strict")
        assert not WORD_RE.search(text), (rec["nct_id"], WORD_RE.search(text).group(0))
        for field in ("has_results", "enrollment_type", "completion_date", "primary_completion_date"):
            assert TITLES[field] + ":" not in text
    assert n_words_before > 0  # the words were there to remove


@pytest.mark.parametrize("mode", serialize.MODES)
def test_synthetic_text_has_no_label_words(mode):
    rng = random.Random(1)
    for label in (0, 1):
        rec = synthetic_record("Metformin", label, 0, rng)
        assert WORD_RE.search(rec["brief_summary"])  # the fixture writes them on purpose
        text = serialize.classifier_text(rec, synthetic=True, mode=mode)
        assert not WORD_RE.search(text), WORD_RE.search(text).group(0)
        assert "Status:" not in text and "Why stopped:" not in text and "futility" not in text.lower()
        assert "Metformin" in text  # the content itself stays


def test_real_and_synthetic_share_one_format(real_records):
    order = [t for _, t in serialize._TEXT_ORDER]
    syn = serialize.classifier_text(synthetic_record("Aspirin", 1, 0, random.Random(2)), synthetic=True)
    for text in [syn] + [serialize.classifier_text(r) for r in real_records[:50]]:
        titles = _line_titles(text)
        assert titles == sorted(titles, key=order.index)  # same field order, same "Title: value" lines
    assert not syn.startswith("<") and "Title: A Randomized Study of Aspirin" in syn


def test_dataset_texts_are_scrubbed(mirror_db):
    ds = X.load_dataset(mirror_db, scrub_mode="strict")
    for e in ds.set_a[:300] + ds.set_b[:300]:
        assert not WORD_RE.search(e.text)
        assert "Status:" not in _line_titles(e.text) and "Why stopped" not in _line_titles(e.text)


def _ds(removed: dict[str, str], labels: dict[str, int]) -> X.Dataset:
    examples = [X.Example(i, "same text for all", labels[i]) for i in labels]
    return X.Dataset(examples, [], [], [], "test", "strict", None, removed)


def test_leakage_audit_reads_only_the_removed_fields():
    labels = {f"NCT{i:08d}": i % 2 for i in range(200)}
    leaking = _ds({i: f"overall_status: {'Completed' if y else 'Terminated'}" for i, y in labels.items()}, labels)
    assert X.leakage_audit(leaking)["roc_auc"] == pytest.approx(1.0)
    silent = _ds({i: "" for i in labels}, labels)
    assert X.leakage_audit(silent)["roc_auc"] == 0.5


def test_leakage_audit_on_the_mirror(mirror_db):
    strict = X.leakage_audit(X.load_dataset(mirror_db, scrub_mode="strict"))
    paper = X.leakage_audit(X.load_dataset(mirror_db, scrub_mode="paper"))
    # overall_status / why_stopped give the outcome away on real labelled trials: scrubbing is needed.
    assert strict["roc_auc"] > 0.7 and paper["roc_auc"] > 0.7
    assert "has_results" in strict["fields"] and paper["fields"] == ["overall_status", "why_stopped"]
